"""Structure checks: what the order of the model's modules makes explicit.

The order is read from the modules that actually ran (forward hooks in call order, see
:func:`trace_calls`), for any model, not from ``nn.Sequential`` nesting. A layer is judged
only on tensors that pass from module to module untouched: a model written with functional
calls in ``forward`` is never flagged for what cannot be seen (docs/architecture.md, "Healthy
means silent").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..findings import Finding
from ..nn.activations import WEIGHT_LAYERS, Maxout, activation_name
from ..outputs import read_output
from ._base import Context, check, finding

# Modules that are affine or pass values through: between two weight layers they leave the
# composition linear (BatchNorm is an affine map at inference; dropout only rescales).
_AFFINE = (
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
)
_OUTPUT_SQUASHERS = {"relu", "sigmoid", "tanh", "leaky_relu", "elu", "selu", "gelu", "silu"}
# Modules that pass one tensor on unchanged in meaning (the output producer looks through them).
_PASS_THROUGH = (nn.Identity, nn.modules.dropout._DropoutNd)


@check("layer_order", codes=["MISSING_NONLINEARITY", "ACTIVATION_ON_OUTPUT", "DROPOUT_TOO_HIGH"])
def layer_order(ctx: Context) -> list[Finding]:
    """Two weight layers with nothing nonlinear between, a squashed output, heavy dropout.

    The first two are read from the modules that actually ran, in call order (see
    :func:`trace_calls`), for any model, not only ``nn.Sequential`` nesting.
    """
    found = []
    trace = trace_calls(ctx)
    for first, second in _linear_pairs(trace) if trace else []:
        found.append(
            finding(
                "MISSING_NONLINEARITY",
                f"layer '{second}' takes the output of '{first}' with nothing nonlinear "
                "between: together they are one linear map",
                f"put an activation after '{first}' (e.g. nn.ReLU()), or drop one of the layers",
                {"first": first, "second": second},
                layer=second,
            )
        )
    if trace is not None:
        found += _activation_on_output(ctx, trace)
    for name, module in ctx.model.named_modules():
        dropout = isinstance(module, nn.modules.dropout._DropoutNd)
        if dropout and module.p > ctx.thresholds["dropout_max"]:
            found.append(
                finding(
                    "DROPOUT_TOO_HIGH",
                    f"dropout '{name}' drops {module.p:.0%} of its inputs",
                    "use p <= 0.5 (0.5 for large fully connected layers, less elsewhere)",
                    {"p": module.p},
                    layer=name,
                )
            )
    return found


# ---------------------------------------------------------------------------------------------
# the call trace: which module's output fed which module
# ---------------------------------------------------------------------------------------------

# The trace runs on the first few examples only: it keeps every module's output alive until
# the forward ends (so that no tensor id is reused), and the order of calls does not depend on
# the batch size.
TRACE_EXAMPLES = 16


@dataclass
class Call:
    """One module call in a forward pass."""

    name: str
    module: nn.Module
    start: int  # position of its pre-hook in the sequence of hook events
    end: int = -1  # position of its forward hook
    inputs: tuple[int, ...] = ()  # ids of the tensor arguments
    output: int | None = None  # id of the tensor it returned (first tensor of a tuple)


@dataclass
class Trace:
    """The calls of one forward pass, and who produced the model's output."""

    calls: list[Call]
    output: Any  # the model output read as a tensor (None when it is not one)
    output_id: int | None

    def producer(self, tensor_id: int | None, before: int) -> Call | None:
        """The call that *created* the tensor ``tensor_id`` and finished before event
        ``before``: the first to return it (a container or ``nn.Identity`` that passes it on
        returns the same object later). ``None`` when no module returned it: a functional op
        in ``forward`` made it, and the structure says nothing about it."""
        if tensor_id is None:
            return None
        made = [c for c in self.calls if c.output == tensor_id and 0 <= c.end < before]
        return min(made, key=lambda c: c.end) if made else None

    def source(self, call: Call, skip: tuple[type, ...]) -> Call | None:
        """The module whose output reaches ``call``'s first input directly, looking through
        modules of the ``skip`` types (each passes one tensor on)."""
        current = self.producer(call.inputs[0] if call.inputs else None, call.start)
        while current is not None and isinstance(current.module, skip):
            current = self.producer(current.inputs[0] if current.inputs else None, current.start)
        return current


