"""Probes: closed-form statistics, sampling, gradients, naming, hook hygiene and bounded memory."""

from __future__ import annotations

import dataclasses
import doctest
import gc
import json
import math
import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import babysit.probes
from babysit.nn.activations import Maxout
from babysit.probes import (
    DEAD_MIN_EXAMPLES,
    SIGMOID_SATURATION,
    TANH_SATURATION,
    LayerStats,
    Probe,
)

# A probe that warns has skipped a layer: in these tests that is a failure.
pytestmark = pytest.mark.filterwarnings("error")


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def hook_count(model: nn.Module) -> int:
    dicts = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(m, d)) for m in model.modules() for d in dicts)


def train_steps(model: nn.Module, probe: Probe, steps: int, batch: int = 16) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(batch, 4)).pow(2).mean().backward()
        opt.step()
        probe.step()


# -- closed-form statistics ------------------------------------------------------------------


def test_dead_units_are_zero_on_every_example_not_just_some():
    layer = nn.Linear(1, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0], [1.0], [1.0], [0.0]]))
        layer.bias.copy_(torch.tensor([-100.0, -100.0, 0.0, 1.0]))
    model = nn.Sequential(layer, nn.ReLU())
    x = torch.randn(512, 1)
    stats = Probe(model).snapshot(x)["1"]
    # units 0, 1: bias far below zero, dead; unit 2: zero on the inputs x <= 0 only; unit 3: on
    assert stats.dead_units == [0, 1]
    assert stats.dead_fraction == 0.5
    negatives = int((x <= 0).sum())
    assert 0 < negatives < 512
    assert stats.zero_fraction == pytest.approx((2 * 512 + negatives) / (4 * 512))
    assert stats.n_examples == 512 and stats.dead_judgeable
    assert stats.saturated_fraction is None
    assert Probe(model).snapshot(x[:100])["1"].dead_judgeable is False  # < 256 examples
    assert DEAD_MIN_EXAMPLES == 256


def test_dead_fraction_only_for_relu_layers():
    stats = Probe(mlp()).snapshot(torch.randn(32, 4))
    assert stats["1"].dead_fraction is not None
    assert stats["0"].dead_fraction is None and stats["0"].dead_units is None
    assert stats["0"].kind == "linear" and stats["1"].kind == "relu"


@pytest.mark.parametrize(
    ("act", "threshold"), [(nn.Tanh(), TANH_SATURATION), (nn.Sigmoid(), SIGMOID_SATURATION)]
)
def test_saturated_fraction_counts_preactivations_beyond_the_threshold(act, threshold):
    model = nn.Sequential(act)
    z = torch.randn(300, 50)
    probe = Probe(model)
    huge = z.sign() * (z.abs() + 10)  # every |z| >= 10
    assert probe.snapshot(huge)["0"].saturated_fraction == 1.0
    assert probe.snapshot(z * 1e-3)["0"].saturated_fraction == 0.0
    moderate = z * threshold  # about a third of the values beyond the threshold
    expected = (moderate.abs() > threshold).float().mean().item()
    assert probe.snapshot(moderate)["0"].saturated_fraction == pytest.approx(expected)


def test_saturation_thresholds_match_their_definition():
    # docs/architecture.md (Definitions): the derivative is under 1% of its maximum for tanh
    # beyond 3.0; both thresholds put the output within 0.5% of its asymptote.
    assert 1 - math.tanh(TANH_SATURATION) ** 2 < 0.01
    assert math.tanh(TANH_SATURATION) > 0.995
    assert 1 / (1 + math.exp(-SIGMOID_SATURATION)) > 0.995


def test_moments_equal_torch_on_the_same_tensor():
    model = mlp()
    x = torch.randn(64, 4)
    stats = Probe(model).snapshot(x)
    with torch.no_grad():
        for name, out in (("0", model[0](x)), ("2", model(x))):
            s = stats[name]
            assert s.mean == pytest.approx(out.mean().item(), rel=1e-5, abs=1e-7)
            assert s.std == pytest.approx(out.std().item(), rel=1e-5)
            assert (s.min, s.max) == (out.min().item(), out.max().item())
            assert s.n_examples == 64 and s.n_units == out.shape[1]
            assert s.zero_fraction == 0.0 and s.nonfinite_fraction == 0.0


