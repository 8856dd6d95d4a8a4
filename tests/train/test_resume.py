"""Checkpoints and resume: a resumed run's metrics equal the uninterrupted run's, bit for bit;
bad checkpoints give clear errors and overwrite nothing; a failed write keeps the previous one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import babysit as bs
from babysit import runs
from babysit.train import Callback, Checkpoint, CheckpointError

from .conftest import small_mlp


def _metrics(run: Path) -> list[tuple]:
    return [
        (r["step"], r["epoch"], r["split"], r["name"], r["value"]) for r in runs.read_metrics(run)
    ]


def _train(run, data, val, *, epochs, seed_model=0, **kw):
    model = small_mlp(seed_model, dropout=0.2)
    return model, bs.fit(
        model, data, val=val, epochs=epochs, lr=0.01, progress=False, run_dir=run, **kw
    )


class StopAt(Callback):
    """Simulates a crash: raises after a given global step."""

    def __init__(self, step: int) -> None:
        self.at = step

    def on_train_batch_end(self, trainer, loss, batch_index):
        if trainer.step == self.at:
            raise RuntimeError("simulated crash")


def test_resume_after_an_epoch_equals_the_uninterrupted_run(digits, tmp_path):
    x, y, xv, yv = digits
    full_model, full = _train(tmp_path / "full", (x, y), (xv, yv), epochs=4)
    _train(tmp_path / "part", (x, y), (xv, yv), epochs=2)
    model, resumed = _train(tmp_path / "part", (x, y), (xv, yv), epochs=4, resume=True)
    assert [e["train_loss"] for e in resumed.epochs] == full["train_loss"]
    assert [e["val_acc"] for e in resumed.epochs] == full["val_acc"]
    assert _metrics(tmp_path / "part") == _metrics(tmp_path / "full")
    for a, b in zip(model.parameters(), full_model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("loader", [False, True])
def test_crash_mid_epoch_then_resume_equals_uninterrupted(digits, tmp_path, loader):
    """A mid-epoch checkpoint (every_steps) keeps the position, the epoch's running sums and
    the RNG; a user's shuffling DataLoader re-draws the same order."""
    x, y, xv, yv = digits
    if loader:
        torch.manual_seed(0)
        data = DataLoader(TensorDataset(x, y), batch_size=50, shuffle=True)
    else:
        data = (x, y)
    _, full = _train(
        tmp_path / "full", data, (xv, yv), epochs=3, callbacks=[Checkpoint(every_steps=7)]
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(
            tmp_path / "part",
            data,
            (xv, yv),
            epochs=3,
            callbacks=[StopAt(30), Checkpoint(every_steps=7)],
        )
    state = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"]["step"] == 28 and state["position"]["batch"] > 0
    _, resumed = _train(
        tmp_path / "part",
        data,
        (xv, yv),
        epochs=3,
        resume=True,
        callbacks=[Checkpoint(every_steps=7)],
    )
    assert resumed["train_loss"] == full["train_loss"]
    assert resumed["val_loss"] == full["val_loss"]
    assert _metrics(tmp_path / "part") == _metrics(tmp_path / "full")


_WORKER = textwrap.dedent(
    """
    import sys, time, torch
    import babysit as bs
    from babysit.data import Standardize, load
    from babysit.train import Callback, Checkpoint

    class Slow(Callback):
        def on_train_batch_end(self, trainer, loss, batch_index):
            if trainer.step == 40:
                print("READY", flush=True)
            if trainer.step >= 40 and sys.argv[2] == "slow":
                time.sleep(0.05)

    torch.set_num_threads(1)
    s = load("digits")
    x, y = s.train.tensors
    x = Standardize().fit(x).transform(x)
    torch.manual_seed(0)
    model = bs.nn.mlp(64, [32], 10, dropout=0.2)
    bs.fit(model, (x, y), epochs=4, lr=0.01, progress=False, run_dir=sys.argv[1],
           resume=sys.argv[3] == "resume", callbacks=[Slow(), Checkpoint(every_steps=5)])
    print("DONE", flush=True)
    """
)


def test_kill_9_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "PYTHONHASHSEED": "0"}

    def run(run_dir, speed, mode):
        return subprocess.run(
            [sys.executable, str(script), str(run_dir), speed, mode],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )

    run(tmp_path / "full", "fast", "new")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "part"), "slow", "new"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "READY"
    time.sleep(0.4)  # a few more steps, mid-epoch (18 steps per epoch)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=True)
    assert 40 <= state["position"]["step"] < 72
    out = run(tmp_path / "part", "fast", "resume")
    assert "DONE" in out.stdout
    assert _metrics(tmp_path / "part") == _metrics(tmp_path / "full")


def test_corrupted_checkpoint_is_a_clear_error_and_nothing_changes(digits, tmp_path):
    x, y, _, _ = digits
    _train(tmp_path / "run", (x, y), None, epochs=1)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match="corrupted or was not written by babysit"):
        _train(tmp_path / "run", (x, y), None, epochs=2, resume=True)
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert after == before


def test_foreign_checkpoint_is_refused(digits, tmp_path):
    x, y, _, _ = digits
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save(small_mlp().state_dict(), tmp_path / "run" / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match="not a babysit checkpoint"):
        _train(tmp_path / "run", (x, y), None, epochs=2, resume=True)


