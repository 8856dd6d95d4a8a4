"""Backward checks: gradient flow, the float64 gradient check, batch independence.

Each broken set-up fires its code; the healthy set-ups of docs/architecture.md ("Healthy means
silent") get nothing; the model handed to a check is left as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

import babysit as bs
from babysit.checks import backward, build_context
from babysit.checks._base import Context
from babysit.checks.catalogue import MixesBatch as SwapBatch
from babysit.findings import Finding

N_CLASSES = 10


# -- fixtures ----------------------------------------------------------------------------------


def make_ctx(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    loss_fn: Callable | None = None,
    seed: int = 0,
) -> Context:
    """The Context diagnose builds: a deep copy of the model, the probe batch."""
    return build_context(model, (x,) if y is None else (x, y), loss_fn=loss_fn, seed=seed)


def run(
    check: Callable[[Context], list[Finding]],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    **kwargs,
) -> list[Finding]:
    ctx = make_ctx(model, x, y, **kwargs)
    torch.manual_seed(ctx.seed)  # as diagnose does before each check
    return check(ctx)


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


@pytest.fixture(scope="module")
def mnist1d() -> tuple[torch.Tensor, torch.Tensor]:
    """512 standardized MNIST-1D examples, (N, 40), and their labels."""
    train = bs.data.load("mnist1d").train
    x, y = train.tensors
    x = bs.data.Standardize().fit(x).transform(x)
    return x[:512], y[:512]


@pytest.fixture(scope="module")
def gaussian() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 40, generator=generator)
    return x, torch.randint(0, N_CLASSES, (256,), generator=generator)


# -- models ------------------------------------------------------------------------------------


class _DoubledReLU(torch.autograd.Function):
    """ReLU whose backward returns twice the gradient."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * grad * (x > 0)


class _Square(torch.autograd.Function):
    """x² whose backward forgets the factor 2 (returns x instead of 2x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x


class Apply(nn.Module):
    def __init__(self, fn: type[torch.autograd.Function]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn.apply(x)


class DetachedHead(nn.Module):
    """The classic bug: the head sees a detached input, so nothing before it trains."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.extra = nn.Linear(width, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extra(x.detach())


class WithUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = bs.nn.mlp(40, [64], N_CLASSES)
        self.unused = nn.Linear(40, 40)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ViewSwap(nn.Module):
    """(N, D) -> view as (D, N) then transpose: shapes match, examples are scrambled."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[1], x.shape[0]).t()


class CenterOverBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(0)


def healthy_mlps() -> dict[str, Callable[[], nn.Module]]:
    return {
        "relu-he": lambda: bs.nn.mlp(40, [100, 100], N_CLASSES),
        "relu-default": lambda: bs.nn.mlp(40, [100, 100], N_CLASSES, init=None),
        "relu-xavier": lambda: bs.nn.mlp(40, [100, 100], N_CLASSES, init="xavier"),
        "tanh-xavier": lambda: bs.nn.mlp(
            40, [256, 256, 256], N_CLASSES, activation="tanh", init="xavier"
        ),
        "batchnorm": lambda: bs.nn.mlp(40, [100, 100], N_CLASSES, batchnorm=True),
        "dropout": lambda: bs.nn.mlp(40, [100, 100], N_CLASSES, dropout=0.5),
        "maxout": lambda: bs.nn.mlp(40, [100, 100], N_CLASSES, activation="maxout"),
        "deep-relu": lambda: bs.nn.mlp(40, [100] * 8, N_CLASSES),
        "logsoftmax": lambda: nn.Sequential(bs.nn.mlp(40, [100], N_CLASSES), nn.LogSoftmax(1)),
    }


def healthy_convnets() -> dict[str, Callable[[], nn.Module]]:
    return {
        "conv": lambda: bs.nn.convnet((1, 40), [16, 32], N_CLASSES),
        "conv-bn-dropout": lambda: bs.nn.convnet(
            (1, 40), [16, 32], N_CLASSES, batchnorm=True, dropout=0.3
        ),
    }


def healthy_cases():
    cases = [(name, build, False) for name, build in healthy_mlps().items()]
    return cases + [(name, build, True) for name, build in healthy_convnets().items()]


def loss_for(name: str) -> nn.Module | None:
    return nn.NLLLoss() if name == "logsoftmax" else None


def assert_untouched(check: Callable[[Context], list[Finding]], model: nn.Module, x, y) -> None:
    """The check leaves ctx.model as it found it: values, buffers, mode, dtype, no .grad."""
    ctx = make_ctx(model, x, y)
    before = copy.deepcopy(ctx.model.state_dict())
    modes = [m.training for m in ctx.model.modules()]
    torch.manual_seed(0)
    check(ctx)
    after = ctx.model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
        assert value.dtype == after[key].dtype, key
    assert [m.training for m in ctx.model.modules()] == modes
    assert all(p.grad is None for p in ctx.model.parameters())


# -- gradient_flow -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "build", "conv"), healthy_cases())
def test_gradient_flow_silent_on_healthy_models(mnist1d, name, build, conv):
    x, y = mnist1d
    torch.manual_seed(0)
    found = run(
        backward.gradient_flow, build(), x.unsqueeze(1) if conv else x, y, loss_fn=loss_for(name)
    )
    assert found == [], found


def test_gradient_flow_deep_sigmoid_vanishes(mnist1d):
    x, y = mnist1d
    torch.manual_seed(0)
    model = bs.nn.mlp(40, [100] * 19, N_CLASSES, activation="sigmoid", init=None)
    found = run(backward.gradient_flow, model, x, y)
    assert codes(found) == ["VANISHING_GRADIENTS"]
    evidence = found[0].evidence
    assert evidence["first_layer"] == "0" and evidence["last_layer"] == "38"
    assert evidence["ratio"] < 1e-3 and evidence["first_grad_norm"] < 1e-4
    assert len(evidence["grad_norms"]) == 20
    assert found[0].layer == "0"


def test_gradient_flow_chaotic_tanh_explodes(gaussian):
    x, y = gaussian
    torch.manual_seed(0)
    model = bs.nn.mlp(40, [100] * 10, N_CLASSES, activation="tanh")
    bs.nn.init_model(model, "normal", std=0.5)  # sigma_w^2 = 25: the chaotic phase
    found = run(backward.gradient_flow, model, x, y)
    assert codes(found) == ["EXPLODING_GRADIENTS"]
    assert found[0].evidence["ratio"] > 70


def test_gradient_flow_frozen_layer_is_info_not_an_error(gaussian):
    """Frozen on purpose (transfer learning) is context: FROZEN_PARAMS, named, at info."""
    x, y = gaussian
    model = bs.nn.mlp(40, [100, 100], N_CLASSES)
    for p in model[0].parameters():
        p.requires_grad_(False)
    found = run(backward.gradient_flow, model, x, y)
    assert codes(found) == ["FROZEN_PARAMS"]
    f = found[0]
    assert f.severity == "info" and f.layer == "0"
    assert f.evidence["parameters"] == ["0.weight", "0.bias"]
    assert f.evidence["numel"] == 40 * 100 + 100
    assert "on purpose" in f.advice


def test_gradient_flow_all_frozen_is_a_warning(gaussian):
    x, y = gaussian
    model = bs.nn.mlp(40, [100], N_CLASSES).requires_grad_(False)
    found = run(backward.gradient_flow, model, x, y)
    assert codes(found) == ["FROZEN_PARAMS"]
    assert found[0].severity == "warning" and "nothing" in found[0].message


def test_gradient_flow_frozen_and_detached_are_told_apart(gaussian):
    """A frozen backbone is info; a trainable layer cut off by .detach() is still an error."""
    x, y = gaussian
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 64), DetachedHead(64))
    model[2].requires_grad_(False)
    found = {f.code: f for f in run(backward.gradient_flow, model, x, y)}
    assert set(found) == {"FROZEN_PARAMS", "PARAMS_WITHOUT_GRAD"}
    assert found["FROZEN_PARAMS"].evidence["parameters"] == ["2.weight", "2.bias"]
    assert found["PARAMS_WITHOUT_GRAD"].evidence["parameters"] == ["0.weight", "0.bias"]
    assert found["PARAMS_WITHOUT_GRAD"].severity == "error"


def test_gradient_flow_detached_branch(gaussian):
    x, y = gaussian
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), DetachedHead(64))
    found = run(backward.gradient_flow, model, x, y)
    assert codes(found) == ["PARAMS_WITHOUT_GRAD"]
    assert found[0].evidence["parameters"] == ["0.weight", "0.bias"]
    assert found[0].evidence["reason"] == "no gradient"
    assert "'0'" in found[0].message


def test_gradient_flow_unused_layer(gaussian):
    x, y = gaussian
    found = run(backward.gradient_flow, WithUnused(), x, y)
    assert codes(found) == ["PARAMS_WITHOUT_GRAD"]
    assert found[0].evidence["layers"] == ["unused"]


def test_gradient_flow_leaves_model_untouched(gaussian):
    x, y = gaussian
    model = bs.nn.mlp(40, [100, 100], N_CLASSES, batchnorm=True, dropout=0.2)
    assert_untouched(backward.gradient_flow, model, x, y)


# -- recurrent layers ---------------------------------------------------------------------------


class SequenceClassifier(nn.Module):
    """Embedding -> RNN/LSTM/GRU -> Linear on the last step."""

    def __init__(self, cell: type[nn.RNNBase] = nn.LSTM, layers: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.rnn = cell(16, 32, num_layers=layers, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(x))
        return self.head(out[:, -1])


@pytest.fixture(scope="module")
def tokens() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 50, (256, 12), generator=generator)
    return x, x[:, -1] % 4


@pytest.mark.parametrize("cell", [nn.RNN, nn.LSTM, nn.GRU])
def test_recurrent_classifiers_are_silent(tokens, cell):
    torch.manual_seed(0)
    model = SequenceClassifier(cell, layers=2)
    for check in (backward.gradient_flow, backward.recurrent_saturation, backward.gradient_check):
        assert run(check, model, *tokens) == [], check.__name__


def test_gradient_flow_includes_recurrent_layers(tokens):
    torch.manual_seed(0)
    ctx = make_ctx(SequenceClassifier(nn.LSTM), *tokens)
    backward.gradient_flow(ctx)
    assert list(ctx.cache["weight_grad_norms"]) == ["rnn", "head"]


class RecurrentStack(nn.Module):
    """Eight tanh RNN layers with N(0, 0.03²) weights: the signal shrinks ~6x per layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 32)
        self.layers = nn.ModuleList(nn.RNN(32, 32, batch_first=True) for _ in range(8))
        for p in self.layers.parameters():
            nn.init.normal_(p, std=0.03)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for layer in self.layers:
            h, _ = layer(h)
        return self.head(h[:, -1])


