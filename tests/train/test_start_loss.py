"""The loss guard's start: the mean loss of the initial weights over several mini-batches where
babysit owns the training (``fit``, the range test's probes), the first loss under ``watch``
(docs/architecture.md, "The divergence rule")."""

from __future__ import annotations

import re
import statistics

import pytest
import torch
from torch import nn

import babysit as bs
from babysit import range_test as rt
from babysit.divergence import START_BATCHES, diverged
from babysit.train import Callback
from babysit.train.monitors import LossGuard

from .conftest import small_mlp


class Losses(Callback):
    """Records every step's loss; acts on nothing."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_loss(self, trainer, loss: float) -> None:
        self.losses.append(loss)


def _regression_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return bs.nn.mlp(10, [64, 64], 1)


REGRESSION = {"optimizer": "sgd", "batch_size": 32, "loss_fn": nn.MSELoss(), "progress": False}


def test_a_low_first_mini_batch_does_not_make_a_healthy_run_break_out(friedman):
    """A plain-SGD regression MLP at lr 1e-3 (a decade and more below where it trains best):
    its first mini-batch's loss happens to be low (0.46, where the untouched model's batches
    average ~1.2), and a later one rises above 3x it. Against the first loss fit reported
    LR_TOO_HIGH and cut the lr tenfold; against the measured start it is silent."""
    x, y = friedman
    kw = {"lr": 1e-3, "epochs": 3, "seed": 4, **REGRESSION}
    record = Losses()
    bs.fit(_regression_mlp(4), (x, y), monitors=None, callbacks=[record], **kw)
    first = record.losses[0]
    assert any(diverged(v, first) for v in record.losses)  # the first-loss rule would fire
    history = bs.fit(_regression_mlp(4), (x, y), **kw)
    assert "LR_TOO_HIGH" not in history.codes and history.rollbacks == 0


def test_measuring_the_start_leaves_the_training_as_it_was(mnist1d):
    """The start is measured on the model itself, in training mode: the dropout draws and the
    BatchNorm statistics it takes are put back, so fit with the guard trains exactly as fit
    without monitors."""
    x, y, _, _ = mnist1d

    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Linear(40, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10)
        )

    kw = {"lr": 1e-3, "epochs": 2, "batch_size": 64, "progress": False, "seed": 1}
    guarded, plain = model(), model()
    record = Losses()
    bs.fit(guarded, (x, y), monitors=[LossGuard()], callbacks=[record], **kw)
    bs.fit(plain, (x, y), monitors=None, **kw)
    for a, b in zip(guarded.state_dict().values(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert len(record.losses) == 2 * len(range(0, len(x), 64))


def test_a_diverging_run_is_still_caught_in_its_first_steps(digits):
    """The measured start comes from the initial weights, not from steps already taken at the
    lr being judged: a digits MLP with Adam at lr 0.3 is caught within its first steps (a mean
    over the first training steps, tried and withdrawn, caught it at step 49)."""
    x, y, _, _ = digits
    history = bs.fit(
        small_mlp(), (x, y), optimizer="adam", lr=0.3, epochs=1, progress=False, seed=0
    )
    blow_up = next(f for f in history.findings if f.code == "LR_TOO_HIGH")
    step = int(re.search(r"at step (\d+)", blow_up.message).group(1))
    assert step <= 3
    assert blow_up.evidence["initial_loss_batches"] == START_BATCHES
    assert blow_up.evidence["initial_loss"] == pytest.approx(2.3, abs=0.3)  # ≈ ln 10


def test_watch_starts_from_the_first_loss_it_sees():
    """watch cannot run the user's model before the user's first step: its start is the first
    loss (one mini-batch), and the finding says so."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watcher = bs.watch(model, opt, progress=False)
    x = torch.randn(8, 4)
    for value in (1.0, 1.5, 4.0):  # 4.0 > 3 x the first
        opt.zero_grad()
        loss = (model(x) * 0).sum() + value
        watcher.observe(loss)
        loss.backward()
        opt.step()
    blow_up = next(f for f in watcher.findings if f.code == "LR_TOO_HIGH")
    assert blow_up.evidence["initial_loss"] == 1.0
    assert blow_up.evidence["initial_loss_batches"] == 1


def test_a_resumed_guard_keeps_its_start():
    """A start loaded from a checkpoint is kept: the resumed run's weights are not the
    initial ones, so measuring again would judge against a trained model's loss."""

    class Asked:
        def __init__(self) -> None:
            self.thresholds = {"loss_explosion": 3.0}
            self.asked = 0

        def start_loss(self):
            self.asked += 1
            return (0.5, START_BATCHES, 0.1)

    guard, session = LossGuard(), Asked()
    guard.load_state_dict({"initial_loss": 2.0, "start_batches": START_BATCHES})
    guard.on_fit_start(session)
    assert guard.initial_loss == 2.0 and session.asked == 0
    fresh = LossGuard()
    fresh.on_fit_start(session)
    assert fresh.initial_loss == 0.5 and fresh.start_batches == START_BATCHES
    assert fresh.start_spread == 0.1 and guard.start_spread == 0.0  # saved before spreads


def test_the_probes_start_is_the_mean_loss_of_their_first_batches(friedman):
    """The range test's probes judge against the same start: the mean loss of the initial
    weights over the first batches every probe draws (a probe at a negligible lr sees them)."""
    x, y = friedman
    setup = rt._Setup(x, y, lambda p, lr: torch.optim.SGD(p, lr=lr), nn.MSELoss(), 32)
    start, spread = rt._start_loss(_regression_mlp(0), setup, 1e-3, 0, START_BATCHES)
    still = rt._probe(_regression_mlp(0), setup, 1e-12, START_BATCHES, 0, (start, spread))
    mean = sum(still["losses"]) / len(still["losses"])
    assert start == pytest.approx(mean, rel=1e-5)
    assert spread == pytest.approx(statistics.stdev(still["losses"]), rel=1e-4)
    assert min(still["losses"]) < 0.8 * start < max(still["losses"])  # the batches do differ


def test_a_guard_that_rebuilds_its_rank_starts_drops_the_measured_spread():
    """Resumed on another world size, every rank starts from its own first loss: a start of
    one loss, with no spread (the saved one belonged to the measured start)."""
    guard = LossGuard()
    guard.load_state_dict({"initial_loss": 2.0, "start_batches": START_BATCHES,
                           "start_spread": 0.4})  # fmt: skip
    assert guard._starts((2.1, 2.2)) == [2.1, 2.2]
    assert guard.start_spread == 0.0 and guard.start_batches == 1
