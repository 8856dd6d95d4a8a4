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
pretrained or fine-tuned model already knows something. Decoupled weight decay (AdamW's) is
not in the loss: it is judged by the weight norm it settles at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..findings import Finding
from ..inputs import target_problem
from ..optim import OPTIMIZERS
from ._base import CannotCheck, Context, check, finding
from .data import custom_skip
from .forward import dropout_active, dropout_off

_ELEMENTWISE = (nn.MSELoss, nn.L1Loss, nn.HuberLoss, nn.SmoothL1Loss)


def initial_loss(ctx: Context) -> float | None:
    """The data loss at init on the probe batch (dropout off), cached; None if not finite.

    A model with no dropout active computes exactly this in the probe's forward (the same
    weights, modes and batch, under ``no_grad``), so its loss is read from there instead of
    paying another forward; with dropout active it is recomputed on a fresh copy with dropout
    off (the loss at init is judged without its random masks)."""
    if "initial_loss" not in ctx.cache:
        probed = ctx.probe()
        if probed.loss is not None and not dropout_active(ctx.model):
            loss = probed.loss
        else:
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
        # A loss babysit has no baseline for. When the user named the task (and so knowingly
        # brought their own loss, e.g. a Gaussian NLL for regression) the skip is info: no
        # argument would let it run, and a healthy set-up must stay silent
        # (docs/architecture.md, "Healthy means silent"); otherwise a warning.
        loss_name = getattr(ctx.loss_fn, "__name__", type(ctx.loss_fn).__name__)
        raise CannotCheck(
            f"the loss at init cannot be compared with a constant predictor's for "
            f"{loss_name} on outputs {tuple(out.shape)} and targets "
            f"{tuple(ctx.y.shape)} (known for cross-entropy, NLL, BCE, MSE, L1, Huber, "
            "SmoothL1 on matching shapes)",
            warning=not ctx.cache.get("task_given", False),
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
