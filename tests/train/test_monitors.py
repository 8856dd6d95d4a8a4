"""Monitors: each rule fires on the run it describes, stays silent on healthy runs, and the loss
guard keeps the good progress (rollback, lower LR, continue)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import babysit as bs
from babysit import runs
from babysit.train import Callback
from babysit.train.monitors import (
    ActivationStats,
    EvalMode,
    Generalization,
    LossCurve,
    LossGuard,
    UpdateRatio,
)
from babysit.train.monitors.loss import oscillation, plateau_then_drop
from babysit.train.session import Session

from .conftest import small_mlp


def _warnings(history) -> list[str]:
    return sorted(f.code for f in history.findings if f.severity != "info")


class NaNAt(nn.Module):
    """Wraps a model; its ``k``-th training forward returns NaN (a bad batch, log(0), ...).
    Forwards without gradients (fit measuring the start, activation snapshots) do not count."""

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model, self.k, self.calls = model, k, 0

    def forward(self, x):
        out = self.model(x)
        if self.training and torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.k + 1:
                return out * float("nan")
        return out


# -- the loss guard ----------------------------------------------------------------------------


def test_loss_guard_judges_against_the_start_it_holds_now():
    """The guard keeps the divergence limit of its start between steps; a start loaded from a
    saved state (a resumed run), or new thresholds at a new fit, are judged by their own limit
    (babysit.divergence.diverged), never by the one kept."""
    from babysit.divergence import diverged

    def session(**thresholds):
        model = nn.Linear(2, 2)
        run = Session(model, torch.optim.SGD(model.parameters(), lr=0.1))
        run.thresholds = {**run.thresholds, **thresholds}
        return run

    guard, first = LossGuard(), session()
    first.callbacks = [guard]
    first.call("on_fit_start")
    for loss in (2.0, 5.9, 6.0):  # start 2.0: the limit is 6.0, reached but not exceeded
        first.call("on_loss", loss)
    assert first.stop_reason is None
    second = session(loss_explosion=2.0)  # the same guard, a new fit: start 2.0, limit 4.0
    second.callbacks = [guard]
    second.call("on_fit_start")
    second.call("on_loss", 4.5)
    assert diverged(4.5, 2.0, 2.0) and second.stop_reason == "LR_TOO_HIGH"

    guard, third = LossGuard(), session()
    third.callbacks = [guard]
    third.call("on_fit_start")
    for loss in (2.0, 6.0):
        third.call("on_loss", loss)
    guard.load_state_dict({"initial_loss": 1.0})  # a resumed run's start: its limit is 3.0
    third.call("on_loss", 3.5)
    assert diverged(3.5, 1.0) and third.stop_reason == "LR_TOO_HIGH"


def test_nan_is_caught_in_its_step_rolled_back_and_training_goes_on(digits):
    x, y, xv, yv = digits
    model = NaNAt(small_mlp(), k=30)
    history = bs.fit(model, (x, y), val=(xv, yv), epochs=3, lr=0.01, progress=False)
    nan = [f for f in history.findings if f.code == "NAN_LOSS"]
    assert len(nan) == 1 and nan[0].step == 30 and nan[0].severity == "error"
    assert nan[0].evidence["lr_after"] == pytest.approx(0.001)
    assert history.rollbacks == 1 and history.stop_reason is None and len(history) == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert history["train_loss"][-1] < history["train_loss"][0]  # progress kept, and going on


def test_exploding_lr_is_rolled_back_until_it_trains(digits):
    """Adam at lr=10: the lecture's "cost > 3x original: break out", done without losing
    anything: each blow-up restores the last good state and divides the LR by 10."""
    x, y, xv, yv = digits
    history = bs.fit(small_mlp(), (x, y), val=(xv, yv), lr=10.0, epochs=5, progress=False)
    high = [f for f in history.findings if f.code in ("LR_TOO_HIGH", "NAN_LOSS")]
    assert history.rollbacks == len(high) >= 1
    assert history.final["lr"] < 10.0
    assert history.final["val_acc"] > 0.85


def test_after_max_rollbacks_training_stops(digits):
    x, y, _, _ = digits
    model = NaNAt(small_mlp(), k=5)
    history = bs.fit(model, (x, y), epochs=3, progress=False, monitors=[LossGuard(max_rollbacks=0)])
    assert history.stop_reason == "NAN_LOSS" and len(history) == 1
    assert [f.code for f in history.findings] == ["NAN_LOSS"]
    assert "stopped" not in history.findings[0].message or history.rollbacks == 0


def test_loss_guard_validates_its_arguments():
    with pytest.raises(ValueError, match="lr_factor"):
        LossGuard(lr_factor=2.0)
    with pytest.raises(ValueError, match="max_rollbacks"):
        LossGuard(max_rollbacks=-1)


# -- update ratio --------------------------------------------------------------------------------


def test_update_ratio_is_measured_from_the_real_step(tmp_path):
    """SGD without momentum: W_after - W_before = -lr * grad, so the ratio is known exactly."""
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    w0 = model.weight.detach().clone()
    loss = nn.functional.cross_entropy(model(x), y)
    (g,) = torch.autograd.grad(loss, model.weight)
    expected = float((0.5 * g).norm() / w0.norm())
    bs.fit(
        model,
        (x, y),
        optimizer="sgd",
        lr=0.5,
        epochs=1,
        batch_size=64,
        progress=False,
        monitors=[UpdateRatio(every=1)],
        run_dir=tmp_path / "run",
    )
    rows = [r for r in runs.read_metrics(tmp_path / "run") if r["name"] == "update_ratio/weight"]
    assert rows[0]["step"] == 0 and rows[0]["value"] == pytest.approx(expected, rel=1e-5)


class _Adapted(nn.Module):
    """Frozen random layers, each with a trainable low-rank update ``B @ A`` whose ``B`` starts
    at (numerically) zero: most weight tensors grow from zero, as in LoRA (Hu et al. 2021)."""

    def __init__(self, b_std: float) -> None:
        super().__init__()
        dims = [64, 32, 32, 10]
        self.base = nn.ModuleList(nn.Linear(i, o) for i, o in itertools.pairwise(dims))
        self.base.requires_grad_(False)
        self.a = nn.ParameterList(nn.Parameter(torch.randn(4, i) / i**0.5) for i in dims[:-1])
        self.b = nn.ParameterList(nn.Parameter(b_std * torch.randn(o, 4)) for o in dims[1:])

    def forward(self, x):
        for k, (layer, a, b) in enumerate(zip(self.base, self.a, self.b, strict=True)):
            x = layer(x) + x @ a.T @ b.T
            x = torch.relu(x) if k < len(self.base) - 1 else x
        return x


@pytest.mark.parametrize("b_std", [0.0, 1e-8])
def test_tensors_growing_from_zero_are_not_judged_too_fast(digits, tmp_path, b_std):
    """Was: a LoRA B at ~1e-8 gave ‖ΔW‖/‖W‖ ~ 1e5 at step 0, UPDATE_RATIO_HIGH at Adam 1e-3.
    Growing from zero says nothing about the step's size; the ratios are still logged."""
    x, y, _, _ = digits
    torch.manual_seed(0)
    history = bs.fit(
        _Adapted(b_std), (x, y), lr=1e-3, epochs=2, progress=False, run_dir=tmp_path / "run"
    )
    assert "UPDATE_RATIO_HIGH" not in history.codes
    logged = {r["name"] for r in runs.read_metrics(tmp_path / "run")}
    assert "update_ratio/b.0" in logged


