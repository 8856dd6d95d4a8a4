"""The report's sections, built from the collected runs: what to show, never how.

Each :class:`Section` carries its figures, tables and findings; the template lays them out. A
section exists only when its data does: a run directory with only ``lr_find.json`` gets a
summary and the LR range test, nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .. import runs
from ..findings import SEVERITIES, Finding
from ..tuning.space import describe
from .collect import FIX, Run
from .figures import Plot, render, style

__all__ = ["Section", "Table", "build_sections"]

BEST_TRIALS = 10  # rows of the search's best-trials table


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    plots: list[Plot] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    findings: list[tuple[str, Finding]] = field(default_factory=list)  # (run label, finding)
    notes: list[str] = field(default_factory=list)
    preformatted: list[tuple[str, str]] = field(default_factory=list)  # (caption, text)


def build_sections(found: list[Run]) -> list[Section]:
    """Summary first, then the lecture's order: data, activations, LR range test, search,
    training; then the repair ``babysit fix`` made."""
    sections = [_summary(found)]
    builders = (
        ("data_stats", _data, "data_stats.json"),
        ("activations", _activations, "activations.json"),
        ("lr_find", _lr_find, "lr_find.json"),
        ("search", _search, "search.json"),
        ("metrics", _training, "metrics.csv"),
        ("fix", _repair, "fix.json"),
    )
    for attribute, build, name in builders:
        for run in found:
            if not getattr(run, attribute):
                continue
            try:
                section = build(run)
            except Exception as err:  # one odd file costs its section, never the page
                sections[0].notes.append(
                    f"Could not draw {name}{_where(run)}: {type(err).__name__}: {err}"
                )
                continue
            if section is not None:
                sections.append(section)
    seen: dict[str, int] = {}
    for section in sections:  # unique ids: a second training section is "training-2"
        seen[section.id] = seen.get(section.id, 0) + 1
        if seen[section.id] > 1:
            section.id = f"{section.id}-{seen[section.id]}"
    return sections


def _where(run: Run) -> str:
    return f" ({run.label}/)" if run.label else ""


def _summary(found: list[Run]) -> Section:
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings = sorted(
        ((run.label or run.kind, f) for run in found for f in run.findings),
        key=lambda pair: order[pair[1].severity],
    )
    after_fix, repaired = _after_fix(found)
    findings += sorted(after_fix, key=lambda pair: order[pair[1].severity])
    section = Section("summary", "Summary", findings=findings)
    counts = {s: sum(f.severity == s for _, f in findings) for s in SEVERITIES}
    # Cannot check means say so: a findings.json that could not be read is never "no findings".
    unread = [
        f"{run.path / (FIX if run.findings_unread.startswith(FIX) else runs.FINDINGS)} "
        f"({run.findings_unread})"
        for run in found
        if run.findings_unread
    ]
    if findings:
        section.intro = ", ".join(f"{n} {s}" for s, n in counts.items() if n) + (
            ": most severe first. Each finding names what was measured and what to do; "
            'open "What does this mean?" for the reasoning.'
        )
    elif not unread and repaired:
        section.intro = "No findings on the repaired set-up: every check that ran on it stayed "
        section.intro += "silent (what the original had is below and in the Repair section)."
    elif not unread:
        section.intro = "No findings: every check and monitor that ran stayed silent."
    section.notes += repaired
    if unread:
        cannot = (
            "The findings could not be read from "
            + "; ".join(unread)
            + ": this page cannot say what the checks and monitors found"
            + (" there (the findings below are those that could be read)." if findings else ".")
        )
        section.intro = cannot + (" " + section.intro if findings else "")
    for run in found:
        final = _final_metrics(run)
        if final:
            section.tables.append(
                Table(
                    f"Final metrics{_where(run)}",
                    ["metric", "value"],
                    [[k, v] for k, v in final.items()],
                )
            )
        if run.stop_reason:
            section.notes.append(f"Training{_where(run)} stopped early: {run.stop_reason}")
        if run.config:
            config = {k: v for k, v in run.config.items() if k not in ("schema", "model_repr")}
            section.tables.append(
                Table(
                    f"Configuration of the {run.kind} run{_where(run)}",
                    ["setting", "value"],
                    [[k, v] for k, v in config.items()],
                )
            )
            if run.config.get("model_repr"):
                section.preformatted.append((f"Model{_where(run)}", str(run.config["model_repr"])))
        section.notes += [f"Could not read {problem}{_where(run)}" for problem in run.problems]
    return section


def _after_fix(found: list[Run]) -> tuple[list[tuple[str, Finding]], list[str]]:
    """For a run whose only findings are in ``fix.json``: the findings *after* the repair (what
    is still true of the repaired set-up), labelled so, and a note per such run naming what the
    original set-up had. A ``fix.json`` whose findings cannot be read makes the run's findings
    unknown, never "none"."""
    from .repair_section import findings_of

    out, notes = [], []
    for run in found:
        if run.fix is None or run.findings or run.findings_unread:
            continue
        try:
            after = findings_of(run.fix, "after")
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            run.findings_unread = f"fix.json: {err}"
            run.problems.append(f"fix.json: {err}")
            continue
        out += [(f"{run.label or 'fix'}: after the repair", f) for f in after]
        try:
            had = sorted({f.code for f in findings_of(run.fix, "before") if f.severity != "info"})
        except (TypeError, ValueError, KeyError, AttributeError):
            had = None
        left = sorted({f.code for f in after if f.severity != "info"})
        notes.append(
            f"Repair{_where(run)}: the findings shown are those of the repaired set-up. Before "
            + ("it (unreadable)" if had is None else f"it: {', '.join(had) or 'none'}")
            + f" at warning or error; after it: {', '.join(left) or 'none'}."
        )
    return out, notes


def _repair(run: Run) -> Section:
    from .repair_section import repair_section

    return repair_section(run.fix or {}, _where(run))


def _final_metrics(run: Run) -> dict[str, float]:
    """Each epoch-level metric's last value, and the number of epochs that ended (a run
    interrupted mid-epoch still shows what its last finished epoch measured)."""
    names = {
        ("train", "epoch_loss"): "train loss",
        ("train", "acc"): "train accuracy",
        ("train", "eval_acc"): "train accuracy (eval mode)",
        ("val", "loss"): "validation loss",
        ("val", "acc"): "validation accuracy",
        ("train", "lr"): "learning rate",
    }
    final = {}
    for row in run.metrics or []:
        key = (row["split"], row["name"])
        if key in names:
            final[names[key]] = row["value"]
    ended = {row["epoch"] for row in run.metrics or [] if row["name"] == "epoch_loss"}
    return {"epochs": len(ended), **final} if final else {}


def _data(run: Run) -> Section:
    from .data_plots import data_plot, data_summary

    stats = run.data_stats or {}
    section = Section(
        "data",
        "Data and preprocessing",
        "The lecture: zero-centre the data (and, for non-image data, normalize each feature), "
        "with statistics fitted on the training set only.",
    )
    plot = data_plot(stats)
    if plot:
        section.plots.append(plot)
    rows = data_summary(stats)
    if rows:
        columns = list(rows[0])
        section.tables.append(
            Table(
                f"Per-feature statistics of {stats.get('dataset', 'the data')}",
                columns,
                [[r[c] for c in columns] for r in rows],
            )
        )
    return section


def _activations(run: Run) -> Section | None:
    from .activation_plots import activation_plot

    document = run.activations or {}
    plot = activation_plot(document)
    if plot is None:
        return None
    if document.get("experiment") == "initlab":
        title = "Initialization: the lecture's activation experiment"
        intro = (
            f"A {document.get('depth')}-layer net of {document.get('width')} units fed "
            f"{document.get('n_inputs')} unit-Gaussian inputs, once per (activation, init): "
            "small weights make activations vanish, large ones saturate tanh, Xavier suits "
            "tanh, He suits ReLU."
        )
    else:
        title = f"Activations of your model{_where(run)}"
        intro = "Every hidden nonlinearity's output on a fixed training sample, at init and "
        intro += "after training."
    section = Section("activations", title, intro, plots=[plot])
    rows = []
    for setting in document.get("settings", []):
        for layer in setting.get("layers", []):
            rows.append(
                [
                    setting.get("label"),
                    layer.get("layer"),
                    layer.get("name"),
                    layer.get("mean"),
                    layer.get("std"),
                    layer.get("dead_fraction"),
                    layer.get("saturated_fraction"),
                ]
            )
    section.tables.append(
        Table(
            "Per-layer statistics",
            ["setting", "layer", "module", "mean", "std", "dead", "saturated"],
            rows,
        )
    )
    return section


def _lr_find(run: Run) -> Section:
    from ..tuning.lr_find import LRFinderResult

    result = LRFinderResult.from_dict(run.lr_find or {})
    with style():
        fig = result.plot()
    section = Section(
        "lr-find",
        f"Learning-rate range test{_where(run)}",
        "Smith (2017): train a few steps while the learning rate grows exponentially; the loss "
        "falls fastest a little below where it turns up. The suggestion is marked.",
        plots=[render(fig, "loss against learning rate in the range test, log x axis")],
    )
    confident = "confident" if result.confident else "not confident: " + "; ".join(result.reasons)
    suggestion = "none" if result.suggestion is None else f"{result.suggestion:.3g}"
    section.notes.append(f"Suggested learning rate {suggestion} ({result.rule} rule), {confident}.")
    section.tables.append(
        Table(
            "Every rule's learning rate",
            ["rule", "learning rate", "used"],
            [[rule, lr, rule == result.rule] for rule, lr in result.suggestions.items()],
        )
    )
    return section


def _search(run: Run) -> Section:
    doc = run.search or {}
    stages, trials = doc.get("stages") or [], doc.get("trials") or []
    metric = doc.get("metric", "metric")
    section = Section(
        "search",
        f"Hyperparameter search{_where(run)}",
        "Bergstra & Bengio (2012): random search in log space; the lecture: coarse first (few "
        "epochs, wide ranges), then fine (more epochs, narrowed ranges). Each stage's range is "
        "shaded; the best trial is circled.",
    )
    if stages and trials:
        from ..tuning.result import SearchResult

        result = SearchResult(trials=trials, best=doc.get("best"), stages=stages, metric=metric)
        with style():
            fig = result.plot()
        section.plots.append(render(fig, f"{metric} against each searched hyperparameter"))
    section.findings = [
        (run.label or "search", f) for f in run.findings if f.code == "BEST_AT_EDGE"
    ]
    names = sorted({n for s in stages for n in s.get("ranges", {})})
    if stages:
        section.tables.append(
            Table(
                "Stages and their ranges",
                ["stage", "trials", "epochs", *names],
                [
                    [s.get("stage"), s.get("trials"), s.get("epochs")]
                    + [describe(s.get("ranges", {}).get(n) or {}) for n in names]
                    for s in stages
                ],
            )
        )
    done = [t for t in trials if t.get("state") == "COMPLETE" and _finite(t.get("value"))]
    if done:
        last = max(t["stage"] for t in done)
        pool = sorted(
            (t for t in done if t["stage"] == last),
            key=lambda t: t["value"],
            reverse=doc.get("direction", "maximize") == "maximize",
        )[:BEST_TRIALS]
        params = sorted({n for t in pool for n in t.get("params", {})})
        section.tables.append(
            Table(
                f"Best trials of the last stage (stage {last}), by {metric}",
                ["trial", metric, "epochs", *params],
                [
                    [t["number"], t["value"], t.get("epochs_run")]
                    + [t["params"].get(n) for n in params]
                    for t in pool
                ],
            )
        )
    pruned = sum(t.get("state") == "PRUNED" for t in trials)
    if trials:
        section.notes.append(
            f"{len(trials)} trials: {len(done)} completed, {pruned} pruned (the loss broke out "
            "at 3× its start or turned NaN, or the metric fell below the median)."
        )
    return section


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _training(run: Run) -> Section:
    from .training_plots import training_plots

    section = Section(
        "training",
        f"Training{_where(run)}",
        "The lecture's babysitting plots, from this run's metrics.csv: loss, accuracy, "
        "update/weight ratio, dead and saturated units, gradient flow.",
    )
    with style():
        section.plots = training_plots(run.metrics or [], run.findings)
    return section
