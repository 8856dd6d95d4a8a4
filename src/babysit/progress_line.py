"""A transient progress line on stderr for long work that is not a training run (which has
:mod:`babysit.train.progress`): ``diagnose``'s checks (done / total) and ``lr_find``'s
mini-batches (a count: the range test's length depends on what it finds).

A rich progress line, transient (it disappears when the work returns, so what is printed
afterwards stands alone). It appears only once the work has run for ``after_s`` seconds:
work that takes less than that shows nothing. Disabled, it prints nothing at all and does not
import rich.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["ProgressLine", "stderr_is_terminal"]


def stderr_is_terminal() -> bool:
    """Whether a person can see stderr: the default of every ``progress=None``."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class ProgressLine:
    """``with ProgressLine(n, label="diagnose", enabled=...) as p: p.update(i, name)``.

    ``total=None``: no bar of known length, the count of ``unit`` done instead."""

    def __init__(
        self,
        total: int | None,
        *,
        label: str,
        enabled: bool,
        after_s: float = 1.0,
        unit: str = "",
        console: Any = None,
    ):
        self.total = total
        self.label = label
        self.enabled = enabled
        self.after_s = after_s
        self.unit = unit
        self._console = console
        self._start = time.perf_counter()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressLine:
        self._start = time.perf_counter()
        return self

    def update(self, done: int, name: str) -> None:
        """``done`` finished (checks, mini-batches), ``name`` runs now."""
        if not self.enabled:
            return
        if self._progress is None:
            if time.perf_counter() - self._start < self.after_s:
                return
            self._open()
        self._progress.update(self._task, completed=done, description=f"{self.label}: {name}")

    def _open(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        console = self._console or Console(stderr=True)
        count = (
            MofNCompleteColumn()
            if self.total is not None
            else TextColumn(f"{{task.completed}} {self.unit}".rstrip())
        )
        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            count,
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.label, total=self.total)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
