"""diagnose's contract: data forms, options, bad input with clear errors, nothing modified."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import babysit as bs
from babysit.checks.catalogue import mnist1d_standardized


@pytest.fixture
def data():
    x, y = mnist1d_standardized()
    return x[:600], y[:600]


def model():
    torch.manual_seed(0)
    return bs.nn.mlp(40, [64], 10)


def test_all_data_forms_give_the_same_silent_verdict(data):
    x, y = data
    forms = [
        (x, y),
        (x.numpy(), y.numpy()),
        TensorDataset(x, y),
        DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True),
    ]
    for form in forms:
        diagnosis = bs.diagnose(model(), form, lr=1e-3)
        assert [f.code for f in diagnosis if f.severity != "info"] == [], type(form)


def test_regression_with_a_loss_fn_skips_classification_checks(data):
    x, _ = data
    target = x[:, :3].sum(1, keepdim=True)
    diagnosis = bs.diagnose(bs.nn.mlp(40, [64], 1), (x, target), loss_fn=nn.MSELoss(), lr=1e-3)
    assert not {"LABELS_NOT_INTEGER", "INIT_LOSS_MISMATCH", "DOUBLE_SOFTMAX"} & diagnosis.codes


def test_run_dir_gets_findings_json(data, tmp_path):
    bs.diagnose(bs.nn.init_model(model(), "zeros"), data, lr=1e-3, run_dir=tmp_path)
    document = json.loads((tmp_path / "findings.json").read_text())
    assert document["schema"] == 1 and document["ok"] is False
    assert "SYMMETRIC_INIT" in {f["code"] for f in document["findings"]}


def test_ignore_silences_codes(data):
    zero = bs.nn.init_model(model(), "zeros")
    diagnosis = bs.diagnose(zero, data, lr=1e-3, ignore=["SYMMETRIC_INIT"])
    assert "SYMMETRIC_INIT" not in diagnosis.codes


def test_thresholds_override_changes_the_verdict(data):
    x, y = data
    strict = bs.diagnose(model(), (x * 3, y), lr=1e-3, thresholds={"data_rms_scale": 1.0})
    assert "DATA_SCALE" in strict.codes


def test_tiny_budget_skips_and_says_so(data):
    diagnosis = bs.diagnose(model(), data, budget_s=1e-9)
    skipped = [f for f in diagnosis if f.code == "CHECKS_SKIPPED"]
    assert len(skipped) == 1 and "budget_s" in skipped[0].message + str(skipped[0].evidence)


def test_a_failing_check_is_reported_not_raised(data, monkeypatch):
    from babysit.checks import REGISTRY
    from babysit.checks._base import CheckSpec

    def broken(ctx):
        raise ZeroDivisionError("boom")

    monkeypatch.setenv("BABYSIT_STRICT_CHECKS", "0")
    spec = REGISTRY["saturation"]
    monkeypatch.setitem(REGISTRY, "saturation", CheckSpec(**{**spec.__dict__, "run": broken}))
    diagnosis = bs.diagnose(model(), data, lr=1e-3)
    skipped = next(f for f in diagnosis if f.code == "CHECKS_SKIPPED")
    assert "ZeroDivisionError: boom" in str(skipped.evidence)


def test_user_model_mode_and_rng_are_untouched(data):
    net = bs.nn.mlp(40, [64], 10, batchnorm=True, dropout=0.2)
    net.eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    np_state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state()
    bs.diagnose(net, data, checks="all")
    assert not net.training
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert (np.random.get_state()[1] == np_state).all()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda d: bs.diagnose("model", d), TypeError, "needs an nn.Module"),
        (lambda d: bs.diagnose(model(), (d[0][:0], d[1][:0])), ValueError, "data is empty"),
        (lambda d: bs.diagnose(model(), (d[0], d[1][:10])), ValueError, "differ in length"),
        (lambda d: bs.diagnose(model(), d, optimizer="adamax2"), ValueError, "unknown optimizer"),
        (lambda d: bs.diagnose(model(), d, lr=-1.0), ValueError, "lr must be positive"),
        (lambda d: bs.diagnose(model(), d, checks="fast"), ValueError, "checks must be"),
        (lambda d: bs.diagnose(model(), d, checks=["nope"]), ValueError, "unknown checks"),
        (lambda d: bs.diagnose(model(), d, thresholds={"x": 1}), ValueError, "unknown threshold"),
        (lambda d: bs.diagnose(model(), {"x": 1}), TypeError, "data must be"),
    ],
)
def test_bad_input_gives_one_clear_error(data, call, error, match):
    with pytest.raises(error, match=match):
        call(data)


def test_optimizer_factory_is_used(data):
    built = []

    def factory(params):
        built.append(True)
        return torch.optim.SGD(params, lr=1e-6)

    diagnosis = bs.diagnose(model(), data, optimizer=factory)
    assert built, "the factory builds the optimizer of the training checks"
    assert "LR_TOO_LOW" in diagnosis.codes  # its own lr=1e-6 is judged


def test_optimizer_factory_must_return_an_optimizer(data):
    with pytest.raises(TypeError, match=r"not a torch\.optim\.Optimizer"):
        bs.diagnose(model(), data, optimizer=lambda params: "sgd", checks=["learning_rate"])


# -- issue 13, item 9: ignore= and budget_s are checked like fit's options ---------------------


def test_unknown_ignore_code_is_rejected_with_close_matches(data, tmp_path):
    """fit rejects unknown codes; diagnose silenced nothing, silently. Nothing is written."""
    with pytest.raises(ValueError, match=r"'DEAD_RELUS' \(did you mean DEAD_RELU\?\)"):
        bs.diagnose(model(), data, ignore=["DEAD_RELUS"], run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_fit_and_diagnose_reject_an_unknown_code_with_the_same_message(data):
    with pytest.raises(ValueError) as from_diagnose:
        bs.diagnose(model(), data, lr=1e-3, ignore="NAN_LOSSES")
    with pytest.raises(ValueError) as from_fit:
        bs.fit(model(), data, epochs=1, ignore=["NAN_LOSSES"], progress=False)
    assert str(from_diagnose.value) == str(from_fit.value)
    assert "did you mean NAN_LOSS" in str(from_fit.value)


@pytest.mark.parametrize("budget", [-1, -1e-9, float("nan")])
def test_negative_budget_is_an_error_not_an_ok(data, budget, tmp_path):
    """--budget -1 skipped every check and reported ok=True."""
    net = model()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="budget_s must be >= 0"):
        bs.diagnose(net, data, budget_s=budget, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_a_budget_too_small_to_run_anything_is_a_warning(data):
    """Nothing checked must not read as a quiet info line next to ok=True."""
    diagnosis = bs.diagnose(model(), data, budget_s=0)
    assert [f.code for f in diagnosis] == ["CHECKS_SKIPPED"]
    skipped = diagnosis.findings[0]
    assert skipped.severity == "warning" and "nothing was checked" in skipped.message


def test_a_budget_that_runs_some_checks_keeps_the_skip_at_info(data, monkeypatch):
    from babysit import checks

    clock = iter(range(1000))
    monkeypatch.setattr(checks.time, "perf_counter", lambda: float(next(clock)))
    diagnosis = bs.diagnose(model(), data, lr=1e-3, budget_s=3)  # each check "takes" 1 s
    skipped = next(f for f in diagnosis if f.code == "CHECKS_SKIPPED")
    assert skipped.severity == "info" and len(skipped.evidence["skipped"]) > 0


def test_int32_labels_are_read_as_class_indices(data):
    x, y = data
    as_int64 = bs.diagnose(model(), (x, y), lr=1e-3, checks=["initial_loss"])
    as_int32 = bs.diagnose(model(), (x, y.int()), lr=1e-3, checks=["initial_loss"])
    assert as_int32.to_dict() == as_int64.to_dict()