def test_checkpoint_of_a_different_model_is_refused(digits, tmp_path):
    x, y, _, _ = digits
    _train(tmp_path / "run", (x, y), None, epochs=1)
    saved = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    torch.manual_seed(0)
    other = bs.nn.mlp(64, [48], 10)
    with pytest.raises(CheckpointError, match=r"different model.*shape mismatch"):
        bs.fit(other, (x, y), epochs=2, progress=False, run_dir=tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == saved


def test_failed_checkpoint_write_keeps_the_previous_one(digits, tmp_path, monkeypatch):
    """A full disk mid-write: the error says so, the previous checkpoint loads and resumes."""
    x, y, _, _ = digits
    _train(tmp_path / "run", (x, y), None, epochs=1)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    good = last.read_bytes()

    real_fsync = os.fsync

    def full_disk(fd):  # only checkpoint files hit the full disk (Linux: /proc/self/fd)
        if ".pt." in Path(os.readlink(f"/proc/self/fd/{fd}")).name:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(runs.os, "fsync", full_disk)
    with pytest.raises(CheckpointError, match=r"No space left.*previous one is intact"):
        _train(tmp_path / "run", (x, y), None, epochs=3, resume=True)
    monkeypatch.undo()
    assert last.read_bytes() == good
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]
    _, history = _train(tmp_path / "run", (x, y), None, epochs=2, resume=True)
    assert len(history) == 2


def test_keyboard_interrupt_saves_a_resumable_checkpoint(digits, tmp_path):
    x, y, _, _ = digits

    class CtrlC(Callback):
        def on_train_batch_end(self, trainer, loss, batch_index):
            if trainer.step == 25:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "part", (x, y), None, epochs=3, callbacks=[CtrlC()])
    state = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"]["step"] == 25  # the interrupted step is done again
    _, resumed = _train(tmp_path / "part", (x, y), None, epochs=3, resume=True)
    assert len(resumed) == 3


def test_resume_without_a_checkpoint_warns_and_starts(digits, tmp_path):
    x, y, _, _ = digits
    with pytest.warns(UserWarning, match="does not exist: starting a new run"):
        _, history = _train(tmp_path / "new", (x, y), None, epochs=1, resume=True)
    assert len(history) == 1
    with pytest.raises(ValueError, match="needs the run_dir"):
        bs.fit(small_mlp(), (x, y), resume=True, progress=False)


def _hashes(run: Path) -> dict[str, str]:
    """Every file and folder of a run directory, by relative path, with its content's hash."""
    import hashlib

    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in sorted(run.rglob("*"))
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"optimizer": "momentum"}, r"optimizer='momentum' but the run has optimizer='adam'"),
        ({"lr": 0.1}, r"lr=0\.1 but the run has lr=0\.01"),
        ({"batch_size": 32}, r"batch_size=32 but the run has batch_size=64"),
        ({"seed": 1}, r"seed=1 but the run has seed=0"),
        ({"weight_decay": 1e-4}, r"weight_decay=0\.0001 but the run has weight_decay=0\.0"),
        ({"schedule": "cosine"}, r"schedule='cosine' but the run has schedule=None"),
    ],
)
def test_resume_with_other_settings_is_refused_and_changes_no_file(
    digits, tmp_path, change, message
):
    """Another optimizer used to die with a bare KeyError after config.json was rewritten and a
    metrics row added; another lr trained silently at the checkpoint's lr."""
    x, y, xv, yv = digits
    run = tmp_path / "run"
    _train(run, (x, y), (xv, yv), epochs=1)
    before = _hashes(run)
    kw = {"lr": 0.01, **change}
    model = small_mlp(0, dropout=0.2)
    with pytest.raises(ValueError, match=message) as err:
        bs.fit(
            model, (x, y), val=(xv, yv), epochs=3, progress=False, run_dir=run, resume=True, **kw
        )
    assert "nothing was changed" in str(err.value)
    assert _hashes(run) == before


def test_resume_with_other_data_is_refused(digits, tmp_path):
    x, y, _, _ = digits
    run = tmp_path / "run"
    _train(run, (x, y), None, epochs=1)
    before = _hashes(run)
    with pytest.raises(ValueError, match="n_train=1000 but the run has n_train=1150"):
        _train(run, (x[:1000], y[:1000]), None, epochs=2, resume=True)
    assert _hashes(run) == before


def test_resume_refusals_for_the_optimizer_state_and_the_epoch_count(digits, tmp_path):
    """Without a record (an older run), the optimizer state's own keys still refuse another
    optimizer; fewer epochs than done, or a planned schedule stretched, are refused too."""
    x, y, _, _ = digits
    run = tmp_path / "run"
    _train(run, (x, y), None, epochs=2)
    (run / "config.json").unlink()
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["config"]
    torch.save(state, last)
    before = _hashes(run)
    with (
        pytest.warns(UserWarning, match="cannot be checked"),
        pytest.raises(CheckpointError, match="written by another optimizer"),
    ):
        _train(run, (x, y), None, epochs=3, resume=True, optimizer="momentum")
    assert _hashes(run) == before
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="already trained 2 epochs"):
        _train(run, (x, y), None, epochs=1, resume=True)
    assert _hashes(run) == before
    sched = tmp_path / "sched"
    _train(sched, (x, y), None, epochs=2, schedule="cosine")
    before = _hashes(sched)
    with pytest.raises(ValueError, match="cosine schedule was planned for 2 epochs"):
        _train(sched, (x, y), None, epochs=4, resume=True, schedule="cosine")
    assert _hashes(sched) == before


def test_resume_to_more_epochs_is_recorded(digits, tmp_path):
    x, y, _, _ = digits
    run = tmp_path / "run"
    _train(run, (x, y), None, epochs=1)
    _, history = _train(run, (x, y), None, epochs=3, resume=True)
    assert len(history) == 3
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 3 and config["lr"] == 0.01
    assert config["resumes"] == [{"at_epoch": 1, "at_step": 18, "epochs": 3, "epochs_before": 1}]