def test_histogram_matches_torch_histogram():
    model = nn.Sequential(nn.Linear(4, 8))
    x = torch.randn(100, 4)
    stats = Probe(model, bins=12).snapshot(x)["0"]
    with torch.no_grad():
        reference = torch.histogram(model(x), bins=12)
    assert sum(stats.hist_counts) == 100 * 8
    assert stats.hist_counts == reference.hist.long().tolist()
    assert stats.hist_edges == pytest.approx(reference.bin_edges.tolist(), rel=1e-5)


def test_histogram_of_a_constant_tensor_and_of_a_fixed_range():
    const = nn.Sequential(nn.Linear(4, 8))
    nn.init.zeros_(const[0].weight)
    nn.init.constant_(const[0].bias, 2.0)
    stats = Probe(const, bins=4).snapshot(torch.randn(10, 4))["0"]
    reference = torch.histogram(torch.full((80,), 2.0), bins=4)
    assert stats.hist_counts == [0, 0, 80, 0]
    assert stats.hist_edges == pytest.approx(reference.bin_edges.tolist())
    assert stats.std == 0.0

    model = nn.Sequential(nn.Tanh())
    z = torch.randn(50, 20)
    fixed = Probe(model, bins=5, hist_range=(-0.5, 0.5)).snapshot(z)["0"]
    assert fixed.hist_edges == pytest.approx([-0.5, -0.3, -0.1, 0.1, 0.3, 0.5])
    assert fixed.hist_counts == torch.histc(torch.tanh(z), 5, min=-0.5, max=0.5).long().tolist()
    assert sum(fixed.hist_counts) < 1000  # values outside the range are not counted


def test_non_finite_values_are_counted_not_fatal():
    class Blowup(nn.Module):
        def forward(self, x):
            return torch.cat([x, torch.full_like(x[:, :1], math.inf)], dim=1)

    stats = Probe(nn.Sequential(Blowup())).snapshot(torch.randn(10, 3))["0"]
    assert stats.nonfinite_fraction == pytest.approx(10 / 40)
    assert sum(stats.hist_counts) == 30  # the finite values
    assert all(math.isfinite(e) for e in stats.hist_edges)


# -- sampling, the training loop, gradients ---------------------------------------------------


def test_every_k_records_steps_0_k_2k_and_hooks_only_on_those_steps():
    model = mlp()
    with Probe(model, every=3) as probe:
        model(torch.randn(5, 4))
        assert probe.records == []  # a step's records are stored when step() ends it
        probe.step()
        for step in range(1, 8):
            assert hook_count(model) == (3 if step % 3 == 0 else 0)
            assert probe.sampling == (step % 3 == 0)
            model(torch.randn(5, 4))
            probe.step()
    assert sorted({r.step for r in probe.records}) == [0, 3, 6]
    assert [r.name for r in probe.records[:3]] == ["0", "1", "2"]
    assert set(probe.latest()) == {"0", "1", "2"}
    assert probe.latest()["0"].step == 6
    assert probe.current_step == 8


def test_backward_gradient_norms_equal_autograd():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.randn(20, 4)
    with Probe(model, every=1, backward=True) as probe:
        hidden = model[0](x)
        hidden.retain_grad()
        act = model[1](hidden)
        act.retain_grad()
        out = model[2](act)
        out.retain_grad()
        out.pow(2).sum().backward()
        probe.step()
    stats = probe.latest()
    for name, tensor in (("0", hidden), ("1", act), ("2", out)):
        assert stats[name].grad_norm == pytest.approx(tensor.grad.norm().item(), rel=1e-5)
    for name in ("0", "2"):
        layer = model[int(name)]
        assert stats[name].param_grad_norms == pytest.approx(
            {"weight": layer.weight.grad.norm().item(), "bias": layer.bias.grad.norm().item()},
            rel=1e-5,
        )
    assert stats["1"].param_grad_norms == {}


