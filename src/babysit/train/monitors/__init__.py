"""Monitors: callbacks that watch training and emit findings, each cheap and sampled.

=================  =========================================================  ==============
monitor            codes                                                      cost
=================  =========================================================  ==============
LossGuard          NAN_LOSS, LR_TOO_HIGH (rollback under ``fit``)             one compare
LossCurve          LOSS_PLATEAU_AT_START, LR_TOO_LOW, LOSS_OSCILLATING         some epoch ends
UpdateRatio        UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW                        first 10, every 50
ActivationStats    DEAD_RELU, SATURATED_ACTIVATIONS, VANISHING/EXPLODING_...  every 100 steps
Generalization     OVERFITTING, UNDERFITTING                                  per epoch
EvalMode           MODEL_IN_EVAL_MODE                                         every 100 steps
=================  =========================================================  ==============

Under DDP (``torchrun``) every step's loss is shared across ranks (one all-reduce of
``world_size`` float64s) and a sampled ``ActivationStats`` step adds one all-reduce of its
counts, so every rank judges the global batch and takes the same decisions
(:mod:`.across_ranks`, docs/architecture.md, "Distributed training").

``monitors="default"`` is all of them with these rates; ``"all"`` samples more often
(``UpdateRatio(every=1)``, ``ActivationStats(every=10)``); ``None`` (or ``[]``) runs none.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..callbacks import Callback
from ._base import Monitor
from .activations import ActivationStats
from .generalization import Generalization
from .loss import LossCurve, LossGuard
from .mode import EvalMode
from .updates import UpdateRatio

__all__ = [
    "ActivationStats",
    "EvalMode",
    "Generalization",
    "LossCurve",
    "LossGuard",
    "Monitor",
    "UpdateRatio",
    "default_monitors",
    "resolve_monitors",
]


def default_monitors(*, dense: bool = False) -> list[Monitor]:
    """One of each monitor; ``dense`` samples 10x more often (``monitors="all"``)."""
    return [
        LossGuard(),
        LossCurve(),
        UpdateRatio(every=1) if dense else UpdateRatio(),
        ActivationStats(every=10) if dense else ActivationStats(),
        Generalization(),
        EvalMode(),
    ]


def resolve_monitors(spec: str | Iterable[Callback] | None) -> list[Callback]:
    """``"default"``, ``"all"``, ``None`` or a list of callbacks -> a list of callbacks."""
    if spec is None:
        return []
    if isinstance(spec, str):
        if spec not in ("default", "all"):
            raise ValueError(
                f"monitors must be 'default', 'all', None or a list of monitors, got {spec!r}"
            )
        return list(default_monitors(dense=spec == "all"))
    monitors = list(spec)
    bad = [type(m).__name__ for m in monitors if not isinstance(m, Callback)]
    if bad:
        raise TypeError(f"monitors must be Callback instances, got {', '.join(bad)}")
    return monitors
