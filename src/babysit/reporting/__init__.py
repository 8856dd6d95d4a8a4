"""The babysitting report: one self-contained HTML page for a run directory.

:func:`report` reads what ``fit``, ``diagnose``, ``lr_find``, ``search``, ``initlab`` and the
demo wrote (through :mod:`babysit.runs`; sub-directories one level down are runs too) and writes
``report.html`` beside them: a summary (findings by severity with evidence, advice and their
explanation; final metrics; configuration), then the lecture's figures for the data, the
activations, the LR range test, the search and training. Figures are PNGs embedded as base64
and the CSS is inline, so the page needs no network and no other file; every user-supplied
string is HTML-escaped.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["report", "write_report"]


def report(run_dir: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write ``run_dir/report.html`` and return its path.

    Args:
        run_dir: a directory written by ``fit``, ``diagnose``, ``lr_find``, ``search``,
            ``initlab`` or ``babysit demo``.
        title: the page's title; default the run's ``name`` in ``config.json``, else the
            directory's name.

    Raises:
        FileNotFoundError: ``run_dir`` is not a directory.
        ValueError: it holds no file a run writes.
    """
    return write_report(run_dir, title=title)[0]


def write_report(run_dir: str | os.PathLike, *, title: str | None = None) -> tuple[Path, list[str]]:
    """:func:`report`, and the files that could not be read: ``"<path>: <why>"`` each.

    A file that cannot be read costs its section (the page says so), never the page; the CLI
    names these files on stderr so that a user who never opens the page still learns of them.
    """
    from .collect import collect
    from .page import render_page, write_page
    from .sections import build_sections

    path = Path(run_dir)
    found = collect(path)
    if title is None:
        named = [r.config["name"] for r in found if r.config and r.config.get("name")]
        title = str(named[0]) if named else path.resolve().name
    html = render_page(title, path, found, build_sections(found))
    problems = [f"{run.path / problem}" for run in found for problem in run.problems]
    return write_page(path, html), problems
