"""The search's result: the trials of every stage, the best one, the findings; its views (the
lecture's search scatter, a notebook view, the model ensemble) and the files it writes into the
run directory (``trials.csv``, ``search.json``, ``findings.json``).

Importing this module imports neither optuna nor matplotlib (the report reads a search's run
directory through :class:`SearchResult` without them).
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import runs
from ..findings import Finding
from .space import describe

__all__ = ["SearchFailed", "SearchResult", "best_trial", "trial_rows", "write_run"]


class SearchFailed(RuntimeError):
    """Every trial of a stage failed: no value to narrow around, no best trial.

    ``result`` holds what was run (each failed trial with its ``error``); the run directory,
    when there is one, was written before this was raised.
    """

    def __init__(self, message: str, result: SearchResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class SearchResult:
    """The trials of every stage, the best one, and the findings (``BEST_AT_EDGE``)."""

    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    findings: list[Finding] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)  # ranges and epochs per stage
    run_dir: Path | None = None

    metric: str = "metric"  # the name of what ``value`` measures (e.g. "val_acc")
    direction: str = "maximize"  # whether a larger ``value`` is better ("maximize") or not
    _builtin: Any = field(default=None, repr=False)
    _study: str = field(default="", repr=False)

    @property
    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def plot(self, path: str | os.PathLike | None = None):
        """The lecture's search scatter: the metric of every completed trial against each
        numeric parameter (log x for log ranges), one colour per stage, each stage's range
        shaded, the best trial circled; and the metric by stage. Returns the ``Figure``."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        done = [t for t in self.trials if t["state"] == "COMPLETE" and t["value"] is not None]
        numeric = [
            n
            for n, d in (self.stages[0]["ranges"].items() if self.stages else [])
            if d["kind"] != "choice"
        ]
        panels = len(numeric) + 1
        fig = Figure(figsize=(4.2 * panels, 3.6), layout="tight")
        FigureCanvasAgg(fig)
        axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
        for ax, name in zip(axes, numeric, strict=False):
            for stage in self.stages:
                k = stage["stage"]
                pts = [(t["params"][name], t["value"]) for t in done if t["stage"] == k]
                rng = stage["ranges"][name]
                if "low" in rng:  # a range narrowed to one integer is a choice
                    ax.axvspan(rng["low"], rng["high"], color=f"C{k - 1}", alpha=0.08)
                if pts:
                    ax.scatter(
                        *zip(*pts, strict=True),
                        s=14,
                        color=f"C{k - 1}",
                        label=f"stage {k} ({stage['epochs']} epochs)",
                    )
            if self.best is not None:
                ax.scatter(
                    [self.best["params"][name]],
                    [self.best["value"]],
                    s=90,
                    facecolors="none",
                    edgecolors="k",
                    label="best",
                )
            if self.stages[0]["ranges"][name]["kind"] == "loguniform":
                ax.set_xscale("log")
            ax.set_xlabel(name)
            ax.set_ylabel(self.metric)
            ax.set_title(f"{self.metric} vs {name}: is the peak inside the range?", fontsize=9)
            if ax.get_legend_handles_labels()[0]:  # nothing completed: no legend to draw
                ax.legend(fontsize=7)
        by_stage = [[t["value"] for t in done if t["stage"] == s["stage"]] for s in self.stages]
        axes[-1].boxplot([v or [math.nan] for v in by_stage])
        axes[-1].set_xticks(
            range(1, len(by_stage) + 1), [f"stage {s['stage']}" for s in self.stages]
        )
        axes[-1].set_ylabel(self.metric)
        axes[-1].set_title(f"{self.metric} by stage: the fine stage should sit higher", fontsize=9)
        if path is not None:
            fig.savefig(path, dpi=100)
        return fig

    def _repr_html_(self) -> str:
        """Jupyter: the search scatter, the best trial, each stage's ranges and the findings;
        ``babysit.report(run_dir)`` has the full page."""
        from html import escape

        from ..findings import Diagnosis
        from ..plotting import data_uri

        parts = []
        if self.stages and any(t["state"] == "COMPLETE" for t in self.trials):
            parts.append(f'<img src="{data_uri(self.plot(), dpi=70)}" alt="search scatter">')
        if self.best is not None:
            params = ", ".join(f"{k}={_short(v)}" for k, v in self.best["params"].items())
            parts.append(
                f"<p><b>best {escape(self.metric)} {self.best['value']:.4g}</b> (trial "
                f"{self.best['number']}, stage {self.best['stage']}): {escape(params)}</p>"
            )
        rows = "".join(
            f"<tr><td>{s['stage']}</td><td>{s['trials']}</td><td>{s['epochs']}</td><td>"
            + escape("; ".join(f"{n}: {describe(r)}" for n, r in s["ranges"].items()))
            + "</td></tr>"
            for s in self.stages
        )
        head = "<tr><th>stage</th><th>trials</th><th>epochs</th><th>ranges</th></tr>"
        parts.append(f"<table>{head}{rows}</table>")
        parts.append(Diagnosis(self.findings)._repr_html_())
        return "".join(parts)

    def ensemble(self, k: int = 3) -> dict[str, Any]:
        """The lecture's model ensemble: average the predicted probabilities of the top-``k``
        completed trials of the last stage, on the test split; with each model's own test
        accuracy beside it (the first is the best trial's).

        Needs the built-in objective and a run directory (the trials' weights are kept there).
        """
        if self._builtin is None or self._builtin.models_dir is None:
            raise ValueError(
                "ensemble() needs a search with the built-in objective and a run_dir: the "
                "trials' weights are kept in run_dir/models/"
            )
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        done = [t for t in self.trials if t["state"] == "COMPLETE" and t["value"] is not None]
        if not done:
            raise ValueError("no completed trial to ensemble")
        last = max(t["stage"] for t in done)
        top = sorted((t for t in done if t["stage"] == last), key=lambda t: -t["value"])[:k]
        return self._builtin.ensemble(self._study, top)

    def __repr__(self) -> str:
        best = "none" if self.best is None else f"{self.best['value']:.4g} {self.best['params']}"
        return f"SearchResult({len(self.trials)} trials, {len(self.stages)} stages; best {best})"


