"""Loss checks (lecture, "babysitting the learning process"): the loss at init is what an
input-independent predictor gets with regularization off, and turning regularization on makes
it go up.

The lecture's "loss at init ≈ ln C" is the classification case of a general rule: a freshly
initialised network knows nothing about its input, so its loss should be about that of the
*neutral* output (all logits equal: ln C; logits 0 for BCE) and at worst a little above the
*best input-independent predictor*'s (the class prior: its entropy; for MSE the targets' mean:
their variance). Both are computed with the user's own loss object on constant outputs, so
class weights, ``ignore_index`` and label smoothing (whose best loss is the smoothed targets'
entropy, not 0) are honoured exactly. A loss *below* them at init is not a mismatch: a
pretrained or fine-tuned model already knows something.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..findings import Finding
from ..inputs import target_problem
from ._base import CannotCheck, Context, check, finding
from .data import custom_skip
from .forward import dropout_off

_ELEMENTWISE = (nn.MSELoss, nn.L1Loss, nn.HuberLoss, nn.SmoothL1Loss)


def initial_loss(ctx: Context) -> float | None:
    """The data loss at init on the probe batch (dropout off), cached; None if not finite."""
    if "initial_loss" not in ctx.cache:
        model = ctx.fresh_model()
        with torch.no_grad(), dropout_off(model):
            loss = float(ctx.loss(model))
        ctx.cache["initial_loss"] = loss if math.isfinite(loss) else None
    return ctx.cache["initial_loss"]


@dataclass(frozen=True)
class Baseline:
    """Losses of input-independent predictors on the probe batch: ``neutral`` (what an
    uninformed network outputs: equal logits, or zeros for regression) and ``best`` (the best
    constant: the prior, the targets' mean or median)."""

    neutral: float
    best: float
    rule: str  # how ``best`` was computed, for the message


def baseline(ctx: Context, out: torch.Tensor, y: torch.Tensor | None = None) -> Baseline | None:
    """The :class:`Baseline` for the task on targets ``y`` (default: the probe batch's) and
    outputs shaped as ``out``, or ``None`` when the loss gives no such number."""
    y = ctx.y if y is None else y
    kind = ctx.task.kind
    if y is None:
        return None
    with torch.no_grad():
        if kind == "classification":
            return _classification_baseline(ctx, out, y)
        if kind == "multilabel" and y.shape == out.shape and y.is_floating_point():
            return _multilabel_baseline(ctx, out, y)
        if kind == "regression" and isinstance(ctx.loss_fn, _ELEMENTWISE) and y.shape == out.shape:
            return _regression_baseline(ctx, out, y)
    return None


def _constant(values: torch.Tensor, out: torch.Tensor, dim: int) -> torch.Tensor:
    """``values`` (length ``out.shape[dim]``) broadcast along ``dim`` to ``out``'s shape."""
    shape = [out.shape[dim] if i == dim else 1 for i in range(out.dim())]
    return values.to(device=out.device, dtype=out.dtype).view(shape).expand_as(out)


def _loss(ctx: Context, output: torch.Tensor, y: torch.Tensor) -> float:
    return float(ctx.loss_fn(output, y))


def _classification_baseline(ctx: Context, out: torch.Tensor, y: torch.Tensor):
    dim = ctx.task.class_dim % out.dim()
    classes = out.shape[dim]
    if y.is_floating_point():
        prior = y.double().movedim(dim, -1).reshape(-1, classes).mean(0)
    else:
        counted = y if ctx.task.ignore_index is None else y[y != ctx.task.ignore_index]
        if not counted.numel():
            return None
        prior = torch.bincount(counted.reshape(-1), minlength=classes)[:classes].double()
        prior = prior / prior.sum()
    eps = ctx.task.label_smoothing
    smoothed = ((1 - eps) * prior + eps / classes).clamp_min(1e-12)
    log_prior = torch.log_softmax(smoothed.log(), 0)  # log-probabilities: right for CE and NLL
    neutral = torch.full((classes,), -math.log(classes), dtype=torch.float64)
    return Baseline(
        neutral=_loss(ctx, _constant(neutral, out, dim), y),
        best=_loss(ctx, _constant(log_prior, out, dim), y),
        rule="the class prior" + (f" smoothed by {eps:g}" if eps else ""),
    )


def _multilabel_baseline(ctx: Context, out: torch.Tensor, y: torch.Tensor):
    rate = y.double().mean(0).clamp(1e-6, 1 - 1e-6)
    probabilities = isinstance(ctx.loss_fn, nn.BCELoss)
    best = rate if probabilities else torch.logit(rate)
    neutral = torch.full_like(out, 0.5 if probabilities else 0.0)
    return Baseline(
        neutral=_loss(ctx, neutral, y),
        best=_loss(ctx, best.to(out.dtype).expand_as(out), y),
        rule="each label's positive rate",
    )


def _regression_baseline(ctx: Context, out: torch.Tensor, y: torch.Tensor):
    candidates = {"mean": y.mean(0), "median": y.median(0).values}
    losses = {name: _loss(ctx, c.to(out.dtype).expand_as(out), y) for name, c in candidates.items()}
    name = min(losses, key=losses.get)
    return Baseline(
        neutral=_loss(ctx, torch.zeros_like(out), y),
        best=losses[name],
        rule=f"the targets' {name}",
    )


@check("initial_loss", codes=["INIT_LOSS_MISMATCH"], needs_labels=True)
def initial_loss_check(ctx: Context) -> list[Finding]:
    """The loss at init against the input-independent predictors' (module docstring).

    Classification and multilabel (losses in nats): it fires when the loss exceeds the larger
    of the neutral and the best constant output's loss by more than ``init_loss_tolerance``
    (ln C for balanced classes). Regression: when it exceeds ``init_loss_ratio`` times the best
    constant's loss (the target variance for MSE).
    """
    kind = ctx.task.kind
    if kind == "custom":
        raise custom_skip(ctx, "the loss an uninformed model should start at is unknown")
    out = ctx.output()  # CannotCheck when the forward pass failed
    if ctx.y is None:
        return []
    if target_problem(out, ctx.y, ctx.task, ctx.loss_fn) is not None:
        return []  # the labels check (or the loss's own failure) reports it
    classes = ctx.num_classes or (out.shape[ctx.task.class_dim % out.dim()] if out.dim() > 1 else 0)
    if kind == "classification" and classes < 2:
        return []
    base = baseline(ctx, out)
    if base is None:
        raise CannotCheck(
            f"the loss at init cannot be compared with a constant predictor's for "
            f"{type(ctx.loss_fn).__name__} on outputs {tuple(out.shape)} and targets "
            f"{tuple(ctx.y.shape)} (known for cross-entropy, NLL, BCE, MSE, L1, Huber, "
            "SmoothL1 on matching shapes)"
        )
    loss = initial_loss(ctx)
    evidence = {
        "loss": loss,
        "neutral": base.neutral,
        "best_constant": base.best,
        "rule": base.rule,
        "task": ctx.task.to_dict(),
    }
    if kind == "regression":
        return _regression_mismatch(ctx, loss, base, evidence)
    expected = max(base.neutral, base.best)
    evidence.update(expected=expected, num_classes=classes)
    if loss is not None and loss - expected <= ctx.thresholds["init_loss_tolerance"]:
        return []
    shown = "not finite" if loss is None else f"{loss:.3g}"
    if kind == "classification":
        what = (
            f"expected about ln {classes} = {math.log(classes):.3g} for {classes} classes "
            f"(the best constant, {base.rule}, gives {base.best:.3g})"
        )
        cause = "the initial logits are far from uniform"
    else:
        what = (
            f"expected about {base.neutral:.3g} (logits 0; the best constant, {base.rule}, "
            f"gives {base.best:.3g})"
        )
        cause = "the initial outputs are confidently wrong"
    return [
        finding(
            "INIT_LOSS_MISMATCH",
            f"loss at init is {shown}, {what}: {cause}",
            "shrink the last layer's init (babysit.nn.init_model(model, 'he_normal') "
            "keeps it at gain 1) and check the inputs are standardized",
            evidence,
        )
    ]


def _regression_mismatch(
    ctx: Context, loss: float | None, base: Baseline, evidence: dict
) -> list[Finding]:
    ratio_max = ctx.thresholds["init_loss_ratio"]
    if base.best <= 0:
        return []  # constant targets: there is nothing to compare with
    ratio = None if loss is None else loss / base.best
    evidence.update(expected=base.best, ratio=ratio)
    if ratio is not None and ratio <= ratio_max:
        return []
    shown = "not finite" if loss is None else f"{loss:.3g}, {ratio:.3g}×"
    mean = float(ctx.y.double().mean())
    return [
        finding(
            "INIT_LOSS_MISMATCH",
            f"loss at init is {shown} the loss of predicting {base.rule} for every example "
            f"({base.best:.3g}): the initial outputs are far from the targets",
            f"standardize the targets (TARGET_SCALE) or set the last layer's bias to their "
            f"mean ({mean:.3g}), and check the inputs are standardized and the last layer's "
            "init is not too large",
            evidence,
        )
    ]


@check("regularization", codes=["REG_LOSS_NOT_INCREASING", "REG_TOO_STRONG"], needs_labels=True)
def regularization(ctx: Context) -> list[Finding]:
    """Weight decay λ adds ½λ‖θ‖² to the loss: it must raise it, but not dominate it."""
    if ctx.weight_decay <= 0:
        return []
    data_loss = initial_loss(ctx)
    if data_loss is None:
        return []
    params = [p for p in ctx.model.parameters() if p.requires_grad]
    reg = 0.5 * ctx.weight_decay * float(sum(p.detach().double().pow(2).sum() for p in params))
    evidence = {"data_loss": data_loss, "reg_term": reg, "weight_decay": ctx.weight_decay}
    if reg > ctx.thresholds["reg_dominance"] * data_loss:
        return [
            finding(
                "REG_TOO_STRONG",
                f"weight decay {ctx.weight_decay:g} adds {reg:.3g} to a data loss of "
                f"{data_loss:.3g}: training will mostly shrink the weights",
                f"lower weight_decay (try {ctx.weight_decay / 100:g} .. "
                f"{ctx.weight_decay / 10:g}) or search it in log space",
                evidence,
            )
        ]
    if reg < ctx.thresholds["reg_min_increase"] * data_loss:
        return [
            finding(
                "REG_LOSS_NOT_INCREASING",
                f"weight decay {ctx.weight_decay:g} raises the loss by only {reg:.2g} "
                f"({reg / max(data_loss, 1e-30):.1e} of it): it has no measurable effect",
                "raise weight_decay (typical: 1e-5 .. 1e-2) or drop it",
                evidence,
            )
        ]
    return []
