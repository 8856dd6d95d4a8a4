"""What a run through the bridge records, step by step: pinned so that the bridge's one-process
fast path and the monitors' cheaper step hooks (docs/architecture.md, "Integrations") keep
every finding, metric row, step and saved state of the general path.

The reference is ``babysit.watch``: the same monitors driven by the optimizer's own hooks and
``observe`` (the general path, shared with DDP), on an identical model, data and losses.
"""

from __future__ import annotations

import math

import pytest
import torch

from babysit import runs
from babysit.integrations._bridge import Bridge, check_options
from babysit.train.watch import Watcher

from .conftest import mlp

STEPS = 230  # the activation probe samples steps 0, 100, 200; the update ratio 0-9 and 50k


def _model_and_data():
    torch.manual_seed(0)
    model = mlp(8, 16, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    return model, opt, x, y


def _reported(step: int, loss: float, blow_up: int | None) -> float:
    """The loss the loop reports: the real one, or, from ``blow_up`` on, 100x it."""
    return loss * 100 if blow_up is not None and step >= blow_up else loss


def _run_watch(run_dir, blow_up=None, on_nan=None):
    model, opt, x, y = _model_and_data()
    watcher = Watcher(model, opt, run_dir=run_dir)
    for step in range(STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        value = math.nan if step == on_nan else _reported(step, loss.item(), blow_up)
        watcher.observe(value)
        loss.backward()
        opt.step()
        if step % 32 == 31:
            watcher.end_epoch(val_acc=0.5, train_acc=0.5 + step / 1000)
    watcher.close()
    return watcher, model


def _run_bridge(run_dir, blow_up=None, on_nan=None, on_error="warn"):
    model, opt, x, y = _model_and_data()
    options = check_options(
        monitors="default", run_dir=run_dir, on_error=on_error, thresholds=None, ignore=()
    )
    bridge = Bridge(model, [opt], options=options, run_dir=run_dir, framework="watch")
    for step in range(STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        value = math.nan if step == on_nan else _reported(step, loss.item(), blow_up)
        bridge.add_loss(value)
        loss.backward()
        bridge.before_update()
        opt.step()
        bridge.end_step()
        if step % 32 == 31:
            bridge.end_epoch(val_acc=0.5, train_acc=0.5 + step / 1000)
    bridge.close()
    return bridge, model


def _rows(run_dir):
    """metrics.csv's rows, NaN-comparable (``repr``)."""
    return [repr(row) for row in runs.read_metrics(run_dir)]


def _findings(session):
    return [f.to_dict() for f in session.findings]


@pytest.mark.parametrize(
    "case", [{}, {"blow_up": 150}, {"on_nan": 120}], ids=["healthy", "break-out", "nan"]
)
def test_bridge_records_what_watch_records(tmp_path, case):
    watcher, w_model = _run_watch(tmp_path / "watch", **case)
    bridge, b_model = _run_bridge(tmp_path / "bridge", **case)
    assert _findings(bridge) == _findings(watcher)
    assert bridge.stop_reason == watcher.stop_reason
    assert _rows(tmp_path / "bridge") == _rows(tmp_path / "watch")
    assert bridge.step == watcher.step == STEPS
    for a, b in zip(w_model.parameters(), b_model.parameters(), strict=True):
        assert torch.equal(a, b)  # "warn": the bridge changed nothing the loop computes
    if case:
        assert bridge.stop_reason in ("NAN_LOSS", "LR_TOO_HIGH")


def test_the_monitors_sample_the_documented_steps(tmp_path):
    _run_bridge(tmp_path / "run")
    rows = runs.read_metrics(tmp_path / "run")
    steps_of = {}
    for r in rows:
        steps_of.setdefault(r["name"].split("/")[0], set()).add(r["step"])
    assert steps_of["loss"] >= set(range(STEPS))  # every step, plus the epochs' rows
    assert [r["step"] for r in rows if r["name"] == "loss" and r["split"] == "train"][
        :STEPS
    ] == list(range(STEPS))
    assert steps_of["update_ratio"] == set(range(10)) | {50, 100, 150, 200}
    assert steps_of["dead_fraction"] == steps_of["grad_norm"] == {0, 100, 200}


def test_rollback_restores_the_snapshot_of_the_last_multiple_of_25(tmp_path):
    """The guard snapshots the good state at steps 0, 25, 50, ...: a blow-up at step 62 goes
    back to step 50's weights (taken before step 50's update) and divides the lr by 10."""
    model, opt, x, y = _model_and_data()
    options = check_options(
        monitors="default", run_dir=None, on_error="rollback", thresholds=None, ignore=()
    )
    bridge = Bridge(model, [opt], options=options, run_dir=None, framework="test")
    at_50 = None
    for step in range(70):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        bridge.add_loss(loss.item() * (100 if step == 62 else 1))
        loss.backward()
        if step == 50:
            at_50 = [p.detach().clone() for p in model.parameters()]
        bridge.before_update()
        if step == 62:
            assert all(torch.equal(a, p) for a, p in zip(at_50, model.parameters(), strict=True))
        opt.step()
        bridge.end_step()
    assert [(f.code, f.step) for f in bridge.findings] == [("LR_TOO_HIGH", 62)]
    assert bridge.rollbacks == 1 and opt.param_groups[0]["lr"] == pytest.approx(0.005)
    assert bridge.step == 70 and not bridge.stop_requested
    state = bridge.state()
    assert state["step"] == 70 and state["rollbacks"] == 1
    assert state["callbacks"]["LossGuard"]["rollbacks"] == 1
    assert state["callbacks"]["UpdateRatio"]["medians"]  # sampled steps 0-9 and 50


def test_an_unsampled_step_runs_few_of_babysits_functions():
    """The per-step cost, counted rather than timed: in one process a step the monitors do
    not sample (steps 30-39: no snapshot, update ratio or probe) calls only the bridge's own
    protocol and each monitor's step hook once (the general path, through observe, settle,
    the loss share and the Watcher's hooks, took 40 calls; now 17)."""
    import sys
    from pathlib import Path

    import babysit

    package = str(Path(babysit.__file__).parent)
    model, opt, _, _ = _model_and_data()
    options = check_options(
        monitors="default", run_dir=None, on_error="stop", thresholds=None, ignore=()
    )
    bridge = Bridge(model, [opt], options=options, run_dir=None, framework="test")
    calls: list[str] = []

    def count(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(package):
            calls.append(frame.f_code.co_name)

    try:
        for step in range(40):
            if step == 30:
                sys.setprofile(count)
            bridge.add_loss(1.0)
            bridge.before_update()
            opt.step()
            bridge.end_step()
    finally:
        sys.setprofile(None)
    assert bridge.step == 40 and not bridge.findings
    # add_loss, before_update, _take_loss, _judge, _judge_one, LossGuard/LossCurve.on_loss,
    # log, Steps.pre, UpdateRatio._pre, EvalMode._step_hook, _real_stepped, end_step,
    # Steps.post, UpdateRatio._post, ActivationStats.on_train_batch_end, Probe.current_step
    assert len(calls) / 10 <= 17, sorted(set(calls))
