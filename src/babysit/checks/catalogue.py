"""A catalogue of broken and healthy training set-ups, each with what ``diagnose`` must say.

It is the evaluation of the checks (``tests/checks/test_catalogue.py`` asserts it,
``benchmarks/diagnose.py`` prints its confusion table), and a gallery of the lecture's mistakes
for users: ``babysit.checks.catalogue.CASES["tanh_huge_init"].build()`` returns a model, data
and diagnose keyword arguments that reproduce one.

Broken cases list the codes that must appear (each entry a set: any of its codes will do).
Healthy cases must produce no warning and no error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
from torch import nn

__all__ = ["CASES", "Case", "mnist1d_standardized"]


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    make: Callable[[], tuple[nn.Module, Any, dict[str, Any]]]
    expect: tuple[frozenset[str], ...] = ()  # empty: healthy
    checks: str = "all"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.expect

    def build(self) -> tuple[nn.Module, Any, dict[str, Any]]:
        """``(model, data, diagnose_kwargs)``, built afresh and seeded."""
        torch.manual_seed(0)
        return self.make()


@cache
def mnist1d_standardized() -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-1D training inputs, standardized per feature, and labels."""
    from ..data import Standardize, load

    x, y = load("mnist1d").train.tensors
    return Standardize().fit(x).transform(x), y


@cache
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from ..data import load

    return load("digits").train.tensors


def _mlp(**kw) -> nn.Sequential:
    from ..nn import mlp

    return mlp(40, kw.pop("hidden", [100, 100]), kw.pop("out", 10), **kw)


def _init(model: nn.Module, scheme: str, **kw) -> nn.Module:
    from ..nn import init_model

    return init_model(model, scheme, **kw)


class _WrongReLU(torch.autograd.Function):
    """ReLU whose backward returns twice the gradient: the kind of bug a gradient check finds."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * grad * (x > 0).to(grad.dtype)


class WrongReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _WrongReLU.apply(x)


class MixesBatch(nn.Module):
    """Flattens (N, C, L) with ``transpose(0, 1).reshape`` instead of ``flatten(1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1).reshape(x.shape[0], -1)


