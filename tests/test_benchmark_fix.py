"""benchmarks/fix.py's independent test score: the held-out split fix never sees, and the
retrained short run scored on it (``docs/architecture.md``, "Repair")."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, TensorDataset

from babysit.repair.modules import FittedScaler, OutputScaler
from babysit.repair.setup import SetUp
from babysit.repair.verify import ShortRun

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "benchmarks"))  # after everything else: shadows nothing
_spec = importlib.util.spec_from_file_location("benchmark_fix", ROOT / "benchmarks" / "fix.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["benchmark_fix"] = bench  # its dataclasses look their module up
_spec.loader.exec_module(bench)


def _xy(n: int = 200):
    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3)
    y = torch.arange(n) % 4
    return x, y


def _ids(batch) -> set[int]:
    return {int(v) for v in batch[0][:, 0]}


def test_pair_split_is_seeded_disjoint_and_leaves_the_data_alone():
    x, y = _xy(200)
    before = x.clone(), y.clone()
    part, test = bench.split_for_test((x, y), seed=0)
    assert len(part[0]) == 160 and len(test[0]) == 40  # 20%
    assert _ids(test).isdisjoint(_ids(part)) and _ids(test) | _ids(part) == set(range(200))
    assert _ids(test) != set(range(160, 200))  # drawn at random, not the tail
    again = bench.split_for_test((x, y), seed=0)[1]
    other = bench.split_for_test((x, y), seed=1)[1]
    assert _ids(again) == _ids(test) and _ids(other) != _ids(test)
    assert torch.equal(x, before[0]) and torch.equal(y, before[1])
    # labels travel with their rows
    assert torch.equal(test[1], test[0][:, 0].long() % 4)


def test_the_test_part_is_at_most_1024_examples():
    x, y = _xy(8000)
    part, test = bench.split_for_test((x, y))
    assert len(test[0]) == 1024 and len(part[0]) == 8000 - 1024


def test_numpy_float64_pair_is_split_and_the_test_batch_read_as_float32():
    x = np.random.default_rng(0).normal(size=(50, 2))
    y = np.arange(50) % 2
    part, test = bench.split_for_test((x, y))
    assert isinstance(part[0], np.ndarray) and len(part[0]) == 40
    assert test[0].dtype == torch.float32 and len(test[0]) == 10


def test_tensor_dataset_split():
    x, y = _xy(100)
    part, test = bench.split_for_test(TensorDataset(x, y))
    assert isinstance(part, TensorDataset) and len(part) == 80
    assert _ids(test).isdisjoint({int(v) for v in part.tensors[0][:, 0]})


@pytest.mark.parametrize("shuffle", [False, True])
def test_loader_split_keeps_batch_size_and_sampler_kind(shuffle):
    x, y = _xy(300)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=shuffle)
    part, test = bench.split_for_test(loader)
    assert isinstance(part, DataLoader) and part.batch_size == 16
    assert isinstance(part.sampler, RandomSampler if shuffle else SequentialSampler)
    seen = {int(v) for xb, _ in part for v in xb[:, 0]}
    assert len(seen) == 240 and len(test[0]) == 60 and _ids(test).isdisjoint(seen)
    if not shuffle:  # an unshuffled loader stays in its order: the finding must survive
        first = next(iter(part))[0][:, 0]
        assert torch.all(first[1:] > first[:-1])
    assert len(loader.dataset) == 300  # the user's loader is untouched


def test_data_without_length_cannot_be_split_and_says_so():
    x, y = _xy(20)
    batches = [(x[:10], y[:10]), (x[10:], y[10:])]
    gen = (b for b in batches)
    part, test = bench.split_for_test(gen)
    assert part is gen and test is None


def test_relative_fall():
    assert bench.relative_fall(2.0, 1.0) == pytest.approx(0.5)
    assert bench.relative_fall(0.05, 0.0) == pytest.approx(0.5)  # scale at least 0.1
    assert bench.relative_fall(math.inf, 1.0) == 1.0
    assert bench.relative_fall(None, 1.0) == 1.0
    assert bench.relative_fall(1.0, math.nan) == -1.0
    assert bench.relative_fall(math.inf, math.inf) == 0.0


def _regression(n: int = 120, scale: float = 1.0):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=gen)
    y = (x @ torch.tensor([[1.0], [-2.0], [0.5]])) * scale
    return x, y


def _setup(data, post=None) -> SetUp:
    torch.manual_seed(0)
    options = {"loss_fn": nn.MSELoss(), "optimizer": "adam", "lr": 1e-2, "seed": 0}
    return SetUp(nn.Linear(3, 1), data, data, options, postprocess=post)


def test_held_out_run_trains_as_fix_does_and_scores_the_test_batch():
    part, test = bench.split_for_test(_regression())
    setup = _setup(part)
    reference = ShortRun(steps=20).run(setup)
    runner = bench.HeldOutRun(test, steps=20)
    result = runner.run(setup)
    assert result.val_loss == reference.val_loss  # the same run as fix's verification
    with torch.no_grad():
        untrained = float(nn.MSELoss()(setup.model(test[0]), test[1]))
    assert math.isfinite(runner.test_loss) and runner.test_loss < untrained


def test_held_out_run_maps_standardized_targets_back_to_the_raw_test_targets():
    x, y = _regression(scale=100.0)
    part, test = bench.split_for_test((x, y))
    mean, std = part[1].mean(0), part[1].std(0, unbiased=False)
    setup = _setup((part[0], (part[1] - mean) / std), post=OutputScaler(mean, std))
    setup.options["lr"] = 1e-12  # the trained model is the initial one, to 1e-9
    runner = bench.HeldOutRun(test, steps=3)
    runner.run(setup)
    with torch.no_grad():
        expected = float(nn.MSELoss()(setup.model(test[0]) * std + mean, test[1]))
        standardized = float(nn.MSELoss()(setup.model(test[0]), (test[1] - mean) / std))
    assert runner.test_loss == pytest.approx(expected, rel=1e-4)  # in the raw targets' units
    assert abs(runner.test_loss - standardized) > 100 * standardized


def test_held_out_run_passes_raw_test_inputs_through_the_fitted_preprocessing():
    x, y = _regression()
    x = x * 50 + 300  # raw scale: the repaired set-up trains on standardized inputs
    part, test = bench.split_for_test((x, y))
    mean, std = part[0].mean(0), part[0].std(0, unbiased=False)
    pre = FittedScaler(mean, std)
    setup = _setup((pre(part[0]), part[1]))
    setup.preprocess = pre
    setup.options["lr"] = 1e-12  # the trained model is the initial one, to 1e-9
    runner = bench.HeldOutRun(test, steps=3)
    runner.run(setup)
    with torch.no_grad():
        expected = float(nn.MSELoss()(setup.model(pre(test[0])), test[1]))
        unprocessed = float(nn.MSELoss()(setup.model(test[0]), test[1]))
    assert runner.test_loss == pytest.approx(expected, rel=1e-4)
    assert abs(unprocessed - expected) > 0.5 * expected
