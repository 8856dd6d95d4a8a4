"""User state untouched (issue 12, item 8b): fit keeps the user's per-module train/eval
choices; diagnose and lr_find leave the global RNGs and a DataLoader's generator as they were."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import babysit as bs
from babysit.checks.catalogue import mnist1d_standardized


@pytest.fixture(scope="module")
def data():
    x, y = mnist1d_standardized()
    return x[:512], y[:512]


def rng_states(loader: DataLoader | None = None):
    states = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state()[1].copy(),
        "python": random.getstate(),
    }
    if loader is not None and loader.generator is not None:
        states["loader"] = loader.generator.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def same(a, b) -> bool:
    for key in a:
        if isinstance(a[key], torch.Tensor):
            if not torch.equal(a[key], b[key]):
                return False
        elif isinstance(a[key], np.ndarray):
            if not (a[key] == b[key]).all():
                return False
        elif isinstance(a[key], list):
            if not all(torch.equal(u, v) for u, v in zip(a[key], b[key], strict=True)):
                return False
        elif a[key] != b[key]:
            return False
    return True


def shuffled(data, generator: bool) -> DataLoader:
    g = torch.Generator().manual_seed(123) if generator else None
    return DataLoader(TensorDataset(*data), batch_size=64, shuffle=True, generator=g)


@pytest.mark.parametrize("generator", [True, False])
def test_diagnose_leaves_the_rngs_and_the_loaders_generator_alone(data, generator):
    """Before: a loader's own generator advanced (the global one was restored)."""
    loader = shuffled(data, generator)
    net = bs.nn.mlp(40, [64], 10)
    torch.manual_seed(7)
    first = next(iter(loader))[1].clone()
    torch.manual_seed(7)
    if generator:
        loader.generator.manual_seed(123)
    before = rng_states(loader)
    bs.diagnose(net, loader, lr=1e-3)
    assert same(before, rng_states(loader))
    assert torch.equal(next(iter(loader))[1], first)  # the user's next epoch is unchanged


@pytest.mark.parametrize("generator", [True, False])
def test_lr_find_leaves_the_rngs_and_the_loaders_generator_alone(data, generator):
    """Before: lr_find(model, loader) advanced the global RNG and the loader's generator."""
    loader = shuffled(data, generator)
    net = bs.nn.mlp(40, [64], 10)
    torch.manual_seed(7)
    before = rng_states(loader)
    bs.lr_find(net, loader, steps=10)
    assert same(before, rng_states(loader))


def test_lr_find_leaves_the_model_weights_buffers_and_modes_alone(data):
    net = bs.nn.mlp(40, [64], 10, batchnorm=True, dropout=0.2)
    net.train()
    net[1].eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    bs.lr_find(net, data, steps=10)
    assert [m.training for m in net.modules()] == modes
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


class Spy(bs.Callback):
    """Records the batch-norm module's mode at every training step."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.modes: list[bool] = []

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        self.modes.append(self.module.training)


def test_fit_keeps_a_frozen_batchnorm_in_eval_mode(data):
    """Before: fit called model.train() and the frozen BatchNorm updated its statistics."""
    torch.manual_seed(0)
    net = bs.nn.mlp(40, [64], 10, batchnorm=True)
    bn = net[1]
    assert isinstance(bn, nn.BatchNorm1d)
    bn.requires_grad_(False)
    bn.eval()  # frozen on purpose: a fine-tune keeps the pretrained statistics
    stats = bn.running_mean.clone(), bn.running_var.clone()
    spy = Spy(bn)
    history = bs.fit(net, data, epochs=2, val=data, callbacks=[spy], progress=False)
    assert spy.modes and not any(spy.modes)
    assert not bn.training and net.training and net[0].training
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert "MODEL_IN_EVAL_MODE" not in {f.code for f in history.findings}


def test_fit_still_trains_a_model_left_wholly_in_eval_mode(data):
    net = bs.nn.mlp(40, [64], 10, batchnorm=True, dropout=0.2).eval()
    spy = Spy(net[1])
    bs.fit(net, data, epochs=1, callbacks=[spy], progress=False)
    assert spy.modes and all(spy.modes)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_diagnose_and_lr_find_on_cuda_leave_the_cuda_generators_alone(data):
    net = bs.nn.mlp(40, [64], 10, dropout=0.2)
    torch.cuda.manual_seed_all(11)
    torch.cuda.init()
    before = torch.cuda.get_rng_state_all()
    bs.diagnose(net, data, lr=1e-3, device="cuda")
    bs.lr_find(net, data, steps=10, device="cuda")
    after = torch.cuda.get_rng_state_all()
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_a_frozen_batchnorm_in_eval_is_not_model_in_eval_mode_but_a_forgotten_one_is(data):
    torch.manual_seed(0)
    net = bs.nn.mlp(40, [64], 10, batchnorm=True)
    net[1].eval()
    assert "MODEL_IN_EVAL_MODE" in bs.diagnose(net, data, checks=["model_mode"]).codes
    net[1].requires_grad_(False)  # frozen on purpose
    assert "MODEL_IN_EVAL_MODE" not in bs.diagnose(net, data, checks=["model_mode"]).codes


class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = bs.nn.mlp(40, [64], 10, batchnorm=True, dropout=0.2)

    def forward(self, x, mask):
        return self.net(x * mask)


def _bad_calls(x, y):
    three = DataLoader(TensorDataset(x, torch.ones_like(x), y), batch_size=64, shuffle=True)
    no_pair = {"forward": lambda m, b: m(b[0], b[1])}
    shapes = {"forward": lambda m, b: (m(b[0], b[1]), b[2][:10])}
    return [
        ("3 items without forward", lambda m, entry: entry(m, three), ValueError, "forward="),
        (
            "forward returns one thing",
            lambda m, entry: entry(m, three, **no_pair),
            TypeError,
            r"must return a pair \(output, target\)",
        ),
        (
            "output the loss cannot take",
            lambda m, entry: entry(m, three, **shapes),
            (RuntimeError, ValueError),
            r"\(64, 10\)|\[512, 10\]",
        ),
    ]


@pytest.mark.parametrize("case", range(3))
@pytest.mark.parametrize("entry_name", ["diagnose", "lr_find"])
def test_bad_input_is_one_clear_error_and_leaves_everything_as_it_was(data, case, entry_name):
    name, call, error, match = _bad_calls(*data)[case]
    net = Pair()
    net.train()
    net.net[2].eval()  # a per-module choice
    state = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    torch.manual_seed(5)
    before = rng_states()

    def entry(model, d, **kw):
        if entry_name == "lr_find":
            return bs.lr_find(model, d, steps=10, **kw)
        diagnosis = bs.diagnose(model, d, lr=1e-3, **kw)
        failed = [f for f in diagnosis if f.code in ("LOSS_FAILED", "FORWARD_FAILED")]
        if failed:  # diagnose reports what the model does wrong as an error finding
            raise RuntimeError(failed[0].message)
        return diagnosis

    with pytest.raises(error, match=match):
        call(net, entry)
    assert same(before, rng_states()), name
    assert [m.training for m in net.modules()] == modes
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
