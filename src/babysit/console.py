"""Terminal output with rich: findings ordered by severity, with evidence and advice."""

from __future__ import annotations

import json

from .findings import Diagnosis

_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def print_diagnosis(diagnosis: Diagnosis, console=None) -> None:
    """Print each finding: severity, code, layer, message, advice and its evidence numbers."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    if not diagnosis.findings:
        console.print("[green]No findings: every check passed.[/]")
        return
    table = Table(show_lines=True, title="babysit diagnose")
    for column in ("severity", "code", "finding", "advice"):
        table.add_column(column, overflow="fold")
    for f in diagnosis:
        evidence = json.dumps(f.evidence)
        evidence = evidence if len(evidence) <= 160 else evidence[:157] + "..."
        where = f" [dim](layer {escape(f.layer)})[/]" if f.layer else ""
        table.add_row(
            f"[{_STYLE[f.severity]}]{f.severity}[/]",
            escape(f.code),
            f"{escape(f.message)}{where}\n[dim]{escape(evidence)}[/]",
            escape(f.advice),
        )
    console.print(table)
    verdict = "[green]no error[/]" if diagnosis.ok else "[bold red]errors found[/]"
    console.print(f"{len(diagnosis)} finding(s), {verdict}")
