"""The settings a search was started with, and the refusal to continue it with other ones.

Calling ``search`` again on the same storage and study name continues the search (a crashed
run, or another worker). Called with another space, data set, epoch count, metric, … it would
silently return the old study's trials as if they answered the new question, or mix trials of
6 and 10 epochs in one stage. So the first call records its settings (:func:`settings`) in the
first stage's study (user attribute ``settings``: shared by every worker of a PostgreSQL study)
and in the run directory's ``config.json``; a later call whose settings differ is refused with
a ``ValueError`` naming each difference, before anything is written (:func:`check_run_dir`,
:func:`check_study`).

Not part of the settings: ``seed`` (each worker of a shared search samples with its own),
``n_jobs``, ``progress`` and ``auto_extend`` (extending a finished search is a continuation).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import runs
from .space import Param, describe

__all__ = [
    "SETTINGS_ATTR",
    "check_run_dir",
    "check_study",
    "data_identity",
    "settings",
    "write_config",
]

SETTINGS_ATTR = "settings"
COMMAND = "search"


def settings(
    *,
    space: Mapping[str, Param],
    objective: Callable[..., Any] | None,
    model: Callable[..., Any] | None,
    data: Any,
    epochs: int,
    n_trials: int,
    stages: int,
    metric: str,
    direction: str,
    sampler: str,
    pruner: str,
    cv: int | None,
) -> dict[str, Any]:
    """What makes two calls of ``search`` the same search (JSON-ready)."""
    return {
        "space": {n: p.to_dict() for n, p in sorted(space.items())},
        "objective": "built-in" if objective is None else _name(objective),
        "model": None if model is None else _name(model),
        "data": None if objective is not None else data_identity(data),
        "epochs": epochs,
        "n_trials": n_trials,
        "stages": stages,
        "metric": metric if objective is None else None,
        "direction": direction,
        "sampler": sampler,
        "pruner": pruner,
        "cv": cv,
    }


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


def data_identity(data: Any) -> Any:
    """A data set name as given; tensors by shape and a SHA-256 of their bytes."""
    if data is None or isinstance(data, str):
        return data
    import torch

    if hasattr(data, "train") and hasattr(data, "val"):
        parts = [data.train.tensors, data.val.tensors]
        if getattr(data, "test", None) is not None:
            parts.append(data.test.tensors)
    else:
        parts = list(data)
    digest = hashlib.sha256()
    shapes = []
    for part in parts:
        for t in part:
            t = torch.as_tensor(t).detach().cpu().contiguous()
            shapes.append(list(t.shape))
            digest.update(str(t.dtype).encode())
            digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return {"shapes": shapes, "sha256": digest.hexdigest()[:16]}


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"epochs: 20 there, 10 now"`` for each setting that differs; the space per parameter."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if key == "space" and isinstance(a, Mapping) and isinstance(b, Mapping):
            for name in sorted(set(a) | set(b)):
                if _canon(a.get(name)) != _canon(b.get(name)):
                    out.append(
                        f"space {name}: {_range(a.get(name))} there, {_range(b.get(name))} now"
                    )
        elif _canon(a) != _canon(b):
            out.append(f"{key}: {_short(a)} there, {_short(b)} now")
    return out


def _range(spec: Mapping[str, Any] | None) -> str:
    return "not searched" if spec is None else f"[{describe(spec)}]"


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _refuse(where: str, diffs: list[str], how: str) -> ValueError:
    return ValueError(
        f"{where} holds a search started with other settings ({'; '.join(diffs)}): {how}, or "
        "call it again with the same settings to continue it"
    )


def check_run_dir(
    run_dir: Path, wanted: dict[str, Any], study_name: str, storage: str | None
) -> None:
    """Refuse a run directory that holds another command's run or another search.

    ``storage`` is the masked URL the caller gave (``None``: the run directory's own
    ``search.db``), so the same run directory named by another path still matches.
    """
    path = run_dir / runs.CONFIG
    if not path.exists():
        return  # a new run directory, or a search that predates config.json: the study decides
    try:
        config = runs.read_json(run_dir, runs.CONFIG) or {}
    except (ValueError, OSError) as err:
        raise ValueError(f"cannot read {path}: {err}; choose another run_dir (--out)") from None
    if config.get("command") != COMMAND:
        raise ValueError(
            f"{run_dir} holds a run of another command ({path} has no search settings): "
            "choose another run_dir (--out) so its files are not overwritten"
        )
    recorded = dict(config.get(SETTINGS_ATTR) or {})
    recorded_where = {"study_name": config.get("study_name"), "storage": config.get("storage")}
    diffs = _differences(recorded_where, {"study_name": study_name, "storage": storage})
    diffs += _differences(recorded, wanted)
    if diffs:
        raise _refuse(str(run_dir), diffs, "choose another run_dir (--out)")


def write_config(
    run_dir: Path, wanted: dict[str, Any], study_name: str, storage: str | None
) -> None:
    """``config.json``: the search's settings, its study name and (masked) storage."""
    runs.write_json(
        run_dir,
        runs.CONFIG,
        {"command": COMMAND, "study_name": study_name, "storage": storage, SETTINGS_ATTR: wanted},
    )


def check_study(storage: Any, name: str, wanted: dict[str, Any]) -> None:
    """Refuse to continue the study ``name`` (its first stage) if it was started otherwise."""
    import optuna

    try:
        study = optuna.load_study(study_name=f"{name}-stage1", storage=storage)
    except KeyError:
        return  # a new search
    recorded = study.user_attrs.get(SETTINGS_ATTR)
    if recorded is None:
        warnings.warn(
            f"study {name!r} predates babysit's record of a search's settings: cannot check that "
            "it was started with the same space, data and epochs; continuing it as is",
            stacklevel=3,
        )
        return
    diffs = _differences(recorded, wanted)
    if diffs:
        raise _refuse(f"the study {name!r}", diffs, "choose another study_name (--study-name)")
