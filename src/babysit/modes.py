"""Train/eval flags of a model's modules: switch to eval mode and give each module its own back.

``model.train(was_training)`` sets *every* submodule's flag to one value. A user who froze a
BatchNorm with ``bn.eval()`` under a model in training mode (fine-tuning keeps pretrained
running statistics this way) would get it back in training mode, its statistics updated again
by every later batch. Every place where babysit switches a user's model to eval mode for a
measurement and back goes through :func:`eval_mode`, which restores each module's own flag.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def kept_modes(model: nn.Module) -> Iterator[None]:
    """Restore each module's own train/eval flag on exit, whatever happened inside."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` inside; each module's own flag restored on exit (see the module doc)."""
    with kept_modes(model):
        model.eval()
        yield
