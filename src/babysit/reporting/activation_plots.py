"""The lecture's weight-initialization figure from an ``activations.json``.

Left: each setting's per-layer activation std (log axis, all settings on one scale) and mean — a std
collapsing towards 0 with depth (too small an init) or pinned at 1 with saturated tanh units
(too large) shows at a glance. Right: one histogram per layer and setting on a shared range: a
healthy layer keeps its bell shape; a collapsed one is a spike at 0; a saturated tanh piles at
±1. The init lab writes one row per (activation, init) setting; ``fit`` writes "at init" and
"after training".
"""

from __future__ import annotations

from typing import Any

from .figures import Plot, figure, render

__all__ = ["activation_plot"]

MAX_HISTOGRAMS = 12  # histogram columns at most; deeper nets show evenly spaced layers


def activation_plot(document: dict[str, Any]) -> Plot | None:
    """The figure for ``document`` (an ``activations.json``); ``None`` when it has no layer."""
    settings = [s for s in document.get("settings", []) if s.get("layers")]
    if not settings:
        return None
    depth = max(len(s["layers"]) for s in settings)
    shown = _evenly(depth, MAX_HISTOGRAMS)
    with figure(3.6 + 1.1 * len(shown), max(4.4, 0.6 + 1.6 * len(settings))) as fig:
        grid = fig.add_gridspec(
            len(settings), len(shown) + 2, width_ratios=[3.2, 0.1] + [1] * len(shown)
        )
        left = grid[:, 0].subgridspec(2, 1, hspace=0.05)
        curve = fig.add_subplot(left[0])
        means = fig.add_subplot(left[1], sharex=curve)
        for i, setting in enumerate(settings):
            layers = setting["layers"]
            depths = [row["layer"] for row in layers]
            stds = [max(row["std"], 1e-12) for row in layers]
            curve.semilogy(depths, stds, "o-", ms=3, color=f"C{i}", label=setting["label"])
            means.plot(depths, [row["mean"] for row in layers], "o-", ms=3, color=f"C{i}")
            for j, index in enumerate(shown):
                if index >= len(layers):
                    continue
                row = layers[index]
                ax = fig.add_subplot(grid[i, j + 2])
                edges = row["hist_edges"]
                ax.stairs(row["hist_counts"], edges, fill=True, color=f"C{i}")
                ax.set_yticks([])
                ax.grid(False)
                ax.tick_params(labelsize=6)
                ax.set_xticks([edges[0], edges[-1]], [f"{edges[0]:.2g}", f"{edges[-1]:.2g}"])
                if i == 0:
                    ax.set_title(f"layer {row['layer']}", fontsize=7, loc="center")
                if j == 0:
                    ax.set_ylabel(_short(setting["label"]), fontsize=7)
        means.set_xlabel("hidden layer")
        means.xaxis.get_major_locator().set_params(integer=True)
        means.set_ylabel("activation mean")
        curve.tick_params(labelbottom=False)
        curve.set_ylabel("activation std (log scale)")
        curve.set_title("Per layer: flat is healthy")
        curve.legend(loc="best")
        what = (
            "at init and after training"
            if document.get("experiment") == "fit"
            else "at init for each setting"
        )
        caption = (
            f"Activations of every hidden nonlinearity {what}: look for a std that collapses or "
            "explodes with depth, and for histograms piled at 0 (dead or vanishing) or at ±1 "
            "(saturated)."
        )
        return render(fig, f"activation std per layer and histograms, {what}", caption)


def _evenly(depth: int, limit: int) -> list[int]:
    if depth <= limit:
        return list(range(depth))
    return sorted({round(i * (depth - 1) / (limit - 1)) for i in range(limit)})


def _short(label: str) -> str:
    return label if len(label) <= 22 else label[:21] + "…"
