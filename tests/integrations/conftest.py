"""Real tiny models for the framework callbacks: a LightningModule MLP, a 2-layer BERT.

Everything is built locally (no download): MNIST-1D and digits come from ``babysit.data``, the
BERT is built from a ``BertConfig`` with a 64-token vocabulary, and its data are synthetic
token sequences whose label says whether token 7 occurs.
"""

from __future__ import annotations

import logging
import math
import warnings

import pytest
import torch
from torch import nn

from babysit.data import Standardize, load


def _standardized(name: str, n: int | None = None):
    splits = load(name)
    x, y = splits.train.tensors
    xv, yv = splits.val.tensors
    scaler = Standardize().fit(x)
    x, xv = scaler.transform(x), scaler.transform(xv)
    if n is not None:
        x, y = x[:n], y[:n]
    return x, y, xv, yv


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits, standardized: trains to ~90% in 3 epochs (a healthy set-up)."""
    return _standardized("digits")


@pytest.fixture(scope="session")
def mnist1d_small():
    """The first 1024 MNIST-1D training examples (40 features), standardized."""
    return _standardized("mnist1d", 1024)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run in a temporary directory: a callback without run_dir= writes under the working
    directory (Lightning's default_root_dir), which must not be the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _quiet():
    """Lightning and transformers talk a lot; the tests read findings, not banners."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def mlp(inputs: int, hidden: int = 64, classes: int = 10, *, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def first_diverged(losses: list[float], factor: float = 3.0) -> int | None:
    """The index of the first loss that babysit's divergence rule calls diverged."""
    from babysit.divergence import diverged

    start = next((v for v in losses if math.isfinite(v)), None)
    for i, value in enumerate(losses):
        if diverged(value, start, factor):
            return i
    return None


def finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def loud(findings) -> set[str]:
    """Codes at warning or error (what "healthy means silent" forbids)."""
    return {f.code for f in findings if f.severity in ("warning", "error")}
