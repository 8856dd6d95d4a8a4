"""Loss checks (lecture, "babysitting the learning process"): the loss at init is ln C with
regularization off, and turning regularization on makes it go up (for weight decay that is in
the loss; decoupled decay such as AdamW's is judged by the weight norm it settles at)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..findings import Finding
from ..optim import OPTIMIZERS
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
    """Weight decay must act, but not dominate; how it is judged depends on where it acts.

    The optimizer is built on float64 copies of the trainable parameters and asked two things:
    which decay ``λ`` each parameter gets (its param group's ``weight_decay``, so a factory's own
    decay counts too), and whether that decay is *in the loss*. Coupled decay (SGD, Adam,
    RMSprop ``weight_decay``) adds ``λθ`` to the gradient, which is the gradient of ``½λ‖θ‖²``:
    one step with decay ``λ`` and gradient ``g`` equals one step without decay and gradient
    ``g + λθ``. Decoupled decay (AdamW, ``Adam(decoupled_weight_decay=True)``, any optimizer
    that shrinks the weights itself) fails that test, and ``½λ‖θ‖²`` means nothing for it.

    - Coupled: the lecture's rule. ``reg = ½ Σ λ‖θ‖²`` must raise the data loss measurably
      (``reg_min_increase``) and not dominate it (``reg_dominance``).
    - Decoupled: each step shrinks θ by ``ηλθ`` while the gradient moves it by ``Δθ`` (measured
      from a real optimizer step, decay off). Gradient steps that do not line up add like a
      random walk, so the weight norm settles where ``‖θ‖² · 2ηλ = ‖Δθ‖²``, at
      ``θ_eq = ‖Δθ‖ / √(2ηλ)``. REG_TOO_STRONG when the weights at init are more than
      ``decoupled_decay_shrink`` times ``θ_eq``: the decay would wipe out their scale.
    """
    params = [p for p in ctx.model.parameters() if p.requires_grad]
    if not params or (ctx.weight_decay <= 0 and ctx.optimizer_name in OPTIMIZERS):
        return []  # a named optimizer without decay (a factory may carry its own)
    decay = _weight_decay(ctx, params)
    if decay is None or not any(decay.decays):
        return []
    if decay.coupled is None:
        return [
            finding(
                "CHECKS_SKIPPED",
                f"regularization: cannot tell whether the optimizer's weight decay is in the "
                f"loss ({decay.reason})",
                "judge the weight decay by hand: it should raise the loss a little at init",
                {"skipped": {"regularization": decay.reason}},
            )
        ]
    if decay.coupled:
        return _coupled(ctx, params, decay)
    return _decoupled(ctx, params, decay)


@dataclass
class _Decay:
    """What the optimizer does with weight decay, per trainable parameter."""

    decays: list[float]  # λ of each parameter (its param group's weight_decay)
    lrs: list[float]  # η of each parameter
    coupled: bool | None  # in the loss (gradient + λθ), decoupled, or cannot tell (None)
    reason: str = ""


# Coupled decay reproduces the "gradient + λθ" step up to float64 round-off; decoupled decay
# differs by about ηλ per coordinate, > 1e-9 relative for any λ and η in use.
_COUPLED_RTOL = 1e-9


def _weight_decay(ctx: Context, params: list[torch.Tensor]) -> _Decay | None:
    """Build the optimizer on float64 stand-ins for ``params`` and test where its decay acts:
    one step with its decay and gradient ``g``, against one step with decay 0 and gradient
    ``g + λθ``. Equal steps: the decay is the gradient of ``½λ‖θ‖²`` (in the loss)."""
    generator = torch.Generator().manual_seed(ctx.seed)
    try:
        stand_ins, opt = _built(ctx, params)
    except Exception:  # the optimizer itself is checked where training starts
        return None
    g = [torch.randn(q.shape, generator=generator, dtype=torch.float64) for q in stand_ins]
    group_of = {id(q): group for group in opt.param_groups for q in group["params"]}
    decays = [float(group_of[id(q)].get("weight_decay", 0.0) or 0.0) for q in stand_ins]
    lrs = [float(group_of[id(q)].get("lr", 0.0) or 0.0) for q in stand_ins]
    if not any(decays):
        return _Decay(decays, lrs, True)
    try:
        with_decay = _one_step(stand_ins, opt, g)
        stand_ins, opt = _built(ctx, params)
        for group in opt.param_groups:
            group["weight_decay"] = 0.0
        in_gradient = [
            gi + lam * q.detach() for gi, lam, q in zip(g, decays, stand_ins, strict=True)
        ]
        without = _one_step(stand_ins, opt, in_gradient)
    except Exception as err:  # e.g. an optimizer whose step needs a closure (LBFGS)
        return _Decay(decays, lrs, None, f"one step on test values failed: {err}")
    diff = sum(float((a - b).pow(2).sum()) for a, b in zip(with_decay, without, strict=True))
    size = sum(float(a.pow(2).sum()) for a in with_decay)
    return _Decay(decays, lrs, math.sqrt(diff) <= _COUPLED_RTOL * math.sqrt(size) + 1e-300)


def _built(ctx: Context, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], Any]:
    """Small float64 stand-ins and the optimizer built on them. Each keeps its parameter's
    number of dimensions (factories often give 1-d biases and norms no decay) but at most 2
    values along each: the test costs nothing on a large model. All ones: it must not depend
    on the init (a zero-initialised parameter would hide decoupled decay)."""
    stand_ins = [
        torch.ones(tuple(min(d, 2) for d in p.shape), dtype=torch.float64, requires_grad=True)
        for p in params
    ]
    return stand_ins, ctx.optimizer(stand_ins, ctx.lr, ctx.weight_decay)


def _one_step(
    params: list[torch.Tensor], opt: Any, grads: list[torch.Tensor]
) -> list[torch.Tensor]:
    """The change one ``opt.step()`` makes to ``params`` with these gradients."""
    before = [p.detach().clone() for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    opt.step()
    return [p.detach() - b for p, b in zip(params, before, strict=True)]


def _coupled(ctx: Context, params: list[torch.Tensor], decay: _Decay) -> list[Finding]:
    """The lecture's check: ½λ‖θ‖² must raise the data loss, but not dominate it."""
    data_loss = initial_loss(ctx)
    if data_loss is None:
        return []
    reg = 0.5 * sum(
        lam * float(p.detach().double().pow(2).sum())
        for lam, p in zip(decay.decays, params, strict=True)
        if lam
    )
    wd = max(decay.decays)
    evidence = {"data_loss": data_loss, "reg_term": reg, "weight_decay": wd, "decoupled": False}
    if reg > ctx.thresholds["reg_dominance"] * data_loss:
        return [
            finding(
                "REG_TOO_STRONG",
                f"weight decay {wd:g} adds {reg:.3g} to a data loss of "
                f"{data_loss:.3g}: training will mostly shrink the weights",
                f"lower weight_decay (try {wd / 100:g} .. {wd / 10:g}) or search it in log space",
                evidence,
            )
        ]
    if reg < ctx.thresholds["reg_min_increase"] * abs(data_loss):
        return [
            finding(
                "REG_LOSS_NOT_INCREASING",
                f"weight decay {wd:g} raises the loss by only {reg:.2g} "
                f"({reg / max(abs(data_loss), 1e-30):.1e} of it): it has no measurable effect",
                "raise weight_decay (typical: 1e-5 .. 1e-2) or drop it",
                evidence,
            )
        ]
    return []


