"""Backward checks: does every parameter get a gradient, is it the right one, and does each
example's output depend on that example alone.

- ``gradient_flow``: one backward of the loss on the probe batch. Trainable parameters that get
  no gradient (detached, unused), frozen ones (named, as context), and the ratio of the first
  to the last weight layer's gradient norm, the symptom AUTOTRAINER (Zhang et al., ICSE'21)
  uses for vanishing and exploding gradients.
- ``gradient_check``: the analytic gradient against central finite differences in float64,
  along a few random directions (CS231n notes, "Gradient checks"; gradcheck's fast mode), in
  the default set; ``gradient_check_coordinates`` (slow) checks sampled coordinates of every
  parameter tensor.
- ``symmetric_init``: units with identical weights *and* identical gradients never separate.
- ``batch_independence``: the gradient of example i's output with respect to example j's input
  must be zero for j != i (Karpathy, "A Recipe for Training Neural Networks", 2019: "use
  backprop to chart dependencies").

None of them changes ``ctx.model``: gradients are taken with :func:`torch.autograd.grad` (no
``.grad`` is written), the train/eval mode and the buffers (batch-norm running statistics) are
restored, and the float64 gradient check works on a fresh copy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..findings import Finding
from ..gradient_flow import SameInput, measured_layer, vanishing_or_exploding
from ..modes import eval_mode, kept_modes
from ..nn.activations import weight_layers
from ..outputs import read_output
from ._base import CannotCheck, Context, check, finding
from .forward import activation_snapshot, dropout_off

__all__ = [
    "batch_independence",
    "gradient_check",
    "gradient_check_coordinates",
    "gradient_flow",
    "recurrent_saturation",
    "symmetric_init",
]

# Gradient check (CS231n notes): a few examples keep it cheap; float64 central differences have
# truncation error O(eps^2) and round-off O(1e-16 |L| / eps), both far below the 1e-4 relative
# error threshold at eps = 1e-6 for a unit direction. Several directions, judged by majority,
# make a crossed ReLU kink (a finite difference straddling a non-differentiable point) harmless.
GRADCHECK_EXAMPLES = 4
GRADCHECK_DIRECTIONS = 3
GRADCHECK_EPS = 1e-6
# Where most directions cross a kink (ReLU inputs exactly 0 behind a zero-initialised layer),
# the check moves to a nearby generic point: weights jittered by this fraction of their scale.
GRADCHECK_JITTER = 1e-2
# The per-coordinate check (checks="all") samples this many coordinates of each tensor.
GRADCHECK_COORDINATES = 8
# Relative errors are taken against at least this multiple of the round-off in the numeric
# derivative (machine epsilon times |L| over eps), so a flat loss is not judged on noise.
_ROUNDOFF_MARGIN = 1e3
_ROUNDOFF_NOISE = 10  # measured |a - n| up to 0.6 eps|L|/eps_step (4e10 MSE loss, 3 directions)
# One-sided differences that disagree by more than this (relative) mark a kink within ε; on a
# smooth loss they differ by ε·L'' (~1e-6 relative at ε = 1e-6, 1e-3 at the most curved).
_SMOOTH_RTOL = 1e-2

# Batch independence: a handful of examples, one backward per example (Karpathy, 2019).
BATCH_EXAMPLES = 8

_MAX_NAMED = 8  # names listed in a message; the evidence lists them all


def flow_layer(module: nn.Module) -> bool:
    """The layers whose weight-gradient norms the gradient-flow rule compares, in forward
    order: Linear/Conv and transformers' Conv1D (:func:`babysit.gradient_flow.measured_layer`),
    and recurrent layers (RNN/LSTM/GRU, their input and recurrent weights together)."""
    return isinstance(module, nn.RNNBase) or measured_layer(module)


# ---------------------------------------------------------------------------------------------
# gradient_flow
# ---------------------------------------------------------------------------------------------


@check(
    "gradient_flow",
    codes=["PARAMS_WITHOUT_GRAD", "VANISHING_GRADIENTS", "EXPLODING_GRADIENTS", "FROZEN_PARAMS"],
    needs_labels=True,
)
def gradient_flow(ctx: Context) -> list[Finding]:
    """One backward of the loss on the probe batch: who gets no gradient, and how the gradient
    norm changes from the last weight layer to the first.

    AUTOTRAINER (Zhang et al., ICSE'21) compares the weight-gradient norms of the first and the
    last layer: vanishing when ``‖g_first‖ / ‖g_last‖ < 1e-3`` and ``‖g_first‖ < 1e-4``,
    exploding when ``‖g_first‖ / ‖g_last‖ > 70``; a NaN/Inf gradient from a finite loss is
    exploding too. "First" and "last" are in the order the forward pass runs the Linear/Conv
    and recurrent layers (:func:`flow_layer`): an embedding -> LSTM -> Linear classifier compares
    the LSTM's weights with the head's, a stack of recurrent layers its first with its last.
    Layers that read the same input tensor are one depth group, judged by its largest member
    (:mod:`babysit.gradient_flow`): a BERT's first query projection (‖g‖ ~ 3e-6 at init, as
    attention logits start near-uniform) is judged with the value projection beside it.

    The ratio is across depth, not through time. Through time, the gradient reaching the first
    step of a sequence is ~1e-8 of the last step's for default-init LSTM, GRU and tanh RNN
    classifiers on 40-step MNIST-1D sequences alike: at init every recurrent net forgets, and
    they train anyway, so a rule on it would fire on every healthy recurrent model.
    """
    model = ctx.model
    found = _frozen(model)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        return found
    order, loss, grads = flow_pass(ctx)
    if loss is None:
        return found
    missing = [name for (name, _), g in zip(trainable, grads, strict=True) if g is None]
    if missing:
        found.append(_no_grad_finding(missing, model))
    stuck = _stuck_at_zero(ctx, trainable, grads)
    if stuck:
        found.append(_no_grad_finding(stuck, model, stuck_at_zero=True))
    grad_of = {id(p): g for (_, p), g in zip(trainable, grads, strict=True)}
    norms = _weight_grad_norms(model, order, grad_of)
    ctx.cache["weight_grad_norms"] = norms
    blocked = _behind_zero_layers(model, order, norms)
    judged = {name: norm for name, norm in norms.items() if name not in blocked}
    if torch.isfinite(loss.detach()).all():
        found += _nonfinite_gradients(trainable, grads) or vanishing_or_exploding(
            judged, ctx.thresholds, ctx.cache.get("flow_groups")
        )
    return found


def _behind_zero_layers(model: nn.Module, order: list[str], norms: dict[str, float]) -> set[str]:
    """Layers whose gradient is exactly 0 because a trainable layer after them has all-zero
    weights (a zero-initialised head, a LoRA ``B = 0``): ``Wᵀδ = 0`` stops the gradient for
    one step only, after which the zero layer has moved and the gradient flows. That is not
    the vanishing the rule is about (a product of small factors across depth)."""
    zero = [
        i
        for i, name in enumerate(order)
        if (weights := _layer_weights(model.get_submodule(name)))
        and all(w.requires_grad and not w.detach().any() for w in weights)
    ]
    if not zero:
        return set()
    return {name for i, name in enumerate(order) if norms.get(name) == 0.0 and i < zero[-1]}


def _frozen(model: nn.Module) -> list[Finding]:
    """Parameters with ``requires_grad=False``: context, not a bug.

    Freezing a pretrained backbone and training a new head is ordinary transfer learning, so
    frozen parameters are named in an info finding; only a model with nothing left to train is
    a warning. Trainable parameters that get no gradient are PARAMS_WITHOUT_GRAD.
    """
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    if not frozen:
        return []
    layers = _modules_of(frozen)
    numel = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    nothing_trains = numel == total
    return [
        finding(
            "FROZEN_PARAMS",
            f"{len(frozen)} parameter tensor(s) ({numel:,} of {total:,} values) are frozen "
            f"(requires_grad=False) in layer(s) {_names(layers)}: the optimizer will not move "
            "them" + ("; nothing in the model can train" if nothing_trains else ""),
            "nothing to do if they are frozen on purpose (fine-tuning a pretrained backbone); "
            "otherwise call p.requires_grad_(True) on them",
            {"parameters": frozen, "layers": layers, "numel": numel, "total_numel": total},
            layer=layers[0],
            severity="warning" if nothing_trains else None,
        )
    ]


def _stuck_at_zero(
    ctx: Context, trainable: list[tuple[str, nn.Parameter]], grads: list[torch.Tensor | None]
) -> list[str]:
    """Trainable tensors that are all zero, get an all-zero gradient, and still do after one
    gradient step of every other parameter: a product of zero factors (a LoRA update ``B·A``
    with ``A = B = 0``: ``∂L/∂B = δ (A x)ᵀ = 0`` and ``∂L/∂A = Bᵀ δ xᵀ = 0``) is a saddle that
    gradient descent never leaves. A zero head blocks the gradient of the layers before it for
    one step only (``_behind_zero_layers``): the step here lets it move, and those layers then
    get a gradient, so they are not reported. Costs nothing unless such a tensor exists."""
    candidates = [
        name
        for (name, p), g in zip(trainable, grads, strict=True)
        if g is not None and not bool(p.detach().any()) and not bool(g.detach().any())
    ]
    if not candidates:
        return []
    copy_ = ctx.fresh_model()
    params = dict(copy_.named_parameters())
    with torch.no_grad():
        for (name, _), g in zip(trainable, grads, strict=True):
            if g is not None and name in params and bool(g.detach().any()):
                params[name].sub_(1e-2 * g / g.detach().abs().max())
    with _preserved(copy_), dropout_off(copy_), torch.enable_grad():
        loss = _safe_loss(ctx.loss_fn, copy_, ctx)
        if loss is None:
            return []
        after = _param_grads(loss, [params[name] for name in candidates])
    return [name for name, g in zip(candidates, after, strict=True) if g is None or not g.any()]


def _no_grad_finding(
    missing: list[str], model: nn.Module, *, stuck_at_zero: bool = False
) -> Finding:
    """Trainable parameters whose gradient is ``None`` after a backward of the loss, or that
    are stuck at zero (:func:`_stuck_at_zero`)."""
    layers = _modules_of(missing)
    params = dict(model.named_parameters())
    numel = sum(params[name].numel() for name in missing)
    if stuck_at_zero:
        return finding(
            "PARAMS_WITHOUT_GRAD",
            f"{len(missing)} trainable parameter tensor(s) ({numel:,} values) in layer(s) "
            f"{_names(layers)} are all zero and get an all-zero gradient, even after a step of "
            "the other parameters: zero factors of a product (e.g. LoRA with A = B = 0) keep "
            "each other's gradient at zero, so they never train",
            "initialize one factor randomly (LoRA: A random, B = 0; a zero-initialised branch "
            "needs its other layers random)",
            {"parameters": missing, "layers": layers, "numel": numel, "reason": "stuck at zero"},
            layer=layers[0],
        )
    return finding(
        "PARAMS_WITHOUT_GRAD",
        f"{len(missing)} trainable parameter tensor(s) ({numel:,} values) get no gradient "
        f"from the loss, in layer(s) {_names(layers)}: they are detached from the graph "
        "or never used in forward, so they never train",
        "remove .detach(), .data, .item(), torch.no_grad() or numpy round trips on the path "
        "from these layers to the loss, or delete layers that forward never uses",
        {"parameters": missing, "layers": layers, "numel": numel, "reason": "no gradient"},
        layer=layers[0],
    )


def flow_pass(ctx: Context, on_graph: Callable[[torch.Tensor], None] | None = None) -> tuple:
    """``(layer order, loss, gradients of the trainable parameters)`` of one forward+backward
    of the probe batch through ``ctx.model``, computed once per diagnose (cached).

    The execution check times this very pass (its cost sizes the default set) and reads the
    loss's autograd leaves through ``on_graph`` before the graph is freed, so the gradient
    flow costs no pass of its own. The model's buffers (batch-norm statistics) and modes are
    restored; ``.grad`` is left alone. ``loss`` is ``None`` (and no gradients) when the loss
    cannot be computed: the execution and label checks say why.
    """
    if "flow_pass" not in ctx.cache:
        model = ctx.model
        params = [p for p in model.parameters() if p.requires_grad]
        with _preserved(model):  # batch norm in train mode updates its running statistics
            order, loss = _loss_and_layer_order(ctx, model)
            grads: list[torch.Tensor | None] = [None] * len(params)
            if loss is not None:
                if on_graph is not None:
                    on_graph(loss)
                grads = _param_grads(loss, params)
                loss = loss.detach()
        ctx.cache["flow_pass"] = (order, loss, grads)
    return ctx.cache["flow_pass"]


def _loss_and_layer_order(ctx: Context, model: nn.Module) -> tuple[list[str], Any]:
    """The loss on the probe batch, and the weight layers in the order forward ran them; the
    layers that read the same input (depth groups of the gradient-flow rule) go to
    ``ctx.cache["flow_groups"]``."""
    order: list[str] = []
    names = {m: name for name, m in model.named_modules() if flow_layer(m)}
    siblings = SameInput(names, model)
    ctx.cache["flow_groups"] = siblings.groups

    def seen(module: nn.Module, _args: Any) -> None:
        if names[module] not in order:
            order.append(names[module])

    hooks = [m.register_forward_pre_hook(seen) for m in names]
    try:
        with torch.enable_grad():
            loss = _safe_loss(ctx.loss_fn, model, ctx, record=True)
    finally:
        siblings.remove()
        for hook in hooks:
            hook.remove()
    return order, loss


def _param_grads(loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor | None]:
    """``∂loss/∂p`` for each parameter (``None`` when unreachable), leaving ``.grad`` alone."""
    if not loss.requires_grad:
        return [None] * len(params)
    return list(torch.autograd.grad(loss, params, allow_unused=True))


def _weight_grad_norms(
    model: nn.Module, order: list[str], grad_of: dict[int, torch.Tensor | None]
) -> dict[str, float]:
    """``{layer: ‖∂loss/∂W‖}`` for the flow layers (:func:`flow_layer`) that got a weight
    gradient."""
    grads = {}
    for name in order:
        found = [grad_of.get(id(w)) for w in _layer_weights(model.get_submodule(name))]
        found = [g for g in found if g is not None]
        if found:
            grads[name] = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g.detach().double()) for g in found])
            )
    if not grads:
        return {}
    values = torch.stack(list(grads.values())).tolist()  # one transfer
    return dict(zip(grads, values, strict=True))


def _layer_weights(module: nn.Module) -> list[torch.Tensor]:
    """The weight matrices of a flow layer: ``weight`` of a Linear/Conv/Conv1D; every
    ``weight_ih_l*`` / ``weight_hh_l*`` of a recurrent layer (all its directions and layers)."""
    if isinstance(module, nn.RNNBase):
        return [p for name, p in module.named_parameters() if name.startswith("weight")]
    weight = getattr(module, "weight", None)
    return [weight] if isinstance(weight, torch.Tensor) else []


def _nonfinite_gradients(
    trainable: list[tuple[str, nn.Parameter]], grads: list[torch.Tensor | None]
) -> list[Finding]:
    """NaN/Inf gradients from a finite loss: AUTOTRAINER counts them as exploding."""
    bad = [
        name
        for (name, _), g in zip(trainable, grads, strict=True)
        if g is not None and not bool(torch.isfinite(g).all())
    ]
    if not bad:
        return []
    layers = _modules_of(bad)
    return [
        finding(
            "EXPLODING_GRADIENTS",
            f"the loss is finite but its gradient holds NaN/Inf in layer(s) {_names(layers)}",
            "look for a division by ~0, log(0) or sqrt(0) in forward; lower the init scale or "
            "clip gradients (torch.nn.utils.clip_grad_norm_)",
            {"parameters": bad, "layers": layers},
            layer=layers[0],
        )
    ]


# ---------------------------------------------------------------------------------------------
# recurrent_saturation
# ---------------------------------------------------------------------------------------------


@check("recurrent_saturation", codes=["SATURATED_ACTIVATIONS"])
def recurrent_saturation(ctx: Context) -> list[Finding]:
    """RNN/LSTM/GRU layers whose outputs and hidden states sit at ±1: their tanh passes almost
    no gradient back through time or to the layers below.

    Measured by the probe on the probe batch (``babysit.probes``: ``|h| > tanh(3.0)`` for the
    outputs and ``h_n``, ``|c| > 3.0`` for an LSTM's ``c_n``; the pre-activations live inside
    the fused kernel), judged with ``saturated_fraction`` as for tanh/sigmoid layers.
    """
    modules = dict(ctx.model.named_modules())
    if not any(isinstance(m, nn.RNNBase) for m in modules.values()):
        return []
    found = []
    for name, s in activation_snapshot(ctx).items():
        if not isinstance(modules.get(name), nn.RNNBase) or s.saturated_fraction is None:
            continue
        if s.saturated_fraction > ctx.thresholds["saturated_fraction"]:
            found.append(
                finding(
                    "SATURATED_ACTIVATIONS",
                    f"{s.saturated_fraction:.0%} of the outputs and hidden states of the "
                    f"{type(modules[name]).__name__} '{name}' are saturated (within 0.5% of "
                    "±1): its tanh passes almost no gradient, through time or to the layers "
                    "below",
                    "shrink the recurrent layer's init (PyTorch's default U(-1/sqrt(H), "
                    "1/sqrt(H)), or orthogonal weight_hh), standardize its inputs, or add "
                    "LayerNorm before it",
                    {"saturated_fraction": s.saturated_fraction, "std": s.std},
                    layer=name,
                )
            )
    return found


# ---------------------------------------------------------------------------------------------
# symmetric_init
# ---------------------------------------------------------------------------------------------

# Two units are "identical" when their incoming weights (and biases) agree to this relative
# precision; their gradients too. Identical units compute bit-identical arithmetic, so only
# summation-order round-off (float32 ulps, ~1e-7) separates them; distinct units differ at O(1).
_SAME_UNITS_RTOL = 1e-5


@check("symmetric_init", codes=["SYMMETRIC_INIT"], needs_labels=True)
def symmetric_init(ctx: Context) -> list[Finding]:
    """Units of a layer that are identical now *and* after a gradient step (lecture: ``W = 0``).

    Units ``j`` and ``k`` stay identical under gradient descent exactly when their incoming
    weights (and biases) are equal and their gradients are equal: then every update keeps them
    equal, and symmetry never breaks. Equal weights alone are not enough: a zero-initialised
    residual branch, a LoRA-style adapter with ``B = 0`` or a zero output layer has all-zero
    rows, but each row gets a different gradient (``∂L/∂W_k = δ_k hᵀ`` with different ``δ_k``),
    so the first step separates them; those are healthy and stay silent.

    Only layers whose units already share their weights pay for the one backward of the loss
    on the probe batch, taken with dropout off (its random masks would separate the units by
    noise, not by learning) and with the model's buffers and modes restored.
    """
    model = ctx.model
    candidates = [
        (name, layer)
        for name, layer in weight_layers(model)
        if layer.weight.requires_grad and layer.weight.shape[0] >= 2 and _same_units(layer)
    ]
    if not candidates:
        return []
    params = [p for _, layer in candidates for p in _unit_params(layer)]
    with _preserved(model), dropout_off(model), torch.enable_grad():
        loss = _safe_loss(ctx.loss_fn, model, ctx)
        if loss is None:
            return []
        grads = dict(zip(map(id, params), _param_grads(loss, params), strict=True))
    found = []
    for name, layer in candidates:
        unit_grads = [grads[id(p)] for p in _unit_params(layer)]
        if any(g is None for g in unit_grads):
            continue  # no gradient at all: PARAMS_WITHOUT_GRAD names it
        if not all(_same_rows(g) for g in unit_grads):
            continue  # the first step separates the units (zero-init residual, adapter, head)
        w = layer.weight.detach()
        value = float(w.reshape(-1)[0])
        found.append(
            finding(
                "SYMMETRIC_INIT",
                f"all {w.shape[0]} units of layer '{name}' have identical weights "
                f"({'all zero' if value == 0 else f'constant {value:g}'}) and get identical "
                "gradients: every step keeps them identical, so symmetry never breaks",
                "initialize with small random weights: "
                "babysit.nn.init_model(model, 'he_normal') for ReLU, 'xavier' for tanh",
                {
                    "units": int(w.shape[0]),
                    "value": value,
                    "grad_spread": max(_row_spread(g) for g in unit_grads),
                    "grad_max": max(float(g.abs().max()) for g in unit_grads),
                },
                layer=name,
            )
        )
    return found


def _unit_params(layer: nn.Module) -> list[nn.Parameter]:
    """The weight and (trainable) bias of a layer: row ``k`` of each belongs to unit ``k``."""
    bias = getattr(layer, "bias", None)
    has_bias = isinstance(bias, torch.Tensor) and bias.requires_grad
    return [layer.weight, bias] if has_bias else [layer.weight]


def _same_units(layer: nn.Module) -> bool:
    return all(_same_rows(p.detach()) for p in _unit_params(layer))


def _row_spread(t: torch.Tensor) -> float:
    rows = t.detach().reshape(t.shape[0], -1)
    return float((rows - rows[0]).abs().max())


def _same_rows(t: torch.Tensor) -> bool:
    """Whether every row (unit) of ``t`` equals the first, to ``_SAME_UNITS_RTOL``."""
    return _row_spread(t) <= _SAME_UNITS_RTOL * float(t.detach().abs().max())


# ---------------------------------------------------------------------------------------------
# gradient_check
# ---------------------------------------------------------------------------------------------


@check("gradient_check", codes=["GRADIENT_CHECK_FAILED", "CHECKS_SKIPPED"], needs_labels=True)
def gradient_check(ctx: Context) -> list[Finding]:
    r"""Analytic gradient against central finite differences, in float64 (CS231n notes): the
    fast, directional check of the default set (the idea of ``torch.autograd.gradcheck``'s
    ``fast_mode``: a few random directional derivatives instead of every coordinate).

    On a fresh float64 copy and the first ``GRADCHECK_EXAMPLES`` examples, along
    ``GRADCHECK_DIRECTIONS`` random unit directions :math:`v` over all trainable parameters:

    .. math:: a = \nabla L \cdot v, \qquad
              n = \frac{L(\theta + \epsilon v) - L(\theta - \epsilon v)}{2 \epsilon}, \qquad
              r = \frac{|a - n|}{\max(|a|, |n|)}

    The check fails when the majority of directions have ``r`` above
    ``gradient_check_rel_error`` (CS231n: > 1e-4 is suspect, ~1e-7 is right in float64). Every
    forward re-seeds torch with ``ctx.seed``, so dropout draws the same mask each time; batch
    norm in train mode is a deterministic function of the batch. On failure each layer is
    checked alone to name where the gradient goes wrong. A model that cannot run in float64
    is skipped with a ``CHECKS_SKIPPED`` info finding.

    Cost: a float64 copy of the model and ``1 + 2 × GRADCHECK_DIRECTIONS`` passes over
    ``GRADCHECK_EXAMPLES`` examples, a few percent of the default ``diagnose``; the
    per-coordinate check (:func:`gradient_check_coordinates`) is in ``checks="all"``.
    """
    if ctx.y is None:
        return []
    setup = _float64_setup(ctx)
    if isinstance(setup, str):
        return [_skipped(setup)]
    model, loss_at = setup
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return []
    generator = torch.Generator().manual_seed(ctx.seed)
    measured = _directions(params, loss_at, generator)
    if measured is None:
        return []
    if _kinked(measured[0]):  # exact zeros at ReLUs, e.g. behind a zero-initialised layer
        _jitter(params, generator)
        measured = _directions(params, loss_at, generator)
        if measured is None:
            return []
    results, grads, floor, center = measured
    smooth = [r for r in results if r["smooth"]]
    if _kinked(results):
        return [_skipped(_KINKED.format(check="gradient_check", n=len(results) - len(smooth)))]
    limit = ctx.thresholds["gradient_check_rel_error"]
    failed = [r for r in smooth if r["rel_error"] > limit]
    if 2 * len(failed) <= len(smooth):
        return []
    ctx.cache["gradient_check_failed"] = True
    layers = _layer_checks(model, params, grads, loss_at, generator, floor, center)
    return [_gradient_check_finding(results, layers, limit, ctx)]


@check(
    "gradient_check_coordinates",
    codes=["GRADIENT_CHECK_FAILED", "CHECKS_SKIPPED"],
    slow=True,
    needs_labels=True,
)
def gradient_check_coordinates(ctx: Context) -> list[Finding]:
    r"""The per-coordinate gradient check (CS231n notes, "gradient check" on sampled
    coordinates), in float64, for ``checks="all"``.

    For every trainable parameter tensor, ``GRADCHECK_COORDINATES`` coordinates ``i`` drawn at
    random (all of them for a smaller tensor) are moved by ``±ε`` one at a time, and the central
    difference is compared with ``∂L/∂θ_i``; a tensor fails when most of its coordinates have
    a relative error above ``gradient_check_rel_error``. It names the wrong parameter tensors
    even where a random direction over all parameters dilutes the error of a small one. When
    the directional check already failed, it adds nothing.
    """
    if ctx.y is None or ctx.cache.get("gradient_check_failed"):
        return []
    setup = _float64_setup(ctx)
    if isinstance(setup, str):
        return [_skipped(setup.replace("gradient_check", "gradient_check_coordinates"))]
    model, loss_at = setup
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        return []
    with torch.enable_grad():
        loss = loss_at()
    if not _usable_loss(loss):
        return []
    grads = _param_grads(loss, [p for _, p in named])
    floor = _ROUNDOFF_MARGIN * torch.finfo(torch.float64).eps * max(1.0, float(loss.detach().abs()))
    floor /= GRADCHECK_EPS
    generator = torch.Generator().manual_seed(ctx.seed)
    limit = ctx.thresholds["gradient_check_rel_error"]
    center = float(loss.detach())
    errors: dict[str, list[float]] = {}
    for (name, p), g in zip(named, grads, strict=True):
        g = torch.zeros_like(p) if g is None else g
        count = min(GRADCHECK_COORDINATES, p.numel())
        picks = torch.randperm(p.numel(), generator=generator)[:count].tolist()
        errors[name] = [_coordinate_error(p, g, i, loss_at, floor, center) for i in picks]
    judged = {n: [e for e in errs if not math.isnan(e)] for n, errs in errors.items()}
    wrong = [
        n for n, errs in judged.items() if errs and 2 * sum(e > limit for e in errs) > len(errs)
    ]
    if not wrong:
        if not any(judged.values()):
            kinked = sum(len(errs) for errs in errors.values())
            return [_skipped(_KINKED.format(check="gradient_check_coordinates", n=kinked))]
        return []
    worst = max(max(errors[n]) for n in wrong)
    layers = _modules_of(wrong)
    return [
        finding(
            "GRADIENT_CHECK_FAILED",
            f"the analytic gradient disagrees with central finite differences (float64, "
            f"per coordinate) for parameter(s) {_names(wrong)}: relative error up to "
            f"{worst:.2g}",
            "fix the backward() of the custom torch.autograd.Function (or hand-written "
            "gradient) that these parameters flow through; test it with "
            "torch.autograd.gradcheck in float64",
            {
                "coordinate_rel_errors": {n: _json_errors(e) for n, e in errors.items()},
                "wrong_parameters": wrong,
                "eps": GRADCHECK_EPS,
                "threshold": limit,
            },
            layer=layers[0],
        )
    ]


def _json_errors(errors: list[float]) -> list[float | None]:
    """Relative errors for the evidence: ``None`` where a kink left nothing to judge."""
    return [None if math.isnan(e) else e for e in errors]


def _coordinate_error(
    p: torch.Tensor,
    g: torch.Tensor,
    i: int,
    loss_at: Callable[[], torch.Tensor],
    floor: float,
    center: float,
) -> float:
    """Relative error of ``∂L/∂θ_i`` against the central difference along coordinate ``i``
    (NaN where the loss has a kink along it: not judged)."""
    flat = p.data.view(-1)
    with torch.no_grad():
        saved = float(flat[i])
        flat[i] = saved + GRADCHECK_EPS
        plus = float(loss_at())
        flat[i] = saved - GRADCHECK_EPS
        minus = float(loss_at())
        flat[i] = saved
    result = _compare(float(g.reshape(-1)[i]), plus, minus, center, floor)
    return result["rel_error"] if result["smooth"] else math.nan


_KINKED = (
    "{check}: the loss has a kink within ε = 1e-6 of the weights along {n} test direction(s) "
    "(one-sided differences disagree: ReLUs or max-pools sitting exactly at 0, e.g. after a "
    "zero-initialised layer), so finite differences cannot judge the gradient here"
)


def _directions(
    params: list[nn.Parameter], loss_at: Callable[[], torch.Tensor], generator: torch.Generator
) -> tuple[list[dict[str, Any]], list[torch.Tensor], float, float] | None:
    """The directional checks at the current weights: results, gradients, round-off floor and
    the loss there; ``None`` when the loss is not a usable scalar."""
    with torch.enable_grad():
        loss = loss_at()
    if not _usable_loss(loss):
        return None
    grads = [
        torch.zeros_like(p) if g is None else g
        for p, g in zip(params, _param_grads(loss, params), strict=True)
    ]
    center = float(loss.detach())
    floor = _ROUNDOFF_MARGIN * torch.finfo(torch.float64).eps * max(1.0, abs(center))
    floor /= GRADCHECK_EPS
    results = [
        _directional_check(
            params, grads, loss_at, _random_direction(params, generator), floor, center
        )
        for _ in range(GRADCHECK_DIRECTIONS)
    ]
    return results, grads, floor, center


def _kinked(results: list[dict[str, Any]]) -> bool:
    """Most directions cross a kink: the finite differences cannot judge the gradient."""
    return 2 * sum(bool(r["smooth"]) for r in results) <= len(results)


def _jitter(params: list[nn.Parameter], generator: torch.Generator) -> None:
    """Move the (float64 copy's) weights by ``GRADCHECK_JITTER`` of their own scale, so no
    ReLU input sits exactly at 0 by construction (a zero-init layer, zero-gamma batch norm):
    a backward is right or wrong at any point, and a generic point has no kink within ε."""
    scales = [float(p.detach().pow(2).mean().sqrt()) for p in params]
    largest = max(scales, default=0.0) or 1.0
    with torch.no_grad():
        for p, scale in zip(params, scales, strict=True):
            # a zero tensor (or the round-off the directional shifts left in it) takes the
            # largest tensor's scale
            scale = scale if scale > 1e-6 * largest else largest
            noise = torch.randn(p.shape, generator=generator).to(p.device, p.dtype)
            p.add_(noise, alpha=GRADCHECK_JITTER * scale)


def _float64_setup(ctx: Context) -> tuple[nn.Module, Callable[[], torch.Tensor]] | str:
    """A fresh float64 copy of the model and ``loss_at()``: the loss on a few examples, with
    torch re-seeded before every forward. A string says why it cannot be built."""
    n = min(GRADCHECK_EXAMPLES, len(ctx.x))
    x, y = _to_double(ctx.x[:n]), _to_double(ctx.y[:n])
    loss_fn = ctx.loss_fn
    try:
        model = ctx.fresh_model().to(ctx.device, torch.float64)
        if isinstance(loss_fn, nn.Module):
            loss_fn = copy.deepcopy(loss_fn).to(ctx.device, torch.float64)
    except Exception as err:  # a model that cannot live in float64 is skipped, not failed
        return f"gradient_check: the model cannot be converted to float64 ({err})"
    for module in model.modules():  # padding_idx zeroes that row's gradient on purpose:
        if isinstance(module, nn.Embedding):  # on the copy, check the true gradient instead
            module.padding_idx = None

    def loss_at() -> torch.Tensor:
        torch.manual_seed(ctx.seed)
        return loss_fn(read_output(model(x))[0], y)

    try:
        with torch.no_grad():
            loss_at()
    except Exception as err:  # e.g. an op without a float64 kernel
        return (
            f"gradient_check: the model fails in float64 on {n} examples "
            f"({type(err).__name__}: {err})"
        )
    return model, loss_at


def _directional_check(
    params: Sequence[nn.Parameter],
    grads: Sequence[torch.Tensor],
    loss_at: Callable[[], torch.Tensor],
    direction: Sequence[torch.Tensor],
    floor: float,
    center: float,
) -> dict[str, Any]:
    """Analytic ``∇L·v`` and the central difference along ``v``; their relative error, and
    whether the loss is smooth there (:func:`_compare`)."""
    analytic = float(sum(_dot(g, v) for g, v in zip(grads, direction, strict=True)))
    with torch.no_grad():  # θ -> θ + εv -> θ - εv -> θ, in place (a few ulps of drift at most)
        _shift(params, direction, GRADCHECK_EPS)
        plus = float(loss_at())
        _shift(params, direction, -2 * GRADCHECK_EPS)
        minus = float(loss_at())
        _shift(params, direction, GRADCHECK_EPS)
    return _compare(analytic, plus, minus, center, floor)


def _compare(analytic: float, plus: float, minus: float, center: float, floor: float) -> dict:
    """The central difference ``n = (L₊ − L₋) / 2ε`` against the analytic derivative ``a``:
    ``rel_error = max(0, |a − n| − r) / max(|a|, |n|, floor)``, where
    ``r = _ROUNDOFF_NOISE · eps₆₄ · |L₀| / ε`` is what round-off alone puts into ``n``: a loss
    of 4e10 (unscaled regression targets) is known to ~1e-5 in float64, so ``n`` only to ~10,
    and a difference that small says nothing about the backward.

    ``smooth`` is False when the one-sided differences ``(L₊ − L₀)/ε`` and ``(L₀ − L₋)/ε``
    disagree by more than ``_SMOOTH_RTOL``: the loss has a kink within ``ε`` (ReLUs or max-pools
    sitting exactly at 0, as after a zero-initialised layer), where no finite difference can
    judge a gradient. On a smooth loss they differ by ``ε·L''``, ~1e-6 of the derivative.
    """
    numeric = (plus - minus) / (2 * GRADCHECK_EPS)
    if not math.isfinite(numeric):
        return {"analytic": analytic, "numeric": numeric, "rel_error": math.inf, "smooth": True}
    forward, backward = (plus - center) / GRADCHECK_EPS, (center - minus) / GRADCHECK_EPS
    scale = max(abs(analytic), abs(numeric), floor)
    one_sided = max(abs(forward), abs(backward), floor)
    roundoff = _ROUNDOFF_NOISE * torch.finfo(torch.float64).eps * abs(center) / GRADCHECK_EPS
    return {
        "analytic": analytic,
        "numeric": numeric,
        "rel_error": max(0.0, abs(analytic - numeric) - roundoff) / scale,
        "smooth": abs(forward - backward) <= _SMOOTH_RTOL * one_sided,
    }


def _shift(params: Sequence[nn.Parameter], direction: Sequence[torch.Tensor], step: float) -> None:
    for p, v in zip(params, direction, strict=True):
        p.add_(v, alpha=step)


def _random_direction(
    params: Sequence[torch.Tensor], generator: torch.Generator
) -> list[torch.Tensor]:
    """A direction drawn uniformly on the unit sphere of all the parameters together (sampled
    in float32, 4× faster than float64 on CPU, then used in float64)."""
    parts = [torch.randn(p.shape, generator=generator).to(p.device, torch.float64) for p in params]
    norm = math.sqrt(sum(float(_dot(v, v)) for v in parts))
    return [v.div_(norm) for v in parts]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.dot(a.reshape(-1), b.reshape(-1))


def _layer_checks(
    model: nn.Module,
    params: Sequence[nn.Parameter],
    grads: Sequence[torch.Tensor],
    loss_at: Callable[[], torch.Tensor],
    generator: torch.Generator,
    floor: float,
    center: float,
) -> dict[str, float]:
    """``{module: relative error}`` along a random direction over that module's own
    parameters, modules in forward order (NaN where the loss has a kink along it); only run
    once the whole-model check failed."""
    grad_of = {id(p): g for p, g in zip(params, grads, strict=True)}
    errors = {}
    for name, module in _forward_order(model, loss_at):
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own or not all(id(p) in grad_of for p in own):
            continue
        result = _directional_check(
            own,
            [grad_of[id(p)] for p in own],
            loss_at,
            _random_direction(own, generator),
            floor,
            center,
        )
        errors[name or type(model).__name__] = result["rel_error"] if result["smooth"] else math.nan
    return errors


def _gradient_check_finding(
    results: list[dict[str, float]], layers: dict[str, float], limit: float, ctx: Context
) -> Finding:
    wrong = [name for name, err in layers.items() if err > limit]
    right = [name for name, err in layers.items() if err <= limit]
    worst = max(r["rel_error"] for r in results)
    where = ""
    if wrong:
        where = (
            f"; wrong for layer(s) {_names(wrong)}"
            + (f", right for {_names(right)}" if right else "")
            + f": the faulty backward runs in '{wrong[-1]}' or between it and the next layer"
        )
    return finding(
        "GRADIENT_CHECK_FAILED",
        f"the analytic gradient disagrees with central finite differences (float64, "
        f"{min(GRADCHECK_EXAMPLES, len(ctx.x))} examples): relative error up to {worst:.2g} "
        f"along {sum(r['rel_error'] > limit for r in results)} of {len(results)} random "
        f"directions{where}",
        "fix the backward() of the custom torch.autograd.Function (or hand-written gradient) "
        "there; test it with torch.autograd.gradcheck in float64",
        {
            "directions": results,
            "layer_rel_errors": dict(zip(layers, _json_errors(list(layers.values())), strict=True)),
            "eps": GRADCHECK_EPS,
            "threshold": limit,
        },
        layer=wrong[-1] if wrong else None,
    )


def _forward_order(
    model: nn.Module, loss_at: Callable[[], torch.Tensor]
) -> list[tuple[str, nn.Module]]:
    """Modules in the order ``forward`` first calls them (those never called come last)."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_pre_hook(lambda m, _a: order.append(m) if m not in order else None)
        for m in model.modules()
    ]
    try:
        with torch.no_grad():
            loss_at()
    finally:
        for hook in hooks:
            hook.remove()
    names = {m: name for name, m in model.named_modules()}
    rest = [m for m in names if m not in order]
    return [(names[m], m) for m in order + rest]


