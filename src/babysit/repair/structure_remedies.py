"""Remedies on the model's structure, where an ``nn.Sequential`` or a named module makes it
explicit: batch norm before the nonlinearity, the activation on the logits, a missing
nonlinearity, dropout above 0.5, eval mode."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..findings import Finding
from ..nn.activations import WEIGHT_LAYERS
from .edit import (
    Change,
    Skip,
    batchnorm_for,
    child,
    is_activation,
    last_module_path,
    sequentials,
    set_module,
    show,
)
from .setup import SetUp


def _insert_after(
    setup: SetUp, make: Callable[[nn.Module, nn.Module | None], nn.Module | None]
) -> list[str]:
    """Insert ``make(module, next_module)`` after each child of every ``nn.Sequential`` for
    which it returns a module; returns one "insert X after model[i]" line per insertion."""
    lines = []
    for path, seq in list(sequentials(setup.model)):
        children = list(seq)
        rebuilt: list[nn.Module] = []
        for i, module in enumerate(children):
            rebuilt.append(module)
            added = make(module, children[i + 1] if i + 1 < len(children) else None)
            if added is not None:
                rebuilt.append(added)
                lines.append(f"insert {_described(added)} after {show(child(path, i))}")
        if len(rebuilt) > len(children):
            setup.model = set_module(setup.model, path, nn.Sequential(*rebuilt))
    return lines


def _described(module: nn.Module) -> str:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return f"{type(module).__name__}({module.num_features})"
    return f"{type(module).__name__}()"


def batchnorm(setup: SetUp, finding: Finding | None) -> Change:
    """Insert BatchNorm after each Linear/Conv that an activation follows in an nn.Sequential."""

    def norm_between(module: nn.Module, nxt: nn.Module | None) -> nn.Module | None:
        if isinstance(module, WEIGHT_LAYERS) and nxt is not None and is_activation(nxt):
            return batchnorm_for(module)
        return None

    lines = _insert_after(setup, norm_between)
    if not lines:
        raise Skip(
            "no nn.Sequential with a Linear/Conv layer followed by an activation module to insert "
            "into (a functional forward cannot be edited): add nn.BatchNorm1d/2d by hand"
        )
    return Change(setup, tuple(lines))


OUTPUT_ACTIVATIONS = (nn.Softmax, nn.Sigmoid, nn.ReLU, nn.Tanh, nn.LogSigmoid, nn.Softplus)


def remove_output_activation(setup: SetUp, finding: Finding | None) -> Change:
    """Replace the module that turns the logits into probabilities/activations by Identity.

    The module is the one the finding names (the structure check traced it as the last call
    before the loss); applied by hand (no finding), the model's last module. A finding that
    names no module came from a functional call, which cannot be edited.
    """
    path = finding.layer if finding is not None else last_module_path(setup.model)
    try:
        module = setup.model.get_submodule(path) if path else None
    except AttributeError:
        module = None
    if not path or not isinstance(module, OUTPUT_ACTIVATIONS):
        raise Skip(
            "the output activation is not a module babysit can remove (a functional call in "
            "forward): delete it from forward by hand; the loss applies it"
        )
    setup.model = set_module(setup.model, path, nn.Identity())
    return Change(setup, (f"remove {module!r} at {show(path)}: the loss takes the logits",))


def insert_relu(setup: SetUp, finding: Finding | None) -> Change:
    """Insert a ReLU between two weight layers that follow each other in an nn.Sequential."""

    def relu_between(module: nn.Module, nxt: nn.Module | None) -> nn.Module | None:
        if isinstance(module, WEIGHT_LAYERS) and isinstance(nxt, WEIGHT_LAYERS):
            return nn.ReLU()
        return None

    lines = _insert_after(setup, relu_between)
    if not lines:
        raise Skip(
            "no two weight layers in a row inside an nn.Sequential: add the activation "
            "in forward by hand"
        )
    return Change(setup, tuple(lines))


def dropout_half(setup: SetUp, finding: Finding | None) -> Change:
    """Every dropout rate above 0.5 -> 0.5 (UMLAUT's rule; Srivastava et al. use 0.5)."""
    lines = []
    for path, module in setup.model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0.5:
            lines.append(f"{show(path)}.p = 0.5 (was {module.p:g})")
            module.p = 0.5
    if not lines:
        raise Skip("no dropout module above 0.5 (a functional dropout cannot be edited)")
    return Change(setup, tuple(lines))


def train_mode(setup: SetUp, finding: Finding | None) -> Change:
    """``model.train()``: dropout and batch norm behave as in training."""
    setup.model.train()
    return Change(setup, ("model.train() before the training loop",))
