"""What practitioners do on purpose is not an error (issue 12, item 4).

Zero-initialised residual branches, LoRA-style adapters (B = 0), zero-gamma batch norm and
zero output layers are silent; an all-constant MLP is still SYMMETRIC_INIT. AdamW's decoupled
weight decay is not judged as ½λ‖θ‖² in the loss. See docs/architecture.md, "Healthy means
silent".
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import babysit as bs
from babysit.checks import backward, build_context, loss
from babysit.findings import Finding

N_CLASSES = 10


@pytest.fixture(scope="module")
def gaussian() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 40, generator=generator)
    return x, torch.randint(0, N_CLASSES, (256,), generator=generator)


def run(check, model, data, **kwargs) -> list[Finding]:
    ctx = build_context(model, data, **kwargs)
    torch.manual_seed(ctx.seed)
    return check(ctx)


def codes(found: list[Finding]) -> list[str]:
    return [f.code for f in found]


# -- models ------------------------------------------------------------------------------------


class ZeroInitResidual(nn.Module):
    """x + W2 relu(W1 x) with W2 = 0 (Goyal et al. 2017; "zero_init_residual" in torchvision)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Linear(40, width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)
        self.head = nn.Linear(width, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = h + self.fc2(torch.relu(self.fc1(h)))
        return self.head(h)


class LoRA(nn.Module):
    """A frozen base layer plus a trainable low-rank update B A with B = 0 (Hu et al. 2021)."""

    def __init__(self, base: nn.Linear, rank: int = 4) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.a = nn.Linear(base.in_features, rank, bias=False)
        self.b = nn.Linear(rank, base.out_features, bias=False)
        nn.init.zeros_(self.b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.b(self.a(x))


def lora_mlp() -> nn.Module:
    torch.manual_seed(0)
    body = bs.nn.mlp(40, [64], N_CLASSES)
    body[0] = LoRA(body[0])
    body[2] = LoRA(body[2])
    return body


def zero_gamma_bn() -> nn.Module:
    torch.manual_seed(0)
    model = bs.nn.mlp(40, [64, 64], N_CLASSES, batchnorm=True)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            nn.init.zeros_(m.weight)
    return model


def zero_head() -> nn.Module:
    torch.manual_seed(0)
    model = bs.nn.mlp(40, [64], N_CLASSES)
    nn.init.zeros_(model[-1].weight)
    nn.init.zeros_(model[-1].bias)
    return model


def constant_mlp(value: float) -> nn.Module:
    model = bs.nn.mlp(40, [64, 64], N_CLASSES)
    for p in model.parameters():
        nn.init.constant_(p, value)
    return model


# -- symmetric init ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [ZeroInitResidual, lora_mlp, zero_gamma_bn, zero_head],
    ids=["zero-init-residual", "lora-b-zero", "zero-gamma-bn", "zero-head"],
)
def test_zero_inits_that_break_symmetry_after_one_step_are_silent(gaussian, build):
    """Each of these has all-equal rows somewhere, but each row gets its own gradient. The old
    check (identical weights alone) called the zero-init residual and LoRA B SYMMETRIC_INIT."""
    torch.manual_seed(0)
    assert run(backward.symmetric_init, build(), gaussian) == []


@pytest.mark.parametrize("value", [0.0, 0.05])
def test_constant_mlp_is_still_symmetric(gaussian, value):
    found = run(backward.symmetric_init, constant_mlp(value), gaussian)
    assert codes(found) and set(codes(found)) == {"SYMMETRIC_INIT"}
    first = found[0]
    assert first.severity == "error" and first.layer == "0"
    assert first.evidence["units"] == 64 and first.evidence["value"] == value


def test_symmetric_init_needs_identical_gradients_too(gaussian):
    """Identical rows with distinct gradients (the next layer's columns differ) are silent; the
    same rows with identical outgoing weights are not. Layer 2, constant too, feeds a random
    head: its units get distinct gradients and separate."""
    torch.manual_seed(0)
    model = bs.nn.mlp(40, [64, 64], N_CLASSES)
    nn.init.constant_(model[0].weight, 0.05)
    nn.init.zeros_(model[0].bias)
    assert run(backward.symmetric_init, model, gaussian) == []  # layer 2's columns differ
    nn.init.constant_(model[2].weight, 0.05)
    nn.init.zeros_(model[2].bias)
    found = run(backward.symmetric_init, model, gaussian)
    assert [f.layer for f in found] == ["0"]


def test_symmetric_init_leaves_the_model_untouched(gaussian):
    model = constant_mlp(0.05)
    model[1] = nn.Sequential(nn.ReLU(), nn.Dropout(0.3))
    ctx = build_context(model, gaussian)
    before = copy.deepcopy(ctx.model.state_dict())
    modes = [m.training for m in ctx.model.modules()]
    assert backward.symmetric_init(ctx)
    assert all(torch.equal(v, ctx.model.state_dict()[k]) for k, v in before.items())
    assert [m.training for m in ctx.model.modules()] == modes
    assert all(p.grad is None for p in ctx.model.parameters())


def test_symmetric_init_in_diagnose(gaussian):
    healthy = bs.diagnose(ZeroInitResidual(), gaussian, lr=1e-3, checks=["symmetric_init"])
    assert "SYMMETRIC_INIT" not in healthy.codes
    broken = bs.diagnose(constant_mlp(0.0), gaussian, lr=1e-3, checks=["symmetric_init"])
    assert "SYMMETRIC_INIT" in broken.codes and not broken.ok


# -- frozen parameters -------------------------------------------------------------------------


def test_frozen_backbone_fine_tune_is_ok(gaussian):
    """A frozen backbone with a new head: the default diagnose is ok, FROZEN_PARAMS names it."""
    torch.manual_seed(0)
    backbone = bs.nn.mlp(40, [64, 64], 64).requires_grad_(False)
    model = nn.Sequential(backbone, nn.ReLU(), nn.Linear(64, N_CLASSES))
    diagnosis = bs.diagnose(model, gaussian, lr=1e-3, checks=["gradient_flow"])
    assert diagnosis.ok
    (frozen,) = [f for f in diagnosis if f.code == "FROZEN_PARAMS"]
    assert frozen.severity == "info"
    assert frozen.evidence["layers"] == ["0.0", "0.2", "0.4"]
    assert "PARAMS_WITHOUT_GRAD" not in diagnosis.codes


# -- decoupled weight decay --------------------------------------------------------------------


def wide_mlp() -> nn.Module:
    torch.manual_seed(0)
    return bs.nn.mlp(40, [512, 512], N_CLASSES)


def test_adamw_default_weight_decay_is_silent(gaussian):
    """½·0.01·‖θ‖² of this He-init MLP is ~10 nats, 4x the data loss: the old rule called
    PyTorch's default AdamW REG_TOO_STRONG. AdamW's decay is not in the loss."""
    found = run(loss.regularization, wide_mlp(), gaussian, optimizer="adamw", weight_decay=0.01)
    assert found == []
    factory = lambda params: torch.optim.AdamW(params, lr=1e-3)  # noqa: E731 (weight_decay 0.01)
    assert run(loss.regularization, wide_mlp(), gaussian, optimizer=factory) == []


def test_the_same_decay_in_the_loss_is_still_judged(gaussian):
    """Adam's (coupled) weight_decay really adds ½λ‖θ‖² to the loss: the lecture's rule."""
    found = run(loss.regularization, wide_mlp(), gaussian, optimizer="adam", weight_decay=0.01)
    assert codes(found) == ["REG_TOO_STRONG"]
    assert found[0].evidence["decoupled"] is False
    assert found[0].evidence["reg_term"] > found[0].evidence["data_loss"]


@pytest.mark.parametrize(
    "optimizer",
    [
        "adamw",
        lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=10.0),
        lambda params: torch.optim.Adam(
            params, lr=1e-3, weight_decay=10.0, decoupled_weight_decay=True
        ),
    ],
    ids=["adamw-name", "adamw-factory", "adam-decoupled"],
)
def test_huge_decoupled_decay_is_too_strong(gaussian, optimizer):
    found = run(loss.regularization, wide_mlp(), gaussian, optimizer=optimizer, weight_decay=10.0)
    assert codes(found) == ["REG_TOO_STRONG"]
    evidence = found[0].evidence
    assert evidence["decoupled"] is True and evidence["shrink"] > 8
    assert evidence["weight_norm"] > evidence["equilibrium_norm"]