def _skipped(reason: str) -> Finding:
    return finding(
        "CHECKS_SKIPPED",
        reason,
        "check custom gradients with torch.autograd.gradcheck on float64 inputs",
        {"skipped": {"gradient_check": reason}},
    )


# ---------------------------------------------------------------------------------------------
# batch_independence
# ---------------------------------------------------------------------------------------------


@check("batch_independence", codes=["BATCH_DEPENDENCE"])
def batch_independence(ctx: Context) -> list[Finding]:
    r"""Example i's output must not depend on example j's input, j != i (Karpathy, 2019).

    In eval mode (batch norm then uses its running statistics, dropout is off: the usual
    legitimate batch mixers are gone), on ``BATCH_EXAMPLES`` examples, for each i the gradient
    :math:`G = \partial (r \cdot f(x)_i) / \partial x` (``r`` a fixed random vector) is measured
    row by row. The leak of output i is

    .. math:: \text{leak}_i = \frac{\max_{j \ne i} \|G_j\|_\infty}{\max_j \|G_j\|_\infty}

    and any leak above ``batch_dependence`` is an error: a ``view``/``reshape`` that scrambles
    the batch dimension (where ``permute`` was meant), or a statistic over dim 0.

    Integer inputs (token ids) have no gradient: the gradient is then taken at the output of
    the first ``nn.Embedding`` that runs (a forward hook swaps in a leaf tensor), which is as
    good a stand-in for "example j's input" as long as its dim 0 is still the batch. Where
    neither works (no embedding, or one whose output is not batch-first) the check says so
    (``CHECKS_SKIPPED``) instead of passing silently.
    """
    if len(ctx.x) < 2:
        return []
    x = ctx.x[: min(BATCH_EXAMPLES, len(ctx.x))].detach().clone()
    if not x.is_floating_point() and not _first_embedding(ctx.model):
        raise CannotCheck(
            f"the input is {x.dtype} (not differentiable) and the model has no nn.Embedding "
            "whose output could stand in for it"
        )
    model = ctx.model
    limit = ctx.thresholds["batch_dependence"]
    with eval_mode(model):
        leaks = _leaks(model, x)
        if leaks is None and not x.is_floating_point():
            raise CannotCheck(
                "the input is token ids and the first nn.Embedding's output does not keep the "
                "batch in dim 0 (or does not reach the output)"
            )
        if leaks is None or float(leaks.max()) <= limit:
            return []
        worst = int(leaks.argmax())
        culprit = _mixing_layer(model, x, worst, limit)
    return [_batch_finding(leaks, culprit, limit)]


