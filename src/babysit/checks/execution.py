"""Does the model run on the data, does the loss take its output, and does the loss reach only
registered parameters.

``forward_runs`` and ``loss_runs`` run before every other check (``diagnose`` adds them to any
selection, ``unregistered_params`` is in the default set): when the
forward pass or the loss fails, nothing else can be judged, and the user gets an error
(``FORWARD_FAILED``, ``LOSS_FAILED``) instead of a diagnosis that looks clean
(docs/architecture.md, "Cannot check means say so").

- ``forward_runs``: one forward of the probe batch (by the user's ``forward=`` when given); the
  leaf module that ran last names where it raised. The output is read as a tensor, the
  ``"logits"`` or the first tensor of a tuple/dict/``ModelOutput`` (:mod:`babysit.outputs`).
- ``loss_runs``: ``loss_fn(output, target)`` must be a finite-or-not scalar; for torch's losses
  the output's first dimension must also equal the targets' (a reshape across examples can
  broadcast silently, e.g. ``MSELoss`` on ``(1, 1)`` against ``(N, 1)``).
- ``unregistered_params``: leaves of the loss's autograd graph that require grad but are not
  parameters of the model (layers kept in a Python list, tensors created in ``forward``): no
  optimizer built from ``model.parameters()`` ever updates them.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from ..findings import Finding
from ..outputs import map_tensors
from ._base import Context, check, finding

__all__ = ["forward_runs", "graph_leaves", "loss_runs", "unregistered_params"]

_MAX_NAMED = 6


@check("forward_runs", codes=["FORWARD_FAILED"])
def forward_runs(ctx: Context) -> list[Finding]:
    """Run the model once on the probe batch; name the layer that raises."""
    from .forward import probe_with_snapshot  # the activation statistics ride on this forward

    probe_with_snapshot(ctx)
    probed = ctx.probe()
    if probed.error is None:
        _time_one_pass(ctx)
        return _fails_with_gradients(ctx)
    err, layer = probed.error, probed.layer
    ctx.cache["stop"] = "the model failed on the data (FORWARD_FAILED)"
    module = ctx.model.get_submodule(layer) if layer else None
    where = f" in layer '{layer}' ({module})" if layer else ""
    shape = _shapes(ctx.batch)
    if ctx.forward_fn is not None:
        advice = "fix forward(model, batch) so that it runs the model and returns (output, target)"
    elif isinstance(err, ValueError | TypeError) and "forward=" in str(err):
        advice = "pass forward=lambda model, batch: (output, target) to say how to run a batch"
    else:
        advice = (
            "make the input shape match the first layer (flatten images for an MLP, (N, C, L) "
            "for Conv1d), or fix the layer named here"
        )
    return [
        finding(
            "FORWARD_FAILED",
            f"the model raised {type(err).__name__}{where} on a batch of {shape}: {err}",
            advice,
            {
                "error": f"{type(err).__name__}: {err}",
                "input_shape": _first_shape(ctx.batch),
                "batch": shape,
                "forward": "yours" if ctx.forward_fn is not None else "(x, y) -> model(x)",
            },
            layer=layer,
        )
    ]


def _fails_with_gradients(ctx: Context) -> list[Finding]:
    """FORWARD_FAILED when the probe ran (without gradients) but the same batch raises with
    gradients on, as in training (e.g. an in-place change of a parameter inside ``forward``)."""
    err = ctx.cache.get("grad_pass_error")
    if err is None:
        return []
    ctx.cache["stop"] = "the model failed on the data with gradients on (FORWARD_FAILED)"
    return [
        finding(
            "FORWARD_FAILED",
            f"the model runs without gradients but raised {type(err).__name__} with gradients "
            f"on, as in training: {err}",
            "fix the forward pass so that it runs under autograd (e.g. no in-place change of a "
            "parameter or of a tensor autograd needs), then diagnose again",
            {"error": f"{type(err).__name__}: {err}", "batch": _shapes(ctx.batch)},
        )
    ]


# A first pass also pays one-time costs (kernel selection, lazy initialisation); a pass this
# cheap is timed once more and the faster count kept, so a small model is not sized as a big one.
RETIME_BELOW_S = 0.5


def _time_one_pass(ctx: Context) -> None:
    """Seconds of one forward+backward of the probe batch (``ctx.cache["pass_s"]``), which
    sizes the default set (:meth:`Context.affordable`) and ``budget_s`` estimates; the loss's
    autograd leaves are kept for ``unregistered_params`` on the way. With a loss, the timed
    pass is the gradient flow's own (:func:`backward.flow_pass`), so it is not paid twice."""
    seconds = None
    if ctx.probe().target is not None and ctx.probe().loss_error is None:
        from .backward import flow_pass  # the gradient flow's pass: timed here, run once

        start = time.perf_counter()
        try:
            _, loss, _ = flow_pass(
                ctx, on_graph=lambda v: ctx.cache.setdefault("graph_leaves", graph_leaves(v))
            )
            if loss is not None:
                seconds = time.perf_counter() - start
        except Exception:  # judged by loss_runs and gradient_flow
            pass
    if seconds is None or seconds < RETIME_BELOW_S:
        again = _plain_pass(ctx)
        seconds = again if seconds is None else min(seconds, again or seconds)
    if seconds is not None:
        ctx.cache["pass_s"] = seconds


