"""Render the sections into one self-contained HTML page (jinja2, autoescaped)."""

from __future__ import annotations

import functools
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import runs
from ..findings import SEVERITIES
from ..version import __version__
from .collect import Run
from .sections import Section

__all__ = ["REPORT", "render_page", "write_page"]

REPORT = "report.html"
LONG_TABLE = 12  # tables with more rows are folded into a <details>


def render_page(title: str, run_dir: Path, found: list[Run], sections: list[Section]) -> str:
    """The HTML text. Every user-supplied string is escaped by the template's autoescaping;
    only the finding pages, rendered from babysit's own Markdown with raw HTML disabled, are
    inserted as markup."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("babysit.reporting", "templates"),
        autoescape=True,  # every {{ }} is HTML-escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = format_value
    summary = sections[0].findings if sections and sections[0].id == "summary" else []
    counts = [(s, sum(f.severity == s for _, f in summary)) for s in SEVERITIES]
    kinds = ", ".join(dict.fromkeys(r.kind for r in found))
    return env.get_template("report.html.j2").render(
        title=title,
        run_dir=str(run_dir),
        kinds=kinds,
        written=datetime.now().strftime("%Y-%m-%d %H:%M"),
        version=__version__,
        sections=sections,
        counts=counts,
        explain=_explain_html,
        long_table=LONG_TABLE,
    )


def write_page(run_dir: Path, html: str) -> Path:
    """Write ``run_dir/report.html`` atomically."""
    return runs.atomic_write_bytes(run_dir / REPORT, html.encode("utf-8", errors="replace"))


def format_value(value: Any) -> str:
    """Numbers to 4 significant digits (NaN and ±inf spelled out), lists shortened; the rest
    as ``str``. The template escapes the result."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        shown = ", ".join(format_value(v) for v in value[:8])
        return f"[{shown}{', …' if len(value) > 8 else ''}]"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {format_value(v)}" for k, v in list(value.items())[:8])
    return str(value)


@functools.cache
def _explain_html(code: str) -> str:
    """The code's page as HTML, or "" when babysit has no page for it."""
    try:
        from ..explain import page_html
    except ImportError:  # pages not installed
        return ""
    try:
        html = page_html(code)
    except (ValueError, OSError):
        return ""
    # Links between pages point at sibling .md files, absent beside a report: keep their text.
    return _PAGE_LINK.sub(r"\1", html)


_PAGE_LINK = re.compile(r'<a href="[^":#]*\.md(?:#[^"]*)?">(.*?)</a>', re.S)