def _first_embedding(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Embedding) for m in model.modules())


@contextmanager
def _input_leaf(model: nn.Module, x: torch.Tensor) -> Iterator[Callable[[], torch.Tensor | None]]:
    """The tensor to differentiate by: ``x`` itself when it is floating point (made a leaf
    that requires grad), else the output of the first ``nn.Embedding`` call that takes ids of
    ``x``'s rank and batch size (not a positional embedding of ``arange(T)``), replaced by a
    detached leaf that requires grad (so a frozen embedding works too). Yields a function
    returning that leaf after a forward, or None when no usable one was seen."""
    if x.is_floating_point():
        x.requires_grad_(True)
        yield lambda: x
        return
    seen: list[torch.Tensor] = []

    def swap(_module: nn.Module, args: Any, output: Any) -> Any:
        if seen or not isinstance(output, torch.Tensor) or not output.is_floating_point():
            return None
        ids = args[0] if args else None
        if not isinstance(ids, torch.Tensor) or ids.dim() != x.dim() or len(ids) != len(x):
            return None  # e.g. a positional embedding of arange(T): not the tokens' embedding
        leaf = output.detach().requires_grad_(True)
        seen.append(leaf)
        return leaf

    hooks = [m.register_forward_hook(swap) for m in model.modules() if isinstance(m, nn.Embedding)]
    try:
        yield lambda: seen[0] if seen else None
    finally:
        for hook in hooks:
            hook.remove()


