"""Forward statistics at init (lecture: "activation statistics"), measured with a Probe.

Activations that collapse or blow up with depth, saturated tanh/sigmoid units and dead ReLUs
(symmetric init needs a gradient: ``backward.symmetric_init``). The statistics are those of
the model at init on the probe batch (>= 256 examples lets dead units be judged), with dropout
off and batch norm in the user's mode: taken during the probe forward when no dropout is
active (the same forward, so it is not paid twice), else on a fresh copy with dropout off.
Only the layers judged here are measured (nonlinearities and recurrent layers).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..findings import Finding
from ..nn.activations import activation_name
from ..probes import LayerStats, Probe
from ._base import Context, check, finding

_SATURATING = ("tanh", "sigmoid")


def dropout_active(model: nn.Module) -> bool:
    """Whether a dropout module of ``model`` would drop anything now (train mode, p > 0)."""
    return any(
        isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0
        for m in model.modules()
    )


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


def _snapshot_probe(model: nn.Module) -> Probe:
    """The Probe of the activation snapshot: every example and unit of the judged layers."""
    return Probe(model, every=1, keep=1, layers=_judged, max_examples=None, max_units=1 << 16)


def probe_with_snapshot(ctx: Context) -> None:
    """Run the probe forward (:meth:`Context.probe`) with the snapshot's Probe attached, so the
    activation statistics cost no forward of their own.

    Only where that forward is the snapshot's: not run yet (so ``ctx.model`` is still the
    user's model at init, as a fresh copy would be) and no dropout active (the snapshot is
    taken with dropout off; batch norm keeps the user's mode in both). Otherwise nothing
    happens here and :func:`activation_snapshot` runs its own forward on a fresh copy.
    """
    if "probed" in ctx.cache or "activations" in ctx.cache or dropout_active(ctx.model):
        return
    with _snapshot_probe(ctx.model) as probe:
        probed = ctx.probe()
    if probed.error is None:
        ctx.cache["activations"] = probe.latest()


def activation_snapshot(ctx: Context) -> dict[str, LayerStats]:
    """Per-layer statistics of one forward of the probe batch (cached for other checks).

    Usually measured during the probe forward (:func:`probe_with_snapshot`). With
    ``forward=`` the probe hooks a wrapper that runs ``forward(model, batch)``; its
    ``inner.`` prefix is dropped so the names are the model's own.
    """
    if "activations" not in ctx.cache:
        ctx.output()  # CannotCheck when the forward pass failed
        model = ctx.fresh_model()
        with dropout_off(model):
            if ctx.x is not None:
                ctx.cache["activations"] = _snapshot_probe(model).snapshot(ctx.x)
            else:
                runner = _Runner(model, ctx)
                stats = _snapshot_probe(runner).snapshot(ctx.batch)
                ctx.cache["activations"] = {
                    name.removeprefix("inner."): s
                    for name, s in stats.items()
                    if name.startswith("inner.")
                }
    return ctx.cache["activations"]


def _judged(_name: str, module: nn.Module) -> bool:
    """The layers the snapshot's readers judge: the nonlinearities the registry names
    (activation scale, saturation, dead units) and recurrent layers (their saturation).
    Measuring every other module (convolutions, batch norms, blocks) cost more than the
    forward itself on a ResNet-18 and judged nothing."""
    return activation_name(module) is not None or isinstance(module, nn.RNNBase)


class _Runner(nn.Module):
    """``runner(batch)`` = the output of ``forward(model, batch)``, for a Probe."""

    def __init__(self, model: nn.Module, ctx: Context) -> None:
        super().__init__()
        self.inner = model
        self._ctx = ctx

    def forward(self, batch: Any) -> torch.Tensor:
        return self._ctx.run(self.inner, batch)[0]


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
