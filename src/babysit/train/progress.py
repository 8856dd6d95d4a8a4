"""The progress bar: epoch, step, loss, accuracy, learning rate, and a live line per finding.

In a terminal: one rich bar, reset at each epoch; a finished epoch leaves one summary line above
it, so the redraw (rich refreshes from a thread) costs the same at epoch 100 as at epoch 1, and
the bar is advanced every ``refresh_every`` steps.

Elsewhere (a log file, a pipe, CI) nobody sees a bar, and rich's per-epoch work (markup, layout,
its refresh thread) cost 1-2 ms per epoch, about a tenth of a small epoch: there the progress is
plain text written straight to the stream, one epoch line at most every ``min_interval`` seconds
(the first and the last epoch always) and every finding's line as it happens. That costs a few
microseconds per epoch (``benchmarks/progress.py``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TextIO

from ..findings import Finding
from .callbacks import Callback

if TYPE_CHECKING:
    from .session import Session

__all__ = ["ProgressBar", "alert_line", "epoch_summary", "plain_alert_line"]

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


def plain_alert_line(finding: Finding) -> str:
    """The finding's line without markup, for a stream that is not a terminal."""
    where = f" [{finding.layer}]" if finding.layer else ""
    step = f" step {finding.step}" if finding.step is not None else ""
    return f"{finding.severity.upper()} {finding.code}{where}{step}: {finding.message}"


def epoch_summary(metrics: dict[str, Any]) -> str:
    """``loss 0.412 acc 0.871 val 0.455/0.852 lr 0.001``."""
    parts = [f"loss {metrics.get('train_loss', float('nan')):.3f}"]
    if "train_acc" in metrics:
        parts.append(f"acc {metrics['train_acc']:.3f}")
    if "val_loss" in metrics:
        val = f"val {metrics['val_loss']:.3f}"
        if "val_acc" in metrics:
            val += f"/{metrics['val_acc']:.3f}"
        parts.append(val)
    if "lr" in metrics:
        parts.append(f"lr {metrics['lr']:.2g}")
    return " ".join(parts)


class ProgressBar(Callback):
    """A rich progress bar over the steps of each epoch; plain, throttled lines when the
    console is not a terminal.

    Args:
        refresh_every: steps between two updates of the bar (terminal).
        console: a ``rich.console.Console``; default one on stderr.
        min_interval: seconds between two epoch lines when not a terminal.
    """

    def __init__(
        self, *, refresh_every: int = 10, console: Any = None, min_interval: float = 1.0
    ) -> None:
        self.refresh_every = refresh_every
        self.min_interval = min_interval
        self._console = console
        self._progress: Any = None
        self._task: Any = None
        self._since = 0
        self._acc = ""
        self._plain: TextIO | None = None  # the stream, when it is not a terminal
        self._last_line = -float("inf")
        self._pending: str | None = None  # the newest epoch line not written yet

    def on_fit_start(self, trainer: Session) -> None:
        from rich.console import Console

        console = self._console or Console(stderr=True)
        if not console.is_terminal:
            self._plain = console.file
            self._last_line = -float("inf")
            self._pending = None
            trainer.alert = self._plain_alert
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.table import Column

        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
            transient=True,
            refresh_per_second=5,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=None, epoch="", stats="")
        trainer.alert = lambda f: self._progress.console.print(alert_line(f))

    def on_train_epoch_start(self, trainer: Session) -> None:
        if self._plain is not None:
            return
        total = len(getattr(trainer, "batches", [])) or None
        self._progress.reset(
            self._task, total=total, epoch=self._label(trainer), stats=f"{self._acc}".strip()
        )
        self._since = 0

    def on_train_batch_end(self, trainer: Session, loss: float, batch_index: int) -> None:
        if self._plain is not None:
            return
        self._since += 1
        if self._since >= self.refresh_every:
            stats = f"loss {loss:.3f}{self._acc} lr {trainer.lr():.2g}"
            self._progress.update(self._task, advance=self._since, stats=stats)
            self._since = 0

    def on_train_epoch_end(self, trainer: Session, metrics: dict[str, float]) -> None:
        if self._plain is not None:
            now = time.monotonic()
            line = (
                f"epoch {self._label(trainer)}  {epoch_summary(metrics)}  "
                f"{metrics.get('seconds', 0.0):.2f} s\n"
            )
            if now - self._last_line >= self.min_interval:
                self._write(line)
                self._last_line = now
            else:
                self._pending = line
            return
        if "train_acc" in metrics:
            self._acc = f" acc {metrics['train_acc']:.3f}"
        self._progress.console.print(
            f"[bold]epoch {self._label(trainer)}[/]  {epoch_summary(metrics)}"
            f"  [dim]{metrics.get('seconds', 0.0):.2f} s[/]"
        )

    def on_fit_end(self, trainer: Session) -> None:
        if self._plain is not None:
            if self._pending is not None:
                self._write(self._pending)  # the last epoch is always shown
            self._plain = None
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        trainer.alert = None

    def _plain_alert(self, finding: Finding) -> None:
        if self._pending is not None:  # keep the order: the epoch before its finding
            self._write(self._pending)
        self._write(plain_alert_line(finding) + "\n")

    def _write(self, text: str) -> None:
        self._pending = None
        if self._plain is not None:
            self._plain.write(text)
            self._plain.flush()

    @staticmethod
    def _label(trainer: Session) -> str:
        epochs = getattr(trainer, "epochs", None)
        return f"{trainer.epoch + 1}/{epochs}" if epochs else str(trainer.epoch + 1)
