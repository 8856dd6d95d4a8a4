"""``bs.fix``: the verification rule, the user's objects untouched, raw inputs accepted, healthy
set-ups left alone, and what cannot be repaired named with the change to make."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import babysit as bs
from babysit.repair import ORDER, REMEDIES, Change, Remedy, Skip, format_repair
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
    (step,) = [s for s in repair.steps if s.accepted]
    assert step.code == "SATURATED_ACTIVATIONS"
    assert step.remedy.split(" + ")[0] in ORDER["SATURATED_ACTIVATIONS"]
    assert step.evidence["val_loss_after"] < step.evidence["val_loss_before"]
    assert repair.patch == list(step.patch) and any("init_model" in p for p in repair.patch)
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


@pytest.mark.parametrize(
    ("case", "code"),
    [("lr_huge", "NAN_LOSS"), ("raw_digits", "DATA_NOT_CENTERED")],  # saturation: above
)
def test_catalogue_set_ups_are_repaired(case, code):
    from babysit.checks.catalogue import CASES

    model, data, kwargs = CASES[case].build()
    repair = bs.fix(model, data, **kwargs)
    assert code in repair.fixed and repair.ok and repair.changed
    accepted = [s for s in repair.steps if s.accepted]
    assert all(s.evidence["val_loss_after"] < (s.evidence["val_loss_before"] or float("inf"))
               for s in accepted)  # fmt: skip


@pytest.mark.parametrize(("retuned_loss", "kept"), [(0.5, True), (0.795, False)])
def test_the_lr_retuned_for_a_scale_changing_remedy_is_kept_only_when_better(
    data, monkeypatch, retuned_loss, kept
):
    def half(setup, finding):
        setup.model[2].p = 0.5
        return Change(setup, ("model[2].p = 0.5",))

    def fixed_lr(setup, finding):
        setup.options["lr"] = 0.0123
        return Change(setup, ("lr=0.0123",))

    def run(self, setup):  # reference 1.0, the remedy alone 0.8, with the retuned lr: param
        if setup.model[2].p == 0.9:
            return RunResult(1.0)
        return RunResult(retuned_loss if setup.options["lr"] == 0.0123 else 0.8)

    monkeypatch.setitem(REMEDIES, "half", Remedy("half", "test", half, retune_lr=True))
    monkeypatch.setitem(REMEDIES, "lr_sweep", Remedy("lr_sweep", "test", fixed_lr))
    monkeypatch.setattr(ShortRun, "run", run)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 4))
    repair = bs.fix(model, data, _order=lambda code, names: ["half"], **FAST)
    (step,) = repair.steps
    assert step.accepted and step.evidence["val_loss_with_lr_retuned"] == retuned_loss
    assert (step.remedy == "half + lr_sweep") is kept
    assert repair.config["lr"] == (0.0123 if kept else 1e-3)
    assert step.evidence["val_loss_after"] == (retuned_loss if kept else 0.8)


def test_a_repeated_setting_reads_as_its_final_value():
    from babysit.repair.loop import merge_patch

    lines = merge_patch(["weight_decay=10", "model[2].p = 0.5"], ["weight_decay=1"])
    assert lines == ["weight_decay=1", "model[2].p = 0.5"]
    assert merge_patch(["lr=0.1"], ["lr=0.02 (the LR range test's suggestion)"]) == [
        "lr=0.02 (the LR range test's suggestion)"
    ]
    assert merge_patch(["scale x 0.1"], ["scale x 0.1"]) == ["scale x 0.1", "scale x 0.1"]


def test_weight_decay_is_lowered_until_it_no_longer_dominates(data):
    repair = bs.fix(mlp(), data, weight_decay=100.0, **FAST)
    (step,) = [s for s in repair.steps if s.accepted]
    assert step.remedy == "weight_decay_down"
    assert repair.patch == [f"weight_decay={repair.config['weight_decay']:.2g}"]
    assert repair.config["weight_decay"] < 10 and "REG_TOO_STRONG" in repair.fixed


def test_every_remedy_of_a_code_is_tried_and_the_best_verified_one_kept(data, monkeypatch):
    def to(p):
        def apply(setup, finding):
            setup.model[2].p = p
            return Change(setup, (f"model[2].p = {p}",))

        return apply

    def run(self, setup):  # lower p trains better here: 0.9 -> 1.0, 0.5 -> 0.8, 0.3 -> 0.6
        return RunResult({0.9: 1.0, 0.5: 0.8, 0.3: 0.6}[setup.model[2].p])

    monkeypatch.setitem(REMEDIES, "half", Remedy("half", "test", to(0.5)))
    monkeypatch.setitem(REMEDIES, "third", Remedy("third", "test", to(0.3)))
    monkeypatch.setitem(ORDER, "DROPOUT_TOO_HIGH", ("half", "third"))
    monkeypatch.setattr(ShortRun, "run", run)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 4))
    repair = bs.fix(model, data, **FAST)
    half, third = repair.steps
    assert third.accepted and not half.accepted
    assert half.evidence["rejected"] == "verified, but third trained better (validation loss 0.6)"
    assert repair.patch == ["model[2].p = 0.3"] and repair.model[2].p == 0.3
    first = bs.fix(model, data, _best_of=False, **FAST)  # AUTOTRAINER's rule: the first
    assert [s.accepted for s in first.steps] == [True] and first.model[2].p == 0.5


def test_without_an_lr_the_optimizers_default_is_judged_and_trained_with(data):
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 4))
    repair = bs.fix(model, data, optimizer="momentum", _steps=60)
    assert repair.config == {"optimizer": "momentum", "lr": 0.01, "weight_decay": 0.0}
    assert "LR_SUGGESTION" not in repair.before.codes  # no range test: the lr is given
    assert "LR_SUGGESTION" in bs.diagnose(model, data, optimizer="momentum", progress=False).codes


def test_repair_patch_reads_a_setting_accepted_twice_once_as_its_final_value():
    """A data remedy retuned with lr=0.097, then an init remedy with lr=0.022: one lr line."""
    from babysit.findings import Diagnosis
    from babysit.repair import Repair, RepairStep

    steps = [
        RepairStep("DATA_NOT_CENTERED", "zero_center", True, {}, ("center the inputs", "lr=0.097")),
        RepairStep("SATURATED_ACTIVATIONS", "relu_he", True, {}, ("use ReLU", "lr=0.022")),
        RepairStep("INIT_LOSS_MISMATCH", "zero_output", False, {}, ("lr=0.5",)),
    ]
    repair = Repair(
        model=nn.Linear(2, 2),
        config={},
        steps=steps,
        before=Diagnosis([]),
        after=Diagnosis([]),
        remaining=[],
    )
    assert repair.patch == ["center the inputs", "lr=0.022", "use ReLU"]
