"""Structure seen from forward order (issue 12, item 6).

ACTIVATION_ON_OUTPUT, DOUBLE_SOFTMAX and MISSING_NONLINEARITY follow the modules that actually
produced the output, for any model and every task; what a functional call hides is never
flagged (docs/architecture.md, "Healthy means silent").
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import babysit as bs
from babysit.checks import build_context, structure
from babysit.findings import Finding

N_CLASSES = 10


@pytest.fixture(scope="module")
def gaussian() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 40, generator=generator)
    return x, torch.randint(0, N_CLASSES, (256,), generator=generator)


def structural(model: nn.Module, data, **kwargs) -> list[tuple[str, str | None]]:
    """(code, layer) of layer_order and output_kind, as diagnose runs them."""
    ctx = build_context(model, data, **kwargs)
    found: list[Finding] = structure.layer_order(ctx) + structure.output_kind(ctx)
    return [(f.code, f.layer) for f in found]


# -- models ------------------------------------------------------------------------------------


class Head(nn.Module):
    """A classifier whose output activation sits in a custom module, not an nn.Sequential."""

    def __init__(self, act: nn.Module, out: int = N_CLASSES) -> None:
        super().__init__()
        self.body = bs.nn.mlp(40, [64], 64)
        self.classifier = nn.Linear(64, out)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.body(x))
        return self.act(self.classifier(features))


class TwoLinear(nn.Module):
    def __init__(self, functional_relu: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(40, 100)
        self.fc2 = nn.Linear(100, N_CLASSES)
        self.functional_relu = functional_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(F.relu(h) if self.functional_relu else h)


class FunctionalHead(nn.Module):
    """F.sigmoid at the end of forward: invisible to hooks, so not judged structurally."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(40, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(x))


class LowRank(nn.Module):
    """A LoRA-style adapter: B(A(x)) with rank 4 is linear on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.base = nn.Linear(40, 64)
        self.a = nn.Linear(40, 4, bias=False)
        self.b = nn.Linear(4, 64, bias=False)
        self.head = nn.Linear(64, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.base(x) + self.b(self.a(x))))


class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = bs.nn.mlp(40, [64], N_CLASSES)
        self.act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": x, "logits": self.act(self.body(x))}


# -- ACTIVATION_ON_OUTPUT / DOUBLE_SOFTMAX ------------------------------------------------------


def test_sigmoid_head_inside_a_custom_module_is_found(gaussian):
    """The old check only walked nn.Sequential nesting and missed this."""
    assert structural(Head(nn.Sigmoid()), gaussian) == [("ACTIVATION_ON_OUTPUT", "act")]


def test_softmax_head_inside_a_custom_module_is_double_softmax(gaussian):
    assert structural(Head(nn.Softmax(dim=1)), gaussian) == [("DOUBLE_SOFTMAX", "act")]


def test_a_dict_output_is_read_by_its_logits(gaussian):
    assert structural(DictOutput(), gaussian) == [("ACTIVATION_ON_OUTPUT", "act")]


def test_sigmoid_before_bce_with_logits_is_found_and_before_bce_is_right(gaussian):
    x, _ = gaussian
    targets = (x[:, :5] > 0).float()
    found = structural(Head(nn.Sigmoid(), out=5), (x, targets), loss_fn=nn.BCEWithLogitsLoss())
    assert found == [("ACTIVATION_ON_OUTPUT", "act")]
    assert structural(Head(nn.Sigmoid(), out=5), (x, targets), loss_fn=nn.BCELoss()) == []
    assert (
        structural(Head(nn.Identity(), out=5), (x, targets), loss_fn=nn.BCEWithLogitsLoss()) == []
    )


def test_relu_on_a_regression_output_with_negative_targets(gaussian):
    x, _ = gaussian
    model = nn.Sequential(bs.nn.mlp(40, [64], 1), nn.ReLU())
    found = structural(model, (x, x[:, :1]), loss_fn=nn.MSELoss())
    assert found == [("ACTIVATION_ON_OUTPUT", "1")]
    ctx = build_context(model, (x, x[:, :1]), loss_fn=nn.MSELoss())
    evidence = structure.layer_order(ctx)[0].evidence
    assert evidence["range"][0] == 0 and 0.3 < evidence["targets_outside"] < 0.7
    # non-negative targets are reachable by a ReLU: silent (e.g. counts, distances)
    assert structural(model, (x, x[:, :1].abs()), loss_fn=nn.MSELoss()) == []
    assert structural(bs.nn.mlp(40, [64], 1), (x, x[:, :1]), loss_fn=nn.MSELoss()) == []


def test_a_functional_output_activation_is_not_judged_structurally(gaussian):
    """torch.sigmoid in forward leaves no module trace: the structure says nothing."""
    assert structural(FunctionalHead(), gaussian) == []


def test_functional_softmax_is_still_found_from_the_values(gaussian):
    class FunctionalSoftmax(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(40, N_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.softmax(self.fc(x), dim=1)

    assert structural(FunctionalSoftmax(), gaussian) == [("DOUBLE_SOFTMAX", None)]


def test_output_kind_runs_standalone(gaussian):
    """Selected by name, the check computes its own forward (no other check's cache)."""
    diagnosis = bs.diagnose(Head(nn.Softmax(dim=1)), gaussian, lr=1e-3, checks=["output_kind"])
    assert "DOUBLE_SOFTMAX" in diagnosis.codes


# -- MISSING_NONLINEARITY ----------------------------------------------------------------------


def test_two_linears_in_a_custom_forward_are_found(gaussian):
    """Linear -> Linear inside a custom forward: the old check saw nn.Sequential only."""
    assert structural(TwoLinear(functional_relu=False), gaussian) == [
        ("MISSING_NONLINEARITY", "fc2")
    ]


def test_a_functional_relu_between_is_respected(gaussian):
    """F.relu makes a new tensor, so fc2's input is not fc1's output: nothing flagged."""
    assert structural(TwoLinear(functional_relu=True), gaussian) == []


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm_and_dropout_between_are_still_linear(gaussian, mode):
    model = nn.Sequential(
        nn.Linear(40, 100), nn.BatchNorm1d(100), nn.Dropout(0.2), nn.Linear(100, N_CLASSES)
    )
    model.train(mode == "train")
    assert structural(model, gaussian) == [("MISSING_NONLINEARITY", "3")]


@pytest.mark.parametrize(
    "build",
    [
        LowRank,
        lambda: bs.nn.mlp(40, [64, 64], N_CLASSES, activation="maxout"),
        lambda: bs.nn.mlp(40, [64, 64], N_CLASSES, batchnorm=True, dropout=0.3),
        lambda: nn.Sequential(
            nn.Unflatten(1, (1, 40)),
            nn.Conv1d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(8, 8, 3, padding=1, groups=8),  # depthwise, then pointwise: separable
            nn.Conv1d(8, 16, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 40, N_CLASSES),
        ),
    ],
    ids=["low-rank-adapter", "maxout", "bn-dropout-mlp", "separable-conv"],
)
def test_deliberately_linear_or_healthy_structures_are_silent(gaussian, build):
    torch.manual_seed(0)
    assert structural(build(), gaussian) == []


def test_transformer_encoder_is_silent(gaussian):
    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(1, 32)
            layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2)
            self.head = nn.Linear(32, N_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(self.embed(x.unsqueeze(-1))).mean(1))

    torch.manual_seed(0)
    assert structural(Encoder(), gaussian) == []
    assert structural(Encoder().eval(), gaussian) == []