def test_a_too_high_lr_is_still_found_beside_zero_tensors(digits):
    """The rule still reads the other tensors: a far too high lr on the A's is found."""
    x, y, _, _ = digits
    torch.manual_seed(0)
    history = bs.fit(
        _Adapted(0.0), (x, y), lr=1e-3, epochs=1, progress=False,
        thresholds={"update_ratio_high": 1e-4},
    )  # fmt: skip
    assert "UPDATE_RATIO_HIGH" in history.codes


def test_tiny_learning_rate_is_too_low(digits):
    x, y, _, _ = digits
    history = bs.fit(small_mlp(), (x, y), optimizer="sgd", lr=1e-5, epochs=8, progress=False)
    assert {"LR_TOO_LOW", "UPDATE_RATIO_LOW"} <= history.codes


# -- activations ---------------------------------------------------------------------------------


def test_dead_relus_while_training(digits):
    x, y, _, _ = digits
    torch.manual_seed(0)
    model = bs.nn.mlp(64, [64, 64], 10)
    bs.nn.init_model(model, "he_normal", bias=-3.0)
    history = bs.fit(model, (x, y), epochs=2, progress=False, monitors=[ActivationStats(every=5)])
    dead = [f for f in history.findings if f.code == "DEAD_RELU" and f.severity == "warning"]
    assert dead and dead[0].evidence["n_examples"] >= 256
    assert dead[0].evidence["dead_fraction"] >= 0.7


def _dead_units_skipped(history) -> list:
    return [
        f
        for f in history.findings
        if f.code == "CHECKS_SKIPPED" and "dead_units" in f.evidence.get("skipped", {})
    ]


