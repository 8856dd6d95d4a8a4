"""The LR range test: sensible suggestions on MNIST-1D, the NaN cut, confidence on flat and
noisy curves, the plot, lr_find.json, clear errors, and the user's model left untouched."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import babysit as bs
from babysit import runs
from babysit.tuning import LRFinderResult, lr_find
from babysit.tuning.lr_find import RULES


@pytest.fixture(scope="module")
def mnist1d() -> tuple[torch.Tensor, torch.Tensor]:
    """Standardized MNIST-1D training examples (N, 40) and their labels."""
    x, y = bs.data.load("mnist1d").train.tensors
    return bs.data.Standardize().fit(x).transform(x), y


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return bs.nn.mlp(40, [100, 100], 10)


def assert_well_formed(result: LRFinderResult) -> None:
    assert len(result.lrs) == len(result.losses) == len(result.raw_losses) > 0
    assert all(b > a for a, b in zip(result.lrs, result.lrs[1:], strict=False))
    assert all(math.isfinite(v) for v in result.raw_losses + result.losses)
    assert set(result.suggestions) == set(RULES)
    assert all(v > 0 and math.isfinite(v) for v in result.suggestions.values())
    assert result.suggestion == result.suggestions[result.rule]


@pytest.mark.parametrize(
    ("optimizer", "low", "high"),
    [("adam", 1e-4, 1e-1), ("adamw", 1e-4, 1e-1), ("momentum", 1e-3, 1.0)],
)
def test_suggestion_is_sensible_on_mnist1d(mnist1d, optimizer, low, high):
    result = lr_find(mlp(), mnist1d, optimizer=optimizer)
    assert_well_formed(result)
    assert result.confident, result.reasons
    assert low <= result.suggestion <= high, result
    assert result.optimizer == optimizer


def test_user_model_is_unchanged(mnist1d):
    model = bs.nn.mlp(40, [100, 100], 10, batchnorm=True, dropout=0.2).eval()
    before = copy.deepcopy(model.state_dict())
    lr_find(model, mnist1d, steps=30)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and not any(m.training for m in model.modules())


def test_same_seed_same_result(mnist1d):
    first = lr_find(mlp(), mnist1d, steps=40, seed=3)
    second = lr_find(mlp(), mnist1d, steps=40, seed=3)
    assert first.raw_losses == second.raw_losses and first.suggestions == second.suggestions


def test_nan_loss_is_cut_and_not_recorded(mnist1d):
    calls = {"n": 0}

    def loss_fn(out, y):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(out, y)
        return loss * float("nan") if calls["n"] > 61 else loss  # call 1 validates the data

    result = lr_find(mlp(), mnist1d, loss_fn=loss_fn)
    assert result.stopped == "nan" and len(result.lrs) == 60
    assert_well_formed(result)


def test_huge_learning_rates_diverge_at_once_and_are_flagged(mnist1d):
    result = lr_find(mlp(), mnist1d, optimizer="sgd", start_lr=1e3, end_lr=1e8)
    assert result.stopped in ("nan", "diverged") and len(result.lrs) < 10
    assert not result.confident and "lower start_lr" in result.reasons[0]
    assert result.suggestion is not None and math.isfinite(result.suggestion)


def test_divergence_stops_the_sweep(mnist1d):
    result = lr_find(mlp(), mnist1d, optimizer="momentum")
    assert result.stopped == "diverged" or max(result.losses) > 2 * min(result.losses)
    assert result.lrs[-1] > 1.0  # well past the suggestion: the test saw the blow-up


def test_flat_curve_over_useless_rates_is_not_confident(mnist1d):
    result = lr_find(mlp(), mnist1d, start_lr=1e-7, end_lr=1e-6)
    assert not result.confident and result.reasons
    assert result.suggestion is not None and 1e-7 <= result.suggestion <= 1e-6


def test_model_that_cannot_learn_gives_a_flat_curve(mnist1d):
    model = bs.nn.init_model(mlp(), "zeros")
    result = lr_find(model, mnist1d, end_lr=1e-2)
    assert not result.confident
    assert any("flat" in reason for reason in result.reasons)


def test_trained_model_is_not_confident(mnist1d):
    x, y = mnist1d
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):  # epochs
        for index in torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            opt.step()
    result = lr_find(model, mnist1d)
    assert not result.confident, result


def test_tiny_batches_are_too_noisy(mnist1d):
    result = lr_find(mlp(), mnist1d, batch_size=4)
    assert not result.confident
    assert any("noise" in reason for reason in result.reasons)


def test_plot_writes_a_png_and_marks_each_rule(mnist1d, tmp_path):
    result = lr_find(mlp(), mnist1d, steps=40)
    path = tmp_path / "lr.png"
    fig = result.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert all(any(label.startswith(rule) for label in labels) for rule in RULES)
    assert fig.axes[0].get_xscale() == "log"


def test_run_dir_gets_lr_find_json(mnist1d, tmp_path):
    result = lr_find(mlp(), mnist1d, steps=30, run_dir=tmp_path)
    document = runs.read_json(tmp_path, "lr_find.json")
    assert document["schema"] == 1
    assert document["suggestion"] == pytest.approx(result.suggestion)
    assert document["suggestions"].keys() == result.suggestions.keys()
    assert len(document["lrs"]) == len(document["losses"]) == len(result.lrs)
    json.dumps(result.to_dict(), allow_nan=False)


def test_without_run_dir_nothing_is_written(mnist1d, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lr_find(mlp(), mnist1d, steps=20)
    assert list(tmp_path.iterdir()) == []


def test_dataset_loader_and_regression_inputs():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(600, 8, generator=generator)
    y = torch.randint(0, 3, (600,), generator=generator)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    for data in (TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=50)):
        assert_well_formed(lr_find(model, data, steps=20))
    target = x[:, :1] * 2.0
    reg = lr_find(nn.Linear(8, 1), (x, target), loss_fn=nn.MSELoss(), optimizer="sgd")
    assert_well_formed(reg)
    assert reg.confident and 1e-3 <= reg.suggestion <= 1.0, reg


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start_lr": 1.0, "end_lr": 1e-3}, "start_lr must be below end_lr"),
        ({"start_lr": 1e-3, "end_lr": 1e-3}, "start_lr must be below end_lr"),
        ({"start_lr": 0.0}, "start_lr must be a positive"),
        ({"start_lr": -1e-3}, "start_lr must be a positive"),
        ({"end_lr": float("inf")}, "end_lr must be a positive finite"),
        ({"steps": 4}, "steps must be an integer >= 5"),
        ({"steps": 10.5}, "steps must be an integer >= 5"),
        ({"batch_size": 0}, "batch_size must be a positive"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    with pytest.raises(ValueError, match=match):
        lr_find(nn.Linear(4, 2), (x, y), **kwargs)


def test_bad_data_and_models_raise_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        lr_find(nn.Linear(4, 2), (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="needs targets"):
        lr_find(nn.Linear(4, 2), torch.randn(32, 4))
    frozen = nn.Linear(4, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        lr_find(frozen, (torch.randn(32, 4), torch.randint(0, 2, (32,))))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        lr_find(lambda x: x, (torch.randn(32, 4), torch.randint(0, 2, (32,))))


def test_importing_tuning_stays_light():
    code = "import sys, babysit.tuning; print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "optuna" not in out.stdout and "matplotlib" not in out.stdout
