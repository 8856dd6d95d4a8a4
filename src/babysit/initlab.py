"""The init lab: CS231n Lecture 6's weight-initialization experiment, on any activation and init.

The lecture feeds unit-Gaussian data through a 10-layer net of 500 units per layer and looks at
each layer's activations:

- tanh + N(0, 0.01²): the std shrinks ~0.2x per layer, activations collapse to 0 and so do the
  weight gradients (∂L/∂W = xᵀ ∂L/∂z, with x -> 0);
- tanh + N(0, 1): every unit saturates at ±1, local gradients are 0;
- tanh + Xavier (std 1/sqrt(fan_in), Glorot & Bengio 2010): a slow, healthy decline;
- ReLU + Xavier: ReLU zeroes half the inputs, the variance halves per layer;
- ReLU + He (std sqrt(2/fan_in), He et al. 2015): the std stays put.

:func:`run` reproduces it (measuring with :class:`babysit.probes.Probe`), :func:`print_table`
prints it and :func:`plot` draws the lecture's figure: per-layer std, and per-layer histograms.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import runs
from .nn.activations import activation as make_activation
from .nn.init import init_model
from .probes import LayerRow, measure_layers

__all__ = [
    "LECTURE_SETTINGS",
    "InitLabResult",
    "LayerRow",
    "Setting",
    "SettingResult",
    "plot",
    "print_table",
    "run",
]


HIST_BINS = 40


@dataclass(frozen=True)
class Setting:
    """One (activation, init scheme) pair; ``init_kwargs`` go to ``init_model`` (e.g. std)."""

    activation: str | None
    init: str
    init_kwargs: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.init == "normal":
            scheme = f"N(0, {self.init_kwargs.get('std', 0.01):g}²)"
        else:
            extra = ", ".join(f"{k}={v:g}" for k, v in self.init_kwargs.items())
            scheme = self.init + (f"({extra})" if extra else "")
        return f"{self.activation} + {scheme}" if self.activation else scheme


LECTURE_SETTINGS = (
    Setting("tanh", "normal", {"std": 0.01}),
    Setting("tanh", "normal", {"std": 1.0}),
    Setting("tanh", "xavier_normal"),
    Setting("relu", "xavier_normal"),
    Setting("relu", "he_normal"),
)


@dataclass
class SettingResult:
    setting: Setting
    layers: list[LayerRow]

    @property
    def stds(self) -> list[float]:
        return [row.std for row in self.layers]


@dataclass
class InitLabResult:
    depth: int
    width: int
    n_inputs: int
    seed: int
    results: list[SettingResult]

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": "initlab",
            "depth": self.depth,
            "width": self.width,
            "n_inputs": self.n_inputs,
            "seed": self.seed,
            "settings": [
                {
                    "label": r.setting.label,
                    **asdict(r.setting),
                    "layers": [asdict(row) for row in r.layers],
                }
                for r in self.results
            ],
        }


def deep_net(
    activation: str, depth: int, width: int, in_features: int | None = None
) -> nn.Sequential:
    """The lecture's net: ``depth`` blocks of ``Linear(width, width) -> activation``, no head."""
    layers: list[nn.Module] = []
    fan_in = in_features or width
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), make_activation(activation)]
        fan_in = width
    return nn.Sequential(*layers)


def run(
    settings: Iterable[Setting | str] = LECTURE_SETTINGS,
    *,
    depth: int = 10,
    width: int = 500,
    n_inputs: int = 1000,
    seed: int = 0,
    model: nn.Module | None = None,
    data: torch.Tensor | None = None,
    progress: bool = False,
    run_dir: str | Path | None = None,
) -> InitLabResult:
    """Measure per-layer activations and gradients at init for each setting.

    Args:
        settings: ``Setting``s, or init scheme names when ``model`` is given.
        depth, width: the lecture's net (10 layers of 500 units) when ``model`` is None.
        n_inputs: unit-Gaussian input examples (the lecture uses 1000).
        model: your own model (e.g. a builder model); each setting re-initializes a copy of it
            and its activation is ignored. Your model itself is never modified.
        data: inputs for ``model``; default unit-Gaussian of its first layer's ``in_features``.
        run_dir: if given, writes ``activations.json`` and ``initlab.png`` there.

    The backward pass uses a fixed random upstream gradient ``∂L/∂out ~ N(0, 1)``, so the
    gradient norms compare across settings.
    """
    settings = [s if isinstance(s, Setting) else Setting(None, s) for s in settings]
    if not settings:
        raise ValueError("initlab needs at least one setting")
    generator = torch.Generator().manual_seed(seed)
    if model is None:
        inputs = torch.randn(n_inputs, width, generator=generator)
    else:
        inputs = (
            data
            if data is not None
            else torch.randn(n_inputs, _in_features(model), generator=generator)
        )
    results = []
    for setting in _progress(settings, progress):
        torch.manual_seed(seed)  # every setting draws the same random stream
        net = (
            copy.deepcopy(model)
            if model is not None
            else deep_net(setting.activation, depth, width)
        )
        init_model(net, setting.init, data=inputs, **setting.init_kwargs)
        results.append(
            SettingResult(setting, measure_layers(net, inputs, generator, bins=HIST_BINS))
        )
    result = InitLabResult(depth, width, len(inputs), seed, results)
    if run_dir is not None:
        runs.write_json(run_dir, runs.ACTIVATIONS, result.to_dict())
        plot(result, Path(run_dir) / "initlab.png")
    return result