def _leaks(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """Per output row i, the largest gradient on another row j != i over the largest on any
    row; ``None`` when the model cannot be differentiated row by row."""
    with torch.enable_grad(), _input_leaf(model, x) as leaf:
        out = _safe_forward(model, x)
        wrt = leaf()
        if wrt is None or not _per_example(out, len(x)):
            return None
        weights = _output_weights(out)
        leaks = []
        for i in range(len(x)):
            (g,) = torch.autograd.grad(
                (out[i] * weights).sum(), wrt, retain_graph=i < len(x) - 1, allow_unused=True
            )
            leaks.append(_row_leak(g, i))
    return torch.stack(leaks).cpu()


def _row_leak(g: torch.Tensor | None, i: int) -> torch.Tensor:
    """Share of ``g``'s peak found outside row ``i``: 0 for a per-example model."""
    if g is None:
        return torch.zeros((), dtype=torch.float64)
    peaks = g.detach().abs().flatten(1).amax(1).double()
    top = peaks.max()
    others = torch.cat([peaks[:i], peaks[i + 1 :]]).max()
    return torch.where(top > 0, others / top.clamp_min(1e-300), torch.zeros_like(top))


def _mixing_layer(model: nn.Module, x: torch.Tensor, i: int, limit: float) -> dict[str, Any]:
    """Where the batch gets mixed: the first leaf module (in forward order) whose output's
    gradient from output ``i`` no longer leaks to other rows, and the leaf that ran before it.
    Leaves after the mixing point only see row i; those before see the other rows too."""
    outputs: list[tuple[str, torch.Tensor]] = []
    names = {m: name for name, m in model.named_modules() if next(m.children(), None) is None}
    seen: set[str] = set()

    def keep(module: nn.Module, _args: Any, output: Any) -> None:
        name = names[module]
        if (
            name not in seen
            and isinstance(output, torch.Tensor)
            and output.requires_grad
            and _per_example(output, len(x))
        ):
            seen.add(name)
            outputs.append((name, output))

    with torch.enable_grad(), _input_leaf(model, x):
        # registered after _input_leaf's hook, so an embedding's swapped leaf is what we keep
        hooks = [m.register_forward_hook(keep) for m in names]
        try:
            out = _safe_forward(model, x)
        finally:
            for hook in hooks:
                hook.remove()
    if not outputs or out is None:
        return {}
    grads = torch.autograd.grad(
        (out[i] * _output_weights(out)).sum(), [h for _, h in outputs], allow_unused=True
    )
    previous = None
    for (name, _), g in zip(outputs, grads, strict=True):
        if g is not None and float(_row_leak(g, i)) <= limit:
            return {"layer": name, "after": previous}
        previous = name
    return {"layer": None, "after": previous}


def _batch_finding(leaks: torch.Tensor, culprit: dict[str, Any], limit: float) -> Finding:
    layer, after = culprit.get("layer"), culprit.get("after")
    if layer:
        where = f" in layer '{layer}'" + (f" (or between '{after}' and it)" if after else "")
    elif after:
        where = f" after the last layer '{after}', in the model's own forward"
    else:
        where = ""
    dependent = [int(i) for i in torch.nonzero(leaks > limit).flatten()]
    return finding(
        "BATCH_DEPENDENCE",
        f"in eval mode, the outputs of {len(dependent)} of {len(leaks)} examples depend on "
        f"other examples' inputs (their gradient reaches other rows with up to "
        f"{float(leaks.max()):.2g}× its peak){where}: the batch dimension gets mixed",
        "keep dim 0 the batch: use permute/transpose on the other dims instead of view/reshape "
        "across dim 0, flatten with x.flatten(1), and never reduce over dim 0 in forward",
        {
            "leak_per_example": leaks.tolist(),
            "dependent_examples": dependent,
            "threshold": limit,
            "layer": layer,
            "after": after,
        },
        layer=layer or after,
    )


def _output_weights(out: torch.Tensor) -> torch.Tensor:
    """A fixed random weighting of one output row: ``out[i].sum()`` would be constant for a
    model that ends in softmax, whose rows sum to 1."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(out.shape[1:], generator=generator, dtype=out.dtype).to(out.device)


def _per_example(out: Any, n: int) -> bool:
    return (
        isinstance(out, torch.Tensor)
        and out.is_floating_point()
        and out.dim() >= 1
        and out.shape[0] == n
        and out.requires_grad
    )


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------


@contextmanager
def _preserved(model: nn.Module) -> Iterator[None]:
    """Restore the buffers (batch-norm running statistics) and each module's mode on exit."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    with kept_modes(model):
        try:
            yield
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)


