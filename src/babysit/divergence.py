"""The divergence rule: when has a loss blown up? One rule for every place that breaks out.

The lecture's rule of thumb is "if the cost is ever > 3 × the original cost, break out early".
Read literally it only works for losses that start well above zero: a loss that starts at
``-0.1`` (a negative cosine similarity) is "above 3 × its start" (``-0.3``) at once, and a loss
that starts at ``0.001`` (a fine-tuned model) is "diverged" by ordinary batch noise at ``0.004``.

babysit reads it as "the loss rose above its start by more than ``factor - 1`` times the start's
size", with the size never taken below ``MIN_SCALE``:

    diverged  ⇔  loss is NaN/±Inf
              or  loss − start > (factor − 1) · max(|start|, MIN_SCALE)

For a loss that starts at or above ``MIN_SCALE`` (cross-entropy at init is ln C ≥ 0.69, an MSE on
standardized targets ≈ 1) this is exactly ``loss > factor · start``, the lecture's rule. Below
it, the start's size is replaced by ``MIN_SCALE``: the rule no longer fires on noise around a
loss near zero, and a loss below zero is judged by how far it rose, not by its sign. A loss that
really diverges grows without bound (or turns NaN), so it still crosses the line.

Where the start was measured over several mini-batches (``fit``, the range test's probes), their
spread counts too: the size is at least ``SPREAD_WIDTH`` × the standard deviation ``σ`` of those
batches' losses,

    size = max(|start|, MIN_SCALE, SPREAD_WIDTH · σ)

so one mini-batch's chance high is not a break-out: the line lies ``(factor − 1) · 2.5 = 5`` σ
above the start, beyond the largest of ~10⁵ normal deviations (√(2 ln 10⁵) ≈ 4.8). The case that
forced it: a negative-cosine loss at batch 8 starts at −0.01 ± 0.20 (a cosine between random
3-vectors is uniform on [−1, 1]); against ``MIN_SCALE`` its limit was 0.19, a batch reached 0.49
at step 2 at lr 1e-3, and ``fit`` rolled back three times and stopped, "LR_TOO_HIGH", on a
loss that cannot blow up at all. Where it changes nothing: cross-entropy starts with σ ≤ 0.05 ×
its start (2.5 σ ≤ 0.33 × start) in every family of ``benchmarks/lr_families.py``, so the
lecture's ``3 × start`` stands; a regression MLP at batch 32 (σ ≈ 0.25–0.6 × start) is judged
against a larger size on its noisiest seeds (starts up to 1.9 ± 0.8), where its real
break-outs are spikes of 5–25 × the start (``benchmarks/lr_find.py``'s break-out flags,
re-checked by retraining: 7 of 869 changed, 6 on that regression).

Who uses it: ``fit``'s ``LossGuard`` (and so ``watch``), the search's break-out pruner and its
trial reporter (:mod:`babysit.tuning.pruners`), the LR range test (with ``factor=4`` against the
best running loss, as fastai and Lightning stop) and ``diagnose``'s short learning-rate run.
The factor is the threshold ``loss_explosion`` (:mod:`babysit.thresholds`).

>>> diverged(7.0, 2.3), diverged(6.8, 2.3)
(True, False)
>>> diverged(-0.1, -0.1), diverged(0.5, -0.1)
(False, True)
>>> diverged(float("nan"), 2.3)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["FACTOR", "MIN_SCALE", "SPREAD_WIDTH", "START_BATCHES", "diverged", "limit", "spread"]

FACTOR = 3.0  # lecture: "cost > 3 × original cost: break out early"
# A loss whose start lies within 0.1 of zero is judged against a size of 0.1: below that, batch
# noise of a nearly-fitted model is of the order of the start itself. 0.1 is well below the
# starting loss of any model trained from scratch with cross-entropy (ln 2 = 0.69 for 2 classes).
MIN_SCALE = 0.1
# The start, where babysit owns the training (fit, the range test's probes): the mean loss of
# the initial weights over this many mini-batches, not the first mini-batch's loss alone, which
# a noisy loss (a regression at batch 32) makes a chance low (docs/architecture.md, "The
# divergence rule").
START_BATCHES = 8


# The measured start's size is at least this many standard deviations of its batches' losses.
SPREAD_WIDTH = 2.5


def spread(losses: Sequence[float], sizes: Sequence[int] | None = None) -> float:
    """The standard deviation of the start's mini-batch losses: 0 for fewer than two, or when
    one is not finite (that start is not finite either, and only NaN/Inf counts against it) or
    the result is not. With ``sizes`` (each batch's examples), a smaller last batch is left out
    when two full ones remain: the mean loss of a few examples swings far wider than a full
    batch's (a batch of 1 example after three of 333 tripled σ on a regression MLP)."""
    if sizes is not None and len(sizes) == len(losses):
        full = [v for v, n in zip(losses, sizes, strict=True) if n == max(sizes)]
        losses = full if len(full) >= 2 else losses
    if len(losses) < 2 or not all(math.isfinite(v) for v in losses):
        return 0.0
    mean = math.fsum(losses) / len(losses)
    try:
        sd = math.sqrt(math.fsum((v - mean) ** 2 for v in losses) / (len(losses) - 1))
    except OverflowError:  # losses near the float64 limit
        return 0.0
    return sd if math.isfinite(sd) else 0.0


def limit(
    start: float, factor: float = FACTOR, *, min_scale: float = MIN_SCALE, spread: float = 0.0
) -> float:
    """The loss above which :func:`diverged` says True, for a finite ``start``."""
    return start + (factor - 1.0) * max(abs(start), min_scale, SPREAD_WIDTH * spread)


def diverged(
    loss: float,
    start: float | None,
    factor: float = FACTOR,
    *,
    min_scale: float = MIN_SCALE,
    spread: float = 0.0,
) -> bool:
    """Whether ``loss`` has diverged relative to ``start`` (see the module docstring).

    Args:
        loss: the latest loss (a NaN/Inf loss has always diverged).
        start: the reference: the loss at the start (the mean over ``START_BATCHES``
            mini-batches at the initial weights where it was measured, else the first finite
            loss), or the best running loss for the range test's stop; ``None`` or non-finite
            when none was seen yet (then only NaN/Inf counts).
        factor: the lecture's 3; must be > 1.
        min_scale: the smallest size the start is given (see :data:`MIN_SCALE`).
        spread: the standard deviation of the mini-batch losses the start was measured over
            (:func:`spread`; 0 for a start read off one loss): the size is at least
            ``SPREAD_WIDTH`` times it.
    """
    if not math.isfinite(loss):
        return True
    if start is None or not math.isfinite(start):
        return False
    return loss > limit(start, factor, min_scale=min_scale, spread=spread)
