"""Remedies on the initialization and the activations: the lecture's "Xavier for tanh, He for
ReLU", LSUV, biases, the output layer's scale, and AUTOTRAINER's ReLU + He / Leaky ReLU swaps."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..findings import Finding
from .edit import (
    SATURATING,
    Change,
    Skip,
    init_scheme,
    input_tensor,
    last_module_path,
    seeded_generator,
    set_module,
    show,
    weight_layer_list,
)
from .setup import SetUp


def reinit(setup: SetUp, finding: Finding | None) -> Change:
    """Re-initialise every Linear/Conv layer by its activation: He for ReLU, Xavier for tanh."""
    from ..nn import init_model

    weight_layer_list(setup.model)
    scheme = init_scheme(setup.model)
    init_model(setup.model, scheme, generator=seeded_generator(setup))
    return Change(setup, (f'bs.nn.init_model(model, "{scheme}")',))


def lsuv(setup: SetUp, finding: Finding | None) -> Change:
    """Layer-sequential unit-variance init (Mishkin & Matas, 2015) on a batch of the inputs."""
    import warnings

    from ..nn import init_model

    weight_layer_list(setup.model)
    x = input_tensor(setup, "LSUV")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init_model(setup.model, "lsuv", data=x[:512], generator=seeded_generator(setup))
    return Change(setup, ('bs.nn.init_model(model, "lsuv", data=X[:512])',))


def reset_biases(setup: SetUp, finding: Finding | None) -> Change:
    """Every Linear/Conv bias to 0 (a negative bias kills ReLUs before training starts)."""
    changed = []
    with torch.no_grad():
        for path, layer in weight_layer_list(setup.model):
            if layer.bias is not None and bool((layer.bias != 0).any()):
                layer.bias.zero_()
                changed.append(show(path))
    if not changed:
        raise Skip("every bias is already 0")
    return Change(setup, (f"set the biases of {', '.join(changed)} to 0",))


def _swap(setup: SetUp, kinds: tuple[type, ...], make: Callable[[], nn.Module]) -> list[str]:
    """Replace every module of ``kinds`` except the model's last module (the output's)."""
    last = last_module_path(setup.model)
    swapped: dict[tuple[str, str], list[str]] = {}  # (old, new) -> paths, one line each
    for path, module in list(setup.model.named_modules()):
        if path and isinstance(module, kinds) and path != last:
            new = make()
            setup.model = set_module(setup.model, path, new)
            swapped.setdefault((f"{type(module).__name__}()", repr(new)), []).append(show(path))
    return [
        f"replace {old} at {', '.join(paths)} with {new}" for (old, new), paths in swapped.items()
    ]


def relu_he(setup: SetUp, finding: Finding | None) -> Change:
    """Swap saturating activations (sigmoid, tanh) for ReLU and re-initialise with He."""
    from ..nn import init_model

    lines = _swap(setup, SATURATING, nn.ReLU)
    if not lines:
        raise Skip("no Sigmoid/Tanh module to swap (a functional activation cannot be edited)")
    init_model(setup.model, "he", generator=seeded_generator(setup))
    return Change(setup, (*lines, 'bs.nn.init_model(model, "he")'))


def leaky_relu(setup: SetUp, finding: Finding | None) -> Change:
    """ReLU -> LeakyReLU(0.01): a unit with a negative input still gets a gradient."""
    lines = _swap(setup, (nn.ReLU,), lambda: nn.LeakyReLU(0.01))
    if not lines:
        raise Skip("no nn.ReLU module to swap (a functional relu cannot be edited)")
    return Change(setup, tuple(lines))


def scale_output(setup: SetUp, finding: Finding | None) -> Change:
    """Scale the output layer's weights by 0.1: logits near 0 give the loss ln C at init."""
    path, layer = weight_layer_list(setup.model)[-1]
    with torch.no_grad():
        layer.weight.mul_(0.1)
        if layer.bias is not None:
            layer.bias.zero_()
    return Change(setup, (f"scale the weights of {show(path)} by 0.1 and zero its bias",))


def zero_output(setup: SetUp, finding: Finding | None) -> Change:
    """Zero the output layer: the loss at init is exactly the best constant predictor's."""
    path, layer = weight_layer_list(setup.model)[-1]
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()
    return Change(setup, (f"nn.init.zeros_({show(path)}.weight); zero its bias",))
