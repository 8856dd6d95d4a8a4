"""Cannot check means say so (issue 12, item 3): LOSS_FAILED, FORWARD_FAILED, warning-level
CHECKS_SKIPPED, checks standalone by name, UNREGISTERED_PARAMS."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import babysit as bs
from babysit.checks.catalogue import mnist1d_standardized


@pytest.fixture(scope="module")
def data():
    x, y = mnist1d_standardized()
    return x[:512], y[:512]


def mlp():
    torch.manual_seed(0)
    return bs.nn.mlp(40, [64], 10)


class FoldsExamples(nn.Module):
    """A reshape across examples: two examples become one row (view, not flatten(1))."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = bs.nn.mlp(80, [64], 10)

    def forward(self, x):
        return self.net(x.view(-1, 80))


class MeanOverBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(40, 1)

    def forward(self, x):
        return self.linear(x).mean(0, keepdim=True)  # (1, 1): MSELoss broadcasts it


def test_an_output_whose_batch_dimension_differs_is_loss_failed_not_ok(data):
    """Before: ok=True, though not one training step can be taken."""
    net = FoldsExamples()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    diagnosis = bs.diagnose(net, data, lr=1e-3)
    assert not diagnosis.ok
    failed = next(f for f in diagnosis if f.code == "LOSS_FAILED")
    assert failed.severity == "error"
    assert failed.evidence["output_shape"] == [256, 10]
    assert failed.evidence["target_shape"] == [512]
    assert "[256, 10]" in failed.message and "[512]" in failed.message
    skipped = next(f for f in diagnosis if f.code == "CHECKS_SKIPPED")
    assert skipped.severity == "warning"
    assert {"gradient_flow", "overfit_small_sample"} <= set(skipped.evidence["unreadable"])
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_a_loss_that_only_broadcasts_is_loss_failed(data):
    x, y = data
    with pytest.warns(UserWarning):  # torch's own broadcasting warning, and nothing else
        diagnosis = bs.diagnose(MeanOverBatch(), (x, y[:, None].float()), loss_fn=nn.MSELoss())
    failed = next(f for f in diagnosis if f.code == "LOSS_FAILED")
    assert "1 rows but there are 512 targets" in failed.message
    assert not diagnosis.ok


def test_loss_failed_is_reported_whatever_the_selection(data):
    diagnosis = bs.diagnose(FoldsExamples(), data, checks=["data_scale"])
    assert "LOSS_FAILED" in diagnosis.codes and not diagnosis.ok


def test_forward_failed_skips_the_rest_with_a_warning(data):
    x, y = data
    diagnosis = bs.diagnose(mlp(), (x[:, :30], y), lr=1e-3)
    assert "FORWARD_FAILED" in diagnosis.codes
    skipped = next(f for f in diagnosis if f.code == "CHECKS_SKIPPED")
    assert skipped.severity == "warning" and "FORWARD_FAILED" in skipped.message


def test_a_check_that_crashes_is_a_warning_not_a_quiet_info(data, monkeypatch):
    from babysit.checks import REGISTRY
    from babysit.checks._base import CheckSpec

    def broken(ctx):
        raise IndexError("cannot read this output")

    monkeypatch.setenv("BABYSIT_STRICT_CHECKS", "0")
    spec = REGISTRY["dead_units"]
    monkeypatch.setitem(REGISTRY, "dead_units", CheckSpec(**{**spec.__dict__, "run": broken}))
    diagnosis = bs.diagnose(mlp(), data, lr=1e-3)
    skipped = next(f for f in diagnosis if f.code == "CHECKS_SKIPPED")
    assert skipped.severity == "warning" and "dead_units" in skipped.message


def test_no_targets_is_a_warning_naming_what_to_pass(data):
    x, _ = data
    diagnosis = bs.diagnose(mlp(), (x,), lr=1e-3)
    skipped = next(f for f in diagnosis if f.code == "CHECKS_SKIPPED")
    assert skipped.severity == "warning"
    assert "pass (X, y)" in skipped.evidence["skipped"]["gradient_flow"]


# -- every check runs standalone -------------------------------------------------------------


def test_labels_alone_sees_labels_beyond_the_output_width(data):
    """Before: checks=["labels"] missed labels >= C (it read another check's cache)."""
    x, y = data
    diagnosis = bs.diagnose(mlp(), (x, y + 5), checks=["labels"])
    assert "LABELS_OUT_OF_RANGE" in diagnosis.codes


def test_double_softmax_alone_sees_probabilities(data):
    torch.manual_seed(0)
    net = nn.Sequential(bs.nn.mlp(40, [64], 10), nn.Softmax(dim=1))
    assert "DOUBLE_SOFTMAX" in bs.diagnose(net, data, checks=["output_kind"]).codes


def test_initial_loss_alone_sees_a_mismatch(data):
    torch.manual_seed(0)
    net = bs.nn.init_model(bs.nn.mlp(40, [64], 10), "normal", std=1.0)
    assert "INIT_LOSS_MISMATCH" in bs.diagnose(net, data, checks=["initial_loss"]).codes


# -- UNREGISTERED_PARAMS ---------------------------------------------------------------------