def test_no_gradient_statistics_without_a_backward_or_under_no_grad():
    model = mlp()
    with Probe(model, every=1, backward=True) as probe:
        model.eval()
        with torch.no_grad():
            model(torch.randn(5, 4))
        probe.step()
    for stats in probe.latest().values():
        assert stats.grad_norm is None and stats.param_grad_norms == {}
        assert stats.n_examples == 5  # eval mode and no_grad forwards are still measured


def test_snapshot_with_loss_fn_leaves_param_grad_alone_and_stores_nothing():
    model = mlp()
    x = torch.randn(30, 4)
    probe = Probe(model)
    stats = probe.snapshot(x, loss_fn=lambda out: out.pow(2).sum())
    assert all(p.grad is None for p in model.parameters())
    assert probe.records == [] and hook_count(model) == 0
    weight_grad = torch.autograd.grad(model(x).pow(2).sum(), model[0].weight)[0]
    assert stats["0"].param_grad_norms["weight"] == pytest.approx(weight_grad.norm().item())
    assert stats["2"].grad_norm is not None
    assert probe.snapshot(x)["0"].grad_norm is None  # forward only without loss_fn


def test_snapshot_gradients_reach_layers_before_any_parameter():
    model = nn.Sequential(nn.Tanh(), nn.Linear(4, 2))
    x = torch.randn(10, 4)
    stats = Probe(model, layers="activations").snapshot(x, loss_fn=lambda out: out.sum())
    xl = x.clone().requires_grad_(True)
    act = torch.tanh(xl)
    act.retain_grad()
    model[1](act).sum().backward()
    assert stats["0"].grad_norm == pytest.approx(act.grad.norm().item(), rel=1e-5)
    assert x.grad is None  # the caller's tensor is untouched
    with pytest.raises(ValueError, match="scalar"):
        Probe(model).snapshot(x, loss_fn=lambda out: out)


# -- which modules, and their names -----------------------------------------------------------


def test_nested_modules_are_named_by_path_and_containers_skipped():
    model = nn.Sequential(
        OrderedDict(
            block=nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.1)),
            maxout=Maxout(6, 5),
            head=nn.Linear(5, 2),
        )
    )
    probe = Probe(model)
    assert probe.layer_names == ["block.0", "block.1", "maxout", "head"]
    stats = probe.snapshot(torch.randn(7, 4))
    assert set(stats) == {"block.0", "block.1", "maxout", "head"}
    assert stats["maxout"].kind == "maxout"
    assert Probe(model, layers="activations").layer_names == ["block.1", "maxout"]
    assert Probe(model, layers="weights").layer_names == ["block.0", "maxout", "head"]
    assert Probe(model, layers=["head", "block"]).layer_names == ["block", "head"]
    by_kind = Probe(model, layers=lambda name, m: isinstance(m, nn.Linear))
    assert by_kind.layer_names == ["block.0", "maxout.linear", "head"]


def test_conv_net_dead_per_channel():
    conv = nn.Conv2d(1, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0, 1, 1] = 1.0  # every channel copies the centre pixel
        conv.bias.copy_(torch.tensor([-100.0, 0.0, -100.0, 0.0]))
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 2))
    x = torch.randn(300, 1, 5, 5).abs().neg()  # all pixels <= 0 ...
    x[0, 0, 2, 2] = 1.0  # ... but one, in one example
    stats = Probe(model).snapshot(x)
    relu = stats["1"]
    assert relu.n_units == 4 and relu.n_examples == 300
    # channels 0 and 2: dead; channels 1 and 3: zero everywhere but one position of one example
    assert relu.dead_units == [0, 2] and relu.dead_fraction == 0.5
    assert relu.zero_fraction == pytest.approx(1 - 2 / (300 * 4 * 25))
    assert stats["0"].kind == "conv2d"
    assert "2" not in stats  # Flatten repeats the layer before it
    assert sum(relu.hist_counts) == 300 * 4 * 25


