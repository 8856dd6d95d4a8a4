"""The report's "Repair" section, from the ``fix.json`` that ``babysit.fix`` writes.

What a user needs to trust a repair (``docs/architecture.md``, "Repair"): the findings before
and after, every remedy tried in order with the evidence that accepted or rejected it (the
codes a re-diagnosis showed, the short runs' validation losses, or why it was skipped), the
patch lines to apply, what is left to change by hand, the remedies not tried, and the
validation-loss curves of the original and the repaired set-up, both trained for the same
steps from the same seed and judged on the same held-out examples. ``fix.json`` is read as
plain data (no model is loaded), so an odd file costs this section only.
"""

from __future__ import annotations

import math
from typing import Any

from ..findings import SEVERITIES, Finding
from .figures import Plot, figure, log_axis_if_wide, render

__all__ = ["findings_of", "repair_plot", "repair_section"]

INTRO = (
    "babysit fix applied the lecture's remedies to what diagnose found and kept a remedy only "
    "if (a) a re-diagnosis no longer shows its finding and shows no new warning or error, and "
    "(b) a short training run of the repaired set-up (same steps, seed and examples) reaches a "
    "lower validation loss on the same held-out examples than the set-up it replaces."
)


def findings_of(document: dict[str, Any], which: str) -> list[Finding]:
    """The findings of ``fix.json``'s ``"before"`` or ``"after"`` diagnosis."""
    diagnosis = document.get(which) or {}
    raw = diagnosis.get("findings") if isinstance(diagnosis, dict) else None
    if not isinstance(raw, list):
        raise ValueError(f"fix.json's {which!r} holds no list of findings")
    return [Finding.from_dict(f) for f in raw]


def repair_section(document: dict[str, Any], where: str = "") -> Any:
    """A :class:`~babysit.reporting.sections.Section` for one ``fix.json`` document."""
    from .sections import Section, Table

    before, after = findings_of(document, "before"), findings_of(document, "after")
    section = Section("repair", f"Repair{where}", INTRO)
    loud_before = {f.code for f in before if f.severity != "info"}
    steps = [s for s in document.get("steps") or [] if isinstance(s, dict)]
    patch = [str(line) for line in document.get("patch") or []]
    if not loud_before:
        section.notes.append(
            "Nothing at warning or error before the repair: nothing was repaired, nothing changed."
        )
    elif not document.get("changed"):
        section.notes.append(
            "No remedy verified: the repaired set-up is the original (see why below)."
        )
    fixed = document.get("fixed") or []
    if fixed:
        section.notes.append(f"Fixed (no re-diagnosis shows them): {', '.join(map(str, fixed))}.")
    remaining = [r for r in document.get("remaining") or [] if isinstance(r, dict)]
    if loud_before:
        section.notes.append(
            "Nothing at warning or error remains."
            if not remaining
            else f"{len(remaining)} finding(s) remain at warning or error: change them by hand "
            "(below)."
        )
    if document.get("elapsed_s") is not None:
        section.notes.append(f"The repair took {_seconds(document['elapsed_s'])}.")
    section.tables.append(
        Table(
            "Findings before and after the repair",
            ["code", "severity", "before", "after", "status"],
            _before_after(before, after),
        )
    )
    if steps:
        section.tables.append(
            Table(
                "Remedies tried, in order",
                ["#", "finding", "remedy", "verdict", "evidence", "patch"],
                [
                    [
                        i,
                        s.get("code"),
                        s.get("remedy"),
                        _verdict(s),
                        _evidence(s.get("evidence") or {}),
                        "; ".join(map(str, s.get("patch") or [])),
                    ]
                    for i, s in enumerate(steps, 1)
                ],
            )
        )
    if remaining:
        section.tables.append(
            Table(
                "Remaining: what to change by hand",
                ["code", "severity", "change", "why not repaired"],
                [
                    [r.get("code"), r.get("severity"), r.get("line"), r.get("reason")]
                    for r in remaining
                ],
            )
        )
    not_tried = [n for n in document.get("not_tried") or [] if isinstance(n, dict)]
    if not_tried:
        section.tables.append(
            Table(
                "Remedies not tried",
                ["finding", "remedy", "why"],
                [[n.get("code"), n.get("remedy"), n.get("reason")] for n in not_tried],
            )
        )
    config = document.get("config") or {}
    if config and document.get("changed"):
        section.tables.append(
            Table(
                "Train the repaired model with",
                ["setting", "value"],
                [[k, v] for k, v in config.items()],
            )
        )
    if patch:
        section.preformatted.append(("Patch: the accepted changes, in order", "\n".join(patch)))
    plot = repair_plot(document.get("curves") or {})
    if plot is not None:
        section.plots.append(plot)
    elif loud_before and document.get("changed"):
        section.notes.append("fix.json holds no training curves to draw.")
    return section