def _decoupled(ctx: Context, params: list[torch.Tensor], decay: _Decay) -> list[Finding]:
    """Decoupled decay: the weight norm it settles at, against the weights' norm at init."""
    model = ctx.fresh_model()
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        with torch.enable_grad(), dropout_off(model):
            loss = ctx.loss(model)
        grads = torch.autograd.grad(loss, trainable, allow_unused=True)
        stand_ins = [p.detach().clone().requires_grad_(True) for p in trainable]
        opt = ctx.optimizer(stand_ins, ctx.lr, ctx.weight_decay)
        for group in opt.param_groups:
            group["weight_decay"] = 0.0
        steps = _one_step(
            stand_ins,
            opt,
            [
                torch.zeros_like(q) if g is None else g
                for q, g in zip(stand_ins, grads, strict=True)
            ],
        )
    except Exception:  # the loss and the optimizer are reported by their own checks
        return []
    rows = [
        (lam, lr, float(s.pow(2).sum()), float(p.detach().double().pow(2).sum()))
        for lam, lr, s, p in zip(decay.decays, decay.lrs, steps, params, strict=True)
        if lam > 0 and lr > 0
    ]
    if not rows:
        return []
    equilibrium = math.sqrt(sum(step / (2 * lr * lam) for lam, lr, step, _ in rows))
    norm = math.sqrt(sum(sq for *_, sq in rows))
    shrink = norm / max(equilibrium, 1e-300)
    wd = max(lam for lam, *_ in rows)
    if shrink <= ctx.thresholds["decoupled_decay_shrink"]:
        return []
    return [
        finding(
            "REG_TOO_STRONG",
            f"decoupled weight decay {wd:g} ({ctx.optimizer_name}) pulls the weights toward a "
            f"norm of about {equilibrium:.3g}, {shrink:.3g}x below their norm at init "
            f"({norm:.3g}): training will mostly shrink the weights",
            f"lower weight_decay (try {wd / 100:g} .. {wd / 10:g}; AdamW's default is 0.01)",
            {
                "weight_decay": wd,
                "decoupled": True,
                "equilibrium_norm": equilibrium,
                "weight_norm": norm,
                "shrink": shrink,
            },
        )
    ]
