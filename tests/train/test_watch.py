"""babysit.watch in a user's own loop: same monitors, same findings, no change to the loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import babysit as bs
from babysit import runs

from .conftest import small_mlp
from .test_monitors import NaNAt


def _loop(model, opt, x, y, *, steps, watcher=None, batch=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(0, len(x), (batch,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[index]), y[index])
        if watcher is not None:
            watcher.observe(loss)
        loss.backward()
        opt.step()


def test_watch_changes_nothing_in_the_loop(digits):
    """Dropout draws from torch's generator: a watcher that drew any random number, moved a
    parameter or touched a gradient would change the result."""
    x, y, _, _ = digits
    plain, watched = small_mlp(dropout=0.3), small_mlp(dropout=0.3)
    torch.manual_seed(1)
    _loop(plain, torch.optim.Adam(plain.parameters()), x, y, steps=120)
    torch.manual_seed(1)
    opt = torch.optim.Adam(watched.parameters())
    with bs.watch(watched, opt, monitors="all") as watcher:
        _loop(watched, opt, x, y, steps=120, watcher=watcher)
    for a, b in zip(plain.parameters(), watched.parameters(), strict=True):
        assert torch.equal(a, b)
    assert watcher.step == 120
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def test_watch_reports_nan_in_its_step_once(digits):
    x, y, _, _ = digits
    model = NaNAt(small_mlp(), k=17)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    watcher = bs.watch(model, opt)
    _loop(model, opt, x, y, steps=40, watcher=watcher)  # the loop ignores diverged: NaN stays
    watcher.close()
    nan = [f for f in watcher.findings if f.code == "NAN_LOSS"]
    assert len(nan) == 1 and nan[0].step == 17
    assert watcher.diverged


def test_watch_flags_a_too_low_learning_rate(digits, tmp_path):
    x, y, _, _ = digits
    model = small_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-5)
    with bs.watch(model, opt, run_dir=tmp_path / "run") as watcher:
        _loop(model, opt, x, y, steps=150, watcher=watcher)
    assert {"LR_TOO_LOW", "UPDATE_RATIO_LOW"} <= {f.code for f in watcher.findings}
    rows = runs.read_metrics(tmp_path / "run")
    assert sum(r["name"] == "loss" for r in rows) == 150
    assert any(r["name"].startswith("update_ratio/") for r in rows)
    assert runs.read_json(tmp_path / "run", "config.json")["kind"] == "watch"
    assert len(runs.read_json(tmp_path / "run", "findings.json")["findings"]) >= 2


def test_steps_skipped_by_a_grad_scaler_are_not_nan(digits):
    """AMP: a GradScaler whose scale overflows the gradients skips optimizer.step() (and halves
    the scale). The loss itself is finite: no NAN_LOSS, and the skipped steps are not counted."""
    x, y, _, _ = digits
    model = small_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=5e-4)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)
    g = torch.Generator().manual_seed(0)
    with bs.watch(model, opt) as watcher:
        for _ in range(30):
            index = torch.randint(0, len(x), (64,), generator=g)
            opt.zero_grad()
            loss = 100 * nn.functional.cross_entropy(model(x[index]), y[index])
            watcher.observe(loss)
            scaler.scale(loss).backward()  # 100 * 2.3 * 2**127 overflows float32: inf grads
            scaler.step(opt)
            scaler.update()
    assert scaler.get_scale() < 2.0**127  # some steps were skipped
    assert 0 < watcher.step < 30
    assert "NAN_LOSS" not in {f.code for f in watcher.findings}


def test_end_epoch_feeds_the_gap_monitor():
    model = nn.Linear(4, 2)
    watcher = bs.watch(model, torch.optim.SGD(model.parameters(), lr=0.1))
    watcher.end_epoch(train_acc=0.99, val_acc=0.6)
    watcher.end_epoch(train_acc=1.0, val_acc=0.62)
    watcher.close()
    watcher.close()  # idempotent
    assert [f.code for f in watcher.findings] == ["OVERFITTING"]
    assert watcher.history[1] == {"epoch": 1, "train_acc": 1.0, "val_acc": 0.62}


def test_watch_refuses_what_it_cannot_hook():
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        bs.watch(model, "adam")
    with pytest.raises(TypeError, match=r"nn\.Module"):
        bs.watch("model", torch.optim.SGD(model.parameters(), lr=0.1))