def test_the_trace_leaves_the_model_untouched(gaussian):
    model = nn.Sequential(nn.Linear(40, 100), nn.BatchNorm1d(100), nn.Linear(100, N_CLASSES))
    ctx = build_context(model, gaussian)
    before = copy.deepcopy(ctx.model.state_dict())
    structure.layer_order(ctx)
    after = ctx.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats restored
    assert all(p.grad is None for p in ctx.model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in ctx.model.modules())


# -- through forward= (the structure, symmetry and decay checks read the batch as diagnose does)


class _DictBatches(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def _by_key(model: nn.Module, batch: dict[str, torch.Tensor]):
    return model(batch["x"]), batch["y"]


def test_structure_is_traced_through_forward(gaussian):
    data = _DictBatches(*gaussian)
    bad = nn.Sequential(
        nn.Linear(40, 64), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, N_CLASSES), nn.Softmax(1)
    )
    found = structural(bad, data, forward=_by_key)
    assert ("MISSING_NONLINEARITY", "1") in found
    assert ("DOUBLE_SOFTMAX", "4") in found
    diagnosis = bs.diagnose(
        Head(nn.Sigmoid()), data, forward=_by_key, lr=1e-3, checks=["layer_order"]
    )
    assert [f.layer for f in diagnosis if f.code == "ACTIVATION_ON_OUTPUT"] == ["act"]


def test_symmetric_init_and_decoupled_decay_through_forward(gaussian):
    data = _DictBatches(*gaussian)
    constant = bs.nn.mlp(40, [32, 32], N_CLASSES, activation="tanh")
    for module in constant.modules():
        if isinstance(module, nn.Linear):
            nn.init.constant_(module.weight, 0.1)
            nn.init.zeros_(module.bias)
    diagnosis = bs.diagnose(constant, data, forward=_by_key, lr=1e-3, checks=["symmetric_init"])
    assert "SYMMETRIC_INIT" in diagnosis.codes
    strong = bs.diagnose(
        bs.nn.mlp(40, [64], N_CLASSES),
        data,
        forward=_by_key,
        lr=1e-3,
        optimizer="adamw",
        weight_decay=10.0,
        checks=["regularization"],
    )
    assert [f.evidence["decoupled"] for f in strong if f.code == "REG_TOO_STRONG"] == [True]
