"""Model builders: layer order, shapes, maxout, batch norm placement, bad sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from babysit.nn import ChannelMaxout, Maxout, convnet, mlp


def kinds(model):
    return [type(m).__name__ for m in model]


def test_mlp_block_order_is_linear_bn_activation_dropout():
    model = mlp(40, [100, 50], 10, activation="tanh", batchnorm=True, dropout=0.3)
    assert kinds(model) == [
        "Linear", "BatchNorm1d", "Tanh", "Dropout",
        "Linear", "BatchNorm1d", "Tanh", "Dropout",
        "Linear",
    ]  # fmt: skip
    assert model(torch.randn(8, 40)).shape == (8, 10)


def test_mlp_without_hidden_layers_is_a_linear_classifier():
    assert kinds(mlp(64, [], 10)) == ["Linear"]


def test_maxout_mlp_uses_maxout_layers():
    model = mlp(40, [30], 10, activation="maxout", pieces=3)
    assert isinstance(model[0], Maxout) and model[0].pieces == 3
    assert model(torch.randn(4, 40)).shape == (4, 10)


def test_maxout_mlp_with_batchnorm_normalizes_before_the_max():
    model = mlp(40, [30], 10, activation="maxout", batchnorm=True)
    assert kinds(model) == ["Linear", "BatchNorm1d", "ChannelMaxout", "Linear"]
    assert model[0].out_features == 60
    assert model(torch.randn(4, 40)).shape == (4, 10)


def test_convnet_1d_for_mnist1d_shapes():
    model = convnet((1, 40), [8, 16], 10, batchnorm=True)
    assert kinds(model)[:3] == ["Conv1d", "BatchNorm1d", "ReLU"]
    assert model(torch.randn(3, 1, 40)).shape == (3, 10)


def test_convnet_2d_for_cifar_shapes():
    model = convnet((3, 32, 32), [8, 16, 32], 10, kernel_size=5, dropout=0.1)
    assert isinstance(model[0], nn.Conv2d)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_convnet_maxout_doubles_conv_channels():
    model = convnet((3, 8, 8), [4], 10, activation="maxout")
    assert model[0].out_channels == 8 and isinstance(model[1], ChannelMaxout)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_builders_apply_the_init_scheme():
    torch.manual_seed(0)
    model = mlp(1000, [1000], 10, init="he")
    std = model[0].weight.std().item()
    assert std == pytest.approx((2 / 1000) ** 0.5, rel=0.02)
    assert torch.count_nonzero(model[0].bias) == 0


def test_init_none_keeps_pytorch_default():
    torch.manual_seed(0)
    model = mlp(1000, [10], 10, init=None)
    bound = (
        1 / 1000**0.5
    )  # PyTorch's default: kaiming_uniform with a=sqrt(5) -> U(-1/sqrt(fan_in), ...)
    assert model[0].weight.abs().max().item() <= bound


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mlp(0, [10], 10), "positive integers"),
        (lambda: mlp(10, [10, -1], 10), "positive integers"),
        (lambda: mlp(10, [10], 10, dropout=1.0), r"dropout must be in \[0, 1\)"),
        (lambda: convnet((1, 2, 3, 4), [8], 10), r"in_shape must be \(C, L\)"),
        (lambda: mlp(10, [10], 10, activation="softplus"), "unknown activation 'softplus'"),
    ],
)
def test_builders_reject_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
