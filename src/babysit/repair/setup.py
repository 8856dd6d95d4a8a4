"""A training set-up as ``fix`` edits it: the model, the data it sees and how it is trained.

Remedies never touch the user's objects: :func:`babysit.fix` hands each remedy a
:meth:`SetUp.copy` (the model deep-copied), and a remedy that changes the data builds new data
(a transformed copy of the inputs, a new ``DataLoader``) instead of editing the user's.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["TRAINING_KEYS", "SetUp"]

# The keys of ``options`` that describe how the model is trained (Repair.config).
TRAINING_KEYS = ("optimizer", "lr", "weight_decay")


@dataclass
class SetUp:
    """What ``diagnose`` and the verification run receive.

        ``model`` is the model as trained, without the fitted input preprocessing; ``data`` what it
        is trained on (the user's data, or its inputs passed through ``preprocess``); ``raw_data``
        the user's data, untouched; ``options`` the keyword arguments of ``diagnose`` that describe
        the set-up (``loss_fn``, ``optimizer``, ``lr``, ``weight_decay``, ``forward``, ``task``,
        ``num_classes``, ``thresholds``, ``device``). ``preprocess`` (a module, or None) maps raw
        inputs to what ``model`` expects: :attr:`full_model` puts it in front; ``postprocess`` maps
    the model's output on standardized targets back to the targets' units, and is put behind.
    """

    model: nn.Module
    data: Any
    raw_data: Any
    options: dict[str, Any] = field(default_factory=dict)
    preprocess: nn.Module | None = None
    postprocess: nn.Module | None = None

    def copy(self) -> SetUp:
        """A copy whose model (and preprocessing) a remedy may edit in place."""
        return dataclasses.replace(
            self,
            model=copy.deepcopy(self.model),
            options=dict(self.options),
            preprocess=copy.deepcopy(self.preprocess),
            postprocess=copy.deepcopy(self.postprocess),
        )

    @property
    def forward(self) -> Any:
        return self.options.get("forward")

    @property
    def full_model(self) -> nn.Module:
        """The model that takes the user's raw inputs and answers in the targets' units:
        ``preprocess``, ``model``, ``postprocess`` (those that are set)."""
        parts = [m for m in (self.preprocess, self.model, self.postprocess) if m is not None]
        return parts[0] if len(parts) == 1 else nn.Sequential(*parts)

    def config(self) -> dict[str, Any]:
        """The training set-up to use with :attr:`full_model` (``Repair.config``)."""
        out = {key: self.options.get(key) for key in TRAINING_KEYS}
        if out["lr"] is None and isinstance(out["optimizer"], str):
            from ..optim import DEFAULT_LR  # the lr the short runs trained with

            out["lr"] = DEFAULT_LR.get(out["optimizer"].strip().lower())
        if not isinstance(out["optimizer"], str):
            from ..optim import optimizer_name

            out["optimizer"] = optimizer_name(out["optimizer"])
        return out