def trace_calls(ctx: Context) -> Trace | None:
    """Run the model once (no grad, buffers restored) on ``TRACE_EXAMPLES`` examples and record
    every module call: its place in call order, the ids of its tensor inputs and output.

    The rule "A feeds B" holds only when B's input *is* the very tensor object A returned:
    nothing at all ran between them. A functional call in ``forward`` (``F.relu``, ``x * 2``,
    a reshape) makes a new tensor that no module returned, so the chain is cut there and no
    finding can follow from it: what cannot be seen is never flagged (docs/architecture.md,
    "Healthy means silent"). Cached in ``ctx.cache["trace"]``; ``None`` when the model fails.
    """
    if "trace" in ctx.cache:
        return ctx.cache["trace"]
    model = ctx.model
    names = {m: name for name, m in model.named_modules()}
    calls: list[Call] = []
    open_calls: dict[int, list[Call]] = {}
    kept: list[Any] = []  # every input and output, alive until the trace is built
    counter = iter(range(1 << 62))

    def pre(module: nn.Module, args: tuple) -> None:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        kept.append(tensors)
        call = Call(names[module], module, next(counter), inputs=tuple(map(id, tensors)))
        open_calls.setdefault(id(module), []).append(call)
        calls.append(call)

    def post(module: nn.Module, _args: tuple, output: Any) -> None:
        stack = open_calls.get(id(module))
        if not stack:
            return
        call = stack.pop()
        call.end = next(counter)
        tensor = _module_output(output)
        kept.append(tensor)
        call.output = None if tensor is None else id(tensor)

    batch = ctx.take(TRACE_EXAMPLES)
    handles = [m.register_forward_pre_hook(pre) for m in names]
    handles += [m.register_forward_hook(post) for m in names]
    try:
        with torch.no_grad(), _buffers_kept(model):
            out = ctx.run(model, batch)[0]  # by forward=, read as diagnose reads it
    except Exception:  # forward_runs / loss_runs report the failure
        out = None
        calls = []
    finally:
        for handle in handles:
            handle.remove()
    trace = None if out is None else Trace(calls, out, id(out))
    ctx.cache["trace"] = trace
    kept.clear()  # ids are only compared while the trace is built
    return trace


def _module_output(output: Any) -> torch.Tensor | None:
    """The tensor a module returned, read as a model's output is (:func:`outputs.read_output`);
    ``None`` when it returned no tensor."""
    try:
        return read_output(output)[0]
    except TypeError:
        return None


