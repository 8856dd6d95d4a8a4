"""The lecture's "babysitting" figures for a ``fit`` run, drawn from its ``metrics.csv``.

- the loss per step (raw and smoothed, validation loss per epoch), on linear and log axes, with
  the 3× break-out line and the step of every finding marked: a curve that stays flat then drops
  means a bad init, one that explodes means a too-high learning rate;
- train vs validation accuracy per epoch with the gap shaded: a big gap is overfitting, no gap
  at low accuracy underfitting;
- the update/weight ratio per weight tensor on a log axis with the lecture's ~1e-3 band;
- the dead-ReLU and saturated fractions of each layer over time;
- the gradient norm of each weight layer over time (vanishing or exploding with depth).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..findings import Finding
from .figures import Plot, figure, log_axis_if_wide, render

__all__ = ["training_plots"]

HEALTHY_RATIO = 1e-3  # CS231n: update/weight ratio "somewhere around 1e-3"
RATIO_BAND = (1e-4, 1e-2)  # a decade either side: the band drawn as healthy
BREAKOUT = 3.0  # CS231n: break out when the loss exceeds 3x its start
DEAD_WARNING = 0.7  # AUTOTRAINER's dying-ReLU share, as in the ActivationStats monitor
SATURATED_WARNING = (
    0.5  # SATURATED_ACTIVATIONS above half a layer (docs/architecture.md, Definitions)
)


Series = dict[tuple[str, str], tuple[list[int], list[int], list[float]]]


def training_plots(metrics: list[dict[str, Any]], findings: list[Finding]) -> list[Plot]:
    """Every figure the metrics allow, in the lecture's order of looking."""
    series = _series(metrics)
    plots = []
    if ("train", "loss") in series:
        plots.append(_loss(series, findings))
    if ("train", "acc") in series or ("val", "acc") in series:
        plots.append(_accuracy(series))
    ratios = _prefixed(series, "update_ratio/")
    if ratios:
        plots.append(_update_ratios(ratios))
    dead, saturated = _prefixed(series, "dead_fraction/"), _prefixed(series, "saturated_fraction/")
    if dead or saturated:
        plots.append(_unit_fractions(dead, saturated))
    grads = _prefixed(series, "grad_norm/")
    if grads:
        plots.append(_grad_norms(grads))
    return plots


def _series(metrics: list[dict[str, Any]]) -> Series:
    out: dict[tuple[str, str], tuple[list[int], list[int], list[float]]] = defaultdict(
        lambda: ([], [], [])
    )
    for row in metrics:
        steps, epochs, values = out[(row["split"], row["name"])]
        steps.append(row["step"])
        epochs.append(row["epoch"])
        values.append(row["value"])
    return dict(out)


def _prefixed(series: Series, prefix: str) -> dict[str, tuple[list[int], list[float]]]:
    return {
        name[len(prefix) :]: (steps, values)
        for (split, name), (steps, _, values) in series.items()
        if split == "train" and name.startswith(prefix)
    }


def _smooth(values: list[float], span: int) -> list[float]:
    """Exponential moving average with a bias correction (Adam's), NaN/Inf passed through."""
    alpha, avg, weight, out = 2 / (span + 1), 0.0, 0.0, []
    for v in values:
        if v != v or v in (float("inf"), float("-inf")):
            out.append(v)
            continue
        avg = (1 - alpha) * avg + alpha * v
        weight = (1 - alpha) * weight + alpha
        out.append(avg / weight)
    return out


