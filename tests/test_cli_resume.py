"""``babysit train --resume``: the run's config.json decides the model, the data, the split and
fit's settings; a contradicting flag is one clear error that changes no file; ``--epochs`` is an
explicit, recorded override."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from babysit import runs
from babysit.cli import app

runner = CliRunner()
# A non-default model, split seed and optimizer: the CLI defaults would contradict all three.
FIRST = ["--data", "digits", "--hidden", "24", "--activation", "tanh", "--init", "xavier"]
FIRST += ["--seed", "3", "--optimizer", "momentum", "--lr", "0.02", "--batch-size", "50"]


def _hashes(run: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in sorted(run.rglob("*"))
    }


@pytest.fixture
def run(tmp_path) -> Path:
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", *FIRST, "--epochs", "1", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_resume_rebuilds_the_run_from_config_json(run, tmp_path):
    """Was: the CLI defaults rebuilt another model (a traceback: shape mismatch) or, with the
    same --hidden, another data split under the default seed."""
    result = runner.invoke(app, ["train", "--out", str(run), "--resume", "--epochs", "3", "--json"])
    assert result.exit_code == 0, result.output
    resumed = [e["val_acc"] for e in json.loads(result.stdout)["epochs"]]
    config = json.loads((run / "config.json").read_text())
    assert config["cli"]["hidden"] == [24] and config["seed"] == 3 and config["epochs"] == 3
    assert config["resumes"][-1]["epochs_before"] == 1
    # the same three epochs in one go give the same numbers: same model, split, order, settings
    full = tmp_path / "full"
    straight = runner.invoke(app, ["train", *FIRST, "--epochs", "3", "--json", "--out", str(full)])
    assert [e["val_acc"] for e in json.loads(straight.stdout)["epochs"]] == resumed
    assert runs.read_metrics(run) == runs.read_metrics(full)


def test_resume_without_epochs_continues_to_the_recorded_count(run):
    result = runner.invoke(app, ["train", "--out", str(run), "--resume", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["epochs"]) == 1  # the run already has its 1 epoch


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--seed", "0"], ["--seed 0 contradicts the run's recorded seed 3"]),
        (["--lr", "0.1"], ["--lr 0.1 contradicts the run's recorded lr 0.02"]),
        (["--optimizer", "adam"], ["--optimizer adam contradicts", "recorded optimizer momentum"]),
        (["--hidden", "100,100"], ["--hidden 100,100 contradicts the run's recorded hidden 24"]),
        (["--data", "mnist1d"], ["--data mnist1d contradicts the run's recorded data digits"]),
        (["--batch-size", "64"], ["--batch-size 64 contradicts the run's recorded batch_size 50"]),
        (
            ["--no-standardize", "--activation", "relu"],
            ["--no-standardize contradicts", "--activation relu contradicts", "those flags"],
        ),
    ],
)
def test_a_contradicting_flag_is_one_error_and_changes_no_file(run, flags, fragments):
    before = _hashes(run)
    result = runner.invoke(app, ["train", "--out", str(run), "--resume", "--epochs", "2", *flags])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("babysit: --resume: ")
    for fragment in fragments:
        assert fragment in line, line
    assert _hashes(run) == before


def test_a_flag_equal_to_the_record_is_fine(run):
    result = runner.invoke(
        app, ["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet", *FIRST]
    )
    assert result.exit_code == 0, result.output


def test_a_run_from_an_older_babysit_takes_the_build_from_the_flags_and_says_so(run):
    config = json.loads((run / "config.json").read_text())
    del config["cli"]
    (run / "config.json").write_text(json.dumps(config))
    default_model = runner.invoke(app, ["train", "--out", str(run), "--resume", "--epochs", "2"])
    assert default_model.exit_code == 2  # the checkpoint still refuses another model
    assert "different model" in default_model.stderr and "Traceback" not in default_model.output
    same = ["--data", "digits", "--hidden", "24", "--activation", "tanh", "--init", "xavier"]
    result = runner.invoke(app, ["train", "--out", str(run), "--resume", "--epochs", "2", *same])
    assert result.exit_code == 0, result.output
    assert "does not record how the model and data were built" in result.stderr


def test_epochs_cannot_stretch_a_recorded_schedule(tmp_path):
    out = tmp_path / "sched"
    base = ["train", "--data", "digits", "--hidden", "16", "--quiet", "--out", str(out)]
    assert runner.invoke(app, [*base, "--schedule", "cosine", "--epochs", "1"]).exit_code == 0
    before = _hashes(out)
    result = runner.invoke(app, ["train", "--out", str(out), "--resume", "--epochs", "3"])
    assert result.exit_code == 2
    assert "--epochs 3 cannot stretch the run's cosine schedule, planned for 1 epochs" in (
        result.stderr
    )
    assert _hashes(out) == before
