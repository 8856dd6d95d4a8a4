"""The arithmetic of the cross-rank monitors, in one process (no launch): the sums and counts
two shards send add up to the statistics of the whole batch, and the loss guard decides from
every rank's loss (docs/architecture.md, "Distributed training")."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from babysit.probes import Probe
from babysit.train.monitors import LossGuard
from babysit.train.monitors.across_ranks import (
    StepReducer,
    _global_grads,
    _global_records,
    _payload,
)
from babysit.train.session import Session


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.Tanh())
    with torch.no_grad():
        net[0].bias[:4] = -50.0  # units 0-3 dead on every example
        net[2].weight.mul_(8.0)  # tanh partly saturated
    return net


def _records(net, x):
    stats = Probe(net, layers="activations", max_examples=None).snapshot(x)
    return [stats["1"], stats["3"]]


def test_two_shards_add_up_to_the_whole_batch():
    net = _net()
    x = torch.randn(300, 6)
    x[:150, 4] = 20.0  # unit 4 of the ReLU (-x4): silent on the first shard only
    with torch.no_grad():
        net[0].weight[4] = 0.0
        net[0].weight[4, 4] = -1.0
        net[0].bias[4] = 0.0
    whole = _records(net, x)
    grads = [("0", torch.randn(12, 6)), ("2", None)]
    first, signature = _payload(_records(net, x[:150]), grads)
    second, same = _payload(_records(net, x[150:]), grads)
    assert signature == same and first.shape == second.shape
    total = (first + second).tolist()
    got = _global_records(_records(net, x[:150]), total)
    for g, w in zip(got, whole, strict=True):
        assert g.n_examples == w.n_examples == 300
        assert g.mean == pytest.approx(w.mean, rel=1e-6, abs=1e-9)
        assert g.std == pytest.approx(w.std, rel=1e-5)
        if w.saturated_fraction is not None:
            assert g.saturated_fraction == pytest.approx(w.saturated_fraction, abs=1e-12)
        if w.dead_units is not None:
            assert g.dead_units == w.dead_units == [0, 1, 2, 3]  # unit 4 lives on shard 2
    on_first = _records(net, x[:150])[0].dead_units
    assert 4 in on_first  # what the first shard alone would have called dead
    # both ranks hold the same (DDP-averaged) gradient: the mean of the squares gives it back
    norms = _global_grads(grads, total[len(total) - 4 :])
    assert norms == {"0": pytest.approx(float(grads[0][1].norm()), rel=1e-12)}


def test_one_process_reduces_to_the_records_themselves():
    net = _net()
    x = torch.randn(256, 6)
    records = _records(net, x)
    weight = torch.randn(12, 6)
    reduced = StepReducer().reduce(records, [("0", weight)])
    assert reduced is not None
    stats, grads = reduced
    for g, r in zip(stats, records, strict=True):
        assert (g.name, g.n_examples, g.dead_units) == (r.name, r.n_examples, r.dead_units)
        assert g.std == pytest.approx(r.std, rel=1e-9)
    assert grads["0"] == pytest.approx(float(weight.norm()), rel=1e-9)


class _Stops(Session):
    def __init__(self):
        net = nn.Linear(2, 2)
        super().__init__(net, torch.optim.SGD(net.parameters(), lr=0.1))
        self.stops = []

    def request_stop(self, reason):
        self.stops.append((self.step, reason))
        super().request_stop(reason)


def _guard_over(ranks_losses):
    session, guard = _Stops(), LossGuard()
    guard.on_fit_start(session)
    for step, losses in enumerate(ranks_losses):
        session.step = step
        session.rank_losses = losses
        guard.on_loss(session, losses[0])
    return session, guard


def test_the_guard_judges_every_rank_against_its_own_start():
    # rank 1 starts at 2.0: its 2.5 is no break-out, though it is 2.5x rank 0's start
    session, guard = _guard_over([(1.0, 2.0), (1.1, 2.5), (0.9, 2.4)])
    assert not session.findings and guard.initial_losses == [1.0, 2.0]
    # a NaN on rank 1 alone is the verdict of every rank that sees the same numbers
    session, _ = _guard_over([(1.0, 2.0), (1.0, math.nan)])
    (nan,) = session.findings
    assert nan.code == "NAN_LOSS" and session.stops == [(1, "NAN_LOSS")]
    assert nan.evidence["rank"] == 1 and nan.evidence["ranks"] == [1]
    assert nan.evidence["world_size"] == 2 and "on rank 1 of 2" in nan.message
    # a break-out on rank 0, against rank 0's start
    session, _ = _guard_over([(1.0, 2.0), (3.5, 2.0)])
    (high,) = session.findings
    assert high.code == "LR_TOO_HIGH" and high.evidence["initial_loss"] == 1.0
    assert high.evidence["rank"] == 0


def test_one_process_shares_the_loss_with_itself():
    session = _Stops()
    assert math.isnan(session.global_loss)
    session.call("on_loss", 0.25)
    assert session.rank_losses == (0.25,) and session.global_loss == 0.25
    session.rank_losses = (1.0, math.nan)
    assert math.isnan(session.global_loss)


def test_monitors_name_the_layers_of_the_wrapped_module():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    wrapped = nn.DataParallel(net)  # on CPU it only wraps: DDP wraps the same way
    session = Session(wrapped, torch.optim.SGD(wrapped.parameters(), lr=0.1))
    assert session.measured_model is net
    assert [n for n, _ in session.measured_model.named_modules()] == ["", "0", "1"]