def test_a_run_too_short_to_judge_dead_units_says_so(digits):
    # 3 epochs of 1150 examples at batch 64: 54 steps, sampled at step 0 only (64 examples);
    # a dead-unit verdict needs 256. Cannot check means say so: one info naming the layers.
    x, y, _, _ = digits
    history = bs.fit(small_mlp(), (x, y), epochs=3, progress=False)
    (note,) = _dead_units_skipped(history)
    assert note.severity == "info" and "DEAD_RELU" not in history.codes
    assert note.evidence["n_examples"] == 64 and note.evidence["layers"] == ["1"]
    assert "not judged in '1'" in note.message and ">= 256" in note.message
    assert _warnings(history) == []  # healthy means silent: no warning


def test_a_run_that_judged_dead_units_says_nothing_about_them(digits):
    x, y, _, _ = digits
    history = bs.fit(
        small_mlp(), (x, y), epochs=3, progress=False, monitors=[ActivationStats(every=10)]
    )  # samples at steps 0, 10, ..., 50: 384 examples
    assert not _dead_units_skipped(history) and "DEAD_RELU" not in history.codes
    assert "CHECKS_SKIPPED" not in history.codes  # two depth groups: gradient flow judged too


def test_gradient_flow_with_one_weight_layer_says_so(digits):
    # One Linear layer: no two depth groups to compare, so VANISHING/EXPLODING_GRADIENTS can
    # never fire; their absence must not read as "gradients flow well".
    x, y, _, _ = digits
    torch.manual_seed(0)
    history = bs.fit(
        nn.Linear(64, 10), (x, y), epochs=3, progress=False, monitors=[ActivationStats(every=10)]
    )
    (note,) = [f for f in history.findings if f.code == "CHECKS_SKIPPED"]
    assert note.severity == "info" and list(note.evidence["skipped"]) == ["gradient_flow"]
    assert note.evidence["weight_layers"] == [""] and "gradient flow" in note.message


def test_no_relu_no_dead_unit_note(digits):
    x, y, _, _ = digits
    torch.manual_seed(0)
    model = bs.nn.mlp(64, [32], 10, activation="tanh")
    history = bs.fit(model, (x, y), epochs=1, progress=False)
    assert not _dead_units_skipped(history)


def test_a_run_the_loss_guard_stopped_ends_on_its_error_not_on_the_note(digits):
    x, y, _, _ = digits
    history = bs.fit(small_mlp(), (x, y), epochs=3, lr=1e4, optimizer="sgd", progress=False)
    assert history.stop_reason and not _dead_units_skipped(history)


@pytest.mark.parametrize(
    ("losses", "severity"), [([2.3] * 100, "warning"), ([2.3] + [0.3] * 99, "info")]
)
def test_dead_units_are_a_warning_only_while_the_loss_stays_up(losses, severity):
    # 80% of a layer dead: a warning while the loss stays near its start (the ReLU-killing runs
    # of benchmarks/monitors.py: 0.75-1.0 of it), info when the other units carry the training
    # (benchmarks/healthy_zoo.py's 1-D convnet at its best lr: 0.14-0.16 of it)
    from types import SimpleNamespace

    session, monitor = _session(), ActivationStats()
    for loss in losses:
        monitor.on_train_batch_end(session, loss, 0)
    record = SimpleNamespace(name="fc", dead_units=list(range(80)), n_examples=256, n_units=100)
    monitor._dead_units(session, record)
    (found,) = session.findings
    assert found.code == "DEAD_RELU" and found.severity == severity
    assert found.evidence["loss_over_start"] == pytest.approx(sum(losses) / 100 / 2.3, rel=1e-4)
    assert ("capacity is lost, not learning" in found.message) == (severity == "info")


def test_saturated_tanh_while_training(digits):
    x, y, _, _ = digits
    torch.manual_seed(0)
    model = bs.nn.mlp(64, [128, 128, 128], 10, activation="tanh")
    bs.nn.init_model(model, "normal", std=1.0)
    history = bs.fit(model, (x, y), epochs=1, progress=False, monitors=[ActivationStats(every=3)])
    assert "SATURATED_ACTIVATIONS" in history.codes


def test_activation_monitor_sees_no_validation_forward(digits, tmp_path):
    x, y, xv, yv = digits
    bs.fit(
        small_mlp(),
        (x, y),
        val=(xv, yv),
        epochs=2,
        progress=False,
        monitors=[ActivationStats(every=1)],
        run_dir=tmp_path / "run",
    )
    names = {r["name"] for r in runs.read_metrics(tmp_path / "run")}
    assert "dead_fraction/1" in names and not any("#" in n for n in names)


