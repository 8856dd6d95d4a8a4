"""Orders to compare babysit's with, at the same training budget (``fix(..., _order=...)``).

Independent studies found that on benchmarks other than their own, a random choice of remedy
repairs about as much as the published tools (Kim et al., ICST'23). So ``benchmarks/fix.py``
compares babysit's order (:func:`babysit.repair.default_order`) with:

- :func:`random_order`: one remedy drawn at random from the same list, per code (seeded);
- :func:`autotrainer_order`: AUTOTRAINER's fixed order (Zhang et al., ICSE'21) for its five
  problems, mapped onto babysit's remedies: vanishing gradients -> ReLU + He -> batch norm;
  exploding gradients -> ReLU + He -> batch norm (its SELU, gradient clipping and tanh
  steps have no babysit remedy); dying ReLU -> batch norm -> re-init -> Leaky ReLU; an
  oscillating loss -> lr / 10; slow convergence -> lr x 10 -> re-init. A code outside those
  problems gets babysit's list, so the baseline is never worse for lack of a remedy.

Both are verified by the same rule as babysit's order; only the choice of remedies differs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .loop import Order

__all__ = ["AUTOTRAINER", "autotrainer_order", "random_order"]

_VANISHING = ("relu_he", "batchnorm")
_EXPLODING = ("relu_he", "batchnorm")
_DYING = ("batchnorm", "reinit", "leaky_relu")
_OSCILLATING = ("lr_down",)
_SLOW = ("lr_up", "reinit")

AUTOTRAINER: dict[str, tuple[str, ...]] = {
    "VANISHING_GRADIENTS": _VANISHING,
    "VANISHING_ACTIVATIONS": _VANISHING,
    "SATURATED_ACTIVATIONS": _VANISHING,
    "EXPLODING_GRADIENTS": _EXPLODING,
    "EXPLODING_ACTIVATIONS": _EXPLODING,
    "DEAD_RELU": _DYING,
    "LOSS_OSCILLATING": _OSCILLATING,
    "LR_TOO_HIGH": _OSCILLATING,
    "NAN_LOSS": _OSCILLATING,
    "UPDATE_RATIO_HIGH": _OSCILLATING,
    "LR_TOO_LOW": _SLOW,
    "UPDATE_RATIO_LOW": _SLOW,
}


def autotrainer_order(code: str, names: tuple[str, ...]) -> Sequence[str]:
    """AUTOTRAINER's fixed order for ``code`` (babysit's list for codes it does not cover)."""
    return AUTOTRAINER.get(code, names)


def random_order(seed: int = 0) -> Order:
    """An order that tries one remedy drawn at random from each code's list (seeded)."""
    rng = random.Random(seed)

    def order(code: str, names: tuple[str, ...]) -> Sequence[str]:
        return [rng.choice(names)] if names else []

    return order