def test_vanishing_gradient_across_a_recurrent_stack(tokens):
    """Before, recurrent layers were invisible to the gradient-flow rule (Linear/Conv only):
    the only weight layer was the head, and nothing could be compared."""
    torch.manual_seed(0)
    found = run(backward.gradient_flow, RecurrentStack(), *tokens)
    assert codes(found) == ["VANISHING_GRADIENTS"]
    assert found[0].evidence["first_layer"] == "layers.0"
    assert found[0].evidence["last_layer"] == "head"


def test_saturated_rnn_is_found(tokens):
    torch.manual_seed(0)
    model = SequenceClassifier(nn.RNN)
    for p in model.rnn.parameters():
        nn.init.normal_(p, std=1.0)
    found = run(backward.recurrent_saturation, model, *tokens)
    assert codes(found) == ["SATURATED_ACTIVATIONS"]
    assert found[0].layer == "rnn" and found[0].evidence["saturated_fraction"] > 0.5


# -- gradient_check ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "build", "conv"), healthy_cases())
def test_gradient_check_silent_on_healthy_models(mnist1d, name, build, conv):
    x, y = mnist1d
    torch.manual_seed(1)
    found = run(
        backward.gradient_check, build(), x.unsqueeze(1) if conv else x, y, loss_fn=loss_for(name)
    )
    assert found == [], found