def settings_from_cli(
    activations: Sequence[str], inits: Sequence[str], *, std: float | None
) -> list[Setting]:
    """Pair ``--activation`` and ``--init`` options (one of them may be given once)."""
    if not activations and not inits:
        return list(LECTURE_SETTINGS)
    activations = list(activations) or ["relu"]
    inits = list(inits) or ["he_normal"]
    if len(activations) == 1:
        activations *= len(inits)
    if len(inits) == 1:
        inits *= len(activations)
    if len(activations) != len(inits):
        raise ValueError(
            f"--activation and --init pair up in order: got {len(activations)} activations and "
            f"{len(inits)} inits; give the same number, or one of either"
        )
    for name in activations:
        make_activation(name)  # raises ValueError listing the known names
    kwargs = {"std": std} if std is not None else {}
    return [
        Setting(a, i, kwargs if i == "normal" else {})
        for a, i in zip(activations, inits, strict=True)
    ]


def print_table(result: InitLabResult, console=None) -> None:
    """Print one table per setting: the lecture's per-layer mean/std, plus gradients."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for r in result.results:
        table = Table(
            title=f"{r.setting.label}  ({result.depth}×{result.width}, {result.n_inputs} inputs)"
        )
        for column in ("layer", "mean", "std", "saturated", "dead", "‖∂L/∂a‖", "‖∂L/∂W‖"):
            table.add_column(column, justify="right")
        for row in r.layers:
            table.add_row(
                str(row.layer),
                f"{row.mean:+.2e}",
                f"{row.std:.2e}",
                _percent(row.saturated_fraction),
                _percent(row.dead_fraction),
                _number(row.act_grad_norm),
                _number(row.weight_grad_norm),
            )
        console.print(table)


def plot(result: InitLabResult, path: str | Path) -> Path:
    """Draw the lecture's figure: per-layer std (log scale) and per-layer histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, depth = len(result.results), max(len(r.layers) for r in result.results)
    positive = [s for r in result.results for s in r.stds if s > 0] or [1.0]
    std_limits = (min(positive) / 2, max(positive) * 2)  # one scale for all rows: compare them
    fig = plt.figure(figsize=(3.2 + 1.25 * depth, 2.0 * n + 0.6), layout="constrained")
    grid = fig.add_gridspec(n, depth + 2, width_ratios=[2.6, 0.15] + [1] * depth)
    for i, r in enumerate(result.results):
        curve = fig.add_subplot(grid[i, 0])
        layers = [row.layer for row in r.layers]
        curve.semilogy(layers, [max(s, 1e-12) for s in r.stds], "o-", color="C0", label="std")
        curve.set_ylim(*std_limits)
        curve.set_title(r.setting.label, fontsize=10, loc="left")
        curve.set_xlabel("layer")
        curve.set_ylabel("activation std")
        curve.grid(True, which="both", alpha=0.3)
        for j, row in enumerate(r.layers):
            ax = fig.add_subplot(grid[i, j + 2])
            edges = row.hist_edges
            ax.stairs(row.hist_counts, edges, fill=True, color="C1")
            ax.set_yticks([])
            ax.tick_params(labelsize=6)
            ax.set_xticks([edges[0], edges[-1]])
            ax.set_xticklabels([f"{edges[0]:.2g}", f"{edges[-1]:.2g}"])
            if i == 0:
                ax.set_title(f"layer {row.layer}", fontsize=8)
    fig.suptitle(
        f"Activations at init, {result.depth} layers × {result.width} units: look for a std that "
        "collapses or explodes with depth, and histograms piled at 0 or ±1",
        fontsize=11,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _in_features(model: nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return module.in_features
    raise ValueError("initlab needs data= for a model whose first layer is not nn.Linear")


def _progress(items: list, enabled: bool):
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description="init lab", transient=True)


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2e}"
