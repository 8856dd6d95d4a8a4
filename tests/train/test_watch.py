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


# -- observe(loss, output, target): the task's training metric, counted by the watcher ---------


def _hand_acc(outputs, targets, ignore=None):
    correct = counted = 0
    for out, y in zip(outputs, targets, strict=True):
        keep = torch.ones_like(y, dtype=torch.bool) if ignore is None else y != ignore
        correct += int(((out.argmax(1) == y) & keep).sum())
        counted += int(keep.sum())
    return correct / counted


def test_observe_counts_train_acc_as_a_hand_count(digits):
    """Two epochs of a plain loop whose model returns a dict (read as its 'logits'): each
    epoch's train_acc is the hand count over that epoch's outputs, and the sums start again."""
    x, y, _, _ = digits
    model = small_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watcher = bs.watch(model, opt)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        seen = []
        for _ in range(7):
            index = torch.randint(0, len(x), (50,), generator=g)
            out = {"hidden": torch.zeros(50, 3), "logits": model(x[index])}
            loss = nn.functional.cross_entropy(out["logits"], y[index])
            watcher.observe(loss, out, y[index])
            seen.append((out["logits"].detach().clone(), y[index]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        watcher.end_epoch(val_acc=0.5)
        expected = _hand_acc(*zip(*seen, strict=True))
        assert watcher.history[-1]["train_acc"] == pytest.approx(expected, abs=1e-12)
    assert watcher.history[0]["train_acc"] != watcher.history[1]["train_acc"]
    assert watcher.task["kind"] == "classification"  # "auto" read the integer labels


def test_observe_honours_ignore_index_and_a_given_train_acc():
    """Sequence labels (N, C, T) with padding: positions equal to ignore_index are not
    counted; a train_acc the loop passes itself wins over the watcher's."""
    torch.manual_seed(0)
    model = nn.Conv1d(4, 5, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    task = bs.Task("classification", ignore_index=0)
    watcher = bs.watch(model, opt, task=task)
    x = torch.randn(6, 4, 9)
    y = torch.randint(1, 5, (6, 9))
    y[:, 5:] = 0  # padding
    out = model(x)
    loss = nn.functional.cross_entropy(out, y, ignore_index=0)
    watcher.observe(loss, out, y)
    watcher.end_epoch(val_acc=0.3)
    counted = _hand_acc([out.detach()], [y], ignore=0)
    assert watcher.history[0]["train_acc"] == pytest.approx(counted, abs=1e-12)
    assert counted != pytest.approx(_hand_acc([out.detach()], [y]))  # padding changes it
    watcher.observe(loss, out, y)
    watcher.end_epoch(train_acc=0.123, val_acc=0.3)
    assert watcher.history[1]["train_acc"] == 0.123


def test_observe_gives_regression_mae():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    watcher = bs.watch(model, opt, task="regression")
    total, values = 0.0, 0
    for _ in range(4):
        x, y = torch.randn(8, 3), torch.randn(8, 2) * 5
        out = model(x)
        loss = nn.functional.mse_loss(out, y)
        watcher.observe(loss, out, y)
        total += float((out.detach().double() - y.double()).abs().sum())
        values += y.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
    watcher.end_epoch(val_mae=1.0)
    assert watcher.history[0]["train_mae"] == pytest.approx(total / values, rel=1e-12)
    assert "train_acc" not in watcher.history[0]


def _epochs(model, x, y, xv, yv, *, epochs, watcher, output=True, steps=30):
    opt = watcher.optimizer
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for _ in range(steps):
            index = torch.randint(0, len(x), (64,), generator=g)
            out = model(x[index])
            loss = nn.functional.cross_entropy(out, y[index])
            if output:
                watcher.observe(loss, out, y[index])
            else:
                watcher.observe(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val_acc = float((model(xv).argmax(1) == yv).float().mean())
        watcher.end_epoch(val_acc=val_acc)


def test_overfitting_found_in_a_plain_loop_that_passes_only_val_acc(digits):
    """Random training labels (memorized, val near chance): the loop passes output and target
    to observe and only val_acc to end_epoch, and the gap monitor finds the overfitting."""
    x, y, xv, yv = digits
    x, y = x[:128], torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(1))
    model = small_mlp()
    watcher = bs.watch(model, torch.optim.Adam(model.parameters(), lr=1e-2))
    _epochs(model, x, y, xv, yv, epochs=6, watcher=watcher)
    watcher.close()
    assert "OVERFITTING" in {f.code for f in watcher.findings}
    assert watcher.history[-1]["train_acc"] > 0.9 > 0.5 > watcher.history[-1]["val_acc"]


def test_a_healthy_loop_with_output_and_target_stays_silent(digits):
    x, y, xv, yv = digits
    model = small_mlp()
    watcher = bs.watch(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    _epochs(model, x, y, xv, yv, epochs=4, watcher=watcher)
    watcher.close()
    assert not {"OVERFITTING", "UNDERFITTING"} & {f.code for f in watcher.findings}
    assert all("train_acc" in row for row in watcher.history)


def test_without_output_and_target_end_epoch_adds_nothing(digits):
    """The one-argument observe is unchanged: no train_acc is made up, no gap is judged."""
    x, y, xv, yv = digits
    x, y = x[:128], torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(1))
    model = small_mlp()
    watcher = bs.watch(model, torch.optim.Adam(model.parameters(), lr=1e-2))
    _epochs(model, x, y, xv, yv, epochs=3, watcher=watcher, output=False)
    watcher.close()
    assert all(set(row) == {"epoch", "val_acc"} for row in watcher.history)
    assert "OVERFITTING" not in {f.code for f in watcher.findings}


@pytest.mark.parametrize("task", ["auto", "regression", "multilabel"])
def test_observe_keeps_neither_the_output_nor_its_graph(task):
    """A batch the loop skips (no backward): once the loop drops its references, the input
    the graph saved and the output are freed; the watcher held neither (detached sums)."""
    import gc
    import weakref

    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    watcher = bs.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), task=task)
    refs = []
    for _ in range(3):
        x = torch.randn(5, 4)
        out = model(x)  # the graph saves x for the weight's gradient
        y = torch.randint(0, 3, (5,)) if task == "auto" else torch.rand(5, 3)
        watcher.observe(out.mean(), out, y)
        refs += [weakref.ref(x), weakref.ref(out)]
        del x, out
    gc.collect()
    assert all(r() is None for r in refs)
    watcher.end_epoch()
    assert {"train_acc", "train_mae"} & set(watcher.history[0])


def test_mismatched_output_and_target_is_one_clear_error_and_records_nothing(tmp_path):
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watcher = bs.watch(model, opt, task="regression", run_dir=tmp_path / "run")
    x, y = torch.randn(8, 3), torch.randn(8)
    out = model(x)  # (8, 1) against (8,): MSELoss would broadcast to (8, 8)
    with pytest.raises(ValueError, match=r"shape \(8, 1\).*shape \(8,\).*regression"):
        watcher.observe(nn.functional.mse_loss(out.squeeze(1), y), out, y)
    with pytest.raises(ValueError, match="pass both"):
        watcher.observe(1.0, out)
    with pytest.raises(ValueError, match="pass both"):
        watcher.observe(1.0, target=y)
    watcher.observe(nn.functional.mse_loss(out.squeeze(1), y), out.squeeze(1), y)  # goes on
    watcher.end_epoch()
    watcher.close()
    losses = [r for r in runs.read_metrics(tmp_path / "run") if r["name"] == "loss"]
    assert len(losses) == 1  # the refused calls recorded nothing
    assert watcher.history[0]["train_mae"] > 0
    assert runs.read_json(tmp_path / "run", "config.json")["task"]["kind"] == "regression"


def test_auto_refuses_to_guess_real_valued_targets():
    model = nn.Linear(3, 2)
    watcher = bs.watch(model, torch.optim.SGD(model.parameters(), lr=0.1))
    out, y = model(torch.randn(4, 3)), torch.rand(4, 2)
    with pytest.raises(ValueError, match=r"task=.auto.*\(4, 2\).*float32.*task=.regression."):
        watcher.observe(1.0, out, y)
    with pytest.raises(ValueError, match=r"class labels of shape \(4,\)"):
        watcher.observe(1.0, out, torch.zeros(4, 1, dtype=torch.long))
    assert watcher.task == "auto"
    custom = bs.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), task="custom")
    custom.observe(1.0, out, y)
    custom.end_epoch(val_acc=0.5)
    assert custom.history[0] == {"epoch": 0, "val_acc": 0.5}


@pytest.mark.parametrize("sigmoid", [False, True])
def test_multilabel_reads_logits_or_sigmoid_outputs(sigmoid):
    """Logits are thresholded at 0, a sigmoid's outputs (all in [0, 1] at the first observe)
    at 0.5: the same predictions either way, so the same train_acc as the hand count."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), *([nn.Sigmoid()] if sigmoid else []))
    watcher = bs.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), task="multilabel")
    x, y = torch.randn(32, 4), (torch.rand(32, 6) > 0.5).float()
    out = model(x)
    watcher.observe(1.0, out, y)
    watcher.end_epoch()
    logits = model[0](x).detach()
    assert watcher.history[0]["train_acc"] == pytest.approx(
        float(((logits > 0) == (y > 0.5)).float().mean()), abs=1e-12
    )
    assert watcher.task["outputs"] == ("probabilities" if sigmoid else "logits")
