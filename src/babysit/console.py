"""Terminal output with rich: findings ordered by severity, with evidence and advice."""

from __future__ import annotations

from typing import Any

from .findings import Diagnosis, Finding

_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
MAX_EVIDENCE_ITEMS = 6


def print_diagnosis(diagnosis: Diagnosis, console=None) -> None:
    """Print each finding: severity and code, the message, the advice, the scalar evidence."""
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    if not diagnosis.findings:
        console.print("[green]No findings: every check passed.[/]")
        return
    for f in diagnosis:
        where = f" [dim]layer {escape(f.layer)}[/]" if f.layer else ""
        console.print(f"[{_STYLE[f.severity]}]{f.severity:>7}[/] [bold]{escape(f.code)}[/]{where}")
        console.print(f"        {escape(f.message)}")
        console.print(f"        [green]→ {escape(f.advice)}[/]")
        evidence = evidence_line(f)
        if evidence:
            console.print(f"        [dim]{escape(evidence)}[/]")
    errors = sum(f.severity == "error" for f in diagnosis)
    warnings = sum(f.severity == "warning" for f in diagnosis)
    verdict = "[bold red]not ok[/]" if errors else "[green]ok[/]"
    console.print(
        f"{errors} error(s), {warnings} warning(s), {len(diagnosis)} finding(s): {verdict}"
    )


def evidence_line(finding: Finding) -> str:
    """The scalar numbers behind a finding, ``name=value`` (lists and tables stay in JSON)."""
    items = [(k, v) for k, v in finding.evidence.items() if _scalar(v)][:MAX_EVIDENCE_ITEMS]
    return ", ".join(f"{k}={_short(v)}" for k, v in items)


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str | bool) or value is None


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."
