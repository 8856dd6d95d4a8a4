"""`babysit fix MODULE:FUNCTION`: the plan printed, JSON, exit codes, one-line usage errors."""

from __future__ import annotations

import json
import textwrap

import pytest
from typer.testing import CliRunner

from babysit.cli import app

runner = CliRunner()

MODELS = """
import torch
from torch import nn

def _data():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 20, generator=g) * 1.5
    y = torch.arange(400) % 4
    return centres[y] + torch.randn(400, 20, generator=g), y

def dropout():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 4))
    return model, _data()

def healthy():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4)), _data()

def wrong_width():
    return nn.Sequential(nn.Linear(64, 4)), _data()
"""


@pytest.fixture
def models_file(tmp_path):
    path = tmp_path / "fix_models.py"
    path.write_text(textwrap.dedent(MODELS))
    return path


def invoke(*args):
    return runner.invoke(app, ["fix", *args, "--lr", "0.001"])


def test_a_repairable_set_up_prints_the_patch_and_exits_0(models_file, tmp_path):
    result = invoke(f"{models_file}:dropout", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "DROPOUT_TOO_HIGH: dropout_half -> accepted" in result.output
    assert "model[2].p = 0.5 (was 0.9)" in result.output
    document = json.loads((tmp_path / "run" / "fix.json").read_text())
    assert document["schema"] == 1 and document["fixed"] == ["DROPOUT_TOO_HIGH"]


def test_json_is_machine_readable(models_file):
    result = invoke(f"{models_file}:healthy", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["schema"] == 1 and document["changed"] is False and document["steps"] == []


def test_a_model_that_does_not_run_exits_1_without_a_traceback(models_file):
    result = invoke(f"{models_file}:wrong_width")
    assert result.exit_code == 1, result.output
    assert "FORWARD_FAILED" in result.output and "Remaining" in result.output
    assert "Traceback" not in result.output
    assert "mat1 and mat2 shapes cannot be multiplied" in result.output  # what failed
    assert isinstance(result.exception, SystemExit)  # typer.Exit(1), not an error


def test_bad_usage_exits_2_with_one_line(models_file):
    result = invoke(f"{models_file}:no_such_function")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("babysit: ") and "no_such_function" in lines[0]
    result = invoke(f"{models_file}:dropout", "--budget", "-1")
    assert result.exit_code == 2 and "budget_s must be >= 0" in result.output
