"""The progress bar: epoch, step, loss, accuracy, learning rate, and a live line per finding.

Rich's ``Progress`` refreshes itself from a thread (10 Hz); the training step only advances a
counter, and the loss/acc/lr fields are refreshed every ``refresh_every`` steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..findings import Finding
from .callbacks import Callback

if TYPE_CHECKING:
    from .session import Session

__all__ = ["ProgressBar", "alert_line"]

_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def alert_line(finding: Finding) -> str:
    """One line of rich markup for a finding (user text escaped)."""
    from rich.markup import escape

    where = f" [{escape(finding.layer)}]" if finding.layer else ""
    step = f" step {finding.step}" if finding.step is not None else ""
    style = _STYLE.get(finding.severity, "")
    return (
        f"[{style}]{finding.severity.upper()} {finding.code}[/]{escape(where)}{step}: "
        f"{escape(finding.message)}"
    )


class ProgressBar(Callback):
    """A rich progress bar over the steps of each epoch."""

    def __init__(self, *, refresh_every: int = 10, console: Any = None) -> None:
        self.refresh_every = refresh_every
        self._console = console
        self._progress: Any = None
        self._task: Any = None
        self._last_acc = ""

    def on_fit_start(self, trainer: Session) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}", table_column=_fixed()),
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self._console or Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        trainer.alert = lambda f: self._progress.console.print(alert_line(f))

    def on_train_epoch_start(self, trainer: Session) -> None:
        total = len(getattr(trainer, "batches", [])) or None
        epochs = getattr(trainer, "epochs", None)
        label = f"{trainer.epoch + 1}/{epochs}" if epochs else str(trainer.epoch + 1)
        self._task = self._progress.add_task("train", total=total, epoch=label, stats="")

    def on_train_batch_end(self, trainer: Session, loss: float, batch_index: int) -> None:
        self._progress.advance(self._task)
        if batch_index % self.refresh_every == 0:
            stats = f"loss {loss:.3f}{self._last_acc} lr {trainer.lr():.2g}"
            self._progress.update(self._task, stats=stats)

    def on_train_epoch_end(self, trainer: Session, metrics: dict[str, float]) -> None:
        parts = [f"loss {metrics.get('train_loss', float('nan')):.3f}"]
        if "train_acc" in metrics:
            parts.append(f"acc {metrics['train_acc']:.3f}")
            self._last_acc = f" acc {metrics['train_acc']:.3f}"
        if "val_loss" in metrics:
            val = f"val {metrics['val_loss']:.3f}"
            if "val_acc" in metrics:
                val += f"/{metrics['val_acc']:.3f}"
            parts.append(val)
        parts.append(f"lr {metrics.get('lr', trainer.lr()):.2g}")
        self._progress.update(self._task, stats=" ".join(parts))

    def on_fit_end(self, trainer: Session) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        trainer.alert = None


def _fixed():
    from rich.table import Column

    return Column(no_wrap=True, min_width=11)