def _plain_pass(ctx: Context) -> float | None:
    """Seconds of a forward+backward of the probe batch through ``ctx.model`` (restored)."""
    model = ctx.model
    state = {k: v.clone() for k, v in model.state_dict().items()}  # batch-norm statistics
    start = time.perf_counter()
    try:
        with torch.enable_grad():
            output, target = ctx.run(model)
            value = output.float().pow(2).mean()
            if target is not None and ctx.probe().loss_error is None:
                value = ctx.loss_fn(output, target)
            if isinstance(value, torch.Tensor) and value.requires_grad:
                ctx.cache.setdefault("graph_leaves", graph_leaves(value))
                value.backward()
    except Exception:  # the probe forward ran: a failure here is judged by loss_runs
        return None
    finally:
        model.zero_grad(set_to_none=True)
        model.load_state_dict(state)
    return time.perf_counter() - start


@check("loss_runs", codes=["LOSS_FAILED"])
def loss_runs(ctx: Context) -> list[Finding]:
    """``loss_fn(output, target)`` on the probe batch must give a scalar; torch's losses must
    also see one output row per target row."""
    probed = ctx.probe()
    if probed.error is not None or probed.target is None:
        return []  # FORWARD_FAILED / "no targets" say so
    output, target = probed.output, probed.target
    assert output is not None
    out_shape, target_shape = _shape(output), _shape(target)
    evidence: dict[str, Any] = {
        "output_shape": out_shape,
        "target_shape": target_shape,
        "output_read_from": probed.source,
        "loss_fn": type(ctx.loss_fn).__name__,
    }
    if probed.loss_error is not None:
        err = probed.loss_error
        evidence["error"] = f"{type(err).__name__}: {err}"
        message = f"{type(err).__name__}: {err}"
    elif _rows_differ(ctx, output, target):
        message = (
            f"the output has {output.shape[0]} rows but there are {target.shape[0]} targets: "
            "a reshape mixes examples across the batch (the loss only broadcasts)"
        )
    else:
        return []
    ctx.cache["loss_failed"] = True  # diagnose skips the checks that need the loss
    return [
        finding(
            "LOSS_FAILED",
            f"the loss cannot be computed on the model's output ({probed.source} of shape "
            f"{out_shape}, targets {target_shape}): {message}",
            "make the output (batch, ...) with one row per example, matching what loss_fn "
            "expects (keep the batch dimension first: x.flatten(1), not x.view(-1, k)); for "
            "outputs and targets that need reshaping, pass forward=lambda model, batch: "
            "(output, target)",
            evidence,
        )
    ]


def _rows_differ(ctx: Context, output: torch.Tensor, target: Any) -> bool:
    """For torch's own losses: output and targets must have as many rows (examples)."""
    if not isinstance(ctx.loss_fn, nn.modules.loss._Loss) or not isinstance(target, torch.Tensor):
        return False
    if output.dim() == 0 or target.dim() == 0:
        return False
    return output.shape[0] != target.shape[0]