# -- the loss curve ------------------------------------------------------------------------------


def _decay(n, start=2.3, end=0.3, noise=0.02, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64)
    curve = end + (start - end) * torch.exp(-t / (n / 5))
    return (curve + noise * torch.randn(n, generator=g, dtype=torch.float64)).tolist()


def test_plateau_then_drop_rule():
    healthy = _decay(600)
    assert plateau_then_drop(healthy, flat=0.05, drop=0.3) is None
    plateau = [2.3] * 200 + _decay(400, start=2.3, end=0.2)
    found = plateau_then_drop(plateau, flat=0.05, drop=0.3)
    assert found is not None and 180 <= found["flat_steps"] <= 220
    assert plateau_then_drop([2.3] * 600, flat=0.05, drop=0.3) is None  # flat throughout


def test_oscillation_rule():
    assert oscillation(_decay(600)) is None
    flat = _decay(600, start=2.3, end=2.3)
    assert oscillation(flat) is None
    swinging = [1.2 + 0.8 * math.sin(i / 15) for i in range(600)]
    found = oscillation(swinging)
    assert found is not None and found["zigzag"] > 4
    noisy_swing = [v + n for v, n in zip(swinging, _decay(600, 0.0, 0.0, noise=0.3), strict=True)]
    assert oscillation(noisy_swing) is not None  # a real swing under mini-batch noise


def test_a_loss_falling_below_zero_is_weighed_against_its_fall():
    """A curve from 0.02 down to -1 (a negative cosine) with wiggles of 0.02 in its second
    half: 0.25 × its start is 0.005, which the wiggles pass; 0.25 × its fall (1.02) they do
    not."""
    wiggle = [0.02 * math.sin(i / 3) for i in range(600)]
    below = [0.02 - 1.02 * min(i / 300, 1.0) + w for i, w in enumerate(wiggle)]
    assert oscillation(below) is None
    every_rise = oscillation(below, min_rise=0.0)  # what the rule measured, in its evidence
    assert every_rise["scale"] == pytest.approx(1.02, abs=0.05)
    assert every_rise["start_loss"] == pytest.approx(0.02, abs=0.02)


def test_mini_batch_noise_is_not_oscillation():
    """A loss that descends slowly under heavy mini-batch noise (sd 0.5 on a start of 1.2, as
    a regression MLP at batch 32): its 10-step window means wander by chance, and their rises
    add up past a quarter of the start. Counted beyond the noise, they do not."""
    noisy = _decay(190, start=1.2, end=0.8, noise=0.5, seed=3)
    window_means = [sum(noisy[i : i + 10]) / 10 for i in range(0, 190, 10)][9:]
    chance_rises = sum(max(b - a, 0) for a, b in itertools.pairwise(window_means))
    assert chance_rises > 0.25 * 1.2  # the rule without noise would have judged the swings
    assert oscillation(noisy) is None


def test_a_noisy_regression_at_a_low_lr_is_not_told_to_lower_it(friedman):
    """The benchmark's Friedman regression MLP with plain SGD at lr 1e-3, 1.5 decades below
    its best lr: LOSS_OSCILLATING ("lower the learning rate") fired on 8 of 10 seeds."""
    x, y = friedman
    torch.manual_seed(0)
    model = bs.nn.mlp(10, [64, 64], 1)
    history = bs.fit(
        model, (x, y), optimizer="sgd", lr=1e-3, epochs=3, batch_size=32,
        loss_fn=nn.MSELoss(), progress=False, seed=0,
    )  # fmt: skip
    assert "LOSS_OSCILLATING" not in history.codes


def test_loss_curve_monitor_flags_a_plateau_start():
    session = Session(nn.Linear(2, 2), torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1))
    curve = LossCurve()
    curve.on_fit_start(session)
    for value in [2.3] * 200 + _decay(400, start=2.3, end=0.2):
        curve.on_loss(session, value)
    curve.on_fit_end(session)
    assert [f.code for f in session.findings] == ["LOSS_PLATEAU_AT_START"]


def test_a_flat_start_shorter_than_the_optimizers_warm_up_is_not_a_plateau():
    # A GRU with Adam judged after its first epoch (benchmarks/healthy_zoo.py): 9 flat steps of
    # 50, then a 16% fall: the rule's shape (8 of 50 windows flat) but not the lecture's
    # bad-init plateau. The same shape 60 steps long is one.
    def judged(flat_steps: int, total: int) -> list[str]:
        session = _session()
        curve = LossCurve()
        curve.on_fit_start(session)
        fall = _decay(total - flat_steps, start=2.3, end=1.0, noise=0.0)
        for value in [2.3] * flat_steps + fall:
            curve.on_loss(session, value)
        curve.on_fit_end(session)
        return [f.code for f in session.findings]

    assert judged(9, 50) == []
    assert judged(60, 300) == ["LOSS_PLATEAU_AT_START"]


