"""`babysit diagnose MODULE:FUNCTION`: exit codes, JSON, one-line errors."""

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
from babysit.nn import mlp, init_model

def healthy():
    return mlp(40, [100, 100], 10)

def zero_init():
    return init_model(mlp(40, [100, 100], 10), "zeros")

def with_data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 8, generator=g), torch.randint(0, 3, (300,), generator=g)
    return mlp(8, [16], 3), (x, y)

def not_a_model():
    return 42
"""


@pytest.fixture
def models_file(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(textwrap.dedent(MODELS))
    return path


def invoke(*args):
    return runner.invoke(app, ["diagnose", *args])


def test_healthy_model_exits_0(models_file):
    result = invoke(f"{models_file}:healthy", "--data", "mnist1d", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["schema"] == 1 and document["ok"] is True


def test_error_finding_exits_1_and_prints_the_table(models_file):
    result = invoke(f"{models_file}:zero_init", "--data", "mnist1d", "--checks", "symmetric_init")
    assert result.exit_code == 1, result.output
    assert "SYMMETRIC_INIT" in result.output and "he_normal" in result.output


def test_function_may_return_model_and_data(models_file):
    result = invoke(f"{models_file}:with_data", "--checks", "forward_runs,labels", "--json")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("target", "extra", "message"),
    [
        ("no_such_module_xyz:f", ["--data", "digits"], "cannot import no_such_module_xyz"),
        ("{file}:missing", ["--data", "digits"], "has no function 'missing'"),
        ("{file}:not_a_model", ["--data", "digits"], "returned int; it must return an nn.Module"),
        ("{file}:healthy", ["--data", "imagenet"], "unknown data set 'imagenet'"),
        ("{file}:healthy", [], "returned no data: pass --data"),
        ("{file}", ["--data", "digits"], "expected MODULE:FUNCTION"),
        ("{file}:healthy", ["--data", "mnist1d", "--checks", "nope"], "unknown checks"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(models_file, target, extra, message):
    result = invoke(target.format(file=models_file), *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("option", "match"),
    [(["--budget", "-1"], "budget_s must be >= 0"), (["--ignore", "DEAD_RELUS"], "DEAD_RELU?")],
)
def test_negative_budget_and_unknown_ignore_exit_2_with_one_line(
    models_file, tmp_path, option, match
):
    """Both used to run (or skip) everything and exit 0 with ok=True; nothing is written."""
    out = tmp_path / "run"
    result = invoke(f"{models_file}:with_data", "--out", str(out), *option)
    assert result.exit_code == 2, result.output
    assert match in result.output and "Traceback" not in result.output
    assert not out.exists()
