"""Tuning: the learning-rate range test (``lr_find``) now; the Optuna search lives beside it.

Importing this package never imports optuna: only the search functions do, when called.
"""

from .lr_find import LRFinderResult, lr_find

__all__ = ["LRFinderResult", "lr_find"]
