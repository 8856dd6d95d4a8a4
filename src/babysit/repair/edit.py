"""The tools remedies share: :class:`Skip`, :class:`Change`, module paths and set-up reads.

A remedy edits the :class:`~babysit.repair.setup.SetUp` copy it is given and returns a
:class:`Change`; one that does not apply raises :class:`Skip` with the reason. Paths are shown
as the user writes them (``model.body[0]``, :func:`show`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ..batches import as_tensor
from ..nn.activations import activation_name, weight_layers
from .setup import SetUp


class Skip(Exception):
    """A remedy that does not apply to this set-up; the message says why."""


@dataclass(frozen=True)
class Change:
    """What a remedy did: the edited set-up and the patch lines describing the edit."""

    setup: SetUp
    patch: tuple[str, ...]


SATURATING = (nn.Sigmoid, nn.Tanh)

RELU_LIKE = ("relu", "leaky_relu", "prelu", "elu", "gelu", "selu", "silu")


def show(path: str) -> str:
    """A module path as the user writes it: ``"body.0"`` -> ``model.body[0]``."""
    out = "model"
    for part in path.split(".") if path else []:
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out


def set_module(model: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """``model`` with the submodule at ``path`` replaced (the root itself when path is '')."""
    if not path:
        return module
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)
    return model


def sequentials(model: nn.Module) -> Iterator[tuple[str, nn.Sequential]]:
    for path, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            yield path, module


def child(path: str, index: int) -> str:
    return f"{path}.{index}" if path else str(index)


def batchnorm_for(layer: nn.Module) -> nn.Module | None:
    if isinstance(layer, nn.Linear):
        return nn.BatchNorm1d(layer.out_features)
    if isinstance(layer, nn.Conv1d):
        return nn.BatchNorm1d(layer.out_channels)
    if isinstance(layer, nn.Conv2d):
        return nn.BatchNorm2d(layer.out_channels)
    if isinstance(layer, nn.Conv3d):
        return nn.BatchNorm3d(layer.out_channels)
    return None


def is_activation(module: nn.Module) -> bool:
    return activation_name(module) is not None


def input_tensor(setup: SetUp, what: str) -> torch.Tensor:
    """The input tensor of in-memory ``(X, y)`` data, or :class:`Skip` saying why not."""
    if setup.forward is not None:
        raise Skip(f"{what} needs the input tensor, which forward= hides")
    data = setup.data
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        data = data.tensors
    if isinstance(data, tuple | list) and len(data) == 2:
        try:
            x = as_tensor(data[0], "X")  # float64 arrays become float32, as fit reads them
        except (TypeError, ValueError):
            x = None
        if x is not None and x.is_floating_point():
            return x
    raise Skip(f"{what} needs in-memory (X, y) float tensors; pass the data as (X, y)")


def with_inputs(setup: SetUp, x: torch.Tensor) -> object:
    data = setup.data
    if isinstance(data, TensorDataset):
        return TensorDataset(x, data.tensors[1])
    return (x, data[1])


def init_scheme(model: nn.Module) -> str:
    """He for a ReLU-family net, Xavier otherwise (tanh, sigmoid, linear): the lecture's rule."""
    acts = {activation_name(m) for m in model.modules()} - {None}
    return "he" if acts & set(RELU_LIKE) or not acts else "xavier"


def weight_layer_list(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = list(weight_layers(model))
    if not layers:
        raise Skip("the model has no Linear/Conv layer to re-initialise")
    return layers


def current_lr(setup: SetUp) -> float:
    from ..optim import DEFAULT_LR

    lr = setup.options.get("lr")
    if lr is not None:
        return float(lr)
    optimizer = setup.options.get("optimizer", "adam")
    if isinstance(optimizer, str):
        return DEFAULT_LR.get(optimizer.strip().lower(), 1e-3)
    raise Skip("the optimizer is a factory whose lr babysit cannot read; pass lr=")


def fmt(value: float) -> str:
    return f"{value:.2g}"


# ---------------------------------------------------------------------------------------------
# remedies
# ---------------------------------------------------------------------------------------------


def seeded_generator(setup: SetUp) -> torch.Generator:
    return torch.Generator().manual_seed(int(setup.options.get("seed", 0)))


def last_module_path(model: nn.Module) -> str | None:
    """The path of the last leaf module in registration order (the output's, in a Sequential)."""
    leaves = [p for p, m in model.named_modules() if p and not list(m.children())]
    return leaves[-1] if leaves else None
