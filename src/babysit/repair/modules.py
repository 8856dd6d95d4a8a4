"""The fitted preprocessing module ``fix`` prepends when the data needed one.

A module, not a transform applied to the data, so that :attr:`babysit.repair.Repair.model`
takes the user's raw inputs: ``(x - mean) / scale`` with ``mean`` and ``scale`` fitted on the
training inputs by :class:`babysit.data.Standardize` (or :class:`babysit.data.ZeroCenter`,
``scale`` = 1), the lecture's zero-centring and normalization. Regression targets far from
unit scale are standardized the same way, and :class:`OutputScaler` appended to map the
outputs back to the targets' units.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FittedScaler", "OutputScaler"]


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


class OutputScaler(nn.Module):
    """``y * scale + mean``: maps a model trained on standardized targets back to their units."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("scale", scale.detach().clone())

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.scale + self.mean

    def extra_repr(self) -> str:
        return f"shape={tuple(self.mean.shape)}"
