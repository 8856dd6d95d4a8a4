"""Figures for the report: one consistent style, drawn off-screen, embedded as base64 PNG.

The style, the Agg figure and the PNG encoding live in :mod:`babysit.plotting` (low in the
layers, shared with the history, the range test and the search); this module adds what only the
report needs: :class:`Plot` (a figure with its alt text and caption) and the axis helpers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..plotting import DPI, STYLE, data_uri, figure, style

__all__ = ["DPI", "STYLE", "Plot", "data_uri", "figure", "log_axis_if_wide", "render", "style"]

WIDE_INCHES = 8.0


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
