"""Small set-ups for the repair tests: 20 standardized features, 4 classes, 600 examples.

Small on purpose: every ``fix`` call diagnoses and trains several times, and the suite must
stay fast. ``setup(...)`` returns ``(model, (X, y))``.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn


def blobs(n: int = 600, d: int = 20, classes: int = 4, seed: int = 0):
    """Gaussian blobs around random centres: learnable, standardized, balanced."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g) * 1.5
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, d, generator=g)
    x = (x - x.mean(0)) / x.std(0)
    return x, y


def mlp(act: type[nn.Module] = nn.ReLU, hidden: int = 32, depth: int = 2) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    width = 20
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 4))


def state_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def loud(diagnosis) -> set[str]:
    return {f.code for f in diagnosis if f.severity != "info"}


# fix's keyword arguments for the tests: a fixed lr (no range test in diagnose) and short runs
FAST = {"lr": 1e-3, "_steps": 60}


@pytest.fixture
def data():
    return blobs()
