"""Forward statistics at init (lecture: "activation statistics"), measured with a Probe.

Symmetric (zero/constant) init, activations that collapse or blow up with depth, saturated
tanh/sigmoid units and dead ReLUs. The probe runs on a fresh copy with dropout off and batch
norm in training mode, on the probe batch (>= 256 examples lets dead units be judged).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..findings import Finding
from ..nn.activations import activation_name, weight_layers
from ..probes import LayerStats, Probe
from ._base import Context, check, finding

_SATURATING = ("tanh", "sigmoid")


@contextmanager
def dropout_off(model: nn.Module):
    """Switch only the dropout modules to eval mode; batch norm keeps its mode."""
    dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    modes = [m.training for m in dropouts]
    for m in dropouts:
        m.eval()
    try:
        yield model
    finally:
        for m, mode in zip(dropouts, modes, strict=True):
            m.train(mode)


def activation_snapshot(ctx: Context) -> dict[str, LayerStats]:
    """Per-layer statistics of one forward of the probe batch (cached for other checks).

    With ``forward=`` the probe hooks a wrapper that runs ``forward(model, batch)``; its
    ``inner.`` prefix is dropped so the names are the model's own.
    """
    if "activations" not in ctx.cache:
        ctx.output()  # CannotCheck when the forward pass failed
        model = ctx.fresh_model()
        with dropout_off(model):
            if ctx.x is not None:
                probe = Probe(model, layers="all", max_examples=None, max_units=1 << 16)
                ctx.cache["activations"] = probe.snapshot(ctx.x)
            else:
                runner = _Runner(model, ctx)
                probe = Probe(runner, layers="all", max_examples=None, max_units=1 << 16)
                stats = probe.snapshot(ctx.batch)
                ctx.cache["activations"] = {
                    name.removeprefix("inner."): s
                    for name, s in stats.items()
                    if name.startswith("inner.")
                }
    return ctx.cache["activations"]


class _Runner(nn.Module):
    """``runner(batch)`` = the output of ``forward(model, batch)``, for a Probe."""

    def __init__(self, model: nn.Module, ctx: Context) -> None:
        super().__init__()
        self.inner = model
        self._ctx = ctx

    def forward(self, batch: Any) -> torch.Tensor:
        return self._ctx.run(self.inner, batch)[0]


@check("symmetric_init", codes=["SYMMETRIC_INIT"])
def symmetric_init(ctx: Context) -> list[Finding]:
    """Units of a hidden layer with identical weights compute the same thing forever.

    The lecture's first init: ``W = 0`` (or any constant). Every unit of the layer gets the same
    gradient, so symmetry never breaks. The output layer is exempt: its rows get different
    gradients from different classes.
    """
    layers = list(weight_layers(ctx.model))[:-1]
    found = []
    for name, layer in layers:
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        if len(w) < 2:
            continue
        spread = float((w - w[0]).abs().max())
        if spread <= 1e-12 * (float(w.abs().max()) + 1e-30):
            value = float(w[0, 0])
            found.append(
                finding(
                    "SYMMETRIC_INIT",
                    f"all {len(w)} units of layer '{name}' have identical weights "
                    f"({'all zero' if value == 0 else f'constant {value:g}'}): they get the "
                    "same gradient and stay identical",
                    "initialize with small random weights: "
                    "babysit.nn.init_model(model, 'he_normal') for ReLU, 'xavier' for tanh",
                    {"units": len(w), "value": value},
                    layer=name,
                )
            )
    return found


@check("activation_scale", codes=["VANISHING_ACTIVATIONS", "EXPLODING_ACTIVATIONS"])
def activation_scale(ctx: Context) -> list[Finding]:
    """The std of hidden activations must not collapse or blow up with depth (lecture)."""
    acts = _activation_layers(ctx)
    if len(acts) < 2:
        return []
    (first_name, first), (last_name, last) = acts[0], acts[-1]
    if first.std == 0:
        return []  # a first layer that outputs nothing is reported by dead_units / symmetric_init
    stds = {name: s.std for name, s in acts}
    ratio = last.std / max(first.std, 1e-30)
    scale = input_rms(ctx.x) if ctx.x is not None else None  # unknown behind forward=
    evidence = {"std_per_layer": stds, "last_over_first": ratio, "input_rms": scale}
    tiny = scale is not None and last.std < ctx.thresholds["activation_std_min"] * max(scale, 1e-30)
    if ratio < ctx.thresholds["activation_collapse"] or tiny:
        return [
            finding(
                "VANISHING_ACTIVATIONS",
                f"activation std collapses with depth: {first.std:.3g} at '{first_name}', "
                f"{last.std:.3g} at '{last_name}' ({ratio:.2g}×): later layers see ~0 and "
                "their weight gradients vanish",
                "scale the init to the layer: babysit.nn.init_model(model, 'xavier') for tanh, "
                "'he_normal' for ReLU; or add batch norm",
                evidence,
                layer=last_name,
            )
        ]
    if ratio > ctx.thresholds["activation_growth"]:
        return [
            finding(
                "EXPLODING_ACTIVATIONS",
                f"activation std grows with depth: {first.std:.3g} at '{first_name}', "
                f"{last.std:.3g} at '{last_name}' ({ratio:.2g}×)",
                "use a smaller init (babysit.nn.init_model(model, 'he_normal')) or batch norm",
                evidence,
                layer=last_name,
            )
        ]
    return []


@check("saturation", codes=["SATURATED_ACTIVATIONS"])
def saturation(ctx: Context) -> list[Finding]:
    """Saturated tanh/sigmoid units (|z| > 3.0 / 5.3) pass almost no gradient (lecture)."""
    found = []
    for name, s in _activation_layers(ctx):
        if s.kind not in _SATURATING or s.saturated_fraction is None:
            continue
        if s.saturated_fraction > ctx.thresholds["saturated_fraction"]:
            found.append(
                finding(
                    "SATURATED_ACTIVATIONS",
                    f"{s.saturated_fraction:.0%} of the {s.kind} pre-activations of '{name}' "
                    "are saturated (output within 0.5% of ±1 or 0/1, local gradient ~1-2% of its "
                    "maximum): gradients stop there",
                    "shrink the init (babysit.nn.init_model(model, 'xavier')), standardize the "
                    "inputs, or add batch norm before the activation",
                    {"saturated_fraction": s.saturated_fraction, "std": s.std},
                    layer=name,
                )
            )
    return found


@check("dead_units", codes=["DEAD_RELU"])
def dead_units(ctx: Context) -> list[Finding]:
    """ReLUs that output 0 for every example never get a gradient again (lecture: dead ReLU)."""
    found = []
    for name, s in _activation_layers(ctx):
        if s.dead_fraction is None or s.dead_fraction < ctx.thresholds["dead_relu_info"]:
            continue
        warning = s.dead_fraction >= ctx.thresholds["dead_relu_warning"]
        found.append(
            finding(
                "DEAD_RELU",
                f"{s.dead_fraction:.0%} of the ReLU units of '{name}' output 0 for all "
                f"{s.n_examples} probe examples",
                "check the bias and init of the layer before it (babysit.nn.init_model(model, "
                "'he_normal', bias=0.01)), or use Leaky ReLU",
                {
                    "dead_fraction": s.dead_fraction,
                    "n_examples": s.n_examples,
                    "judgeable": s.dead_judgeable,
                },
                layer=name,
                severity="warning" if warning and s.dead_judgeable else "info",
            )
        )
    return found


def _activation_layers(ctx: Context) -> list[tuple[str, LayerStats]]:
    """The probed nonlinearities in forward order (Maxout counts as one)."""
    stats = activation_snapshot(ctx)
    modules = dict(ctx.model.named_modules())
    return [
        (name, s)
        for name, s in stats.items()
        if "#" not in name and name in modules and activation_name(modules[name]) is not None
    ]


def input_rms(x: torch.Tensor) -> float:
    """Root mean square of the inputs: the scale the activation stds compare to."""
    return float(x.detach().double().pow(2).mean().sqrt()) if x.is_floating_point() else 1.0
