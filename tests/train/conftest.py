"""Small, fast data for the training tests, standardized on the training split."""

from __future__ import annotations

import pytest
import torch

from babysit.data import Standardize, load


def _standardized(name: str):
    """``(X, y, Xv, yv)``: train and validation splits of ``name``, standardized on train."""
    splits = load(name)
    x, y = splits.train.tensors
    xv, yv = splits.val.tensors
    scaler = Standardize().fit(x)
    return scaler.transform(x), y, scaler.transform(xv), yv


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits (1150 train / 288 val examples, 64 features)."""
    return _standardized("digits")


@pytest.fixture(scope="session")
def mnist1d():
    """MNIST-1D (3200 train / 800 val examples, 40 features)."""
    return _standardized("mnist1d")


def small_mlp(seed: int = 0, **kw) -> torch.nn.Module:
    from babysit.nn import mlp

    torch.manual_seed(seed)
    return mlp(64, [32], 10, **kw)
