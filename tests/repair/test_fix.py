"""``bs.fix``: the verification rule, the user's objects untouched, raw inputs accepted, healthy
set-ups left alone, and what cannot be repaired named with the change to make."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import babysit as bs
from babysit.repair import REMEDIES, Change, Remedy, Skip, format_repair
from babysit.repair.modules import FittedScaler
from babysit.repair.verify import RunResult, ShortRun, better

from .conftest import FAST, loud, mlp, state_hash


def test_a_healthy_set_up_is_left_alone_and_says_so(data):
    model = mlp()
    digest = state_hash(model)
    repair = bs.fix(model, data, **FAST)
    assert repair.steps == [] and not repair.changed and repair.ok
    assert repair.patch == [] and repair.fixed == [] and repair.remaining == []
    assert state_hash(repair.model) == digest and repair.model is not model
    assert repair.config == {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}
    assert "nothing to repair, nothing changed" in format_repair(repair)


def test_saturation_is_repaired_verified_and_the_users_model_untouched(data):
    model = bs.nn.init_model(mlp(nn.Tanh), "normal", std=1.0)
    x, y = data
    x_before, y_before, digest = x.clone(), y.clone(), state_hash(model)
    rng = torch.random.get_rng_state()
    repair = bs.fix(model, data, **FAST)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global generator too
    assert state_hash(model) == digest  # the user's model
    assert torch.equal(x, x_before) and torch.equal(y, y_before)  # and data
    assert "SATURATED_ACTIVATIONS" in repair.fixed and repair.ok
    step = next(s for s in repair.steps if s.accepted)
    assert step.code == "SATURATED_ACTIVATIONS" and step.remedy.startswith("reinit")
    assert step.evidence["val_loss_after"] < step.evidence["val_loss_before"]
    assert repair.patch[0] == 'bs.nn.init_model(model, "xavier")'
    assert "SATURATED_ACTIVATIONS" not in loud(repair.after)
    assert state_hash(repair.model) != digest
    assert repair.curves["before"] and repair.curves["after"]


def test_the_repaired_model_takes_the_raw_inputs(data):
    x, y = data
    raw = (x * 50 + 128, y)
    model = mlp()
    repair = bs.fix(model, raw, **FAST)
    assert {"DATA_SCALE", "DATA_NOT_CENTERED"} <= set(repair.fixed)
    assert isinstance(repair.model[0], FittedScaler)
    with torch.no_grad():
        loss_repaired = F.cross_entropy(repair.model(raw[0]), y).item()
        loss_inner = F.cross_entropy(repair.model[1](x), y).item()
    assert loss_repaired == pytest.approx(loss_inner, rel=1e-3)  # raw in = standardized inside
    assert torch.equal(raw[0], x * 50 + 128)


def test_a_remedy_that_removes_the_finding_but_trains_worse_is_rejected(data, monkeypatch):
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 4))
    calls = []

    def run(self, setup):  # the reference trains to 1.0, every candidate to 2.0
        calls.append(setup)
        first = len(calls) == 1
        assert setup.model is not model  # the reference run trains a copy too
        return RunResult(1.0 if first else 2.0, [[0, 2.3], [60, 1.0 if first else 2.0]])

    monkeypatch.setattr(ShortRun, "run", run)
    repair = bs.fix(model, data, **FAST)
    (step,) = repair.steps
    assert step.code == "DROPOUT_TOO_HIGH" and step.remedy.startswith("dropout_half")
    assert not step.accepted
    assert step.evidence["finding_gone"] is True and step.evidence["new_findings"] == []
    assert step.evidence["val_loss_after"] == 2.0 and step.evidence["val_loss_before"] == 1.0
    assert "not lower" in step.evidence["rejected"]
    assert repair.patch == [] and not repair.changed
    assert [r.code for r in repair.remaining] == ["DROPOUT_TOO_HIGH"]
    assert "rejected" in repair.remaining[0].reason
    assert repair.model[2].p == 0.9  # the rejected edit is not in the result
    assert len(calls) == 2 and calls[1].model[2].p == 0.5


def test_better_needs_a_margin_and_a_finite_loss():
    assert better(0.5, 1.0) and not better(0.999, 1.0) and not better(1.0, 1.0)
    assert better(1e6, float("inf")) and not better(float("inf"), 1.0)
    assert not better(float("nan"), 1.0)
    assert better(-2.0, -1.0) and not better(-1.0005, -1.0)  # negative losses: scale |loss|


def test_the_order_can_be_injected(data, monkeypatch):
    def worse(setup, finding):
        raise Skip("never applies")

    monkeypatch.setitem(REMEDIES, "never", Remedy("never", "a test remedy", worse))
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 4))
    repair = bs.fix(model, data, _order=lambda code, names: ["never", *names], **FAST)
    assert [s.remedy for s in repair.steps][:2] == ["never", "dropout_half"]
    assert repair.steps[0].evidence == {"skipped": "never applies"}
    assert repair.ok


def test_a_functional_output_activation_is_skipped_with_the_reason(data):
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = mlp()

        def forward(self, x):
            return F.softmax(self.fc(x), dim=1)

    repair = bs.fix(Functional(), data, **FAST)
    step = next(s for s in repair.steps if s.code == "DOUBLE_SOFTMAX")
    assert not step.accepted and "functional call in forward" in step.evidence["skipped"]
    left = next(r for r in repair.remaining if r.code == "DOUBLE_SOFTMAX")
    assert left.severity == "error" and "DOUBLE_SOFTMAX" not in repair.fixed
    assert not repair.ok


def test_a_model_that_does_not_run_is_remaining_not_a_traceback(data):
    model = nn.Sequential(nn.Linear(64, 4))  # 20 features in the data
    digest = state_hash(model)
    repair = bs.fix(model, data, **FAST)
    assert not repair.ok and repair.steps == [] and repair.fixed == []
    left = next(r for r in repair.remaining if r.code == "FORWARD_FAILED")
    assert left.severity == "error" and left.line.startswith("model")
    assert "cannot train" in left.reason
    assert state_hash(model) == digest


def test_blocking_errors_list_the_remedies_not_tried(data):
    x, y = data
    raw = (x * 50 + 128, y % 3 + 3)  # labels 3..5 for a 4-output model, and raw inputs
    repair = bs.fix(mlp(), raw, **FAST)
    assert "LABELS_OUT_OF_RANGE" in {r.code for r in repair.remaining}
    assert repair.steps == []
    assert {"code": "DATA_SCALE", "remedy": "standardize_inputs",
            "reason": "blocked by LABELS_OUT_OF_RANGE"} in repair.not_tried  # fmt: skip


def test_unrepairable_findings_name_the_module_and_the_change(data):
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(20, 32), nn.ReLU())
            self.head = nn.Linear(32, 4)

        def forward(self, x):
            return self.head(self.body(x).detach())

    repair = bs.fix(Detached(), data, **FAST)
    left = next(r for r in repair.remaining if r.code == "PARAMS_WITHOUT_GRAD")
    assert ".detach()" in left.line and "no automatic remedy" in left.reason
    assert "PARAMS_WITHOUT_GRAD" not in repair.fixed and not repair.ok


def test_a_zero_budget_tries_nothing_and_lists_what_was_not_tried(data):
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 4))
    repair = bs.fix(model, data, budget_s=0, **FAST)
    assert repair.steps == [] and not repair.ok
    assert {"code": "DROPOUT_TOO_HIGH", "remedy": "dropout_half",
            "reason": "not tried: budget_s was spent"} in repair.not_tried  # fmt: skip
    assert repair.remaining[0].reason == "not tried: budget_s was spent"
    assert "Not tried: dropout_half (DROPOUT_TOO_HIGH)" in format_repair(repair)


def test_a_negative_budget_is_refused_and_writes_nothing(data, tmp_path):
    model = mlp()
    digest = state_hash(model)
    with pytest.raises(ValueError, match="budget_s must be >= 0"):
        bs.fix(model, data, budget_s=-1, run_dir=tmp_path / "run", **FAST)
    assert not (tmp_path / "run").exists() and state_hash(model) == digest


def test_fix_json_is_written_with_schema_1(data, tmp_path):
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 4))
    repair = bs.fix(model, data, run_dir=tmp_path, **FAST)
    document = json.loads((tmp_path / "fix.json").read_text())
    assert document == json.loads(repair.to_json())
    assert document["schema"] == 1 and document["ok"] is True
    assert document["fixed"] == ["DROPOUT_TOO_HIGH"]
    assert document["patch"] == ["model[2].p = 0.5 (was 0.9)"]
    assert document["before"]["findings"] and document["after"]["findings"] == []
    assert [p.name for p in tmp_path.iterdir()] == ["fix.json"]  # atomic: no temporary left


def test_a_finding_the_remedy_uncovers_is_repaired_with_it_and_verified_together(data, monkeypatch):
    def half_and_slow(setup, finding):  # fixes the dropout but leaves an lr that barely moves
        setup.model[2].p = 0.5
        setup.options.update(optimizer="sgd", lr=1e-6)
        return Change(setup, ("model[2].p = 0.5", "optimizer='sgd', lr=1e-6"))

    monkeypatch.setitem(REMEDIES, "half_and_slow", Remedy("half_and_slow", "test", half_and_slow))
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 4))

    def order(code, names):
        return ["half_and_slow"] if code == "DROPOUT_TOO_HIGH" else names

    repair = bs.fix(model, data, _order=order, **FAST)
    (step,) = repair.steps
    assert step.remedy == "half_and_slow + lr_range_test" and step.accepted
    assert step.evidence["new_findings"] == [] and step.evidence["finding_gone"]
    assert repair.config["optimizer"] == "sgd" and repair.config["lr"] > 1e-4
    assert repair.patch[-1].startswith(f"lr={repair.config['lr']:.2g}")
    assert repair.ok


def test_nothing_is_trained_when_no_finding_has_a_remedy(data, monkeypatch):
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(20, 32), nn.ReLU())
            self.head = nn.Linear(32, 4)

        def forward(self, x):
            return self.head(self.body(x).detach())

    def run(self, setup):
        raise AssertionError("a short run with nothing to verify")

    monkeypatch.setattr(ShortRun, "run", run)
    repair = bs.fix(Detached(), data, **FAST)
    assert repair.steps == [] and repair.curves == {}
    assert {r.code for r in repair.remaining} >= {"PARAMS_WITHOUT_GRAD"}


def test_a_remedy_that_crashes_on_an_unusual_model_is_recorded_not_raised(data, monkeypatch):
    def crashes(setup, finding):
        raise RuntimeError("cannot handle this model")

    monkeypatch.setitem(REMEDIES, "crashes", Remedy("crashes", "a test remedy", crashes))
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 4))
    repair = bs.fix(model, data, _order=lambda code, names: ["crashes", *names], **FAST)
    assert repair.steps[0].evidence == {
        "skipped": "the remedy failed on this model: RuntimeError: cannot handle this model"
    }
    assert repair.steps[1].accepted and repair.ok