def test_custom_module_with_functional_ops_and_tuple_output():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.full((6,), 2.0))

        def forward(self, x):
            return F.relu(x * self.gain), x.sum()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 6)
            self.scaled = Scaled()

        def forward(self, x):
            return self.scaled(self.fc(x))[0].sum()

    net = Net()
    with Probe(net, every=1, backward=True) as probe:
        net(torch.randn(8, 3)).backward()
        probe.step()
    stats = probe.latest()
    assert set(stats) == {"fc", "scaled"}
    assert stats["scaled"].kind == "scaled" and stats["scaled"].n_units == 6
    assert stats["scaled"].param_grad_norms["gain"] == pytest.approx(net.scaled.gain.grad.norm())
    assert stats["scaled"].dead_fraction is None  # not a ReLU module: zeros, but no verdict


def test_a_module_called_twice_is_recorded_per_call():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.act = nn.Linear(4, 4), nn.Linear(4, 4), nn.ReLU()

        def forward(self, x):
            return self.act(self.fc2(self.act(self.fc1(x))))

    net = Shared()
    with Probe(net, every=1, backward=True) as probe:
        net(torch.randn(10, 4)).sum().backward()
        probe.step()
    stats = probe.latest()
    assert {"act", "act#1"} <= set(stats)
    assert (stats["act"].call, stats["act#1"].call) == (0, 1)
    assert stats["act#1"].grad_norm is not None


def test_inplace_relu_does_not_change_the_linear_stats_or_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    x = torch.randn(50, 4)
    with Probe(model, every=1, backward=True) as probe:
        model(x).pow(2).sum().backward()
        probe.step()
    stats = probe.latest()
    assert stats["0"].min < 0 and stats["0"].zero_fraction == 0.0
    assert stats["1"].min == 0.0
    z = model[0](x)  # the same forward without in-place ops, for autograd's answer
    z.retain_grad()
    model[2](torch.relu(z)).pow(2).sum().backward()
    assert stats["0"].grad_norm == pytest.approx(z.grad.norm().item(), rel=1e-5)


def test_max_units_and_max_examples_are_honoured():
    model = nn.Sequential(nn.Linear(4, 50), nn.ReLU())
    x = torch.randn(40, 4)
    stats = Probe(model, max_units=10, max_examples=7).snapshot(x)
    first = stats["0"]
    assert (first.n_examples, first.n_units) == (7, 10)
    assert sum(first.hist_counts) == 70
    with torch.no_grad():
        assert first.mean == pytest.approx(model[0](x)[:7, :10].mean().item(), rel=1e-5)
    assert all(u < 10 for u in stats["1"].dead_units)
    conv = nn.Sequential(nn.Conv1d(2, 16, 3))
    cut = Probe(conv, max_units=4, max_examples=None).snapshot(torch.randn(9, 2, 10))["0"]
    assert (cut.n_examples, cut.n_units, sum(cut.hist_counts)) == (9, 4, 9 * 4 * 8)


# -- hygiene: hooks, memory, serialization ----------------------------------------------------


def test_hooks_are_removed_on_exit_even_after_an_error():
    model = mlp()
    with pytest.raises(RuntimeError, match="boom"), Probe(model, every=1, backward=True):
        assert hook_count(model) == 3
        raise RuntimeError("boom")
    assert hook_count(model) == 0
    probe = Probe(model).attach()
    probe.detach()
    assert hook_count(model) == 0


