"""Overfit a small sample: models that cannot memorize 20 examples fire CANNOT_OVERFIT, the
healthy set-ups of docs/architecture.md stay silent, and the user's model is left as it was."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

import babysit as bs
from babysit.checks import build_context, overfit
from babysit.checks._base import REGISTRY, CannotCheck, Context
from babysit.findings import Finding


def make_ctx(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss_fn=None) -> Context:
    """The Context diagnose builds; lr and weight decay are irrelevant to the overfit check,
    which uses its own Adam and no regularization."""
    return build_context(model, (x, y), loss_fn=loss_fn, optimizer="sgd", lr=1e-6, weight_decay=0.1)


def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> list[Finding]:
    ctx = make_ctx(model, x, y, **kwargs)
    torch.manual_seed(ctx.seed)  # as diagnose does before each check
    return overfit.overfit_small_sample(ctx)


@pytest.fixture(scope="module")
def mnist1d() -> tuple[torch.Tensor, torch.Tensor]:
    """512 standardized MNIST-1D examples, (N, 40), and their labels."""
    x, y = bs.data.load("mnist1d").train.tensors
    return bs.data.Standardize().fit(x).transform(x)[:512], y[:512]


class Reshape(nn.Module):
    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), *self.shape)


class IgnoresInput(nn.Module):
    """A bug: the input is replaced by zeros before the network sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = bs.nn.mlp(40, [100], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(torch.zeros_like(x))


def dead_relus() -> nn.Module:
    model = bs.nn.mlp(40, [100, 100], 10)
    for layer in list(model)[:-1]:
        if isinstance(layer, nn.Linear):
            nn.init.constant_(layer.bias, -20.0)  # every ReLU outputs 0 on every example
    return model


HEALTHY: dict[str, Callable[[], nn.Module]] = {
    "he_relu": lambda: bs.nn.mlp(40, [100, 100], 10),
    "pytorch_default": lambda: bs.nn.mlp(40, [100, 100], 10, init=None),
    "xavier_tanh": lambda: bs.nn.mlp(40, [100, 100], 10, activation="tanh", init="xavier"),
    "batchnorm_dropout": lambda: bs.nn.mlp(40, [100, 100], 10, batchnorm=True, dropout=0.5),
    "convnet_bn": lambda: nn.Sequential(
        Reshape(1, 40), *bs.nn.convnet((1, 40), [16, 32], 10, batchnorm=True)
    ),
}

BROKEN: dict[str, Callable[[], nn.Module]] = {
    "zeros_init": lambda: bs.nn.init_model(bs.nn.mlp(40, [100, 100], 10), "zeros"),
    "dead_relus": dead_relus,
    "ignores_input": IgnoresInput,
    "deep_sigmoid": lambda: bs.nn.mlp(40, [100] * 10, 10, activation="sigmoid", init=None),
}


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_models_are_silent(mnist1d, name):
    torch.manual_seed(0)
    assert run(HEALTHY[name](), *mnist1d) == []


@pytest.mark.parametrize("name", BROKEN)
def test_models_that_cannot_fit_fire(mnist1d, name):
    torch.manual_seed(0)
    found = run(BROKEN[name](), *mnist1d)
    assert [f.code for f in found] == ["CANNOT_OVERFIT"]
    evidence = found[0].evidence
    assert evidence["examples"] == overfit.OVERFIT_EXAMPLES
    assert evidence["accuracy"] < 1.0 and evidence["target_accuracy"] == 1.0
    assert 2 <= len(evidence["loss_curve"]) <= overfit.CURVE_POINTS
    assert [a["lr"] for a in evidence["attempts"]] == list(overfit.OVERFIT_LRS)
    assert found[0].severity == "warning" and "overfit 20 examples" in found[0].message


def test_no_trainable_parameters_fires(mnist1d):
    model = bs.nn.mlp(40, [100], 10).requires_grad_(False)
    found = run(model, *mnist1d)
    assert [f.code for f in found] == ["CANNOT_OVERFIT"]
    assert "no trainable parameters" in found[0].message


def test_user_model_is_unchanged(mnist1d):
    model = bs.nn.mlp(40, [100, 100], 10, batchnorm=True, dropout=0.5).eval()
    before = copy.deepcopy(model.state_dict())
    run(model, *mnist1d)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m.training for m in model.modules())


def test_dropout_is_off_and_batchnorm_trains():
    model = overfit._without_dropout(bs.nn.mlp(4, [8], 2, batchnorm=True, dropout=0.5).eval())
    assert model[1].training  # BatchNorm1d: batch statistics
    assert not model[3].training  # Dropout: off
    assert model[3].p == 0.5


def test_regression_fits_or_fires():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=generator)
    target = 2 * x[:, :1] + x[:, 1:2].sin()
    torch.manual_seed(0)
    assert run(bs.nn.mlp(10, [64, 64], 1), x, target, loss_fn=nn.MSELoss()) == []
    # 11 parameters cannot interpolate 20 nonlinear targets
    found = run(nn.Linear(10, 1), x, target, loss_fn=nn.MSELoss())
    assert [f.code for f in found] == ["CANNOT_OVERFIT"]
    assert found[0].evidence["accuracy"] is None


def test_registered_with_its_code():
    spec = REGISTRY["overfit_small_sample"]
    assert spec.codes == ("CANNOT_OVERFIT",) and spec.needs_labels and not spec.slow


def test_downsample_keeps_ends():
    values = [float(i) for i in range(201)]
    short = overfit.downsample(values)
    assert len(short) == overfit.CURVE_POINTS and short[0] == 0.0 and short[-1] == 200.0
    assert overfit.downsample([1.0, 2.0]) == [1.0, 2.0]


def test_labels_the_loss_cannot_take_are_left_to_the_labels_check(mnist1d):
    x, y = mnist1d
    with pytest.raises(CannotCheck, match="LOSS_FAILED"):  # listed as not run, not a silent []
        run(bs.nn.mlp(40, [100], 10), x, y + 10)  # labels 10..19 for 10 outputs
