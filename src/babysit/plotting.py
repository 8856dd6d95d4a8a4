"""Figures drawn off-screen and embedded as base64 PNG: the style and the encoding.

Every figure is a :class:`matplotlib.figure.Figure` on the Agg canvas (no display, no global
pyplot state, safe in threads and on servers). :func:`data_uri` turns it into a ``data:`` URI, so
an HTML page (the report, a notebook's ``_repr_html_``) needs no other file and no network.
Low in the layers so that the training history, the range test and the search can draw
without importing the report; matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["DPI", "STYLE", "data_uri", "figure", "style"]

DPI = 100
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