@check("unregistered_params", codes=["UNREGISTERED_PARAMS"])
def unregistered_params(ctx: Context) -> list[Finding]:
    """Tensors that require grad and feed the loss but are not ``model.parameters()``."""
    leaves = ctx.cache.get("graph_leaves")
    if leaves is None:
        leaves = _leaves_of_a_fresh_pass(ctx)
    known = {id(p) for p in ctx.model.parameters()}
    if isinstance(ctx.loss_fn, nn.Module):
        known |= {id(p) for p in ctx.loss_fn.parameters()}
    map_tensors(ctx.batch, lambda t: known.add(id(t)) or t)  # inputs that require grad
    foreign = [t for t in leaves if id(t) not in known]
    if not foreign:
        return []
    containers = _unregistered_containers(ctx.model)
    numel = sum(t.numel() for t in foreign)
    shapes = [list(t.shape) for t in foreign]
    held = ", ".join(f"'{name}' ({what})" for name, what in containers[:_MAX_NAMED])
    where = (
        f"; the model keeps modules or tensors in plain Python containers: {held}"
        if containers
        else "; they are created in forward (e.g. torch.randn(..., requires_grad=True))"
    )
    return [
        finding(
            "UNREGISTERED_PARAMS",
            f"{len(foreign)} tensor(s) ({numel:,} values, shapes {shapes[:_MAX_NAMED]}) require "
            f"grad and take part in the loss but are not parameters of the model{where}: no "
            "optimizer built from model.parameters() updates them, and state_dict() does not "
            "save them",
            "hold layers in nn.ModuleList / nn.ModuleDict (not a list or dict), learnable "
            "tensors in nn.Parameter attributes created in __init__, not in forward",
            {
                "count": len(foreign),
                "numel": numel,
                "shapes": shapes,
                "containers": [name for name, _ in containers],
            },
            layer=containers[0][0] if containers else None,
        )
    ]


def _leaves_of_a_fresh_pass(ctx: Context) -> list[torch.Tensor]:
    """The loss's (or, without targets, the output's) autograd leaves on a fresh copy."""
    if ctx.probe().target is None:
        ctx.output()  # CannotCheck when the forward pass failed
    else:
        ctx.require_loss()  # CannotCheck when the loss failed
    model = ctx.fresh_model()
    with torch.enable_grad():
        output, target = ctx.run(model)
        value = output.float().sum() if target is None else ctx.loss_fn(output, target)
    leaves = graph_leaves(value) if isinstance(value, torch.Tensor) else []
    # the copy's parameters are not ctx.model's: map them back by position
    mapping = {id(c): o for c, o in zip(model.parameters(), ctx.model.parameters(), strict=True)}
    return [mapping.get(id(t), t) for t in leaves]


def graph_leaves(value: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors requiring grad that ``value`` was computed from (its autograd graph's
    ``AccumulateGrad`` nodes), each once, without running a backward pass."""
    if value.grad_fn is None:
        return [value] if value.requires_grad else []
    seen: set[Any] = set()
    leaves: dict[int, torch.Tensor] = {}
    stack = [value.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            leaves.setdefault(id(variable), variable)
        stack.extend(child for child, _ in node.next_functions)
    return list(leaves.values())


def _unregistered_containers(model: nn.Module) -> list[tuple[str, str]]:
    """Attributes that are plain lists, tuples or dicts holding modules or tensors needing
    grad: what ``nn.ModuleList``/``nn.ParameterList`` would have registered."""
    found = []
    for prefix, module in model.named_modules():
        for attr, value in vars(module).items():
            if attr.startswith("_") or not isinstance(value, list | tuple | dict):
                continue
            items = list(value.values()) if isinstance(value, dict) else list(value)
            modules = sum(isinstance(v, nn.Module) for v in items)
            tensors = sum(isinstance(v, torch.Tensor) and v.requires_grad for v in items)
            if modules or tensors:
                kind = type(value).__name__
                what = f"a Python {kind} of {modules or tensors} " + (
                    "modules" if modules else "tensors"
                )
                found.append((f"{prefix}.{attr}" if prefix else attr, what))
    return found


def _shape(value: Any) -> list[int] | str:
    return list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _first_shape(batch: Any) -> list[int] | None:
    if isinstance(batch, torch.Tensor):
        return list(batch.shape)
    if isinstance(batch, tuple | list) and batch and isinstance(batch[0], torch.Tensor):
        return list(batch[0].shape)
    return None


def _shapes(batch: Any) -> str:
    """``"shape (512, 40)"`` for an (x, y) batch, else each tensor's shape by position/key."""
    first = _first_shape(batch)
    if first is not None and not isinstance(batch, dict):
        return f"shape {tuple(first)}"
    if isinstance(batch, dict):
        parts = [f"{k}: {_shape(v)}" for k, v in batch.items()]
    elif isinstance(batch, tuple | list):
        parts = [str(_shape(v)) for v in batch]
    else:
        parts = [str(_shape(batch))]
    return "{" + ", ".join(parts) + "}"
