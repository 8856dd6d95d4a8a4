"""The run directory: the one place that reads and writes its layout.

A run directory holds what ``diagnose``, ``fit``, ``lr_find``, ``search`` and ``initlab`` wrote
and what ``report`` reads: ``config.json``, ``metrics.csv``, ``findings.json``,
``activations.json``, ``lr_find.json``, ``trials.csv``, ``data_stats.json``, ``checkpoints/``,
``tb/``. Every write is atomic (a temporary file in the same folder, then a rename), so a crash
never leaves a half-written file, and every JSON document carries ``"schema": 1``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "ACTIVATIONS",
    "CHECKPOINTS",
    "CONFIG",
    "FINDINGS",
    "METRICS",
    "METRIC_COLUMNS",
    "SCHEMA",
    "TENSORBOARD",
    "append_metrics",
    "atomic_write_bytes",
    "check_writable",
    "fresh_run_dir",
    "read_json",
    "read_metrics",
    "truncate_metrics",
    "write_json",
]

SCHEMA = 1
CONFIG = "config.json"
FINDINGS = "findings.json"
ACTIVATIONS = "activations.json"
METRICS = "metrics.csv"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tb"
METRIC_COLUMNS = ("step", "epoch", "split", "name", "value")
# The process's umask, read once at import (os.umask can only be read by setting it, which is
# not thread-safe): files written atomically get the permissions open() would have given.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def check_writable(run_dir: str | os.PathLike) -> None:
    """Create ``run_dir`` if needed and write (then remove) a probe file in it, so that a run
    fails before training rather than at its first write.

    Raises:
        OSError: the directory cannot be created or written (the caller says what to pass
            instead).
    """
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".babysit-write-test"
    probe.write_bytes(b"")
    probe.unlink()


def fresh_run_dir(path: str | os.PathLike) -> Path:
    """Create the run directory ``path``; an existing one is renamed ``<path>-<timestamp>`` first.

    Nothing is ever overwritten: ``make demo`` run twice keeps the first run beside the second.
    """
    path = Path(path)
    if path.exists():
        stamp = datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
        target = path.with_name(f"{path.name}-{stamp}")
        suffix = 1
        while target.exists():
            target = path.with_name(f"{path.name}-{stamp}-{suffix}")
            suffix += 1
        path.rename(target)
    path.mkdir(parents=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with contextlib.suppress(AttributeError, OSError):  # no fchmod: Windows, some mounts
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 -> what open() would have given
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(run_dir: str | os.PathLike, name: str, document: dict[str, Any]) -> Path:
    """Write ``document`` (plus ``"schema": 1``) as ``run_dir/name``, atomically."""
    body = {"schema": SCHEMA, **document}
    text = json.dumps(body, indent=2, allow_nan=True, default=_jsonable)
    return atomic_write_bytes(Path(run_dir) / name, text.encode())


def read_json(run_dir: str | os.PathLike, name: str) -> dict[str, Any] | None:
    """Read ``run_dir/name``; ``None`` when the run has no such file."""
    path = Path(run_dir) / name
    if not path.exists():
        return None
    document = json.loads(path.read_text())
    if not isinstance(document, dict):
        raise ValueError(f"{path} holds a JSON {type(document).__name__}, not an object")
    if document.get("schema", SCHEMA) > SCHEMA:
        raise ValueError(
            f"{path} has schema {document['schema']}, newer than this babysit understands "
            f"({SCHEMA}): upgrade babysit to read it"
        )
    return document


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def append_metrics(run_dir: str | os.PathLike, rows: list[tuple]) -> None:
    """Append ``(step, epoch, split, name, value)`` rows to ``metrics.csv`` (long format; the
    header is written with the first rows), flushed to disk before returning. Values are
    written with ``repr``, so they read back bit for bit."""
    path = Path(run_dir) / METRICS
    new = not path.exists()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if new:
        writer.writerow(METRIC_COLUMNS)
    writer.writerows((s, e, split, name, repr(float(v))) for s, e, split, name, v in rows)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())


def truncate_metrics(run_dir: str | os.PathLike, n_rows: int) -> None:
    """Keep only the first ``n_rows`` rows of ``metrics.csv`` (a resumed run drops what was
    logged after its checkpoint), rewriting the file atomically."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    atomic_write_bytes(path, "".join(lines[: n_rows + 1]).encode())


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]] | None:
    """``metrics.csv`` as a list of ``{step, epoch, split, name, value}`` dicts; ``None`` when
    the run has none. A cut-off last line (a run killed while appending, or still writing) is
    left out; a malformed line before it raises ``ValueError`` naming it."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return None
    with open(path, encoding="utf-8", newline="") as handle:
        raw = list(csv.DictReader(handle))
    rows = []
    for i, row in enumerate(raw):
        try:
            rows.append(
                {
                    "step": int(row["step"]),
                    "epoch": int(row["epoch"]),
                    "split": row["split"],
                    "name": row["name"],
                    "value": float(row["value"]),
                }
            )
        except (TypeError, ValueError, KeyError) as err:
            if i == len(raw) - 1:
                break  # the partial last line of an interrupted append
            raise ValueError(f"{path}, line {i + 2} is malformed: {err}") from err
    return rows