def trial_rows(study: Any, stage: int) -> list[dict[str, Any]]:
    """One row per trial of a stage's Optuna study: what ``SearchResult.trials`` holds."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "stage": stage,
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": dict(t.params),
                "epochs": t.user_attrs.get("epochs"),
                "epochs_run": len(t.intermediate_values),
                "error": t.user_attrs.get("error"),
            }
        )
    return rows


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def best_trial(trials: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    """The best completed trial of the last stage that completed any (it trained longest)."""
    done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    if not done:
        return None
    last = max(t["stage"] for t in done)  # the longest-trained stage decides
    pool = [t for t in done if t["stage"] == last]
    pick = max if direction == "maximize" else min
    return pick(pool, key=lambda t: t["value"])


def write_run(run_dir: Path, result: SearchResult, storage: str | None) -> None:
    """``trials.csv``, ``findings.json`` and ``search.json`` (``storage`` already masked)."""
    names = sorted({n for t in result.trials for n in t["params"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["stage", "number", "state", "value", "epochs", "epochs_run", *names, "error"])
    for t in result.trials:
        writer.writerow(
            [
                t["stage"],
                t["number"],
                t["state"],
                t["value"],
                t["epochs"],
                t["epochs_run"],
                *(t["params"].get(n) for n in names),
                t.get("error") or "",
            ]
        )
    runs.atomic_write_bytes(run_dir / "trials.csv", buffer.getvalue().encode())
    runs.write_json(run_dir, runs.FINDINGS, {"findings": [f.to_dict() for f in result.findings]})
    runs.write_json(
        run_dir,
        "search.json",
        {
            "metric": result.metric,
            "direction": result.direction,
            "stages": result.stages,
            "best": result.best,
            "storage": storage,
            "trials": result.trials,  # typed parameters, for the report
        },
    )
