"""Overfit a small sample (lecture: "take ~20 examples, turn regularization off, and make sure
you can drive the loss to ~0 and the training accuracy to 100%").

A network that cannot memorize 20 examples has a bug that no hyperparameter fixes: a
symmetric or zero init, a layer the gradient never reaches, an output that ignores the
input, a loss that does not match the labels. The check asks whether the *model* can fit, not
whether the user's optimizer settings can, so it uses a robust optimizer of its own:
Adam (Kingma & Ba, 2015) at 1e-3, then at 1e-2, full batch, weight decay 0, dropout off.
The user's learning rate is judged by the ``learning_rate`` check instead.

"Fitted" depends on the task (:mod:`babysit.tasks`): classification and multilabel reach
``overfit_accuracy`` (accuracy as :func:`babysit.tasks.hits` counts it: ``class_dim``,
``ignore_index``, probability targets, thresholded multilabel outputs; label smoothing keeps
the loss above 0 but not the accuracy below 100%); regression drives the loss below 5% of the
best constant predictor's on the same examples (for MSE: 5% of the targets' variance, R² ≥
0.95), so a start far from the targets cannot make a poor fit look good. A custom loss has no
known floor: the check is skipped, and said to be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..findings import Finding
from ..outputs import take
from ..tasks import hits
from ._base import Context, check, finding
from .data import custom_skip

OVERFIT_EXAMPLES = 20  # lecture: "~20 examples"
OVERFIT_STEPS = 200  # full-batch Adam steps per attempt
OVERFIT_LRS = (1e-3, 1e-2)  # Adam's default, then 10x for slow starters
# Regression: fitted below 5% of the best constant predictor's loss on the same examples (R² ≥
# 0.95 for MSE). Measured: a sigmoid conv autoencoder on 20 digits reaches 1.9% in 200 steps
# (its outputs cannot reach 0 and 1 exactly); a model that only learns the mean stays at 100%.
REGRESSION_FIT_OF_BEST = 0.05
REGRESSION_FIT = 1e-2  # without a known best constant (another loss): 1% of the loss's start
STALL_WINDOW = 50  # an attempt stops early when the loss fell by < 1% over this many steps
STALL_DECREASE = 0.01
CURVE_POINTS = 50  # evidence curves are downsampled to at most this many points


@dataclass
class _Attempt:
    lr: float
    losses: list[float] = field(default_factory=list)
    accuracy: float | None = None
    fitted: bool = False
    floor: float | None = None  # regression: the best constant predictor's loss


@check("overfit_small_sample", codes=["CANNOT_OVERFIT"], needs_labels=True)
def overfit_small_sample(ctx: Context) -> list[Finding]:
    """Train a fresh copy on ~20 examples; warn when it cannot reach 100% (or ~0 loss)."""
    if ctx.task.kind == "custom":
        raise custom_skip(ctx, "what 'fitted' means (the loss's floor) is unknown")
    if ctx.y is None or ctx.n < 2 or not loss_computable(ctx):
        return []
    batch = _examples(ctx)
    floor = _floor(ctx, batch)
    attempts = []
    for lr in OVERFIT_LRS:
        attempt = _attempt(ctx, batch, lr, floor)
        attempts.append(attempt)
        if attempt.fitted:
            return []
    return [_cannot_overfit(ctx, attempts, min(ctx.n, OVERFIT_EXAMPLES))]


def _examples(ctx: Context) -> Any:
    """The first ``OVERFIT_EXAMPLES`` examples of the probe batch that have a target the loss
    counts (an example whose every position is ``ignore_index`` teaches nothing, and a batch of
    only such examples has a NaN loss)."""
    y, ignore = ctx.y, ctx.task.ignore_index
    if (
        ctx.task.kind == "classification"
        and ignore is not None
        and isinstance(y, torch.Tensor)
        and not y.is_floating_point()
        and y.dim() > 0
        and len(y) == ctx.n  # one target row per example of the batch (also under forward=)
    ):
        keep = (y != ignore).reshape(len(y), -1).any(1)
        if bool(keep.any()) and not bool(keep.all()):
            kept = keep.nonzero().flatten()[:OVERFIT_EXAMPLES]
            return take(ctx.batch, kept)
    return ctx.take(OVERFIT_EXAMPLES)


def loss_computable(ctx: Context) -> bool:
    """Whether ``loss_fn`` gives a scalar on the probe batch's output. When the forward pass
    or the loss fails (FORWARD_FAILED / LOSS_FAILED report the cause), this raises
    :class:`~babysit.checks._base.CannotCheck`, so ``diagnose`` lists the check as not run."""
    ctx.require_loss()
    return True


def _attempt(ctx: Context, batch: Any, lr: float, floor: float | None = None) -> _Attempt:
    """Up to ``OVERFIT_STEPS`` full-batch Adam steps on a fresh copy, stopping once fitted or
    once stalled (the loss fell by < 1% over the last ``STALL_WINDOW`` steps)."""
    torch.manual_seed(ctx.seed)
    model = _without_dropout(ctx.fresh_model().to(ctx.device))
    params = [p for p in model.parameters() if p.requires_grad]
    attempt = _Attempt(lr, floor=floor)
    if not params:
        return attempt
    opt = _adam(params, lr)
    for _ in range(OVERFIT_STEPS + 1):
        out, y = ctx.run(model, batch)
        loss = ctx.loss_fn(out, y)
        value = float(loss.detach())
        attempt.losses.append(value)
        if not math.isfinite(value):
            break
        attempt.accuracy = _accuracy(ctx, out, y)
        if _fitted(ctx, attempt):
            attempt.fitted = True
            break
        if len(attempt.losses) > OVERFIT_STEPS or _stalled(attempt.losses):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return attempt


def _adam(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel where torch supports it (~20% faster on a 1M-param MLP)."""
    fusable = all(
        p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64)
        for p in params
    )
    if fusable:
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, ValueError, TypeError):  # a torch without the fused kernel
            pass
    return torch.optim.Adam(params, lr=lr)


