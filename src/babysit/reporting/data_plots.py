"""The lecture's preprocessing figure from a ``data_stats.json``: per-feature (or per-channel)
mean and std before and after the fitted preprocessing. Zero-centred data has every mean at 0;
standardized data has every std at 1."""

from __future__ import annotations

from typing import Any

from .figures import Plot, figure, render

__all__ = ["data_plot", "data_summary"]


def data_plot(stats: dict[str, Any]) -> Plot | None:
    """Means and stds per feature, before and after; ``None`` without both."""
    before, after = stats.get("before"), stats.get("after")
    if not before or not after or not before.get("mean"):
        return None
    with figure(10.0, 3.2) as fig:
        axes = fig.subplots(1, 2)
        for ax, key, target in zip(axes, ("mean", "std"), (0.0, 1.0), strict=True):
            features = range(len(before[key]))
            ax.plot(features, before[key], ".-", ms=3, lw=0.8, label="raw")
            ax.plot(features, after[key], ".-", ms=3, lw=0.8, label="preprocessed")
            ax.axhline(target, color="0.4", ls=":", lw=1)
            ax.set_xlabel("feature")
            ax.set_ylabel(f"{key} over the training set")
            ax.legend()
        axes[0].set_title("Per-feature mean: zero-centred after?")
        axes[1].set_title("Per-feature std: unit scale after?")
        name = stats.get("dataset", "the data")
        return render(
            fig,
            f"per-feature mean and std of {name} before and after preprocessing",
            "Statistics of the training split only: the same fitted transform is applied to "
            "validation and test data.",
        )


def data_summary(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per state (raw, preprocessed): mean of means, spread of means, mean std."""
    rows = []
    for label, key in (("raw", "before"), ("preprocessed", "after")):
        part = stats.get(key) or {}
        means, stds = part.get("mean") or [], part.get("std") or []
        if not means or not stds:
            continue
        mean = sum(means) / len(means)
        spread = (sum((m - mean) ** 2 for m in means) / len(means)) ** 0.5
        rows.append(
            {
                "state": label,
                "features": len(means),
                "mean of means": mean,
                "spread of means": spread,
                "mean std": sum(stds) / len(stds),
            }
        )
    return rows
