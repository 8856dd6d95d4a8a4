"""The one divergence rule (babysit.divergence) and every place that uses it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import babysit
from babysit.divergence import FACTOR, MIN_SCALE, SPREAD_WIDTH, diverged, limit, spread
from babysit.tuning.pruners import BreakOutPruner, broke_out


@pytest.mark.parametrize("start", [0.1, 0.69, 2.302585, 10.0, 1e4])
def test_positive_losses_keep_the_lecture_rule(start):
    """For starts >= MIN_SCALE the rule is exactly the first wave's ``loss > 3 × start``."""
    for ratio in (0.0, 1.0, 2.9, 2.999, 3.001, 3.5, 100.0):
        loss = ratio * start
        assert diverged(loss, start) == (loss > 3 * start), (start, ratio)


def test_non_finite_losses_always_diverged():
    for bad in (math.nan, math.inf, -math.inf):
        assert diverged(bad, 2.3) and diverged(bad, None) and diverged(bad, -0.5)


def test_no_start_yet_only_non_finite_counts():
    assert not diverged(1e9, None) and not diverged(1e9, math.nan)


def test_a_negative_cosine_loss_is_not_diverged_at_its_start():
    """-0.1 is "> 3 × -0.1 = -0.3": the literal rule fires at step 0; this one does not."""
    assert -0.1 > 3 * -0.1  # what the first wave's rule concluded
    assert not diverged(-0.1, -0.1)
    assert not diverged(-0.05, -0.1) and not diverged(-0.9, -0.1)  # noise, then learning
    assert diverged(0.5, -0.1)  # from aligned to clearly anti-aligned: blown up


def test_a_loss_starting_near_zero_is_not_diverged_by_noise():
    """A fine-tuned model at 0.001: 0.004 was "4× the start"; the size is at least MIN_SCALE."""
    assert 0.004 > 3 * 0.001
    assert not diverged(0.004, 0.001) and not diverged(0.0, 0.0) and not diverged(0.1, 0.0)
    assert diverged(0.001 + 2 * MIN_SCALE + 1e-6, 0.001)


def test_limit_is_the_boundary():
    for start in (-3.0, -0.1, 0.0, 0.05, 2.3):
        edge = limit(start)
        assert not diverged(edge, start) and diverged(math.nextafter(edge, math.inf), start)
    assert limit(2.0, 4.0) == 8.0 and FACTOR == 3.0


def test_a_measured_start_s_spread_widens_the_limit_only_where_it_exceeds_the_start():
    """size = max(|start|, MIN_SCALE, SPREAD_WIDTH × σ): cross-entropy at init (σ ≤ 0.05 ×
    start) keeps the lecture's 3 × start; a loss near zero with a wide spread does not break
    out on one batch's chance high."""
    assert spread([1.0]) == 0.0 and spread([1.0, 3.0]) == pytest.approx(math.sqrt(2))
    assert spread([1.0, math.nan]) == 0.0 and spread([1.0, math.inf]) == 0.0
    assert spread([1e200, -1e200]) == 0.0  # (v - mean)² overflows: no spread, not a crash
    # a last batch of 1 example is left out while two full ones remain
    assert spread([1.0, 1.2, 0.8, 9.0], [333, 333, 333, 1]) == pytest.approx(0.2)
    assert spread([1.0, 9.0], [333, 1]) == pytest.approx(math.sqrt(32))
    assert limit(2.3, spread=0.1) == limit(2.3) == pytest.approx(6.9)
    assert limit(-0.01, spread=0.2) == pytest.approx(-0.01 + 2 * SPREAD_WIDTH * 0.2)
    assert not diverged(0.49, -0.01, spread=0.2) and diverged(0.49, -0.01)
    assert diverged(1.0, -0.01, spread=0.2)  # still a line: beyond it, a blow-up
    for start, sd in ((-0.5, 0.3), (0.0, 0.05), (1.5, 0.9)):
        edge = limit(start, spread=sd)
        assert not diverged(edge, start, spread=sd)
        assert diverged(math.nextafter(edge, math.inf), start, spread=sd)


