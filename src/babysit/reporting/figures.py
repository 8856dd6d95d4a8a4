"""Figures for the report: one consistent style, drawn off-screen, embedded as base64 PNG.

Every figure is a :class:`matplotlib.figure.Figure` on the Agg canvas (no display, no global
pyplot state, safe in threads and on servers). :func:`data_uri` turns it into a ``data:`` URI, so
the HTML page needs no other file and no network.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["DPI", "STYLE", "Plot", "data_uri", "figure", "log_axis_if_wide", "render", "style"]

DPI = 100
WIDE_INCHES = 8.0
# A clean, readable style: light grid, no top/right spines, labels large enough for a phone.
STYLE: dict[str, Any] = {
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "lines.linewidth": 1.4,
    "figure.facecolor": "white",
}


def style() -> Any:
    """A context in which matplotlib draws in the report's style (for figures made elsewhere,
    e.g. ``LRFinderResult.plot``)."""
    import matplotlib as mpl

    return mpl.rc_context(STYLE)


@contextmanager
def figure(width: float, height: float) -> Iterator[Any]:
    """A new Agg ``Figure`` (inches) drawn in the report's style."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with style():
        fig = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasAgg(fig)
        yield fig


def data_uri(fig: Any, *, dpi: int = DPI) -> str:
    """The figure as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def log_axis_if_wide(ax: Any, values: list[float], *, decades: float = 1.0) -> bool:
    """Put ``ax``'s y axis on a log scale when the positive ``values`` span more than
    ``decades`` decades (a loss falling from 2.3 to 0.01 reads better in log). Returns whether
    it did."""
    positive = [v for v in values if v > 0]
    if len(positive) < 2 or max(positive) / min(positive) <= 10**decades:
        return False
    ax.set_yscale("log")
    return True


@dataclass(frozen=True)
class Plot:
    """One embedded figure: what it shows (``alt``), and what to look for in it (``caption``)."""

    uri: str
    alt: str
    caption: str = ""
    wide: bool = False  # spans the page's width rather than one column of the plot grid


def render(fig: Any, alt: str, caption: str = "") -> Plot:
    """Encode ``fig`` as a :class:`Plot`; figures 8 inches or wider span the page."""
    return Plot(data_uri(fig), alt, caption, wide=fig.get_figwidth() >= WIDE_INCHES)
