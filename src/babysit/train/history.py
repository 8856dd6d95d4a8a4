"""History: what ``babysit.fit`` returns, one row of metrics per epoch plus the findings."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from ..findings import Diagnosis, Finding

__all__ = ["History"]


class History:
    """Per-epoch metrics (``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``lr``,
    ``seconds`` and custom metrics), the findings the monitors emitted, and how training ended.

    >>> h = History([{"epoch": 0, "train_loss": 2.0}, {"epoch": 1, "train_loss": 1.5}])
    >>> h["train_loss"], h.final["train_loss"], len(h)
    ([2.0, 1.5], 1.5, 2)
    """

    def __init__(
        self,
        epochs: list[dict[str, Any]] | None = None,
        findings: list[Finding] | None = None,
        *,
        stop_reason: str | None = None,
        rollbacks: int = 0,
        run_dir: Path | None = None,
    ) -> None:
        self.epochs: list[dict[str, Any]] = list(epochs or [])
        self.findings: list[Finding] = list(findings or [])
        self.stop_reason = stop_reason  # None when every epoch ran
        self.rollbacks = rollbacks  # times the loss guard restored the last good state
        self.run_dir = run_dir

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, name: str) -> list[Any]:
        """One metric over the epochs (``None`` where an epoch lacks it)."""
        if not any(name in row for row in self.epochs):
            known = sorted({k for row in self.epochs for k in row})
            raise KeyError(f"no metric {name!r} in this history; known: {', '.join(known)}")
        return [row.get(name) for row in self.epochs]

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's metrics (empty before the first epoch ends)."""
        return dict(self.epochs[-1]) if self.epochs else {}

    @property
    def diagnosis(self) -> Diagnosis:
        """The findings as a :class:`~babysit.Diagnosis` (most severe first)."""
        return Diagnosis(self.findings)

    @property
    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "epochs": self.epochs,
            "findings": [f.to_dict() for f in self.findings],
            "stop_reason": self.stop_reason,
            "rollbacks": self.rollbacks,
        }

    def __repr__(self) -> str:
        last = ", ".join(
            f"{k}={v:.4g}" for k, v in self.final.items() if isinstance(v, float) and k != "seconds"
        )
        return f"History({len(self)} epochs; {last}; {len(self.findings)} findings)"

    def _repr_html_(self) -> str:
        """Jupyter: loss and accuracy per epoch (a small figure), the last epochs' metrics and
        the findings; ``babysit.report(run_dir)`` has the full page."""
        names = [k for k in self.final if k != "epoch"]
        head = "".join(f"<th>{escape(n)}</th>" for n in ["epoch", *names])
        shown = self.epochs[-HTML_EPOCHS:]
        rows = "".join(
            "<tr>"
            + "".join(f"<td>{escape(_fmt(row.get(n)))}</td>" for n in ["epoch", *names])
            + "</tr>"
            for row in shown
        )
        more = len(self.epochs) - len(shown)
        caption = f"<caption>last {len(shown)} of {len(self)} epochs</caption>" if more else ""
        table = f"<table>{caption}<tr>{head}</tr>{rows}</table>"
        return self._figure_html() + table + self.diagnosis._repr_html_()

    def _figure_html(self) -> str:
        curves = {
            panel: {k: self[k] for k in keys if any(k in row for row in self.epochs)}
            for panel, keys in (
                ("loss", ("train_loss", "val_loss")),
                ("accuracy", ("train_acc", "val_acc")),
            )
        }
        curves = {panel: c for panel, c in curves.items() if c}
        if len(self) < 2 or not curves:
            return ""
        from ..plotting import data_uri, figure

        with figure(3.2 * len(curves), 2.4) as fig:
            axes = fig.subplots(1, len(curves), squeeze=False)[0]
            for ax, (panel, series) in zip(axes, curves.items(), strict=True):
                for name, values in series.items():
                    points = [(i + 1, v) for i, v in enumerate(values) if v is not None]
                    ax.plot(*zip(*points, strict=True), "o-", ms=2, label=name)
                ax.set_xlabel("epoch")
                ax.set_ylabel(panel)
                ax.legend()
            uri = data_uri(fig, dpi=80)
        return f'<img src="{uri}" alt="loss and accuracy per epoch">'


HTML_EPOCHS = 10  # epochs shown in the notebook table


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
