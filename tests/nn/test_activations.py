"""Activations against their closed forms, Maxout's parameter count and gradient routing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from babysit.nn import ACTIVATIONS, ChannelMaxout, Maxout, activation, gain
from babysit.nn.activations import layer_nonlinearities

Z = torch.linspace(-6, 6, 121, dtype=torch.float64)

SELU_SCALE, SELU_ALPHA = 1.0507009873554805, 1.6732632423543772  # Klambauer et al. 2017


def sig(z):
    return 1 / (1 + torch.exp(-z))


def phi(z):  # standard normal pdf and cdf, for GELU
    return torch.exp(-(z**2) / 2) / math.sqrt(2 * math.pi), 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def where_pos(z, pos, neg):
    as_z = lambda v: torch.as_tensor(v, dtype=z.dtype)  # noqa: E731
    return torch.where(z > 0, as_z(pos), as_z(neg))


CLOSED_FORMS = {  # name: (f(z), f'(z))
    "sigmoid": (sig, lambda z: sig(z) * (1 - sig(z))),
    "tanh": (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2),
    "relu": (lambda z: where_pos(z, z, 0.0), lambda z: where_pos(z, 1.0, 0.0)),
    "leaky_relu": (lambda z: where_pos(z, z, 0.01 * z), lambda z: where_pos(z, 1.0, 0.01)),
    "prelu": (lambda z: where_pos(z, z, 0.25 * z), lambda z: where_pos(z, 1.0, 0.25)),
    "elu": (lambda z: where_pos(z, z, torch.exp(z) - 1), lambda z: where_pos(z, 1.0, torch.exp(z))),
    "selu": (
        lambda z: SELU_SCALE * where_pos(z, z, SELU_ALPHA * (torch.exp(z) - 1)),
        lambda z: SELU_SCALE * where_pos(z, 1.0, SELU_ALPHA * torch.exp(z)),
    ),
    "silu": (lambda z: z * sig(z), lambda z: sig(z) * (1 + z * (1 - sig(z)))),
    "gelu": (lambda z: z * phi(z)[1], lambda z: phi(z)[1] + z * phi(z)[0]),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_values_and_gradients_match_closed_forms(name):
    f, df = CLOSED_FORMS[name]
    module = activation(name).double()
    z = Z.clone().requires_grad_(True)
    out = module(z)
    out.sum().backward()
    nonkink = Z != 0  # ReLU-family derivatives are undefined at the kink
    torch.testing.assert_close(out.detach(), f(Z))
    torch.testing.assert_close(z.grad[nonkink], df(Z)[nonkink])


def test_registry_holds_every_activation_of_the_lecture():
    lecture = {"sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "maxout"}
    assert lecture <= set(ACTIVATIONS)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown activation 'swish2'.*relu.*tanh"):
        activation("swish2")


def test_keyword_arguments_reach_the_module():
    assert activation("leaky_relu", negative_slope=0.2).negative_slope == 0.2
    assert activation("elu", alpha=0.5).alpha == 0.5
    assert activation("prelu", num_parameters=8).weight.shape == (8,)
    assert activation("maxout", pieces=3).pieces == 3
    assert isinstance(activation("Leaky-ReLU"), nn.LeakyReLU)


def test_bad_keyword_is_a_clear_type_error():
    with pytest.raises(TypeError, match=r"activation 'relu' does not accept \['slope'\]"):
        activation("relu", slope=0.1)


def test_prelu_per_channel_learns_one_slope_per_channel():
    act = activation("prelu", num_parameters=3)
    x = -torch.ones(2, 3, 4, 4, requires_grad=True)
    act(x).sum().backward()
    assert act.weight.grad.shape == (3,)
    torch.testing.assert_close(act.weight.grad, torch.full((3,), -32.0))


def test_maxout_has_pieces_times_the_parameters_of_a_linear_layer():
    linear = sum(p.numel() for p in nn.Linear(20, 10).parameters())
    for pieces in (2, 3, 4):
        maxout = sum(p.numel() for p in Maxout(20, 10, pieces).parameters())
        assert maxout == pieces * linear


def test_maxout_is_the_max_over_affine_pieces():
    torch.manual_seed(0)
    layer = Maxout(5, 3, pieces=2)
    x = torch.randn(7, 5)
    w = layer.linear.weight.view(3, 2, 5)
    b = layer.linear.bias.view(3, 2)
    pieces = torch.stack([x @ w[:, k].T + b[:, k] for k in range(2)], dim=-1)  # (N, 3, 2)
    torch.testing.assert_close(layer(x), pieces.amax(-1))


def test_maxout_gradient_flows_only_to_the_argmax_piece():
    torch.manual_seed(1)
    layer = Maxout(4, 6, pieces=3)
    x = torch.randn(1, 4)
    layer(x).sum().backward()
    z = layer.linear(x).view(6, 3)
    winner = z.argmax(dim=1)
    grad_rows = layer.linear.weight.grad.view(6, 3, 4)
    for unit in range(6):
        for piece in range(3):
            row = grad_rows[unit, piece]
            if piece == winner[unit]:
                torch.testing.assert_close(row, x[0])
            else:
                assert torch.count_nonzero(row) == 0


def test_channel_maxout_takes_max_over_channel_groups():
    x = torch.randn(2, 6, 5, 5)
    out = ChannelMaxout(3)(x)
    assert out.shape == (2, 2, 5, 5)
    torch.testing.assert_close(out, x.view(2, 2, 3, 5, 5).amax(2))


def test_channel_maxout_explains_a_bad_channel_count():
    with pytest.raises(ValueError, match="divisible by 2, got 5 channels"):
        ChannelMaxout(2)(torch.randn(1, 5))


@pytest.mark.parametrize("pieces", [1, 0, 2.5])
def test_maxout_rejects_bad_pieces(pieces):
    with pytest.raises(ValueError, match="pieces >= 2"):
        Maxout(3, 3, pieces)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("linear", 1.0),
        ("sigmoid", 1.0),
        ("tanh", 5 / 3),
        ("relu", math.sqrt(2)),
        ("leaky_relu", math.sqrt(2 / (1 + 0.01**2))),
        ("prelu", math.sqrt(2 / (1 + 0.25**2))),
        ("selu", 0.75),
        ("elu", math.sqrt(2)),
        ("maxout", 1.0),
    ],
)
def test_gain_table(name, expected):
    assert gain(name) == pytest.approx(expected)


def test_gain_rejects_unknown_names():
    with pytest.raises(ValueError, match="no init gain known for 'softmax'"):
        gain("softmax")


def test_layer_nonlinearities_follow_sequential_order():
    model = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.1),
        nn.Linear(8, 8), nn.LeakyReLU(0.2),
        Maxout(8, 4),
        nn.Linear(4, 4), nn.Linear(4, 2),
    )  # fmt: skip
    found = layer_nonlinearities(model)
    assert found == {
        "0": ("tanh", None),
        "4": ("leaky_relu", 0.2),
        "6.linear": ("maxout", None),
        "7": ("linear", None),
        "8": ("linear", None),
    }
