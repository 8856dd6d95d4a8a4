"""What ``diagnose`` shows while it runs: the check running now and how many are done.

A rich progress line on stderr, transient (it disappears when diagnose returns, so the
findings printed afterwards stand alone). It appears only once diagnose has run for
``after_s`` seconds: a diagnose that takes less than that shows nothing. Disabled, it prints
nothing at all and does not import rich.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["CheckProgress"]


class CheckProgress:
    """Shows diagnose's progress: ``with CheckProgress(n, enabled=...) as p: p.update(i, name)``."""

    def __init__(self, total: int, *, enabled: bool, after_s: float = 1.0, console: Any = None):
        self.total = total
        self.enabled = enabled
        self.after_s = after_s
        self._console = console
        self._start = time.perf_counter()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> CheckProgress:
        self._start = time.perf_counter()
        return self

    def update(self, done: int, name: str) -> None:
        """``done`` checks finished, ``name`` starts now."""
        if not self.enabled:
            return
        if self._progress is None:
            if time.perf_counter() - self._start < self.after_s:
                return
            self._open()
        self._progress.update(self._task, completed=done, description=f"diagnose: {name}")

    def _open(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        console = self._console or Console(stderr=True)
        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("diagnose", total=self.total)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