def _loss(series: Series, findings: list[Finding]) -> Plot:
    steps, _, losses = series[("train", "loss")]
    smooth = _smooth(losses, max(5, len(losses) // 40))
    val = series.get(("val", "loss"))
    finite = [v for v in losses if v == v and abs(v) != float("inf")]
    first = finite[0] if finite else None
    marked = [f for f in findings if f.step is not None]
    with figure(10.0, 3.4) as fig:
        axes = fig.subplots(1, 2)
        for ax, log in zip(axes, (False, True), strict=True):
            ax.plot(steps, losses, color="0.78", lw=0.7, label="mini-batch loss")
            ax.plot(steps, smooth, color="C0", label="smoothed")
            if val:
                ax.plot(val[0], val[2], "o-", color="C3", ms=3, label="validation loss")
            if first is not None and first > 0 and max(finite) > BREAKOUT * first / 2:
                ax.axhline(BREAKOUT * first, color="C3", ls=":", lw=1, label="3× the first loss")
            top = max(finite or [1.0])
            for f in marked:
                ax.axvline(f.step, color="C1", ls="--", lw=0.8)
                ax.text(f.step, top, f" {f.code}", rotation=90, va="top", fontsize=6, color="C1")
            ax.set_xlabel("training step")
            ax.set_ylabel("cross-entropy loss" if not log else "loss (log scale)")
            if log and not log_axis_if_wide(ax, finite, decades=0.0):
                ax.set_yscale("linear")
        axes[0].set_title("Loss: steady descent? plateau then drop (init)? explosion (lr)?")
        axes[1].set_title("The same on a log axis: late progress shows")
        axes[0].legend(loc="upper right")
        caption = (
            "Grey: each mini-batch's loss; blue: its moving average; red dots: validation loss "
            "at each epoch's end; dashed orange lines: the steps where a finding fired."
        )
        return render(fig, "training loss per step, linear and log scale", caption)


def _accuracy(series: Series) -> Plot:
    train, val = series.get(("train", "acc")), series.get(("val", "acc"))
    evaluated = series.get(("train", "eval_acc"))
    with figure(6.4, 3.4) as fig:
        ax = fig.subplots()
        if train:
            ax.plot([e + 1 for e in train[1]], train[2], "o-", ms=3, label="train (running)")
        if evaluated:
            ax.plot(
                [e + 1 for e in evaluated[1]],
                evaluated[2],
                "s--",
                ms=3,
                color="C2",
                label="train (eval mode, 1000 examples)",
            )
        if val:
            ax.plot([e + 1 for e in val[1]], val[2], "o-", ms=3, color="C1", label="validation")
        if train and val and train[1] == val[1]:
            epochs = [e + 1 for e in train[1]]
            ax.fill_between(epochs, train[2], val[2], color="C1", alpha=0.15, label="gap")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("accuracy")
        ax.set_title("Accuracy: a big gap overfits, no gap at low accuracy underfits")
        ax.legend(loc="lower right")
        return render(fig, "train and validation accuracy per epoch, gap shaded")


def _update_ratios(ratios: dict[str, tuple[list[int], list[float]]]) -> Plot:
    weights = {k: v for k, v in ratios.items() if not k.endswith("bias")} or ratios
    with figure(6.4, 3.4) as fig:
        ax = fig.subplots()
        ax.axhspan(*RATIO_BAND, color="C2", alpha=0.12, label="1e-4 … 1e-2")
        ax.axhline(HEALTHY_RATIO, color="C2", lw=1, label="1e-3 (lecture)")
        for name, (steps, values) in weights.items():
            ax.plot(steps, [max(v, 1e-12) for v in values], "o-", ms=2, lw=1, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("‖ΔW‖ / ‖W‖ per step")
        ax.set_title("Update/weight ratio: near 1e-3; far above = lr too high")
        ax.legend(ncols=2)
        return render(
            fig,
            "update to weight norm ratio per weight tensor, log scale",
            "Each line is one weight tensor, measured from the optimizer's real step (sampled).",
        )


def _unit_fractions(
    dead: dict[str, tuple[list[int], list[float]]],
    saturated: dict[str, tuple[list[int], list[float]]],
) -> Plot:
    panels = [(p, t) for p, t in ((dead, "dead ReLU units"), (saturated, "saturated units")) if p]
    with figure(5.0 * len(panels), 3.2) as fig:
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (fractions, what) in zip(axes, panels, strict=True):
            limit = DEAD_WARNING if what.startswith("dead") else SATURATED_WARNING
            ax.axhline(limit, color="C3", ls=":", lw=1, label=f"warning at {limit:.0%}")
            for name, (steps, values) in fractions.items():
                ax.plot(steps, values, "o-", ms=2, lw=1, label=f"module {name}")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("training step")
            ax.set_ylabel(f"fraction of {what}")
            ax.set_title(f"{what.capitalize()} per layer: should stay low")
            ax.legend()
        return render(fig, "dead and saturated unit fractions per layer over training")


def _grad_norms(grads: dict[str, tuple[list[int], list[float]]]) -> Plot:
    with figure(6.4, 3.4) as fig:
        ax = fig.subplots()
        for name, (steps, values) in grads.items():
            ax.plot(
                steps, [max(v, 1e-30) for v in values], "o-", ms=2, lw=1, label=f"module {name}"
            )
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("‖∂L/∂W‖")
        ax.set_title("Gradient norm per layer: decades apart = vanishing/exploding")
        ax.legend(ncols=2)
        return render(fig, "gradient norm per weight layer over training, log scale")
