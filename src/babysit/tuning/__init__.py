"""Tuning: the learning-rate range test (``lr_find``), search spaces and the staged search.

One concept per module: ``space`` (parameters and their ranges), ``stages`` (the coarse -> fine
plan, each stage's ranges and quota), ``storage`` (Optuna storages, heartbeats, masked
secrets), ``objective`` (the built-in objective), ``settings`` (what a continued search must
share with the first call), ``result`` (``SearchResult`` and the run directory's files),
``study`` (``search()`` itself), ``pruners`` (the lecture's break-out rule).

Importing this package never imports optuna: the names that need it are loaded when first used.
"""

from typing import Any

from .lr_find import LRFinderResult, lr_find
from .result import SearchFailed, SearchResult
from .space import choice, intuniform, loguniform, uniform

__all__ = [
    "LRFinderResult",
    "SearchFailed",
    "SearchResult",
    "choice",
    "intuniform",
    "loguniform",
    "lr_find",
    "mask_url",
    "open_storage",
    "plan_stages",
    "search",
    "uniform",
]

_LAZY = {"mask_url": "storage", "open_storage": "storage", "plan_stages": "stages"}


def search(space: Any, objective: Any = None, **kwargs: Any) -> Any:
    """Coarse -> fine random search in log space on Optuna; see
    :func:`babysit.tuning.study.search` for the arguments."""
    from .study import search as run

    return run(space, objective, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
