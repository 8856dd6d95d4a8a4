"""The lecture's break-out rule as an Optuna pruner: "if the cost is ever > 3 × the original
cost, break out early".

Optuna gives a trial one series of intermediate values, which median-style pruners compare
across trials: babysit's built-in objective reports the *validation metric* there, once per
epoch. The break-out reads a different series, the *training loss*, kept in two trial user
attributes that the objective updates (``breakout_initial``: the start, ``fit``'s measured one
when the trial trains with ``fit`` (with ``breakout_spread``, the spread of its batches), else the
first step's loss; ``breakout_loss``: the latest one, ``None`` for NaN/Inf): a trial whose loss
is NaN/Inf or has
diverged from its initial loss (:func:`babysit.divergence.diverged`; for a loss that starts at
0.1 or above that is "above ``factor`` × the initial loss") is pruned, whatever ``inner`` (e.g.
``MedianPruner``) says about its metric. :func:`broke_out` is the same test on one live loss,
for an objective that decides within a step whether to report at once. NaN and Inf are handled
explicitly (a NaN compares False with everything, which is how several of Optuna's own pruners
let NaN trials run on).

A user objective gets the same behaviour by calling :func:`report_loss` with its loss, then
``trial.should_prune()``.
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from ..divergence import FACTOR, diverged

__all__ = ["BREAKOUT_FACTOR", "BreakOutPruner", "broke_out", "report_loss", "report_start"]

BREAKOUT_FACTOR = FACTOR  # lecture: cost > 3 x original cost -> break out
_INITIAL = "breakout_initial"
_LATEST = "breakout_loss"
_SPREAD = "breakout_spread"


def broke_out(
    loss: float, initial: float | None, factor: float = BREAKOUT_FACTOR, *, spread: float = 0.0
) -> bool:
    """Whether ``loss`` triggers the break-out against the trial's ``initial`` loss (and the
    ``spread`` of the batches it was measured over: :func:`babysit.divergence.diverged`)."""
    return diverged(loss, initial, factor, spread=spread)


def report_start(trial: optuna.Trial, start: float, spread: float) -> None:
    """Record a start measured before the first step (``fit``'s ``Session.start_loss``: the
    mean loss of the initial weights over several batches, and their spread) as the trial's
    initial loss for :class:`BreakOutPruner`, so that the pruner judges as ``fit``'s guard."""
    trial.set_user_attr(_INITIAL, float(start))
    trial.set_user_attr(_SPREAD, float(spread))


def report_loss(trial: optuna.Trial, loss: float) -> None:
    """Record ``loss`` for :class:`BreakOutPruner` (the first call fixes the initial loss).

    Writes to the study's storage: call it once per epoch, and at once when the loss looks bad.
    """
    value = float(loss) if math.isfinite(loss) else None
    if _INITIAL not in trial.user_attrs:
        trial.set_user_attr(_INITIAL, value)
    trial.set_user_attr(_LATEST, value)


class BreakOutPruner(optuna.pruners.BasePruner):
    """Prune a trial whose training loss went NaN/Inf or above ``factor`` × its initial loss.

    Args:
        factor: the lecture's 3; must be > 1.
        inner: another pruner consulted when the loss is fine (e.g. ``MedianPruner()``).
    """

    def __init__(
        self, factor: float = BREAKOUT_FACTOR, *, inner: optuna.pruners.BasePruner | None = None
    ) -> None:
        if isinstance(factor, bool) or not isinstance(factor, int | float):
            raise TypeError(f"factor must be a number, got {factor!r}")
        if not (math.isfinite(factor) and factor > 1):
            raise ValueError(f"factor must be a finite number > 1, got {factor!r}")
        if inner is not None and not isinstance(inner, optuna.pruners.BasePruner):
            raise TypeError(f"inner must be an Optuna pruner, got {type(inner).__name__}")
        self.factor = float(factor)
        self.inner = inner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if self.broke_out(trial.user_attrs):
            return True
        last = _last_intermediate(trial)
        if last is not None and not math.isfinite(last):
            return True  # a NaN/Inf metric is never worth finishing
        return self.inner.prune(study, trial) if self.inner is not None else False

    def broke_out(self, attrs: dict[str, Any]) -> bool:
        """Whether the recorded losses trigger the break-out."""
        if _LATEST not in attrs:
            return False
        initial, latest = attrs.get(_INITIAL), attrs[_LATEST]
        if latest is None or initial is None:
            return True  # NaN/Inf loss (recorded as None)
        return broke_out(latest, initial, self.factor, spread=attrs.get(_SPREAD, 0.0))


def _last_intermediate(trial: optuna.trial.FrozenTrial) -> float | None:
    values = trial.intermediate_values
    if not values:
        return None
    return values[max(values)]