def _small_batch_cosine(seed):
    """Outputs of 3, batch 8: the cosine between random 3-vectors is uniform on [-1, 1], so a
    batch's mean loss at init is 0 ± 0.2; the task is learnable (the target is linear in x)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1024, 16, generator=g)
    return x, x[:, :3] @ torch.randn(3, 3, generator=g)


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_is_silent_on_the_batch_noise_of_a_small_batch_negative_loss(seed):
    """Against MIN_SCALE alone the limit was 0.19, a batch reached 0.49 at step 2 at lr 1e-3
    and fit rolled back three times and stopped (LR_TOO_HIGH); and the loss curve, judged
    against its start near 0 rather than its fall to -0.99, was called oscillating."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 3))
    history = babysit.fit(
        model, _small_batch_cosine(seed), loss_fn=_negative_cosine_loss, task="regression",
        epochs=6, lr=1e-3, batch_size=8, progress=False,
    )  # fmt: skip
    assert history.rollbacks == 0 and not {"LR_TOO_HIGH", "LOSS_OSCILLATING"} & history.codes
    assert history["train_loss"][-1] < -0.9  # it learned


def test_the_range_test_s_probes_are_not_broken_out_by_that_noise():
    """The probes judge as fit does: before, every probe 'broke out' and lr_find said to fix
    the model or the data first."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 3))
    result = babysit.lr_find(
        model, _small_batch_cosine(0), loss_fn=_negative_cosine_loss, batch_size=8,
        progress=False,
    )  # fmt: skip
    assert not any(p["why"] == "break-out" for p in result.probes), result.probes
    assert "unstable" not in result.reason


def _negative_cosine_loss(out, y):
    return -nn.functional.cosine_similarity(out, y).mean()


def test_the_pruner_uses_the_rule():
    pruner = BreakOutPruner()
    attrs = {"breakout_initial": -0.1, "breakout_loss": -0.1}
    assert not pruner.broke_out(attrs)  # first wave: -0.1 > -0.3, pruned at once
    assert pruner.broke_out({"breakout_initial": 2.3, "breakout_loss": 7.0})
    assert not pruner.broke_out({"breakout_initial": 2.3, "breakout_loss": 6.8})
    assert broke_out(-0.1, -0.1) is False and broke_out(7.0, 2.3) is True


def _cosine_data(n=256, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, x @ torch.randn(d, 4, generator=g)


def _negative_cosine(out, y):
    """1 - cos - 2, in [-2, 0]: below zero from the start (the literal 3× rule fires at once)."""
    return -nn.functional.cosine_similarity(out, y).mean() - 1.0


def test_fit_does_not_roll_back_a_healthy_negative_loss():
    """A negative-cosine loss starts below zero and falls: healthy means silent."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    history = babysit.fit(
        model, _cosine_data(), loss_fn=_negative_cosine, epochs=3, lr=1e-3, progress=False
    )
    assert "LR_TOO_HIGH" not in history.codes and history.rollbacks == 0
    assert history["train_loss"][-1] < history["train_loss"][0] < 0  # it learned


def test_watch_flags_nothing_on_a_negative_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = _cosine_data()
    watcher = babysit.watch(model, opt)
    for i in range(0, 256, 32):
        loss = _negative_cosine(model(x[i : i + 32]), y[i : i + 32])
        watcher.observe(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not watcher.diverged
    assert "LR_TOO_HIGH" not in {f.code for f in watcher.findings}


def test_lr_find_does_not_stop_at_once_on_a_negative_loss():
    """The range test stops when the running loss exceeds 4× its best: -0.2 > 4 × -0.3."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    result = babysit.lr_find(
        model, _cosine_data(1024), loss_fn=_negative_cosine, end_lr=1e-2, steps=60
    )
    assert result.stopped == "end_lr" and len(result.lrs) == 60
