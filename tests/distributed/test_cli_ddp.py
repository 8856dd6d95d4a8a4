"""``babysit train --nproc-per-node N``: relaunches itself through torch.distributed.run; what
can be refused is refused before any process starts, in one line, with no file changed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from babysit.cli import app

from .harness import SRC

runner = CliRunner()
BUILD = ["--data", "digits", "--hidden", "16", "--batch-size", "50", "--quiet"]


def _babysit(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"})
    return subprocess.run(
        [sys.executable, "-m", "babysit.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def _hashes(run: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow  # three launches of the CLI, two of them with 2 processes (~30 s on 2 cores)
def test_train_with_two_processes_then_resume_and_refuse_another_count(tmp_path):
    out = tmp_path / "run"
    done = _babysit("train", *BUILD, "--epochs", "1", "--out", str(out), "--nproc-per-node", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("final epoch:") == 1  # rank 0 speaks, once
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["batch_size"] == 50
    assert config["cli"]["hidden"] == [16]

    before = _hashes(out)
    refused = _babysit("train", "--resume", "--out", str(out))  # one process
    assert refused.returncode == 2
    assert refused.stderr.startswith("babysit: cannot resume") and "2 process(es)" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert _hashes(out) == before

    done = _babysit(
        "train", "--resume", "--epochs", "2", "--out", str(out), "--nproc-per-node", "2"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 2 and config["resumes"][0]["at_epoch"] == 1


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--nproc-per-node", "0"], "--nproc-per-node must be at least 1"),
        (["--nproc-per-node", "100000"], "more processes than the 1150 training examples"),
    ],
)
def test_a_bad_process_count_is_one_error_before_anything_starts(tmp_path, flags, fragment):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", *BUILD, "--out", str(out), *flags])
    assert result.exit_code == 2
    assert fragment in result.output
    assert result.output.startswith("babysit: ") and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_resume_with_another_process_count_is_refused_before_launching(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", *BUILD, "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    before = _hashes(out)
    result = runner.invoke(app, ["train", "--resume", "--out", str(out), "--nproc-per-node", "2"])
    assert result.exit_code == 2
    assert "trained by 1 process(es)" in result.output and "--nproc-per-node 1" in result.output
    assert _hashes(out) == before


@pytest.mark.parametrize(
    ("exitcode", "said"), [(-9, "was killed by signal SIGKILL"), (7, "exited with code 7")]
)
def test_a_process_that_dies_is_named_in_one_line(tmp_path, monkeypatch, exitcode, said):
    """torchrun stops the other processes when one dies; the launcher names the one that did."""
    import torch.distributed.run as launcher
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def dies(args):
        failure = ProcessFailure(local_rank=1, pid=1, exitcode=exitcode, error_file="")
        raise ChildFailedError("babysit.cli", {1: failure})

    monkeypatch.setattr(launcher, "run", dies)
    result = runner.invoke(
        app, ["train", *BUILD, "--out", str(tmp_path / "r"), "--nproc-per-node", "2"]
    )
    assert result.exit_code == 1
    assert result.output.startswith(f"babysit: training process rank 1 {said}")
    assert "--resume --nproc-per-node 2" in result.output
    assert len(result.output.strip().splitlines()) == 1
