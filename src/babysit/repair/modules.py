"""The fitted preprocessing module ``fix`` prepends when the data needed one.

A module, not a transform applied to the data, so that :attr:`babysit.repair.Repair.model`
takes the user's raw inputs: ``(x - mean) / scale`` with ``mean`` and ``scale`` fitted on the
training inputs by :class:`babysit.data.Standardize` (or :class:`babysit.data.ZeroCenter`,
``scale`` = 1), the lecture's zero-centring and normalization.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FittedScaler"]


class FittedScaler(nn.Module):
    """``(x - mean) / scale`` with fitted buffers (they travel with ``state_dict``)."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("scale", scale.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale

    def extra_repr(self) -> str:
        return f"shape={tuple(self.mean.shape)}"
