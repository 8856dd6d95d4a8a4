"""Small, fast data for the training tests: scikit-learn's digits, standardized."""

from __future__ import annotations

import pytest
import torch

from babysit.data import Standardize, load


@pytest.fixture(scope="session")
def digits():
    """``(X, y, Xv, yv)``: digits train and validation splits, standardized on train."""
    splits = load("digits")
    x, y = splits.train.tensors
    xv, yv = splits.val.tensors
    scaler = Standardize().fit(x)
    return scaler.transform(x), y, scaler.transform(xv), yv


def small_mlp(seed: int = 0, **kw) -> torch.nn.Module:
    from babysit.nn import mlp

    torch.manual_seed(seed)
    return mlp(64, [32], 10, **kw)


@pytest.fixture(scope="session")
def mnist1d():
    """``(X, y, Xv, yv)``: MNIST-1D train and validation splits, standardized on train."""
    splits = load("mnist1d")
    x, y = splits.train.tensors
    xv, yv = splits.val.tensors
    scaler = Standardize().fit(x)
    return scaler.transform(x), y, scaler.transform(xv), yv
