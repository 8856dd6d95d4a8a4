"""The rollback snapshot restores model, buffers and optimizer state exactly."""

from __future__ import annotations

import pytest
import torch

import babysit as bs
from babysit.optim import make_optimizer
from babysit.train.snapshot import StateSnapshot


def _step(model, opt, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


@pytest.mark.parametrize("name", ["adam", "momentum", "rmsprop", "sgd"])
def test_restore_then_continue_equals_never_having_left(name):
    torch.manual_seed(0)
    model = bs.nn.mlp(8, [16], 3, batchnorm=True)
    twin = bs.nn.mlp(8, [16], 3, batchnorm=True)
    twin.load_state_dict(model.state_dict())
    opt = make_optimizer(name, model.parameters(), lr=0.05)
    twin_opt = make_optimizer(name, twin.parameters(), lr=0.05)
    snap = StateSnapshot(model, opt)
    snap.take(0)  # before the first step: no optimizer state yet
    for seed in range(3):
        _step(model, opt, seed)
    snap.restore()
    assert opt.state == {} or all(not s for s in opt.state.values())
    for seed in range(3):
        _step(model, opt, seed)
        _step(twin, twin_opt, seed)
    snap.take(3)
    _step(model, opt, 99)
    opt.param_groups[0]["lr"] = 123.0
    snap.restore()
    assert opt.param_groups[0]["lr"] == 0.05
    for seed in range(3, 6):
        _step(model, opt, seed)
        _step(twin, twin_opt, seed)
    for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_restore_before_take_is_an_error():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="no snapshot"):
        StateSnapshot(model, torch.optim.SGD(model.parameters(), lr=0.1)).restore()
