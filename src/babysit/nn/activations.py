"""Activation functions of CS231n Lecture 6, by name, with the init gain each one wants.

The lecture's advice, in order: use ReLU (mind the learning rate); try Leaky ReLU, Maxout or
ELU; try tanh but expect little; don't use sigmoid. All of them are here, plus GELU, SELU and
SiLU since users ask for them.

>>> import torch
>>> act = activation("leaky_relu", negative_slope=0.1)
>>> act(torch.tensor([-1.0, 2.0]))
tensor([-0.1000,  2.0000])
>>> round(gain("relu"), 4)
1.4142
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "ChannelMaxout",
    "Maxout",
    "activation",
    "activation_name",
    "gain",
    "layer_nonlinearities",
    "weight_layers",
]


class Maxout(nn.Module):
    r"""A maxout layer (Goodfellow et al., 2013): the max over ``pieces`` affine maps.

    .. math:: y_j = \max_{k < K} \left( W_k x + b_k \right)_j

    It generalizes ReLU (``max(0, w^T x)``) and Leaky ReLU, never saturates and never dies,
    at the price the lecture names: ``pieces`` times the parameters of a plain linear layer.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        pieces: number of affine maps ``K`` the max is taken over (>= 2).

    Example:
        >>> layer = Maxout(4, 3, pieces=2)
        >>> layer(torch.randn(5, 4)).shape
        torch.Size([5, 3])
    """

    def __init__(self, in_features: int, out_features: int, pieces: int = 2) -> None:
        super().__init__()
        _check_pieces(pieces)
        self.in_features = in_features
        self.out_features = out_features
        self.pieces = pieces
        # One Linear holds all pieces so init schemes and probes see an ordinary layer.
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)  # (..., out * pieces)
        z = z.unflatten(-1, (self.out_features, self.pieces))  # (..., out, pieces)
        return z.amax(dim=-1)  # (..., out); the gradient reaches only the argmax piece

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, pieces={self.pieces}"


class ChannelMaxout(nn.Module):
    """Maxout as an activation: the max over groups of ``pieces`` consecutive channels (dim 1).

    Put it after a ``Conv`` (or ``Linear``) layer with ``pieces × C`` output channels to get ``C``
    channels; this is how ``convnet(activation="maxout")`` builds maxout convolutions.

    Example:
        >>> ChannelMaxout(2)(torch.tensor([[1.0, 3.0, -2.0, -5.0]]))
        tensor([[ 3., -2.]])
    """

    def __init__(self, pieces: int = 2) -> None:
        super().__init__()
        _check_pieces(pieces)
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if channels % self.pieces:
            raise ValueError(
                f"ChannelMaxout(pieces={self.pieces}) needs a channel count divisible by "
                f"{self.pieces}, got {channels} channels in an input of shape {tuple(x.shape)}: "
                f"give the layer before it {self.pieces}× the channels you want out."
            )
        grouped = x.unflatten(1, (channels // self.pieces, self.pieces))  # (N, C, pieces, ...)
        return grouped.amax(dim=2)  # (N, C, ...)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


def _check_pieces(pieces: int) -> None:
    if not isinstance(pieces, int) or pieces < 2:
        raise ValueError(f"maxout needs an integer pieces >= 2, got {pieces!r}")


ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,  # negative_slope=0.01
    "prelu": nn.PReLU,  # num_parameters=1 (one slope) or C (one per channel), init=0.25
    "elu": nn.ELU,  # alpha=1.0
    "gelu": nn.GELU,
    "selu": nn.SELU,
    "silu": nn.SiLU,
    "maxout": ChannelMaxout,  # pieces=2; as a layer use Maxout(in, out, pieces)
}

_NAME_OF_TYPE: dict[type, str] = {
    cls: name for name, cls in ACTIVATIONS.items() if isinstance(cls, type)
}
_NAME_OF_TYPE[Maxout] = "maxout"

# He et al. (2015) derive sqrt(2) for ReLU; torch.nn.init.calculate_gain holds the classical
# table (tanh 5/3, SELU 3/4 from Klambauer et al. 2017). For the smooth ReLU family (ELU, GELU,
# SiLU), which torch does not list, we use ReLU's sqrt(2) as fastai and timm do. A maxout of
# K=2 unit-Gaussian pieces has E[max(a, b)^2] = 1, so its gain is 1.
_GAIN_LIKE_RELU = ("elu", "gelu", "silu")


def activation(name: str, **kwargs) -> nn.Module:
    """Build the activation module called ``name`` (see :data:`ACTIVATIONS`).

    Keyword arguments go to the module: ``negative_slope`` for leaky_relu, ``alpha`` for elu,
    ``num_parameters`` (1 or the channel count) and ``init`` for prelu, ``pieces`` for maxout.

    Raises:
        ValueError: for an unknown name; the message lists the known ones.
        TypeError: for a keyword the activation does not take.
    """
    key = _normalize(name)
    if key not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}; known activations: {', '.join(sorted(ACTIVATIONS))}"
        )
    try:
        return ACTIVATIONS[key](**kwargs)
    except TypeError as err:
        raise TypeError(f"activation {key!r} does not accept {sorted(kwargs)}: {err}") from None


def gain(name: str, param: float | None = None) -> float:
    """The init gain recommended for the activation ``name`` (``"linear"`` for none).

    The std of a layer's weights is ``gain / sqrt(fan)``. ``param`` is the negative slope of
    leaky_relu/prelu (defaults 0.01 and 0.25).

    >>> gain("tanh")
    1.6666666666666667
    >>> gain("linear")
    1.0
    """
    key = _normalize(name)
    if key in ("linear", "identity", "maxout", "sigmoid"):
        return 1.0
    if key in ("relu", *_GAIN_LIKE_RELU):
        return math.sqrt(2.0)
    if key == "prelu":
        key, param = "leaky_relu", 0.25 if param is None else param
    if key in ("tanh", "selu", "leaky_relu"):
        return float(nn.init.calculate_gain(key, param))
    raise ValueError(
        f"no init gain known for {name!r}; known: linear, {', '.join(sorted(ACTIVATIONS))}"
    )


def activation_name(module: nn.Module) -> str | None:
    """The registry name of an activation module (``nn.ReLU()`` -> ``"relu"``), else ``None``."""
    return _NAME_OF_TYPE.get(type(module))


def activation_param(module: nn.Module) -> float | None:
    """The shape parameter that changes the gain: leaky_relu's slope, prelu's mean slope."""
    if isinstance(module, nn.LeakyReLU):
        return float(module.negative_slope)
    if isinstance(module, nn.PReLU):
        return float(module.weight.detach().mean())
    return None


WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def weight_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The Linear/Conv layers of ``model`` in registration order, named by module path."""
    for name, module in model.named_modules():
        if isinstance(module, WEIGHT_LAYERS):
            yield name, module