@contextmanager
def _buffers_kept(model: nn.Module) -> Iterator[None]:
    """Batch norm in train mode updates its running statistics on a forward: undo that."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


# ---------------------------------------------------------------------------------------------
# MISSING_NONLINEARITY
# ---------------------------------------------------------------------------------------------


def _linear_pairs(trace: Trace) -> list[tuple[str, str]]:
    """Weight layers that take another weight layer's output directly, through nothing but
    affine or pass-through modules (``_AFFINE``).

    Two factorizations are linear on purpose and are left alone: a bottleneck narrower than
    both ends (LoRA's ``B A``, a low-rank layer: rank < min(in, out)) and a grouped or
    depthwise conv followed by another conv (a separable convolution, as in Xception).
    """
    pairs: list[tuple[str, str]] = []
    for call in trace.calls:
        if not _is_weight_layer(call, trace):
            continue
        source = trace.source(call, _AFFINE)
        if source is None or not _is_weight_layer(source, trace):
            continue
        first, second = source.module, call.module
        if _width(first, "out") < min(_width(first, "in"), _width(second, "out")):
            continue  # a low-rank factorization
        if getattr(first, "groups", 1) > 1:
            continue  # depthwise / grouped conv then a conv: a separable convolution
        pair = (source.name, call.name)
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def _is_weight_layer(call: Call, trace: Trace) -> bool:
    """A Linear/Conv that is a layer of its own (the Linear inside a Maxout is not)."""
    if not isinstance(call.module, WEIGHT_LAYERS):
        return False
    parent = call.name.rpartition(".")[0]
    return not any(c.name == parent and isinstance(c.module, Maxout) for c in trace.calls)


def _width(layer: nn.Module, side: str) -> int:
    if isinstance(layer, nn.Linear):
        return layer.in_features if side == "in" else layer.out_features
    return layer.in_channels if side == "in" else layer.out_channels


# ---------------------------------------------------------------------------------------------
# ACTIVATION_ON_OUTPUT, DOUBLE_SOFTMAX: the module that produced the output, against the loss
# ---------------------------------------------------------------------------------------------

# Value ranges of bounded activations: a regression output behind one can never reach a target
# outside it. (ELU/SELU/GELU/SiLU reach below 0 only slightly: bounded below.)
_RANGES: dict[type, tuple[float, float]] = {
    nn.ReLU: (0.0, math.inf),
    nn.ReLU6: (0.0, 6.0),
    nn.Softplus: (0.0, math.inf),
    nn.Sigmoid: (0.0, 1.0),
    nn.Tanh: (-1.0, 1.0),
    nn.Hardtanh: (-1.0, 1.0),
    nn.Hardsigmoid: (0.0, 1.0),
    nn.ELU: (-1.0, math.inf),
    nn.GELU: (-0.17, math.inf),
    nn.SiLU: (-0.28, math.inf),
}
# A regression output is judged unreachable when more than this share of the target values
# lies outside the activation's range (a few outliers may be noise).
_UNREACHABLE_SHARE = 0.01
_SOFTMAX = (nn.Softmax, nn.Softmax2d)
_LOGIT_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss, nn.BCEWithLogitsLoss)
_REGRESSION_LOSSES = (nn.MSELoss, nn.L1Loss, nn.HuberLoss, nn.SmoothL1Loss)


def output_module(trace: Trace) -> Call | None:
    """The module that produced the model's output, looking through dropout and identity (a
    functional op at the end of ``forward`` hides it: then ``None``)."""
    start = trace.producer(trace.output_id, 1 << 62)
    while start is not None and isinstance(start.module, _PASS_THROUGH):
        start = trace.producer(start.inputs[0] if start.inputs else None, start.start)
    return start


def _activation_on_output(ctx: Context, trace: Trace) -> list[Finding]:
    last = output_module(trace)
    if last is None or isinstance(last.module, _SOFTMAX):
        return []  # softmax outputs are DOUBLE_SOFTMAX (output_kind)
    module, loss = last.module, ctx.loss_fn
    kind = type(module).__name__
    if isinstance(loss, _LOGIT_LOSSES) or (ctx.classification and not isinstance(loss, nn.Module)):
        if type(module) not in _RANGES and activation_name(module) not in _OUTPUT_SQUASHERS:
            return []
        wants = (
            "logits (the loss applies its own sigmoid)"
            if isinstance(loss, nn.BCEWithLogitsLoss)
            else "logits (the loss applies the softmax)"
        )
        return [
            finding(
                "ACTIVATION_ON_OUTPUT",
                f"the output comes from {kind} ('{last.name}'), but {type(loss).__name__} "
                f"wants {wants}: the logits are squashed or clipped",
                f"remove '{last.name}' from the model's output path: end with a plain layer "
                "(apply the activation only when predicting)",
                {"layer_type": kind, "loss": type(loss).__name__},
                layer=last.name,
            )
        ]
    if isinstance(loss, _REGRESSION_LOSSES) and type(module) in _RANGES and ctx.y is not None:
        return _unreachable_targets(ctx, last, _RANGES[type(module)])
    return []


def _unreachable_targets(ctx: Context, last: Call, bounds: tuple[float, float]) -> list[Finding]:
    """A bounded activation on a regression output, with targets it can never produce."""
    y = ctx.y
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.numel() == 0:
        return []
    low, high = bounds
    outside = float(((y < low) | (y > high)).double().mean())
    if outside <= _UNREACHABLE_SHARE:
        return []
    kind = type(last.module).__name__
    span = f"[{low:g}, {high:g}]".replace("inf", "∞")
    return [
        finding(
            "ACTIVATION_ON_OUTPUT",
            f"the output comes from {kind} ('{last.name}'), whose values lie in {span}, but "
            f"{outside:.0%} of the regression targets are outside it: the model can never "
            "predict them, and their gradient stops at the activation",
            f"remove '{last.name}' from the model's output path (end with a plain Linear), or "
            "rescale the targets into its range",
            {"layer_type": kind, "range": [low, high], "targets_outside": outside},
            layer=last.name,
        )
    ]


@check("output_kind", codes=["DOUBLE_SOFTMAX"], needs_labels=True)
def output_kind(ctx: Context) -> list[Finding]:
    """Probabilities fed to a loss that expects logits (CrossEntropyLoss, BCEWithLogitsLoss) or
    log-probabilities (NLLLoss).

    Seen two ways: the output comes from an ``nn.Softmax`` module (in call order, any model),
    or its values are probabilities along the class dimension (each row in [0, 1], summing to
    1), which also catches a functional ``F.softmax`` at the end of ``forward``.
    """
    loss = ctx.loss_fn
    if not (isinstance(loss, _LOGIT_LOSSES) or ctx.classification):
        return []
    out = ctx.output()  # the whole probe batch's output; CannotCheck when the forward failed
    name = type(loss).__name__
    trace = trace_calls(ctx)
    last = output_module(trace) if trace is not None else None
    if last is not None and isinstance(last.module, _SOFTMAX):
        return [_double_softmax(name, {"loss": name, "layer_type": "Softmax"}, last.name)]
    if isinstance(loss, nn.BCEWithLogitsLoss) or out.dim() < 2 or out.shape[1] < 2:
        return []
    out = out.detach().double()
    rows = out.sum(1)
    probabilities = bool(
        (out >= 0).all() and (out <= 1).all() and torch.allclose(rows, torch.ones_like(rows))
    )
    if not probabilities:
        return []
    evidence = {"loss": name, "row_sum_mean": float(rows.mean()), "max_output": float(out.max())}
    return [_double_softmax(name, evidence, None)]


def _double_softmax(loss: str, evidence: dict[str, Any], layer: str | None) -> Finding:
    where = f" (from '{layer}')" if layer else ""
    return finding(
        "DOUBLE_SOFTMAX",
        f"the model outputs probabilities{where} into {loss}, which applies its own "
        "(log-)softmax or sigmoid: gradients shrink and the loss saturates",
        "remove the final Softmax (CrossEntropyLoss wants logits), or use LogSoftmax with NLLLoss",
        evidence,
        layer=layer,
    )


@check("batch_order", codes=["BATCHES_NOT_SHUFFLED"])
def batch_order(ctx: Context) -> list[Finding]:
    """A DataLoader over label-sorted data with ``shuffle=False`` feeds one class at a time."""
    loader = ctx.data
    if not isinstance(loader, torch.utils.data.DataLoader) or not ctx.classification:
        return []
    labels = []
    for i, batch in enumerate(loader):
        if i == 4 or not isinstance(batch, tuple | list) or len(batch) < 2:
            break
        y = torch.as_tensor(batch[1])
        if y.is_floating_point() or y.dim() != 1 or len(y) < 8:
            return []
        labels.append(y)
    if len(labels) < 2:
        return []
    single_class = sum(int(len(torch.unique(y)) == 1) for y in labels)
    joined = torch.cat(labels)
    is_sorted = bool((joined[1:] >= joined[:-1]).all()) and len(torch.unique(joined)) > 1
    if single_class < 0.75 * len(labels) and not is_sorted:
        return []
    return [
        finding(
            "BATCHES_NOT_SHUFFLED",
            f"the DataLoader's first {len(labels)} batches are label-sorted "
            f"({single_class} hold a single class): each step sees one class at a time",
            "create the training DataLoader with shuffle=True",
            {"single_class_batches": single_class, "first_labels": joined[:16].tolist()},
        )
    ]


def _frozen_on_purpose(module: nn.Module) -> bool:
    """A batch norm whose parameters are all frozen, kept in eval mode: a fine-tune keeping the
    pretrained statistics (fit keeps it in eval too), not a forgotten model.train()."""
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


@check("model_mode", codes=["MODEL_IN_EVAL_MODE"])
def model_mode(ctx: Context) -> list[Finding]:
    """Dropout and batch norm behave as at test time when their module is in eval mode."""
    stuck = [
        name
        for name, module in ctx.model.named_modules()
        if not module.training
        and isinstance(module, nn.modules.dropout._DropoutNd | nn.modules.batchnorm._BatchNorm)
        and not _frozen_on_purpose(module)
    ]
    if not stuck:
        return []
    return [
        finding(
            "MODEL_IN_EVAL_MODE",
            f"{len(stuck)} dropout/batch-norm module(s) are in eval mode ({', '.join(stuck[:5])}):"
            " trained like this, dropout does nothing and batch norm never updates its statistics",
            "call model.train() before training (and model.eval() only to evaluate)",
            {"modules": stuck},
            layer=stuck[0],
        )
    ]