class DetachedBranch(nn.Module):
    """A model whose second layer only ever sees detached features: layer 0 gets no gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(40, 100), nn.ReLU())
        self.head = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).detach())


def _standard(model: nn.Module, **kw) -> tuple[nn.Module, Any, dict[str, Any]]:
    return model, mnist1d_standardized(), kw


def _frozen() -> nn.Module:
    model = _mlp()
    model[0].requires_grad_(False)
    return model


def _with_nan():
    x, y = mnist1d_standardized()
    x = x.clone()
    x[3, 5] = float("nan")
    x[100, 0] = float("inf")
    return _mlp(), (x, y), {}


def _sorted_loader():
    x, y = mnist1d_standardized()
    order = torch.argsort(y, stable=True)
    dataset = torch.utils.data.TensorDataset(x[order], y[order])
    return _mlp(), torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=False), {}


def _conv_mixing_batch():
    model = nn.Sequential(
        nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(), MixesBatch(), nn.Linear(8 * 40, 10)
    )
    x, y = mnist1d_standardized()
    return model, (x[:, None], y), {}


def _healthy_convnet():
    from ..nn import convnet

    x, y = mnist1d_standardized()
    return convnet((1, 40), [16, 32], 10, batchnorm=True), (x[:, None], y), {}


def _digits_mlp() -> nn.Sequential:
    from ..nn import mlp

    return mlp(64, [128], 10)


def _digits_standardized():
    from ..data import Standardize

    x, y = digits()
    return (
        _digits_mlp(),
        (Standardize().fit(x).transform(x), y),
        {
            "optimizer": "momentum",
            "lr": 0.05,
        },
    )


def _f(*codes: str) -> frozenset[str]:
    return frozenset(codes)


_BROKEN = [
    Case("deep_sigmoid", "12-layer sigmoid MLP, Xavier init",
         lambda: _standard(_mlp(hidden=[100] * 12, activation="sigmoid", init="xavier")),
         (_f("VANISHING_GRADIENTS"),)),
    Case("tanh_tiny_init", "6-layer tanh MLP with N(0, 0.01²) weights (lecture)",
         lambda: _standard(_init(_mlp(hidden=[100] * 6, activation="tanh"), "normal", std=0.01)),
         (_f("VANISHING_ACTIVATIONS"),)),
    Case("tanh_huge_init", "tanh MLP with N(0, 1) weights (lecture)",
         lambda: _standard(_init(_mlp(activation="tanh"), "normal", std=1.0)),
         (_f("SATURATED_ACTIVATIONS"),)),
    Case("lr_huge", "SGD with lr = 1e6 (lecture: the cost explodes)",
         lambda: _standard(_mlp(), optimizer="sgd", lr=1e6),
         (_f("NAN_LOSS", "LR_TOO_HIGH"),)),
    Case("lr_tiny", "SGD with lr = 1e-6 (lecture: the loss barely changes)",
         lambda: _standard(_mlp(), optimizer="sgd", lr=1e-6),
         (_f("LR_TOO_LOW"),)),
    Case("raw_pixels", "inputs on a 0..255 pixel scale",
         lambda: (_mlp(), (mnist1d_standardized()[0] * 50 + 128, mnist1d_standardized()[1]), {}),
         (_f("DATA_SCALE"),)),
    Case("raw_digits", "digits at their raw 0..16 scale, not zero-centred",
         lambda: (_digits_mlp(), digits(), {}),
         (_f("DATA_NOT_CENTERED"),)),
    Case("relu_negative_bias", "ReLU MLP whose biases are -10: every unit dead",
         lambda: _standard(_init(_mlp(), "he_normal", bias=-10.0)),
         (_f("DEAD_RELU"),)),
    Case("zero_init", "all weights 0 (lecture: symmetry never breaks)",
         lambda: _standard(_init(_mlp(), "zeros")),
         (_f("SYMMETRIC_INIT"),)),
    Case("double_softmax", "Softmax output fed to CrossEntropyLoss",
         lambda: _standard(nn.Sequential(_mlp(), nn.Softmax(dim=1))),
         (_f("DOUBLE_SOFTMAX"),)),
    Case("huge_weight_decay", "weight decay 10",
         lambda: _standard(_mlp(), weight_decay=10.0),
         (_f("REG_TOO_STRONG"),)),
    Case("view_mixes_batch", "transpose(0, 1).reshape instead of flatten after a conv",
         _conv_mixing_batch, (_f("BATCH_DEPENDENCE"),)),
    Case("labels_out_of_range", "10 classes of labels into a 5-output model",
         lambda: _standard(_mlp(out=5)), (_f("LABELS_OUT_OF_RANGE"),)),
    Case("nan_inputs", "a NaN and an Inf in the inputs", _with_nan, (_f("DATA_NAN"),)),
    Case("wrong_backward", "a custom autograd ReLU whose backward doubles the gradient",
         lambda: _standard(nn.Sequential(nn.Linear(40, 100), WrongReLU(), nn.Linear(100, 10))),
         (_f("GRADIENT_CHECK_FAILED"),), checks="default"),
    Case("detached_branch", "features detached before the head",
         lambda: _standard(DetachedBranch()), (_f("PARAMS_WITHOUT_GRAD"),)),
    Case("missing_nonlinearity", "Linear -> Linear with nothing between",
         lambda: _standard(nn.Sequential(nn.Linear(40, 100), nn.Linear(100, 10))),
         (_f("MISSING_NONLINEARITY"),)),
    Case("activation_on_output", "a ReLU on the logits",
         lambda: _standard(nn.Sequential(_mlp(), nn.ReLU())), (_f("ACTIVATION_ON_OUTPUT"),)),
    Case("dropout_too_high", "dropout 0.9", lambda: _standard(_mlp(dropout=0.9)),
         (_f("DROPOUT_TOO_HIGH"),)),
    Case("unshuffled_loader", "a DataLoader over label-sorted data, shuffle=False",
         _sorted_loader, (_f("BATCHES_NOT_SHUFFLED"),)),
    Case("float_labels", "regression-like float targets with the default classification loss",
         lambda: (_mlp(), (mnist1d_standardized()[0], mnist1d_standardized()[1] + 0.5), {}),
         (_f("LABELS_NOT_INTEGER"),)),
    Case("model_in_eval_mode", "a batch-norm + dropout MLP left in eval mode",
         lambda: _standard(_mlp(batchnorm=True, dropout=0.3).eval()), (_f("MODEL_IN_EVAL_MODE"),)),
    Case("shape_mismatch", "a 64-input model on 40-feature data",
         lambda: (_init(nn.Sequential(nn.Linear(64, 10)), "he"), mnist1d_standardized(), {}),
         (_f("FORWARD_FAILED"),)),
]  # fmt: skip

_HEALTHY = [
    Case("mlp_relu_he_adam", "40-100-100-10 ReLU, He init, Adam 1e-3",
         lambda: _standard(_mlp(), lr=1e-3)),
    Case("mlp_default_init_momentum", "PyTorch default init, SGD-momentum 0.05",
         lambda: _standard(_mlp(init=None), optimizer="momentum", lr=0.05)),
    Case("mlp_tanh_xavier", "3 tanh layers with Xavier init, Adam 1e-3",
         lambda: _standard(_mlp(hidden=[100] * 3, activation="tanh", init="xavier"), lr=1e-3)),
    Case("mlp_batchnorm_dropout", "batch norm and dropout 0.5, Adam 1e-3",
         lambda: _standard(_mlp(batchnorm=True, dropout=0.5), lr=1e-3)),
    Case("convnet_batchnorm", "Conv1d net with batch norm, Adam (lr from the range test)",
         _healthy_convnet),
    Case("logsoftmax_nll", "LogSoftmax + NLLLoss, SGD-momentum 0.01",
         lambda: _standard(nn.Sequential(_mlp(), nn.LogSoftmax(dim=1)), loss_fn=nn.NLLLoss(),
                           optimizer="momentum", lr=0.01)),
    Case("digits_standardized", "standardized digits, 64-128-10, SGD-momentum 0.05",
         _digits_standardized),
    Case("maxout_mlp", "Maxout MLP, Adam 1e-3", lambda: _standard(_mlp(activation="maxout"),
                                                                 lr=1e-3)),
    Case("weight_decay_moderate", "weight decay 1e-3, Adam 1e-3",
         lambda: _standard(_mlp(), lr=1e-3, weight_decay=1e-3)),
    Case("frozen_layer", "the first layer frozen on purpose (requires_grad=False): FROZEN_PARAMS "
         "is info", lambda: _standard(_frozen())),
]  # fmt: skip

CASES: dict[str, Case] = {case.name: case for case in [*_BROKEN, *_HEALTHY]}
