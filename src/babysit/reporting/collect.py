"""Read what a run directory holds, through :mod:`babysit.runs`, into plain data for the report.

A run directory may hold the files of one run (``fit``: ``config.json``, ``metrics.csv``,
``findings.json``, ``activations.json``; ``search``: ``search.json``; ``lr_find``: ``lr_find.json``;
``diagnose``: ``findings.json``; ``initlab``: ``activations.json``; the demo: ``data_stats.json``;
``fix``: ``fix.json``)
and runs of its own one level down (the demo writes ``search/`` and ``train/`` beside its own
files). Each becomes a :class:`Run`; a file that cannot be read is reported, not fatal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import runs
from ..findings import Finding

__all__ = ["RUN_FILES", "NoRunError", "Run", "collect"]

SEARCH = "search.json"
LR_FIND = "lr_find.json"
DATA_STATS = "data_stats.json"
FIX = "fix.json"  # babysit.repair.result.FIX_JSON (read as plain data: no repair import here)
RUN_FILES = (
    runs.CONFIG,
    runs.METRICS,
    runs.FINDINGS,
    runs.ACTIVATIONS,
    SEARCH,
    LR_FIND,
    DATA_STATS,
    FIX,
)


class NoRunError(ValueError):
    """The directory holds no file a run writes."""


@dataclass
class Run:
    """What one run directory holds; ``None`` for a file it does not have."""

    path: Path
    label: str  # "" for the top directory, else the sub-directory's name
    config: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] | None = None
    findings: list[Finding] = field(default_factory=list)
    stop_reason: str | None = None
    activations: dict[str, Any] | None = None
    search: dict[str, Any] | None = None
    lr_find: dict[str, Any] | None = None
    data_stats: dict[str, Any] | None = None
    fix: dict[str, Any] | None = None  # fix.json: the repair babysit.fix made
    problems: list[str] = field(default_factory=list)  # files that could not be read, and why
    # why findings.json (or one of its findings) could not be read; None when it was read or
    # the run has none. The summary must then not say "no findings": it cannot know.
    findings_unread: str | None = None

    @property
    def kind(self) -> str:
        """``fit``, ``search``, ``lr_find``, ``initlab``, ``fix``, ``diagnose`` or ``run``."""
        if self.config and self.config.get("kind"):
            return str(self.config["kind"])
        if self.search is not None:
            return "search"
        if self.metrics is not None:
            return "fit"
        if self.activations is not None and self.activations.get("experiment") == "initlab":
            return "initlab"
        if self.lr_find is not None:
            return "lr_find"
        if self.fix is not None:
            return "fix"
        return "diagnose" if self.findings else "run"


def collect(run_dir: str | os.PathLike) -> list[Run]:
    """The run in ``run_dir`` and those in its sub-directories (sorted by name), in that order.

    Raises ``FileNotFoundError`` when ``run_dir`` is not a directory, ``ValueError`` when
    neither it nor a sub-directory holds any file a run writes.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory: pass the run directory to report on")
    found = [_read(root, "")] if _is_run(root) else []
    found += [_read(sub, sub.name) for sub in sorted(root.iterdir()) if _is_run(sub)]
    if not found:
        raise NoRunError(
            f"{root} holds no run: expected files written by fit, diagnose, lr_find, search or "
            f"initlab ({', '.join(RUN_FILES)}) in it or one level down"
        )
    return found


def _is_run(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in RUN_FILES)


def _read(path: Path, label: str) -> Run:
    run = Run(path=path, label=label)
    run.config = _safely(run, runs.CONFIG, lambda: runs.read_json(path, runs.CONFIG))
    run.metrics = _safely(run, runs.METRICS, lambda: runs.read_metrics(path))
    _read_findings(run)
    run.activations = _safely(run, runs.ACTIVATIONS, lambda: runs.read_json(path, runs.ACTIVATIONS))
    run.search = _safely(run, SEARCH, lambda: runs.read_json(path, SEARCH))
    run.lr_find = _safely(run, LR_FIND, lambda: runs.read_json(path, LR_FIND))
    run.data_stats = _safely(run, DATA_STATS, lambda: runs.read_json(path, DATA_STATS))
    _read_fix(run)
    return run


def _read_fix(run: Run) -> None:
    """``fix.json``. When it cannot be read and there is no ``findings.json``, the findings of
    the run are unknown: ``findings_unread`` says so, so the summary never reads "no findings"."""
    before = len(run.problems)
    run.fix = _safely(run, FIX, lambda: runs.read_json(run.path, FIX))
    unread = len(run.problems) > before
    if unread and not (run.path / runs.FINDINGS).is_file():
        run.findings_unread = run.findings_unread or f"{FIX} could not be read"


def _read_findings(run: Run) -> None:
    """``findings.json``: the findings, and ``findings_unread`` (why) when the file exists but
    it, its list, or one of its findings cannot be read (a run without the file has none)."""
    try:
        document = runs.read_json(run.path, runs.FINDINGS)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        _unread(run, str(err))
        return
    if document is None:
        return
    raw_findings = document.get("findings")
    if not isinstance(raw_findings, list):
        _unread(run, f"it holds no list of findings (got {type(raw_findings).__name__})")
        return
    for raw in raw_findings:
        try:
            run.findings.append(Finding.from_dict(raw))
        except (TypeError, ValueError) as err:
            _unread(run, f"a finding could not be read ({err})")
    stop = document.get("stop_reason")
    run.stop_reason = str(stop) if stop is not None else None


def _unread(run: Run, why: str) -> None:
    run.problems.append(f"{runs.FINDINGS}: {why}")
    run.findings_unread = run.findings_unread or why


def _safely(run: Run, name: str, read: Any) -> Any:
    try:
        return read()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        run.problems.append(f"{name}: {err}")
        return None