# -- train/val gap and mode ----------------------------------------------------------------------


def _session():
    model = nn.Linear(2, 2)
    return Session(model, torch.optim.SGD(model.parameters(), lr=0.1))


def test_overfitting_needs_a_big_gap_for_two_epochs():
    s, mon = _session(), Generalization()
    for epoch, (tr, va) in enumerate([(0.9, 0.6), (0.8, 0.75), (0.95, 0.7), (0.99, 0.7)]):
        s.epoch = epoch
        mon.on_validation_epoch_end(s, {"train_acc": tr, "val_acc": va})
    assert [f.code for f in s.findings] == ["OVERFITTING"]
    assert s.findings[0].evidence["val_acc"] == [0.6, 0.75, 0.7, 0.7]


def test_underfitting_is_low_accuracy_without_a_gap():
    s, mon = _session(), Generalization()
    mon.on_validation_epoch_end(s, {"train_acc": 0.35, "val_acc": 0.34})
    mon.on_fit_end(s)
    assert [f.code for f in s.findings] == ["UNDERFITTING"]
    s2, mon2 = _session(), Generalization()
    mon2.on_validation_epoch_end(s2, {"train_acc": 0.97, "val_acc": 0.965})
    mon2.on_fit_end(s2)
    assert s2.findings == []


def test_training_in_eval_mode_is_flagged(digits):
    x, y, _, _ = digits

    class Freeze(Callback):
        def on_train_epoch_start(self, trainer):
            trainer.model.eval()

    history = bs.fit(
        small_mlp(dropout=0.3),
        (x, y),
        epochs=1,
        progress=False,
        monitors=[EvalMode()],
        callbacks=[Freeze()],
    )
    assert [f.code for f in history.findings] == ["MODEL_IN_EVAL_MODE"]
    assert history.findings[0].evidence["modules"] == ["2"]


# -- healthy means silent ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setup",
    [
        {"optimizer": "adam", "lr": 1e-3},
        {"optimizer": "momentum", "lr": 0.05},
        {"optimizer": "adam", "lr": 3e-3, "model": {"batchnorm": True, "dropout": 0.3}},
        {"optimizer": "adam", "lr": 1e-3, "model": {"activation": "tanh", "init": "xavier"}},
    ],
    ids=["adam", "momentum", "bn-dropout", "tanh-xavier"],
)
def test_healthy_runs_get_no_warning(digits, setup):
    x, y, xv, yv = digits
    model = small_mlp(**setup.get("model", {}))
    history = bs.fit(
        model,
        (x, y),
        val=(xv, yv),
        optimizer=setup["optimizer"],
        lr=setup["lr"],
        epochs=10,
        progress=False,
        monitors="all",
    )
    assert _warnings(history) == [], history.findings
    assert history.final["val_acc"] > 0.85


def test_ignore_and_threshold_overrides(digits):
    x, y, _, _ = digits
    quiet = bs.fit(
        small_mlp(),
        (x, y),
        optimizer="sgd",
        lr=1e-5,
        epochs=8,
        progress=False,
        ignore=["LR_TOO_LOW", "UPDATE_RATIO_LOW", "UNDERFITTING"],
    )
    assert not {"LR_TOO_LOW", "UPDATE_RATIO_LOW"} & quiet.codes
    strict = bs.fit(
        small_mlp(),
        (x, y),
        optimizer="adam",
        lr=1e-3,
        epochs=4,
        progress=False,
        thresholds={"update_ratio_high": 1e-4},
    )
    assert "UPDATE_RATIO_HIGH" in strict.codes


def test_when_rollbacks_run_out_the_model_keeps_its_last_good_state(digits):
    x, y, _, _ = digits
    model = small_mlp()
    history = bs.fit(model, (x, y), optimizer="sgd", lr=1e30, epochs=2, progress=False)
    assert history.stop_reason in ("NAN_LOSS", "LR_TOO_HIGH") and history.rollbacks == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert "last good state" in history.findings[-1].message


def test_nan_at_the_very_first_step_stops_without_touching_the_weights(digits):
    x, y, _, _ = digits
    model = NaNAt(small_mlp(), k=0)
    before = [p.detach().clone() for p in model.parameters()]
    history = bs.fit(model, (x, y), epochs=2, progress=False)
    assert history.stop_reason == "NAN_LOSS" and history.rollbacks == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
