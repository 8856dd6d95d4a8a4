"""The finding pages: one Markdown page per code of :data:`babysit.findings.CODES`.

Each page says what the code means, how babysit measures it (the rule, the thresholds and the
evidence keys), what to do, and why. They ship as package data in ``babysit/pages/findings``
(and are linked from ``docs/findings``); ``babysit explain CODE`` prints one, and
:func:`page_html` renders one to HTML for embedding (e.g. in the report).

>>> page("dead_relu").splitlines()[0]
"# DEAD_RELU: most of a layer's ReLUs never fire"
>>> "DEAD_RELU" in codes_with_pages()
True
"""

from __future__ import annotations

import difflib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from .findings import CODES

__all__ = ["PAGES", "codes_with_pages", "page", "page_html"]

SECTIONS = ("What it means", "How babysit measures it", "What to do", "Why")  # the ## headings


def _pages_dir() -> Traversable:
    """``babysit/pages/findings`` through importlib.resources (works from a wheel or a zip);
    the directory next to this file when resources cannot resolve the package."""
    try:
        return resources.files("babysit") / "pages" / "findings"
    except (ModuleNotFoundError, TypeError):  # e.g. a loader without resource support
        return Path(__file__).parent / "pages" / "findings"


PAGES: Traversable = _pages_dir()


def codes_with_pages() -> list[str]:
    """The codes that have a page, sorted."""
    if not PAGES.is_dir():
        return []
    return sorted(p.name[:-3] for p in PAGES.iterdir() if p.name.endswith(".md"))


def page(code: str) -> str:
    """The Markdown page of ``code`` (case-insensitive, surrounding spaces ignored).

    Raises:
        ValueError: an unknown code, naming the closest known codes.
    """
    name = code.strip().upper()
    if name not in CODES:
        close = difflib.get_close_matches(name, list(CODES), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown finding code {code!r}{hint} (`babysit explain` lists them all)")
    source = PAGES / f"{name}.md"
    if not source.is_file():
        raise ValueError(
            f"finding code {name} has no page in {PAGES}: the installation lacks its package "
            "data; reinstall babysit"
        )
    return source.read_text(encoding="utf-8")


def page_html(code: str) -> str:
    """The page of ``code`` rendered to an HTML fragment (CommonMark plus tables).

    Raw HTML in a page is escaped, never passed through, so the fragment is safe to embed.
    """
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    return renderer.render(page(code))