def _tensors_in(obj, seen=None):
    """Every tensor reachable from ``obj`` through containers, dataclasses and attributes."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (str, int, float, bool, type(None), nn.Module)):
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors_in(value, seen)
    elif isinstance(obj, (list, tuple, set)) or hasattr(obj, "maxlen"):
        for value in obj:
            yield from _tensors_in(value, seen)
    elif dataclasses.is_dataclass(obj) or hasattr(obj, "__dict__"):
        for value in vars(obj).values():
            yield from _tensors_in(value, seen)


def live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on some torch module globals warns
        warnings.simplefilter("ignore")
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())


def test_buffers_stay_bounded_over_2000_steps_and_hold_no_graph():
    model = mlp()
    with Probe(model, every=2, backward=True, keep=5) as probe:
        train_steps(model, probe, 1000, batch=4)
        alive = live_tensors()
        train_steps(model, probe, 1000, batch=4)
        assert live_tensors() == alive
        assert len(probe.records) == 3 * 5
        assert all(len(kept) == 5 for kept in probe._history.values())
        assert probe._pending == []
    assert [r.step for r in probe.records[::3]] == [1990, 1992, 1994, 1996, 1998]
    assert all(t.grad_fn is None for t in _tensors_in(probe))
    assert not any(isinstance(t, torch.Tensor) for t in _tensors_in(probe.records))
    json.dumps(probe.history())  # plain numbers and lists only


# -- recurrent layers --------------------------------------------------------------------------


@pytest.mark.parametrize("cell", [nn.RNN, nn.LSTM, nn.GRU])
@pytest.mark.parametrize("batch_first", [True, False])
def test_recurrent_layers_are_measured_examples_first_with_hidden_units(cell, batch_first):
    """(N, T, H) or (T, N, H): examples are N and units are H either way (before this, a
    batch_first output counted the T steps as units and had no saturation)."""
    torch.manual_seed(0)
    rnn = cell(3, 16, batch_first=batch_first)
    x = torch.randn(300, 7, 3) if batch_first else torch.randn(7, 300, 3)
    s = Probe(rnn).snapshot(x)[""]
    assert s.kind == cell.__name__.lower()
    assert (s.n_examples, s.n_units) == (300, 16)
    assert s.saturated_fraction is not None and s.saturated_fraction < 0.05


def test_recurrent_saturation_counts_outputs_and_hidden_states():
    """A tanh RNN with N(0, 3²) weights: |h| > tanh(3.0) exactly where |z| > 3.0."""
    torch.manual_seed(0)
    rnn = nn.RNN(3, 16, num_layers=2, batch_first=True)
    for p in rnn.parameters():
        nn.init.normal_(p, std=3.0)
    x = torch.randn(64, 5, 3)
    out, h_n = rnn(x)
    bound = math.tanh(TANH_SATURATION)
    expected = (int((out.abs() > bound).sum()) + int((h_n.abs() > bound).sum())) / (
        out.numel() + h_n.numel()
    )
    s = Probe(rnn).snapshot(x)[""]
    assert s.saturated_fraction == pytest.approx(expected) and expected > 0.5


def test_lstm_cell_state_saturation_is_counted_on_c():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 8, batch_first=True)
    x = torch.randn(32, 4, 3)
    out, (h_n, c_n) = lstm(x)
    bound = math.tanh(TANH_SATURATION)
    expected = (
        int((out.abs() > bound).sum())
        + int((h_n.abs() > bound).sum())
        + int((c_n.abs() > TANH_SATURATION).sum())
    ) / (out.numel() + h_n.numel() + c_n.numel())
    assert Probe(lstm).snapshot(x)[""].saturated_fraction == pytest.approx(expected)


def test_packed_sequences_are_measured_per_token():
    torch.manual_seed(0)
    gru = nn.GRU(3, 8, batch_first=True)
    packed = nn.utils.rnn.pack_padded_sequence(
        torch.randn(10, 6, 3), torch.tensor([6, 6, 5, 5, 4, 4, 3, 3, 2, 1]), batch_first=True
    )
    s = Probe(gru).snapshot(packed)[""]
    assert (s.n_examples, s.n_units) == (39, 8)


def test_layer_stats_round_trip_through_json():
    stats = Probe(mlp()).snapshot(torch.randn(8, 4))["1"]
    again = LayerStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert again == stats


def test_arguments_are_validated_with_the_bad_value_in_the_message():
    model = mlp()
    with pytest.raises(ValueError, match="every must be a positive integer, got 0"):
        Probe(model, every=0)
    with pytest.raises(ValueError, match="'bogus'"):
        Probe(model, layers="bogus")
    with pytest.raises(ValueError, match="no module at"):
        Probe(model, layers=["0", "nope"])
    with pytest.raises(ValueError, match="hist_range"):
        Probe(model, hist_range=(1.0, 1.0))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        Probe("model")


def test_docstring_examples_run():
    result = doctest.testmod(babysit.probes)
    assert result.attempted > 0 and result.failed == 0