def _safe_loss(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    model: nn.Module,
    ctx: Context,
    *,
    record: bool = False,
) -> torch.Tensor | None:
    """``loss_fn(output, target)`` of the probe batch, or ``None`` when it raises or is not a
    scalar: the forward, loss and label checks report those causes. With ``record``, an
    exception is kept in ``ctx.cache["grad_pass_error"]``: the execution check's probe runs
    without gradients, and a model that fails only with them on (an in-place change of a
    parameter in ``forward``) must not pass as one that runs."""
    try:
        loss = loss_fn(*ctx.run(model))
    except Exception as err:  # reported by forward_runs / labels; this check has nothing to add
        if record:
            ctx.cache.setdefault("grad_pass_error", err)
        return None
    return loss if _usable_loss(loss) else None


def _safe_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    try:
        out = read_output(model(x))[0]
    except Exception:  # reported by forward_runs
        return None
    return out if isinstance(out, torch.Tensor) else None


def _usable_loss(loss: Any) -> bool:
    return isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.is_floating_point()


def _to_double(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double() if t.is_floating_point() else t


def _modules_of(param_names: list[str]) -> list[str]:
    """The module paths owning these parameters, in order, without repeats."""
    layers: list[str] = []
    for name in param_names:
        module = name.rpartition(".")[0] or "(model)"
        if module not in layers:
            layers.append(module)
    return layers


def _names(names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:_MAX_NAMED])
    return shown + (f" and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else "")
