"""Tuning: the learning-rate range test (``lr_find``), search spaces and the staged search.

Importing this package never imports optuna: :func:`search` imports it when called.
"""

from typing import Any

from .lr_find import LRFinderResult, lr_find
from .space import choice, intuniform, loguniform, uniform

__all__ = [
    "LRFinderResult",
    "choice",
    "intuniform",
    "loguniform",
    "lr_find",
    "search",
    "uniform",
]


def search(space: Any, objective: Any = None, **kwargs: Any) -> Any:
    """Coarse -> fine random search in log space on Optuna; see
    :func:`babysit.tuning.staged_search.search` for the arguments."""
    from .staged_search import search as run

    return run(space, objective, **kwargs)
