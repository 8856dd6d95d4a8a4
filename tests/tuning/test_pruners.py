"""The break-out pruner: the lecture's 3x rule and NaN/Inf, handled explicitly."""

from __future__ import annotations

import math

import optuna
import pytest

from babysit.tuning.pruners import BreakOutPruner, report_loss


def _trial_with_losses(study, losses, metrics=()):
    trial = study.ask()
    for loss in losses:
        report_loss(trial, loss)
    for step, value in enumerate(metrics):
        trial.report(value, step)
    return trial


@pytest.mark.parametrize(
    ("losses", "pruned"),
    [
        ([2.3, 2.0, 1.5], False),
        ([2.3, 6.8], False),  # 2.96x: not yet
        ([2.3, 7.0], True),  # > 3x the initial loss
        ([2.3, math.nan], True),
        ([2.3, math.inf], True),
        ([math.nan], True),
        ([], False),
    ],
)
def test_breakout_rule(losses, pruned):
    study = optuna.create_study(pruner=BreakOutPruner())
    trial = _trial_with_losses(study, losses)
    assert trial.should_prune() is pruned


def test_a_nan_metric_is_pruned_and_inner_pruner_is_consulted():
    study = optuna.create_study(pruner=BreakOutPruner())
    assert _trial_with_losses(study, [2.3, 2.0], metrics=[0.5, math.nan]).should_prune()

    class Always(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    study = optuna.create_study(pruner=BreakOutPruner(inner=Always()))
    assert _trial_with_losses(study, [2.3, 2.0], metrics=[0.5]).should_prune()


@pytest.mark.parametrize("factor", [1.0, 0.5, math.nan, math.inf])
def test_factor_is_validated(factor):
    with pytest.raises(ValueError, match="factor must be"):
        BreakOutPruner(factor)
    with pytest.raises(TypeError, match="inner"):
        BreakOutPruner(inner="median")