def test_decay_is_read_from_a_factory(gaussian):
    """A factory sets its own decay: SGD with weight_decay=10 is judged though diagnose's own
    weight_decay argument is 0."""
    factory = lambda params: torch.optim.SGD(params, lr=0.1, weight_decay=10.0)  # noqa: E731
    found = run(loss.regularization, wide_mlp(), gaussian, optimizer=factory)
    assert codes(found) == ["REG_TOO_STRONG"] and found[0].evidence["decoupled"] is False


def test_regularization_leaves_the_model_untouched(gaussian):
    model = wide_mlp()
    before = copy.deepcopy(model.state_dict())
    bs.diagnose(model, gaussian, optimizer="adamw", weight_decay=10.0, checks=["regularization"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())


def test_param_groups_without_decay_on_biases_are_honoured(gaussian):
    """The common recipe: decay on matrices only. The penalty counts only what is decayed."""

    def factory(params):
        params = list(params)
        return torch.optim.Adam(
            [
                {"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.01},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
            ],
            lr=1e-3,
        )

    model = wide_mlp()
    found = run(loss.regularization, model, gaussian, optimizer=factory)
    matrices = sum(
        float(p.detach().double().pow(2).sum()) for p in model.parameters() if p.ndim == 2
    )
    assert codes(found) == ["REG_TOO_STRONG"]
    assert found[0].evidence["reg_term"] == pytest.approx(0.5 * 0.01 * matrices, rel=1e-4)


def test_an_optimizer_without_weight_decay_is_not_judged(gaussian):
    factory = lambda params: torch.optim.LBFGS(params)  # noqa: E731 (no weight_decay at all)
    assert run(loss.regularization, wide_mlp(), gaussian, optimizer=factory) == []


# -- zero-init layers and the gradient rules -----------------------------------------------------


@pytest.mark.parametrize("build", [lora_mlp, zero_head], ids=["lora-b-zero", "zero-head"])
def test_a_zero_layer_blocking_the_gradient_for_one_step_is_not_vanishing(gaussian, build):
    """Wᵀδ = 0 behind a zero-initialised layer: the old rule read the zero gradient of the
    layers before it as VANISHING_GRADIENTS."""
    found = run(backward.gradient_flow, build(), gaussian)
    assert not {"VANISHING_GRADIENTS", "EXPLODING_GRADIENTS"} & set(codes(found))


def test_a_dead_network_still_vanishes(gaussian):
    """A zero gradient with no zero layer to explain it is still judged."""
    torch.manual_seed(0)
    model = bs.nn.mlp(40, [100] * 19, N_CLASSES, activation="sigmoid", init=None)
    assert "VANISHING_GRADIENTS" in codes(run(backward.gradient_flow, model, gaussian))


class ZeroBranchThenReLU(nn.Module):
    """relu(W2 h) with W2 = 0, b2 = 0: every ReLU sits exactly at its kink at init."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(40, 64)
        self.fc2 = nn.Linear(64, 64)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)
        self.head = nn.Linear(64, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.head(h + torch.relu(self.fc2(h)))


def test_gradient_check_at_a_kink_moves_to_a_generic_point(gaussian):
    """Finite differences straddling relu(0) disagree with any gradient: the old check called
    this correct autograd GRADIENT_CHECK_FAILED (an error). Now it checks at weights jittered
    by 1% of their scale, where no ReLU input is 0 by construction."""
    torch.manual_seed(0)
    assert run(backward.gradient_check, ZeroBranchThenReLU(), gaussian) == []


def test_a_wrong_backward_behind_a_zero_layer_is_still_caught(gaussian):
    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return 2 * grad * (x > 0)

    class Broken(ZeroBranchThenReLU):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = Wrong.apply(self.fc1(x))
            return self.head(h + torch.relu(self.fc2(h)))

    torch.manual_seed(0)
    assert codes(run(backward.gradient_check, Broken(), gaussian)) == ["GRADIENT_CHECK_FAILED"]


@pytest.mark.parametrize("check", ["gradient_check", "gradient_check_coordinates"])
def test_gradient_check_at_a_kink_says_it_cannot_judge(gaussian, check, monkeypatch):
    """Where no generic point can be reached (jitter off here), the check says so, at info."""
    monkeypatch.setattr(backward, "GRADCHECK_JITTER", 0.0)
    torch.manual_seed(0)
    found = run(getattr(backward, check), ZeroBranchThenReLU(), gaussian)
    assert "GRADIENT_CHECK_FAILED" not in codes(found)
    if check == "gradient_check":
        assert codes(found) == ["CHECKS_SKIPPED"] and found[0].severity == "info"
        assert "kink" in found[0].message
