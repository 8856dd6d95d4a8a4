"""What every pre-flight check shares: the context it reads and the registry.

:func:`finding` (re-exported here for the checks) lives in :mod:`babysit.findings`, where the
training monitors build their findings too.

A check is a small function ``check(ctx) -> list[Finding]``, registered with :func:`check`
under a name and the codes it can emit. It reads :class:`Context` and must not change the
user's model: ``ctx.model`` is already a deep copy, and :meth:`Context.fresh_model` gives
another for checks that train.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..findings import CODES, Finding, finding
from ..tasks import Task

__all__ = ["REGISTRY", "CannotCheck", "CheckSpec", "Context", "check", "finding"]

OptimizerFactory = Callable[[Iterable[nn.Parameter], float, float], torch.optim.Optimizer]


@dataclass
class Context:
    """Everything a check may read. Tensors live on ``device``."""

    model: nn.Module  # a deep copy of the user's model, in the user's train/eval mode
    x: torch.Tensor  # the probe batch: up to PROBE_BATCH examples of the data
    y: torch.Tensor | None  # its targets (None for unsupervised data)
    data: Any  # what the user passed, for checks on the loader itself
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    classification: bool  # cross-entropy style loss on integer class labels
    num_classes: int | None
    optimizer: OptimizerFactory  # (params, lr, weight_decay) -> optimizer
    optimizer_name: str
    lr: float | None
    weight_decay: float
    thresholds: Mapping[str, float]
    seed: int
    device: torch.device
    n_examples: int  # examples in the whole data set, when known
    batch_size: int
    cache: dict[str, Any] = field(default_factory=dict)  # measurements shared between checks
    _original: nn.Module | None = None
    task: Task = field(default_factory=lambda: Task("classification"))  # babysit.tasks

    def fresh_model(self) -> nn.Module:
        """Another deep copy of the user's model, untouched by earlier checks."""
        source = self._original if self._original is not None else self.model
        return copy.deepcopy(source).to(self.device)

    def forward(self, model: nn.Module | None = None, x: torch.Tensor | None = None):
        """``model(x)`` with the probe batch by default."""
        return (model or self.model)(self.x if x is None else x)


Check = Callable[[Context], list[Finding]]


class CannotCheck(Exception):
    """Raised by a check that cannot judge this set-up: ``diagnose`` lists it in
    ``CHECKS_SKIPPED`` with ``reason`` (which names the argument that would let it run); a
    ``warning`` makes that finding a warning (docs/architecture.md, "Cannot check means say
    so")."""

    def __init__(self, reason: str, *, warning: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.warning = warning


@dataclass(frozen=True)
class CheckSpec:
    name: str
    run: Check
    codes: tuple[str, ...]
    slow: bool  # only in checks="all"
    family: str
    needs_labels: bool


REGISTRY: dict[str, CheckSpec] = {}


def check(
    name: str, *, codes: Iterable[str], slow: bool = False, needs_labels: bool = False
) -> Callable[[Check], Check]:
    """Register ``func`` as the check ``name`` emitting ``codes``."""

    def register(func: Check) -> Check:
        codes_ = tuple(codes)
        unknown = [c for c in codes_ if c not in CODES]
        if unknown:
            raise ValueError(f"check {name!r} declares unknown codes {unknown}")
        family = func.__module__.rsplit(".", 1)[-1]
        REGISTRY[name] = CheckSpec(name, func, codes_, slow, family, needs_labels)
        return func

    return register
