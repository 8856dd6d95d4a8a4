"""Data: fitted preprocessing (zero-centre, standardize, PCA, whitening) and bundled data sets."""

from .datasets import DATASETS, Splits, load
from .transforms import PCA, Standardize, Whiten, ZeroCenter

__all__ = ["DATASETS", "PCA", "Splits", "Standardize", "Whiten", "ZeroCenter", "load"]