def _stalled(losses: list[float]) -> bool:
    """No progress: the loss fell by less than 1% over the last ``STALL_WINDOW`` steps."""
    if len(losses) <= STALL_WINDOW:
        return False
    then, now = losses[-STALL_WINDOW - 1], losses[-1]
    return now > (1 - STALL_DECREASE) * then


def _without_dropout(model: nn.Module) -> nn.Module:
    """Train mode (batch norm keeps using batch statistics) with every dropout switched off."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    return model


def _accuracy(ctx: Context, out: torch.Tensor, y: torch.Tensor) -> float | None:
    """Accuracy as the task counts it (:func:`babysit.tasks.hits`); ``None`` if it does not
    apply (regression, shapes that do not fit, every position ignored)."""
    counted = hits(out, y, ctx.task, probabilities=isinstance(ctx.loss_fn, nn.BCELoss))
    if counted is None:
        return None
    correct, mask = counted
    n = int(mask.sum())
    return float((correct & mask).sum()) / n if n else None


def _floor(ctx: Context, batch: Any) -> float | None:
    """Regression: the best constant predictor's loss on the overfit examples (None when the
    loss gives no such number: then the fit is judged against the loss's start)."""
    if ctx.task.kind != "regression":
        return None
    from .loss import baseline

    try:
        with torch.no_grad():
            out, y = ctx.run(ctx.fresh_model(), batch)
        base = baseline(ctx, out, y)
    except Exception:  # the loss check reports what fails
        return None
    return base.best if base is not None and base.best > 0 else None


def _fitted(ctx: Context, attempt: _Attempt) -> bool:
    """Classification, multilabel: accuracy >= ``overfit_accuracy``; regression: loss below
    5% of the best constant predictor's (else 1% of its start)."""
    if attempt.accuracy is not None:
        return attempt.accuracy >= ctx.thresholds["overfit_accuracy"]
    start, now = attempt.losses[0], attempt.losses[-1]
    if attempt.floor is not None:
        return now <= REGRESSION_FIT_OF_BEST * attempt.floor or now <= 1e-8
    return now <= REGRESSION_FIT * start or now <= 1e-8


def _cannot_overfit(ctx: Context, attempts: list[_Attempt], n: int) -> Finding:
    best = min(attempts, key=_final)
    if not best.losses:
        message = "the model has no trainable parameters: it cannot fit even 20 examples"
    else:
        what = (
            f"{best.accuracy:.0%} training accuracy"
            if best.accuracy is not None
            else f"a loss of {_final(best):.3g} (from {best.losses[0]:.3g}"
            + (
                f"; predicting the targets' best constant gives {best.floor:.3g})"
                if best.floor is not None
                else ")"
            )
        )
        tried = " and ".join(f"{a.lr:g}" for a in attempts)
        message = (
            f"the model cannot overfit {n} examples: with up to {OVERFIT_STEPS} full-batch "
            f"Adam steps (lr {tried}, no weight decay, no dropout) the best run reached {what}"
        )
    return finding(
        "CANNOT_OVERFIT",
        message,
        "fix this before tuning anything: check the init (not zeros or constant), that the "
        "gradient reaches every layer, that the output depends on the input, that the loss "
        "matches the labels, and that the model has enough capacity",
        {
            "examples": n,
            "steps": OVERFIT_STEPS,
            "final_loss": _plain_loss(best.losses, -1),
            "initial_loss": _plain_loss(best.losses, 0),
            "accuracy": best.accuracy,
            "target_accuracy": (
                ctx.thresholds["overfit_accuracy"] if best.accuracy is not None else None
            ),
            "best_constant_loss": best.floor,
            "task": ctx.task.to_dict(),
            "attempts": [
                {
                    "lr": a.lr,
                    "steps": max(len(a.losses) - 1, 0),
                    "final_loss": _plain_loss(a.losses, -1),
                    "accuracy": a.accuracy,
                }
                for a in attempts
            ],
            "loss_curve": downsample(best.losses),
        },
    )


def _final(attempt: _Attempt) -> float:
    """The last loss; +inf when there is none or it is NaN (for ranking attempts)."""
    last = attempt.losses[-1] if attempt.losses else math.inf
    return last if math.isfinite(last) else math.inf


def _plain_loss(losses: list[float], index: int) -> float | None:
    """``losses[index]`` for JSON evidence: ``None`` when missing or not finite."""
    if not losses or not math.isfinite(losses[index]):
        return None
    return losses[index]


def downsample(values: list[float], points: int = CURVE_POINTS) -> list[float]:
    """At most ``points`` values, evenly spaced, first and last kept."""
    if len(values) <= points:
        return list(values)
    step = (len(values) - 1) / (points - 1)
    return [values[round(k * step)] for k in range(points)]