@pytest.mark.parametrize("fn", [_DoubledReLU, _Square])
def test_gradient_check_catches_a_wrong_backward(gaussian, fn):
    x, y = gaussian
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(40, 64), Apply(fn), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, N_CLASSES)
    )
    found = run(backward.gradient_check, model, x, y)
    assert codes(found) == ["GRADIENT_CHECK_FAILED"]
    f = found[0]
    assert f.severity == "error"
    assert f.layer == "0"  # wrong for layer 0, right for 2 and 4: the bug runs after '0'
    errors = f.evidence["layer_rel_errors"]
    assert errors["0"] > 1e-2 and errors["2"] < 1e-4 and errors["4"] < 1e-4


def test_gradient_check_silent_on_regression(gaussian):
    x, _ = gaussian
    target = x[:, :3].sum(1, keepdim=True)
    model = bs.nn.mlp(40, [64, 64], 1, activation="tanh", init="xavier")
    assert run(backward.gradient_check, model, x, target, loss_fn=nn.MSELoss()) == []
    assert run(backward.gradient_flow, model, x, target, loss_fn=nn.MSELoss()) == []


def test_gradient_check_skips_a_model_that_cannot_run_in_float64(gaussian):
    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(40, N_CLASSES)
            self.projection = torch.eye(40)  # a plain attribute: .double() leaves it float32

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x @ self.projection)

    found = run(backward.gradient_check, Fixed(), *gaussian)
    assert codes(found) == ["CHECKS_SKIPPED"]
    assert found[0].severity == "info"
    assert "float64" in found[0].message


def test_gradient_check_leaves_model_untouched(gaussian):
    x, y = gaussian
    model = bs.nn.mlp(40, [100, 100], N_CLASSES, batchnorm=True, dropout=0.2)
    assert_untouched(backward.gradient_check, model, x, y)


# -- batch_independence ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "build", "conv"), healthy_cases())
def test_batch_independence_silent_on_healthy_models(mnist1d, name, build, conv):
    x, _ = mnist1d
    torch.manual_seed(0)
    found = run(backward.batch_independence, build(), x.unsqueeze(1) if conv else x)
    assert found == [], found


def test_batch_independence_transpose_instead_of_permute(mnist1d):
    x, _ = mnist1d
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(1, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        SwapBatch(),
        nn.Linear(8 * 20, N_CLASSES),
    )
    found = run(backward.batch_independence, model, x.unsqueeze(1))
    assert codes(found) == ["BATCH_DEPENDENCE"]
    assert found[0].layer == "2"
    assert "'2'" in found[0].message


def test_batch_independence_view_swap(gaussian):
    x, _ = gaussian
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), ViewSwap(), nn.Linear(64, N_CLASSES))
    found = run(backward.batch_independence, model, x)
    assert codes(found) == ["BATCH_DEPENDENCE"]
    assert found[0].layer == "2"


def test_batch_independence_batch_statistic(gaussian):
    x, _ = gaussian
    model = nn.Sequential(nn.Linear(40, 64), CenterOverBatch(), nn.ReLU(), nn.Linear(64, 10))
    found = run(backward.batch_independence, model, x)
    assert codes(found) == ["BATCH_DEPENDENCE"]
    assert found[0].layer == "1"
    assert max(found[0].evidence["leak_per_example"]) > 1e-3


