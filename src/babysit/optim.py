"""Optimizers by name, as the lecture and its follow-up (Lecture 7) name them.

>>> from torch import nn
>>> opt = make_optimizer("momentum", nn.Linear(2, 2).parameters(), lr=0.1)
>>> type(opt).__name__, opt.defaults["momentum"]
('SGD', 0.9)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["DEFAULT_LR", "OPTIMIZERS", "make_optimizer"]

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda p, lr, wd: torch.optim.SGD(p, lr=lr, weight_decay=wd),
    "momentum": lambda p, lr, wd: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=wd),
    "nesterov": lambda p, lr, wd: torch.optim.SGD(
        p, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd
    ),
    "adam": lambda p, lr, wd: torch.optim.Adam(p, lr=lr, weight_decay=wd),
    "adamw": lambda p, lr, wd: torch.optim.AdamW(p, lr=lr, weight_decay=wd),
    "rmsprop": lambda p, lr, wd: torch.optim.RMSprop(p, lr=lr, weight_decay=wd),
    "adagrad": lambda p, lr, wd: torch.optim.Adagrad(p, lr=lr, weight_decay=wd),
}

# Sensible starting learning rates (Karpathy's "3e-4 is the best LR for Adam" aside, PyTorch's
# Adam default is 1e-3; SGD-momentum 0.01-0.1 trains standard nets).
DEFAULT_LR: dict[str, float] = {
    "sgd": 0.1,
    "momentum": 0.01,
    "nesterov": 0.01,
    "adam": 1e-3,
    "adamw": 1e-3,
    "rmsprop": 1e-3,
    "adagrad": 1e-2,
}

Factory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def make_optimizer(
    optimizer: str | Factory,
    params: Iterable[nn.Parameter],
    lr: float | None = None,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """An optimizer from a name in :data:`OPTIMIZERS` or a factory ``params -> Optimizer``.

    With a name, ``lr=None`` takes :data:`DEFAULT_LR`. A factory sets its own lr and weight
    decay: when ``lr`` is given anyway, it overrides every parameter group's.
    """
    if callable(optimizer):
        opt = optimizer(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(
                f"the optimizer factory returned {type(opt).__name__}, not a torch.optim.Optimizer"
            )
        if lr is not None:
            for group in opt.param_groups:
                group["lr"] = lr
        return opt
    key = str(optimizer).strip().lower()
    if key not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}, "
            "or pass a factory such as lambda params: torch.optim.SGD(params, lr=0.1)"
        )
    if lr is not None and not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    return OPTIMIZERS[key](params, DEFAULT_LR[key] if lr is None else lr, weight_decay)


def optimizer_name(optimizer: str | Factory) -> str:
    """A name for reports: the given name, or the factory's repr."""
    return optimizer if isinstance(optimizer, str) else getattr(optimizer, "__name__", "custom")
