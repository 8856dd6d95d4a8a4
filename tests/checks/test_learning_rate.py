"""Learning-rate checks: a NaN, an exploding or a stuck loss and far-off update ratios fire;
Adam 1e-3 and SGD-momentum 0.01-0.1 stay silent; lr=None runs the range test first and the
short run judges its suggestion; the user's model is left as it was."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

import babysit as bs
from babysit.checks import build_context
from babysit.checks import learning_rate as lr_checks
from babysit.checks._base import REGISTRY, CannotCheck, Context
from babysit.findings import Finding


def make_ctx(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    optimizer: str = "adam",
    lr: float | None = None,
    loss_fn: Callable | None = None,
) -> Context:
    """The Context diagnose builds: a deep copy of the model, the probe batch."""
    return build_context(model, (x, y), optimizer=optimizer, lr=lr, loss_fn=loss_fn)


def run_checks(ctx: Context, *checks: Callable[[Context], list[Finding]]) -> list[Finding]:
    found: list[Finding] = []
    for check in checks:
        torch.manual_seed(ctx.seed)  # as diagnose does before each check
        found += check(ctx)
    return found


def judged(model, data, **kwargs) -> list[Finding]:
    return run_checks(make_ctx(model, *data, **kwargs), lr_checks.learning_rate)


def codes(found: list[Finding], *, at_least: str = "info") -> set[str]:
    rank = {"info": 0, "warning": 1, "error": 2}
    return {f.code for f in found if rank[f.severity] >= rank[at_least]}


@pytest.fixture(scope="module")
def mnist1d() -> tuple[torch.Tensor, torch.Tensor]:
    """512 standardized MNIST-1D examples, (N, 40), and their labels."""
    x, y = bs.data.load("mnist1d").train.tensors
    return bs.data.Standardize().fit(x).transform(x)[:512], y[:512]


def mlp(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return bs.nn.mlp(40, [100, 100], 10, **kwargs)


class Reshape(nn.Module):
    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), *self.shape)


def convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(Reshape(1, 40), *bs.nn.convnet((1, 40), [16, 32], 10))


HEALTHY = [
    ("mlp", mlp, "adam", 1e-3),
    ("mlp", mlp, "momentum", 0.01),
    ("mlp", mlp, "momentum", 0.1),
    ("mlp_default_init", lambda: mlp(init=None), "momentum", 0.01),
    ("mlp_bn_dropout", lambda: mlp(batchnorm=True, dropout=0.5), "adam", 1e-3),
    ("tanh_xavier", lambda: mlp(activation="tanh", init="xavier"), "nesterov", 0.05),
    ("convnet", convnet, "adam", 1e-3),
    ("convnet", convnet, "momentum", 0.1),
]


@pytest.mark.parametrize(("name", "build", "optimizer", "lr"), HEALTHY)
def test_healthy_set_ups_are_silent(mnist1d, name, build, optimizer, lr):
    found = judged(build(), mnist1d, optimizer=optimizer, lr=lr)
    assert codes(found, at_least="warning") == set(), [f.message for f in found]


def test_huge_sgd_rate_gives_nan_loss(mnist1d):
    found = judged(mlp(), mnist1d, optimizer="sgd", lr=1e6)
    assert codes(found) == {"NAN_LOSS"}
    nan = found[0]
    assert nan.severity == "error" and nan.evidence["step"] >= 1
    assert "lower the learning rate" in nan.advice


def test_nan_before_any_update_blames_data_or_model(mnist1d):
    x, y = mnist1d
    x = x.clone()
    x[3, 5] = float("nan")
    found = judged(mlp(), (x, y), lr=1e-3)
    assert codes(found) == {"NAN_LOSS"} and found[0].evidence["step"] == 0
    assert "before any update" in found[0].message


def test_adam_at_10_is_too_high(mnist1d):
    found = judged(mlp(), mnist1d, lr=10.0)
    assert {"LR_TOO_HIGH", "UPDATE_RATIO_HIGH"} <= codes(found)
    high = next(f for f in found if f.code == "LR_TOO_HIGH")
    assert high.evidence["peak_loss"] > 3 * high.evidence["initial_loss"]
    assert len(high.evidence["loss_curve"]) <= 50
    assert "lr=1" in high.advice and "lr_find" in high.advice


def test_tiny_sgd_rate_is_too_low(mnist1d):
    found = judged(mlp(), mnist1d, optimizer="sgd", lr=1e-6)
    assert codes(found) == {"LR_TOO_LOW", "UPDATE_RATIO_LOW"}
    low = next(f for f in found if f.code == "UPDATE_RATIO_LOW")
    assert low.evidence["median_ratio"] < 1e-6
    assert set(low.evidence["per_tensor_median"]) == {"0.weight", "2.weight", "4.weight"}


def test_a_stuck_model_is_not_blamed_on_the_learning_rate(mnist1d):
    model = bs.nn.init_model(mlp(), "zeros")  # CANNOT_OVERFIT's business, not the lr's
    assert codes(judged(model, mnist1d, lr=1e-3), at_least="warning") == set()


def test_lr_none_runs_the_range_test_and_judges_its_suggestion(mnist1d):
    ctx = make_ctx(mlp(), *mnist1d, lr=None)
    found = run_checks(ctx, lr_checks.find_lr, lr_checks.lr_range_test, lr_checks.learning_rate)
    assert [f.code for f in found] == ["LR_SUGGESTION"]  # reported once; the short run silent
    info = found[0]
    assert info.severity == "info" and info.evidence["confident"]
    assert 1e-4 <= info.evidence["suggestion"] <= 1e-1
    assert info.evidence["suggestion"] == pytest.approx(ctx.cache["lr_suggestion"])
    assert lr_checks._lr_to_judge(ctx) == (
        ctx.cache["lr_suggestion"],
        "the range test's suggestion",
    )


def test_given_lr_skips_the_default_range_test(mnist1d):
    ctx = make_ctx(mlp(), *mnist1d, lr=1e-3)
    assert run_checks(ctx, lr_checks.find_lr) == [] and "lr_find" not in ctx.cache


def test_range_test_by_name_compares_the_given_lr(mnist1d):
    ctx = make_ctx(mlp(), *mnist1d, optimizer="sgd", lr=1e-6)
    (info,) = run_checks(ctx, lr_checks.lr_range_test)
    assert info.code == "LR_SUGGESTION" and "decades below the suggestion" in info.message
    assert info.evidence["decades_from_suggestion"] < -2
    assert info.evidence["your_lr"] == 1e-6


def test_user_model_is_unchanged(mnist1d):
    model = mlp(batchnorm=True, dropout=0.3).eval()
    before = copy.deepcopy(model.state_dict())
    ctx = make_ctx(model, *mnist1d, lr=None)
    run_checks(ctx, lr_checks.find_lr, lr_checks.learning_rate)
    run_checks(make_ctx(model, *mnist1d, lr=10.0), lr_checks.learning_rate)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m.training for m in model.modules())


def test_registration_order_and_sets():
    names = list(REGISTRY)
    assert names.index("find_lr") < names.index("lr_range_test") < names.index("learning_rate")
    assert not REGISTRY["find_lr"].slow and REGISTRY["lr_range_test"].slow
    assert not REGISTRY["learning_rate"].slow
    assert set(REGISTRY["learning_rate"].codes) == {
        "NAN_LOSS",
        "LR_TOO_HIGH",
        "LR_TOO_LOW",
        "UPDATE_RATIO_HIGH",
        "UPDATE_RATIO_LOW",
    }


def test_babysit_does_not_argue_with_its_own_suggestion():
    # Adam at the range test's suggestion on a small digits MLP peaks at an update ratio ~0.17:
    # judged by the 1e-3 rule it would be "lower the lr to 1e-4", two decades below the best.
    x, y = bs.data.load("digits").train.tensors
    x = bs.data.Standardize().fit(x).transform(x)
    torch.manual_seed(0)
    diagnosis = bs.diagnose(bs.nn.mlp(64, [100], 10), (x, y))
    assert "LR_SUGGESTION" in diagnosis.codes
    assert not {"UPDATE_RATIO_HIGH", "UPDATE_RATIO_LOW"} & diagnosis.codes
    torch.manual_seed(0)
    yours = bs.diagnose(bs.nn.mlp(64, [100], 10), (x, y), lr=0.03, checks=["learning_rate"])
    assert "UPDATE_RATIO_HIGH" in yours.codes  # the same rule still judges a user's lr


def test_diagnose_runs_the_learning_rate_family(mnist1d):
    pytest.importorskip("babysit.checks.backward")  # all families present
    diagnosis = bs.checks.diagnose(mlp(), mnist1d, checks=["find_lr", "learning_rate"])
    assert "LR_SUGGESTION" in diagnosis.codes and diagnosis.ok


def test_labels_the_loss_cannot_take_are_left_to_the_labels_check(mnist1d):
    x, y = mnist1d
    ctx = make_ctx(mlp(), x, y + 10, lr=None)  # labels 10..19 for 10 outputs
    for check in (lr_checks.find_lr, lr_checks.lr_range_test, lr_checks.learning_rate):
        # not a silent []: diagnose lists the check as not run (LOSS_FAILED says why)
        with pytest.raises(CannotCheck, match="LOSS_FAILED"):
            check(ctx)


def test_frozen_model_is_left_to_other_checks(mnist1d):
    assert judged(mlp().requires_grad_(False), mnist1d, lr=1e-3) == []


# -- the divergence rule (babysit.divergence) in the short run ---------------------------------


@pytest.mark.parametrize(
    ("losses", "too_high"),
    [
        ([2.3, 2.0, 6.8, 2.1], False),  # first wave: 6.8 < 3 × 2.3
        ([2.3, 2.0, 7.0, 2.1], True),  # 7.0 > 3 × 2.3
        ([-10.3, -10.0, 20.9, 20.9], True),  # a loss that starts below zero: was never judged
        ([-0.1, -0.2, -0.05, -0.3], False),  # ... and is silent while it learns
        ([0.001, 0.004, 0.002, 0.001], False),  # near zero: noise is not a blow-up
    ],
)
def test_short_run_judges_divergence_with_the_shared_rule(mnist1d, losses, too_high):
    """The first wave returned no finding at all for a start <= 0 (cannot check, silently)."""
    ctx = make_ctx(mlp(), *mnist1d, lr=1e-3)
    run = lr_checks._Run(lr=1e-3, losses=losses)
    found = lr_checks._loss_findings(ctx, run, "lr=0.001")
    assert ("LR_TOO_HIGH" in codes(found)) == too_high
    if too_high and losses[0] < 0:
        assert "far above its start" in found[0].message
