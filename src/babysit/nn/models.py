"""Model builders: the MLPs and small convnets of the lecture, as plain ``nn.Sequential``.

Each hidden block is ``Linear/Conv -> [BatchNorm] -> activation -> [Dropout]``: batch norm goes
after the fully connected or convolutional layer and *before* the nonlinearity (Ioffe & Szegedy,
2015, as the lecture shows). The output layer is a plain Linear producing logits.

>>> model = mlp(40, [100, 100], 10)
>>> [type(m).__name__ for m in model]
['Linear', 'ReLU', 'Linear', 'ReLU', 'Linear']
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from .activations import ChannelMaxout, Maxout
from .activations import activation as make_activation

__all__ = ["convnet", "mlp"]


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    *,
    activation: str = "relu",
    init: str | None = "he",
    batchnorm: bool = False,
    dropout: float = 0.0,
    pieces: int = 2,
) -> nn.Sequential:
    """A multi-layer perceptron ``in -> hidden[0] -> ... -> out``.

    Args:
        in_features: input size (features of a flat example).
        hidden: widths of the hidden layers; ``[]`` gives a linear classifier.
        out_features: number of outputs (classes).
        activation: a name from :func:`babysit.nn.activation`. ``"maxout"`` replaces
            Linear + activation by :class:`Maxout` (``pieces`` affine maps); with batch norm,
            by ``Linear(in, out * pieces) -> BatchNorm1d -> ChannelMaxout``.
        init: an init scheme for :func:`babysit.nn.init_model`, or ``None`` for PyTorch's
            default. He init suits the ReLU family (He et al., 2015).
        batchnorm: add ``BatchNorm1d`` after each hidden Linear.
        dropout: dropout probability after each hidden activation (0 disables it).
        pieces: maxout pieces.
    """
    _check_sizes(in_features, hidden, out_features)
    _check_dropout(dropout)
    layers: list[nn.Module] = []
    width = in_features
    for out in hidden:
        if activation == "maxout" and not batchnorm:
            layers.append(Maxout(width, out, pieces))
        else:
            multiplier = pieces if activation == "maxout" else 1
            layers.append(nn.Linear(width, out * multiplier))
            if batchnorm:
                layers.append(nn.BatchNorm1d(out * multiplier))
            layers.append(_activation(activation, pieces))
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = out
    layers.append(nn.Linear(width, out_features))
    return _initialized(nn.Sequential(*layers), init)


def convnet(
    in_shape: tuple[int, ...],
    channels: Sequence[int],
    out_features: int,
    *,
    kernel_size: int = 3,
    activation: str = "relu",
    init: str | None = "he",
    batchnorm: bool = False,
    dropout: float = 0.0,
    pieces: int = 2,
) -> nn.Sequential:
    """A small convnet: conv blocks that halve the resolution, then a Linear classifier.

    ``in_shape`` ``(C, L)`` builds ``Conv1d`` (MNIST-1D is ``(1, 40)``); ``(C, H, W)`` builds
    ``Conv2d`` (CIFAR-10 is ``(3, 32, 32)``). Each block is ``Conv(stride 2) -> [BatchNorm] ->
    activation -> [Dropout]``, "same" padding; ``activation="maxout"`` gives each conv
    ``pieces × channels`` outputs and takes the max over channel groups.

    >>> convnet((1, 40), [8, 16], 10)(__import__("torch").randn(2, 1, 40)).shape
    torch.Size([2, 10])
    """
    if len(in_shape) not in (2, 3) or any(int(s) < 1 for s in in_shape):
        raise ValueError(
            f"in_shape must be (C, L) for 1-d or (C, H, W) for 2-d inputs, got {in_shape!r}"
        )
    _check_sizes(in_shape[0], channels, out_features)
    _check_dropout(dropout)
    conv = nn.Conv1d if len(in_shape) == 2 else nn.Conv2d
    norm = nn.BatchNorm1d if len(in_shape) == 2 else nn.BatchNorm2d
    multiplier = pieces if activation == "maxout" else 1
    layers: list[nn.Module] = []
    width, spatial = in_shape[0], list(in_shape[1:])
    for out in channels:
        layers.append(
            conv(width, out * multiplier, kernel_size, stride=2, padding=kernel_size // 2)
        )
        if batchnorm:
            layers.append(norm(out * multiplier))
        layers.append(_activation(activation, pieces))
        if dropout:
            layers.append(nn.Dropout(dropout))
        spatial = [_conv_out(s, kernel_size, 2, kernel_size // 2) for s in spatial]
        width = out
    layers += [nn.Flatten(), nn.Linear(width * math.prod(spatial), out_features)]
    return _initialized(nn.Sequential(*layers), init)


def _activation(name: str, pieces: int) -> nn.Module:
    return ChannelMaxout(pieces) if name == "maxout" else make_activation(name)


def _initialized(model: nn.Sequential, init: str | None) -> nn.Sequential:
    if init is not None:
        from .init import init_model

        init_model(model, init)
    return model


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _check_sizes(first: int, hidden: Sequence[int], last: int) -> None:
    sizes = [first, *hidden, last]
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
        raise ValueError(f"layer sizes must be positive integers, got {sizes}")


def _check_dropout(p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p!r}")
