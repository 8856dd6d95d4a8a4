"""Init schemes checked statistically (mean, std against the formula, seeded KS tests), plus the
data-driven schemes (LSUV, data-dependent) on held-out batches and init_model's API."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from babysit.nn import Maxout, convnet, gain, mlp
from babysit.nn.init import (
    INIT_SCHEMES,
    RANDOM_WALK_TANH_G,
    he_normal_,
    init_model,
    lsuv_,
    random_walk_,
    random_walk_gain,
)

# Large layers for the distribution tests, with fan_in != fan_out so the modes differ:
# Linear(1000, 500): weight (500, 1000), fan_in 1000, fan_out 500;
# Conv2d(64, 128, 5): weight (128, 64, 5, 5), fan_in 64·25 = 1600, fan_out 128·25 = 3200.
LAYERS = {
    "linear": (lambda: nn.Linear(1000, 500), 1000, 500),
    "conv2d": (lambda: nn.Conv2d(64, 128, 5), 1600, 3200),
}
SE = 5.0  # tolerances are 5 standard errors: a correct scheme fails ~1 time in 2 million


def initialized(kind: str, scheme: str, seed: int = 0, **kw) -> torch.Tensor:
    """The weight of a fresh large layer after init_model, as float64 numpy-ready values."""
    make, _, _ = LAYERS[kind]
    model = nn.Sequential(make())
    init_model(model, scheme, generator=torch.Generator().manual_seed(seed), **kw)
    return model[0].weight.detach().double().flatten()


def assert_distribution(w: torch.Tensor, dist: str, std: float) -> None:
    """Mean 0 and std ``std`` within 5 standard errors, and a KS test against the exact law."""
    n = w.numel()
    assert abs(w.mean().item()) < SE * std / math.sqrt(n), "mean differs from 0"
    # The std of a sample std is about std / sqrt(2n) for a normal law (less for a uniform one).
    assert abs(w.std().item() - std) < SE * std / math.sqrt(2 * n), (w.std().item(), std)
    args = (0.0, std) if dist == "norm" else (-std * math.sqrt(3), 2 * std * math.sqrt(3))
    assert stats.kstest(w.numpy(), dist, args=args).pvalue > 1e-3
    if dist == "uniform":
        assert w.abs().max().item() <= std * math.sqrt(3) + 1e-7


# (scheme, keywords, law, std as a function of fan_in, fan_out)
FORMULAS = [
    ("normal", {}, "norm", lambda fi, fo: 0.01),
    ("normal", {"std": 0.05}, "norm", lambda fi, fo: 0.05),
    ("uniform", {}, "uniform", lambda fi, fo: 0.05 / math.sqrt(3)),
    ("uniform", {"a": 0.2}, "uniform", lambda fi, fo: 0.2 / math.sqrt(3)),
    ("xavier_normal", {}, "norm", lambda fi, fo: math.sqrt(2 / (fi + fo))),
    ("xavier_normal", {"gain": 2.0}, "norm", lambda fi, fo: 2 * math.sqrt(2 / (fi + fo))),
    ("xavier_uniform", {}, "uniform", lambda fi, fo: math.sqrt(2 / (fi + fo))),
    ("he_normal", {"nonlinearity": "relu"}, "norm", lambda fi, fo: math.sqrt(2 / fi)),
    ("he_normal", {"nonlinearity": "tanh"}, "norm", lambda fi, fo: 5 / 3 / math.sqrt(fi)),
    (
        "he_normal",
        {"nonlinearity": "relu", "mode": "fan_out"},
        "norm",
        lambda fi, fo: math.sqrt(2 / fo),
    ),
    ("he_uniform", {"nonlinearity": "relu"}, "uniform", lambda fi, fo: math.sqrt(2 / fi)),
    (
        "he_uniform",
        {"nonlinearity": "leaky_relu", "mode": "fan_out"},
        "uniform",
        lambda fi, fo: math.sqrt(2 / (1 + 0.01**2) / fo),
    ),
    ("lecun_normal", {}, "norm", lambda fi, fo: 1 / math.sqrt(fi)),
    (
        "random_walk",
        {"nonlinearity": "relu"},
        "norm",
        lambda fi, fo: math.sqrt(2) * math.exp(1.2 / (fi - 2.4)) / math.sqrt(fi),
    ),
    (
        "random_walk",
        {"nonlinearity": "linear"},
        "norm",
        lambda fi, fo: math.exp(1 / (2 * fi)) / math.sqrt(fi),
    ),
    ("random_walk", {"nonlinearity": "tanh"}, "norm", lambda fi, fo: 1.15 / math.sqrt(fi)),
    ("random_walk", {"g": 1.3}, "norm", lambda fi, fo: 1.3 / math.sqrt(fi)),
]


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize(
    ("scheme", "kw", "law", "std"),
    FORMULAS,
    ids=[f"{s}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for s, kw, _, _ in FORMULAS],
)
def test_weights_follow_the_formula(kind, scheme, kw, law, std):
    _, fan_in, fan_out = LAYERS[kind]
    assert_distribution(initialized(kind, scheme, **kw), law, std(fan_in, fan_out))


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("nonlinearity", ["linear", "relu", "tanh"])
def test_orthogonal_rows_are_orthonormal_times_the_gain(kind, nonlinearity):
    make, _, _ = LAYERS[kind]
    model = nn.Sequential(make())
    init_model(model, "orthogonal", nonlinearity=nonlinearity)
    w = model[0].weight.detach().double().flatten(1)  # (out, fan_in), out < fan_in here
    expected = gain(nonlinearity) ** 2 * torch.eye(w.shape[0], dtype=torch.float64)
    torch.testing.assert_close(w @ w.T, expected, atol=1e-5, rtol=0)


def test_orthogonal_gain_keyword_overrides_the_activation_gain():
    model = nn.Sequential(nn.Linear(200, 100))
    init_model(model, "orthogonal", nonlinearity="relu", gain=0.5)
    w = model[0].weight.detach().double()
    torch.testing.assert_close(
        w @ w.T, 0.25 * torch.eye(100, dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_random_walk_gain_matches_the_paper():
    # Sussillo & Abbott (2014): linear exp(1/2N); ReLU sqrt(2) exp(1.2 / (max(N, 6) - 2.4)).
    assert random_walk_gain("linear", 100) == pytest.approx(math.exp(0.005))
    assert random_walk_gain("relu", 100) == pytest.approx(math.sqrt(2) * math.exp(1.2 / 97.6))
    assert random_walk_gain("relu", 3) == pytest.approx(math.sqrt(2) * math.exp(1.2 / 3.6))
    assert random_walk_gain("tanh", 100) == RANDOM_WALK_TANH_G == 1.15
    # Other activations: the activation's gain times the linear correction (an extrapolation).
    assert random_walk_gain("selu", 50) == pytest.approx(0.75 * math.exp(0.01))


def test_per_tensor_functions_fill_in_place_and_return_the_tensor():
    w = torch.empty(300, 400)
    assert he_normal_(w, "relu") is w
    assert random_walk_(w, "relu") is w
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out', got 'fan_avg'"):
        he_normal_(w, mode="fan_avg")


# --- nonlinearity inference ----------------------------------------------------------------


def layer_stds(model: nn.Module) -> list[tuple[float, float]]:
    """(measured std · sqrt(fan_in), 5-SE relative tolerance) for each weight layer."""
    out = []
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            w = module.weight.detach().double()
            fan_in = w[0].numel()
            out.append((w.std().item() * math.sqrt(fan_in), SE / math.sqrt(2 * w.numel())))
    return out


@pytest.mark.parametrize("act", ["tanh", "relu", "leaky_relu", "selu"])
def test_he_normal_infers_each_layers_gain(act, seeded):
    model = mlp(100, [300, 300], 100, activation=act, init=None)
    init_model(model, "he_normal")
    stds = layer_stds(model)
    expected = [gain(act), gain(act), 1.0]  # the output layer is linear
    for (measured, tol), want in zip(stds, expected, strict=True):
        assert measured == pytest.approx(want, rel=tol)


def test_explicit_nonlinearity_applies_to_every_layer_even_the_output(seeded):
    model = mlp(100, [300, 300], 100, activation="relu", init=None)
    init_model(model, "he_normal", nonlinearity="tanh")
    for measured, tol in layer_stds(model):
        assert measured == pytest.approx(5 / 3, rel=tol)


def test_unknown_nonlinearity_is_rejected():
    with pytest.raises(ValueError, match="no init gain known for 'swish2'"):
        init_model(nn.Linear(3, 3), "he", nonlinearity="swish2")


@pytest.mark.parametrize("batchnorm", [False, True])
def test_maxout_mlp_gets_gain_one(batchnorm, seeded):
    model = mlp(100, [300, 300], 100, activation="maxout", batchnorm=batchnorm, init=None)
    assert any(isinstance(m, Maxout) for m in model) != batchnorm
    init_model(model, "he_normal")
    for measured, tol in layer_stds(model):
        assert measured == pytest.approx(1.0, rel=tol)
    assert model(torch.randn(8, 100)).shape == (8, 100)


def test_conv_layers_of_every_dimension_and_bias_keyword():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Conv3d(4, 8, 3), nn.Linear(5, 5))
    init_model(model, "he_uniform", bias=0.01)
    for layer in (model[0], model[2], model[3]):
        torch.testing.assert_close(layer.bias, torch.full_like(layer.bias, 0.01))
    bound = math.sqrt(2) * math.sqrt(3 / (2 * 3))  # Conv1d: fan_in 2·3, relu
    assert model[0].weight.abs().max().item() <= bound


def test_batchnorm_keeps_pytorch_defaults():
    model = mlp(20, [30], 5, batchnorm=True, init=None)
    init_model(model, "normal", bias=0.5)
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm1d)
    assert torch.equal(bn.weight, torch.ones(30)) and torch.equal(bn.bias, torch.zeros(30))
    assert torch.equal(model[0].bias, torch.full((30,), 0.5))


# --- symmetric schemes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "kw", "value"), [("zeros", {}, 0.0), ("constant", {"value": 0.3}, 0.3)]
)
def test_zeros_and_constant_make_every_unit_identical(scheme, kw, value):
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Conv1d(20, 6, 3))
    init_model(model, scheme, **kw)
    for layer in (model[0], model[2]):
        w = layer.weight.detach()
        assert torch.equal(w, torch.full_like(w, value))
        assert (w == w[0]).all()  # all rows (units) equal: symmetry never breaks


# --- names, aliases and errors ---------------------------------------------------------------


def test_scheme_names():
    assert INIT_SCHEMES == (
        "zeros",
        "constant",
        "normal",
        "uniform",
        "xavier_normal",
        "xavier_uniform",
        "he_normal",
        "he_uniform",
        "lecun_normal",
        "orthogonal",
        "random_walk",
        "lsuv",
        "data_dependent",
    )


ALIASES = [
    ("xavier", "xavier_normal"),
    ("he", "he_normal"),
    ("kaiming", "he_normal"),
    ("HE-Normal", "he_normal"),
    (" Random-Walk ", "random_walk"),
]


@pytest.mark.parametrize(("alias", "scheme"), ALIASES)
def test_aliases_and_spellings_give_the_same_weights(alias, scheme):
    models = [mlp(30, [40], 10, init=None) for _ in range(2)]
    init_model(models[0], alias, generator=torch.Generator().manual_seed(3))
    init_model(models[1], scheme, generator=torch.Generator().manual_seed(3))
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)


def test_unknown_scheme_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown init scheme 'glorot'.*he_normal.*lsuv.*kaiming"):
        init_model(nn.Linear(3, 3), "glorot")


def test_unknown_keyword_names_the_accepted_ones():
    with pytest.raises(
        TypeError, match=r"'normal' got unexpected keyword argument\(s\) \['sd'\]; it accepts std"
    ):
        init_model(nn.Linear(3, 3), "normal", sd=0.1)
    with pytest.raises(TypeError, match=r"'lecun_normal'.*accepts none"):
        init_model(nn.Linear(3, 3), "lecun_normal", mode="fan_in")
    with pytest.raises(TypeError, match=r"'lsuv'.*max_iter, tol"):
        init_model(nn.Linear(3, 3), "lsuv", data=torch.randn(4, 3), iters=3)


def test_constant_needs_a_value():
    with pytest.raises(TypeError, match=r"'constant' needs value=\.\.\."):
        init_model(nn.Linear(3, 3), "constant")


@pytest.mark.parametrize(("scheme", "kw"), [("normal", {"std": -1.0}), ("uniform", {"a": 0})])
def test_bad_scale_is_rejected_with_the_value(scheme, kw):
    with pytest.raises(ValueError, match=f"{scheme!r} needs .* > 0, got"):
        init_model(nn.Linear(3, 3), scheme, **kw)


@pytest.mark.parametrize("scheme", ["lsuv", "data_dependent"])
def test_data_driven_schemes_need_data(scheme):
    with pytest.raises(
        ValueError,
        match=rf"{scheme} needs data=\.\.\.: a batch of inputs, \(X, y\), or a DataLoader",
    ):
        init_model(mlp(5, [5], 2), scheme)


def test_model_without_weight_layers_is_rejected():
    with pytest.raises(
        ValueError, match="found no Linear/Conv1d/Conv2d/Conv3d layer in Sequential"
    ):
        init_model(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), "he")


# --- reproducibility -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme", ["he_normal", "orthogonal", "random_walk", "lsuv", "data_dependent"]
)
def test_reproducible_with_a_generator_or_the_global_seed(scheme):
    x = torch.randn(64, 30, generator=torch.Generator().manual_seed(9))

    def weights(seed: int, use_generator: bool) -> torch.Tensor:
        model = mlp(30, [40], 10, init=None)
        if use_generator:
            init_model(model, scheme, data=x, generator=torch.Generator().manual_seed(seed))
        else:
            torch.manual_seed(seed)
            init_model(model, scheme, data=x)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    for use_generator in (True, False):
        assert torch.equal(weights(1, use_generator), weights(1, use_generator))
        assert not torch.equal(weights(1, use_generator), weights(2, use_generator))


# --- LSUV and data-dependent init ------------------------------------------------------------


def layer_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every weight layer when the model runs on ``x``."""
    outputs: list[torch.Tensor] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out: outputs.append(out))
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.Conv2d)
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return outputs