class ListOfLayers(nn.Module):
    def __init__(self, registered: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers = [nn.Linear(40, 64), nn.Linear(64, 64)]
        self.blocks = nn.ModuleList(layers) if registered else layers
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        for block in self.blocks:
            x = torch.relu(block(x))
        return self.head(x)


class MadeInForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = bs.nn.mlp(40, [64], 10)

    def forward(self, x):
        scale = torch.ones(10, requires_grad=True)  # a "parameter" no optimizer sees
        return self.net(x) * scale


def test_layers_in_a_python_list_are_unregistered_params(data):
    diagnosis = bs.diagnose(ListOfLayers(registered=False), data, lr=1e-3)
    found = next(f for f in diagnosis if f.code == "UNREGISTERED_PARAMS")
    assert found.severity == "error" and found.layer == "blocks"
    assert found.evidence["count"] == 4 and "nn.ModuleList" in found.advice
    assert not diagnosis.ok


def test_a_module_list_is_silent(data):
    diagnosis = bs.diagnose(ListOfLayers(registered=True), data, lr=1e-3)
    assert [f.code for f in diagnosis if f.severity != "info"] == []


def test_a_tensor_created_in_forward_is_unregistered(data):
    diagnosis = bs.diagnose(MadeInForward(), data, checks=["unregistered_params"])
    found = next(f for f in diagnosis if f.code == "UNREGISTERED_PARAMS")
    assert found.evidence["shapes"] == [[10]] and "created in forward" in found.message


def test_a_loss_with_its_own_parameters_is_not_unregistered(data):
    class Weighted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.temperature = nn.Parameter(torch.ones(()))

        def forward(self, output, target):
            return nn.functional.cross_entropy(output / self.temperature, target)

    diagnosis = bs.diagnose(mlp(), data, loss_fn=Weighted(), checks=["unregistered_params"])
    assert "UNREGISTERED_PARAMS" not in diagnosis.codes


def test_inputs_that_require_grad_are_not_unregistered_params(data):
    x, y = data
    diagnosis = bs.diagnose(mlp(), (x.clone().requires_grad_(True), y), lr=1e-3)
    assert "UNREGISTERED_PARAMS" not in diagnosis.codes


def test_every_default_check_alone_finds_what_it_finds_in_the_full_run(data):
    """A check selected by name computes what it needs itself (no other check's cache)."""
    from babysit.checks import list_checks

    x, y = data

    def run(checks):
        torch.manual_seed(0)
        net = bs.nn.init_model(bs.nn.mlp(40, [64, 64], 10, activation="tanh"), "normal", std=1.0)
        return bs.diagnose(
            net, (x * 20, y + 1), checks=checks, lr=3.0, optimizer="sgd", weight_decay=1.0
        )

    full = run("default")
    assert {"LABELS_OUT_OF_RANGE", "SATURATED_ACTIVATIONS", "DATA_SCALE"} <= full.codes
    default = {name: spec for name, spec in list_checks().items() if not spec.slow}
    for name, spec in default.items():
        # A code that another default check emits too (SATURATED_ACTIVATIONS: saturation and
        # recurrent_saturation) cannot be attributed in the full run: there the check alone
        # must find a subset; every code only this check emits must be found exactly.
        shared = {c for other, s in default.items() if other != name for c in s.codes}
        alone = {(f.code, f.layer) for f in run([name]) if f.code in spec.codes}
        in_full = {(f.code, f.layer) for f in full if f.code in spec.codes}
        assert alone <= in_full, name
        assert {p for p in alone if p[0] not in shared} == {
            p for p in in_full if p[0] not in shared
        }, name


def test_one_check_named_as_a_string_still_runs_after_the_execution_checks():
    """``checks="gradient_flow"`` on a model that cannot run was ok=True with no finding (the
    list form added forward_runs/loss_runs, the string form did not)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3))  # the data has 8 features
    data = (torch.randn(256, 8), torch.randint(0, 3, (256,)))
    for name in ("gradient_flow", "symmetric_init"):
        diagnosis = bs.diagnose(model, data, checks=name)
        assert not diagnosis.ok and "FORWARD_FAILED" in diagnosis.codes, name


class _InPlaceOnWeight(nn.Module):
    """Runs under no_grad, raises under autograd (an in-place change of a leaf parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fc.weight.mul_(1.0)
        return self.fc(x)


def test_a_model_that_fails_only_with_gradients_on_is_an_error_not_ok():
    torch.manual_seed(0)
    data = (torch.randn(256, 8), torch.randint(0, 3, (256,)))
    diagnosis = bs.diagnose(_InPlaceOnWeight(), data, lr=1e-3)
    assert not diagnosis.ok
    failed = [f for f in diagnosis if f.code == "FORWARD_FAILED"]
    assert failed and "with gradients on" in failed[0].message


def test_namedtuple_batches_are_sliced_and_mapped():
    from collections import namedtuple

    from babysit.outputs import map_tensors, take

    Batch = namedtuple("Batch", "x y")
    batch = Batch(torch.arange(6.0).reshape(3, 2), torch.arange(3))
    part = take(batch, slice(0, 2))
    assert isinstance(part, Batch) and part.x.shape == (2, 2) and part.y.tolist() == [0, 1]
    doubled = map_tensors(batch, lambda t: t * 2)
    assert isinstance(doubled, Batch) and doubled.y.tolist() == [0, 2, 4]