def _before_after(before: list[Finding], after: list[Finding]) -> list[list[Any]]:
    order = {s: i for i, s in enumerate(SEVERITIES)}
    severity: dict[str, str] = {}
    for f in [*before, *after]:  # the most severe occurrence of each code
        if f.code not in severity or order[f.severity] < order[severity[f.code]]:
            severity[f.code] = f.severity
    was, now = {f.code for f in before}, {f.code for f in after}
    rows = []
    for code in sorted(severity, key=lambda c: (order[severity[c]], c)):
        if code in was and code not in now:
            status = "fixed"
        elif code in now and code not in was:
            status = "new"
        elif severity[code] == "info":
            status = "info (context)"
        else:
            status = "remains"
        rows.append([code, severity[code], code in was, code in now, status])
    return rows


def _verdict(step: dict[str, Any]) -> str:
    if step.get("accepted"):
        return "accepted"
    return "skipped" if "skipped" in (step.get("evidence") or {}) else "rejected"


def _evidence(ev: dict[str, Any]) -> str:
    """The evidence that decided a step, as one line."""
    if "skipped" in ev:
        return f"skipped: {ev['skipped']}"
    parts = []
    if ev.get("finding_gone") is False:
        parts.append("the finding is still there")
    if ev.get("new_findings"):
        parts.append(f"new findings: {', '.join(map(str, ev['new_findings']))}")
    if "val_loss_before" in ev or "val_loss_after" in ev:
        parts.append(
            f"validation loss {_loss(ev.get('val_loss_before'))} -> "
            f"{_loss(ev.get('val_loss_after'))}"
            + (f" after {ev['train_steps']} steps" if ev.get("train_steps") else "")
        )
    if "val_loss_with_lr_retuned" in ev:
        parts.append(f"with the lr retuned: {_loss(ev['val_loss_with_lr_retuned'])}")
    if ev.get("rejected"):
        parts.append(str(ev["rejected"]))
    return "; ".join(parts) or "—"


def _loss(value: Any) -> str:
    if value is None:
        return "nan/inf"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _seconds(value: Any) -> str:
    try:
        return f"{float(value):.1f} s"
    except (TypeError, ValueError):
        return str(value)


def _points(curve: Any) -> tuple[list[float], list[float], float | None]:
    """Finite (step, loss) points of a ``[[step, loss|None], ...]`` curve, and the step where
    the loss turned NaN/Inf (None when it did not)."""
    steps, losses, broke = [], [], None
    for point in curve or []:
        step, loss = point[0], point[1]
        if loss is None or not math.isfinite(float(loss)):
            broke = float(step) if broke is None else broke
            continue
        steps.append(float(step))
        losses.append(float(loss))
    return steps, losses, broke


def repair_plot(curves: dict[str, Any]) -> Plot | None:
    """Validation loss against step, the original's short run and the repaired one's."""
    drawn = {k: _points(curves.get(k)) for k in ("before", "after") if curves.get(k)}
    if not drawn:
        return None
    labels = {"before": ("original", "C3", "o-"), "after": ("repaired", "C2", "s-")}
    values: list[float] = []
    with figure(6.4, 3.4) as fig:
        ax = fig.subplots()
        for key, (steps, losses, broke) in drawn.items():
            label, color, marker = labels[key]
            if steps:
                ax.plot(steps, losses, marker, color=color, ms=3, label=label)
                values += losses
            if broke is not None:
                ax.axvline(broke, color=color, ls=":", lw=1, label=f"{label}: loss NaN/Inf")
        log_axis_if_wide(ax, values)
        ax.set_xlabel("training step of the short run")
        ax.set_ylabel("validation loss")
        ax.set_title("Original vs repaired: the same steps, seed and held-out examples")
        ax.legend()
        return render(
            fig,
            "validation loss of the original and the repaired set-up over the short run",
            "Both set-ups trained for the same number of steps from the same seed on the same "
            "examples and judged on the same held-out examples; a remedy is kept only when the "
            "repaired curve ends lower.",
        )