def test_batch_independence_mixing_in_model_forward(gaussian):
    """Mixing done by the model's own forward after its last layer."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(40, N_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x).flip(0)

    found = run(backward.batch_independence, Net(), gaussian[0])
    assert codes(found) == ["BATCH_DEPENDENCE"]
    assert found[0].evidence["after"] == "fc"


def test_batch_independence_silent_on_softmax_output(gaussian):
    """Rows of a softmax sum to 1: the check weights the outputs so it still sees them."""
    model = nn.Sequential(bs.nn.mlp(40, [64], N_CLASSES), nn.Softmax(1))
    assert run(backward.batch_independence, model, gaussian[0]) == []
    broken = nn.Sequential(bs.nn.mlp(40, [64], N_CLASSES), nn.Softmax(0))  # over the batch
    found = run(backward.batch_independence, broken, gaussian[0])
    assert codes(found) == ["BATCH_DEPENDENCE"]
    assert found[0].layer == "1"


def test_batch_independence_leaves_model_untouched(gaussian):
    x, y = gaussian
    model = bs.nn.mlp(40, [100, 100], N_CLASSES, batchnorm=True, dropout=0.2)
    assert_untouched(backward.batch_independence, model, x, y)


def test_batch_independence_skips_integer_inputs():
    model = nn.Sequential(nn.Embedding(20, 8), nn.Flatten(), nn.Linear(8 * 5, 2))
    x = torch.randint(0, 20, (16, 5))
    assert run(backward.batch_independence, model, x) == []


# -- registration -----------------------------------------------------------------------------


def test_registration():
    from babysit.checks._base import REGISTRY

    flow, grad_check, coords, batch, sym = (
        REGISTRY[name]
        for name in (
            "gradient_flow",
            "gradient_check",
            "gradient_check_coordinates",
            "batch_independence",
            "symmetric_init",
        )
    )
    assert flow.codes == (
        "PARAMS_WITHOUT_GRAD",
        "VANISHING_GRADIENTS",
        "EXPLODING_GRADIENTS",
        "FROZEN_PARAMS",
    )
    assert flow.needs_labels and not flow.slow
    assert "GRADIENT_CHECK_FAILED" in grad_check.codes
    assert not grad_check.slow and grad_check.needs_labels  # the fast check is a default one
    assert coords.slow and "GRADIENT_CHECK_FAILED" in coords.codes
    assert batch.codes == ("BATCH_DEPENDENCE",)
    assert not batch.slow and not batch.needs_labels
    assert sym.codes == ("SYMMETRIC_INIT",) and not sym.slow
    assert {spec.family for spec in (flow, grad_check, coords, batch, sym)} == {"backward"}


def test_default_diagnose_catches_a_wrong_custom_backward(gaussian):
    """Item 7: a wrong autograd.Function is found by checks="default", not only "all"."""
    x, y = gaussian
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 64), Apply(_DoubledReLU), nn.Linear(64, N_CLASSES))
    diagnosis = bs.diagnose(model, (x, y), lr=1e-3, checks="default")
    assert "GRADIENT_CHECK_FAILED" in diagnosis.codes and not diagnosis.ok


# -- gradient_check_coordinates ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "build", "conv"), healthy_cases()[:4] + healthy_cases()[-1:])
def test_gradient_check_coordinates_silent_on_healthy_models(mnist1d, name, build, conv):
    x, y = mnist1d
    torch.manual_seed(1)
    found = run(
        backward.gradient_check_coordinates,
        build(),
        x.unsqueeze(1) if conv else x,
        y,
        loss_fn=loss_for(name),
    )
    assert found == [], found


class _ScaledBias(torch.autograd.Function):
    """x + b whose backward gives b three times its gradient: wrong only for a tiny tensor."""

    @staticmethod
    def forward(ctx, x, b):
        return x + b

    @staticmethod
    def backward(ctx, grad):
        return grad, 3 * grad.sum(0)


class BiasWithWrongGrad(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ScaledBias.apply(x, self.shift)


def test_gradient_check_coordinates_names_the_wrong_tensor(gaussian):
    x, y = gaussian
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, N_CLASSES), BiasWithWrongGrad(N_CLASSES)
    )
    found = run(backward.gradient_check_coordinates, model, x, y)
    assert codes(found) == ["GRADIENT_CHECK_FAILED"]
    assert found[0].evidence["wrong_parameters"] == ["3.shift"]
    assert found[0].layer == "3"


def test_gradient_check_coordinates_leaves_model_untouched(gaussian):
    x, y = gaussian
    model = bs.nn.mlp(40, [100, 100], N_CLASSES, batchnorm=True, dropout=0.2)
    assert_untouched(backward.gradient_check_coordinates, model, x, y)


def test_backward_checks_read_a_dict_output_by_its_logits(gaussian):
    """A model returning {"logits": ...} is checked, not skipped as if it failed in float64."""

    class DictModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(40, 64), Apply(_DoubledReLU))
            self.head = nn.Linear(64, N_CLASSES)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"features": x, "logits": self.head(self.body(x))}

    torch.manual_seed(0)
    assert codes(run(backward.gradient_check, DictModel(), *gaussian)) == ["GRADIENT_CHECK_FAILED"]
    assert run(backward.gradient_flow, DictModel(), *gaussian) == []