def unit_stats(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-unit (channel) mean and variance over the batch and spatial positions."""
    units = out.movedim(1, -1).reshape(-1, out.shape[1])
    return units.mean(0), units.var(0)


def deep_mlp(act: str) -> nn.Sequential:
    return mlp(50, [200] * 7, 10, activation=act, init=None)  # 8 weight layers


def small_convnet() -> nn.Sequential:
    return convnet((3, 16, 16), [16, 32], 10, activation="relu", init=None)


def batches(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """A fitting batch and a held-out batch of N(0, 1) data, 500 examples each."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(500, *shape, generator=g), torch.randn(500, *shape, generator=g)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_lsuv_gives_unit_variance_on_held_out_data(act, seeded):
    model = deep_mlp(act)
    fit, held_out = batches((50,))
    init_model(model, "lsuv", data=fit)
    outputs = layer_outputs(model, held_out)
    assert len(outputs) == 8
    for out in outputs:
        assert out.var().item() == pytest.approx(1.0, abs=0.2)


def test_lsuv_on_a_convnet_and_its_restored_mode(seeded):
    model = small_convnet()
    fit, held_out = batches((3, 16, 16))
    model.train()
    model[1].eval()  # a mixed state must come back as it was
    lsuv_(model, (fit, torch.zeros(500)))
    assert model.training and not model[1].training
    for out in layer_outputs(model, held_out):
        assert out.var().item() == pytest.approx(1.0, abs=0.2)


def test_lsuv_warns_when_a_layer_cannot_reach_unit_variance():
    # One rescaling fixes a layer's variance exactly (it is quadratic in W), so what LSUV cannot
    # fix is a zero variance: constant inputs give every layer a constant output.
    model = deep_mlp("relu")
    with pytest.warns(UserWarning, match=r"max_iter=3 rescalings: '0' \(variance 0\), '2'") as rec:
        init_model(model, "lsuv", data=torch.zeros(16, 50), max_iter=3)
    assert len(rec) == 1  # one warning naming every layer, not one per layer


def test_lsuv_stays_silent_when_it_converges(seeded):
    model = deep_mlp("tanh")
    fit, _ = batches((50,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        init_model(model, "lsuv", data=fit)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_data_dependent_standardizes_every_unit(act, seeded):
    model = deep_mlp(act)
    fit, held_out = batches((50,))
    model.eval()
    init_model(model, "data_dependent", data=fit, bias=5.0)  # bias is set by the data instead
    assert not model.training
    for out in layer_outputs(model, fit):  # exact on the fitting batch, unit by unit
        mean, var = unit_stats(out)
        torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-4, rtol=0)
        torch.testing.assert_close(var * 499 / 500, torch.ones_like(var), atol=1e-3, rtol=0)
    for out in layer_outputs(model, held_out):  # close on data it has not seen
        assert out.var().item() == pytest.approx(1.0, abs=0.2)
        assert abs(out.mean().item()) < 0.1


def test_data_dependent_on_a_convnet_per_channel(seeded):
    model = small_convnet()
    fit, held_out = batches((3, 16, 16))
    init_model(
        model,
        "data_dependent",
        data=DataLoader(TensorDataset(fit, torch.zeros(500)), batch_size=500),
    )
    for out in layer_outputs(model, fit)[:2]:  # the two conv layers, per channel
        mean, var = unit_stats(out)
        torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-4, rtol=0)
        torch.testing.assert_close(var, torch.ones_like(var), atol=2e-3, rtol=0)
    for out in layer_outputs(model, held_out):
        assert out.var().item() == pytest.approx(1.0, abs=0.2)
        assert abs(out.mean().item()) < 0.1


def test_every_form_of_data_gives_the_same_init():
    x = torch.randn(64, 30, generator=torch.Generator().manual_seed(5))
    y = torch.zeros(64, dtype=torch.long)
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    array = x.numpy().astype(np.float64)  # cast to the weights' float32
    forms = [x, (x, y), [x, y], array, TensorDataset(x, y), loader, iter([(x, y)])]
    results = []
    for data in forms:
        model = mlp(30, [40], 10, init=None)
        init_model(model, "data_dependent", data=data, generator=torch.Generator().manual_seed(0))
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    for other in results[1:]:
        torch.testing.assert_close(other, results[0])


def test_data_dependent_rejects_a_symmetric_base():
    with pytest.raises(ValueError, match="random base scheme, got base='zeros'"):
        init_model(mlp(5, [5], 2), "data_dependent", data=torch.randn(8, 5), base="zeros")