def layer_nonlinearities(model: nn.Module) -> dict[str, tuple[str, float | None]]:
    """For each Linear/Conv layer, the activation that follows it: ``{path: (name, param)}``.

    Walks the modules in registration order (the forward order of an ``nn.Sequential`` and of
    the builders). A layer followed by another weight layer, or by nothing, maps to
    ``("linear", None)``; batch norm and dropout in between are skipped. The Linear inside a
    :class:`Maxout` maps to ``"maxout"``. Functional activations in ``forward`` cannot be seen:
    pass ``nonlinearity=`` to the init schemes for such models.
    """
    result: dict[str, tuple[str, float | None]] = {}
    pending: list[str] = []  # weight layers still waiting for their activation
    for name, module in model.named_modules():
        if isinstance(module, Maxout):
            result[f"{name}.linear" if name else "linear"] = ("maxout", None)
            continue
        if name.endswith("linear") and isinstance(_parent(model, name), Maxout):
            continue
        if isinstance(module, WEIGHT_LAYERS):
            for layer in pending:
                result[layer] = ("linear", None)
            pending = [name]
        elif (act := activation_name(module)) is not None:
            for layer in pending:
                result[layer] = (act, activation_param(module))
            pending = []
    for layer in pending:
        result[layer] = ("linear", None)
    return result


def _parent(model: nn.Module, path: str) -> nn.Module | None:
    if "." not in path:
        return model if path else None
    return model.get_submodule(path.rsplit(".", 1)[0])


def _normalize(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"an activation name must be a string, got {type(name).__name__}")
    return name.strip().lower().replace("-", "_")
