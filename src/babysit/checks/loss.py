"""Loss checks (lecture, "babysitting the learning process"): the loss at init is ln C with
regularization off, and turning regularization on makes it go up."""

from __future__ import annotations

import math

import torch

from ..findings import Finding
from ._base import Context, check, finding
from .forward import dropout_off


def initial_loss(ctx: Context) -> float | None:
    """The data loss at init on the probe batch (dropout off), cached; None if not finite."""
    if "initial_loss" not in ctx.cache:
        model = ctx.fresh_model()
        with torch.no_grad(), dropout_off(model):
            loss = float(ctx.loss(model))
        ctx.cache["initial_loss"] = loss if math.isfinite(loss) else None
    return ctx.cache["initial_loss"]


@check("initial_loss", codes=["INIT_LOSS_MISMATCH"], needs_labels=True)
def initial_loss_check(ctx: Context) -> list[Finding]:
    """With small random weights all C classes are equally likely: loss = -ln(1/C) = ln C."""
    classes = ctx.output_width()
    if not ctx.classification or not classes or classes < 2 or ctx.y is None:
        return []
    if ctx.y.is_floating_point() or int(ctx.y.min()) < 0 or int(ctx.y.max()) >= classes:
        return []  # the labels check reports these
    loss = initial_loss(ctx)
    expected = math.log(classes)
    if loss is not None and abs(loss - expected) <= ctx.thresholds["init_loss_tolerance"]:
        return []
    shown = "not finite" if loss is None else f"{loss:.3g}"
    return [
        finding(
            "INIT_LOSS_MISMATCH",
            f"loss at init is {shown}, expected about ln {classes} = {expected:.3g} for "
            f"{classes} classes: the initial logits are far from uniform",
            "shrink the last layer's init (babysit.nn.init_model(model, 'he_normal') "
            "keeps it at gain 1) and check the inputs are standardized",
            {"loss": loss, "expected": expected, "num_classes": classes},
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
