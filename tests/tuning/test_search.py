"""babysit.search: coarse -> fine stages, break-out pruning, BEST_AT_EDGE, failures kept,
resume from the storage, the built-in objective on real training."""

from __future__ import annotations

import math

import optuna
import pytest

import babysit as bs
from babysit import runs


def _quadratic(params, trial):
    """A smooth objective with its optimum at lr = 1e-3, in log space."""
    return -((math.log10(params["lr"]) + 3) ** 2)


def test_stages_narrow_around_the_best_and_count_trials(tmp_path):
    result = bs.search(
        {"lr": bs.loguniform(1e-6, 1.0)},
        _quadratic,
        n_trials=30,
        stages=2,
        epochs=8,
        run_dir=tmp_path / "s",
    )
    assert len(result.trials) == 30  # n_trials is the total over stages
    assert [s["trials"] for s in result.stages] == [20, 10]
    assert [s["epochs"] for s in result.stages] == [1, 8]  # epochs // 10, at least 1
    second = result.stages[1]["ranges"]["lr"]
    assert 1e-6 < second["low"] < 1e-3 < second["high"] < 1.0
    assert second["high"] / second["low"] < 1e6 / 10  # narrower than the first stage
    assert math.log10(second["high"] / second["low"]) >= 0.25 * 6 - 0.1  # not too narrow
    assert result.best["stage"] == 2
    assert abs(math.log10(result.best["params"]["lr"]) + 3) < 0.5
    table = (tmp_path / "s" / "trials.csv").read_text().splitlines()
    assert table[0].startswith("stage,number,state,value") and len(table) == 31
    assert (tmp_path / "s" / "search.db").exists()
    assert (tmp_path / "s" / "search.png").stat().st_size > 10_000  # the lecture's scatter
    fig = result.plot()
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "linear"]


def test_best_at_the_edge_is_reported_and_auto_extend_searches_beyond():
    space = {"lr": bs.loguniform(1e-2, 1.0)}  # the optimum (1e-3) lies below the range
    result = bs.search(space, _quadratic, n_trials=12, stages=2, epochs=4)
    edge = [f for f in result.findings if f.code == "BEST_AT_EDGE"]
    assert edge and edge[-1].evidence["side"] == "low"
    assert edge[-1].evidence["suggested"]["low"] < 1e-2
    extended = bs.search(space, _quadratic, n_trials=12, stages=2, epochs=4, auto_extend=True)
    assert len(extended.stages) == 3
    assert extended.stages[2]["ranges"]["lr"]["low"] < 1e-2
    assert any(t["params"]["lr"] < 1e-2 for t in extended.trials if t["stage"] == 3)


def test_a_failing_objective_is_kept_and_replaced_and_the_search_goes_on(capfd):
    def flaky(params, trial):
        if trial.number in (0, 3):
            raise RuntimeError("out of memory (simulated)")
        if trial.number == 1:
            return math.nan
        return 1.0

    result = bs.search({"lr": bs.loguniform(1e-4, 1e-1)}, flaky, n_trials=9, stages=1)
    states = [t["state"] for t in result.trials]
    assert states.count("FAIL") == 2 and states.count("PRUNED") == 1
    assert states.count("COMPLETE") == 8  # failed trials do not count: new ones replace them
    failed = [t for t in result.trials if t["state"] == "FAIL"]
    assert failed[0]["error"] == "RuntimeError: out of memory (simulated)"
    err = capfd.readouterr().err  # one line says so; no traceback per failed trial
    assert "2 of 11 trials failed" in err and "out of memory (simulated)" in err
    assert "Traceback" not in err and err.count("out of memory") == 1


def test_an_objective_that_always_fails_raises_with_the_first_error(tmp_path):
    """Every trial failing is an error, not a search that ended with best=None: it stops after
    twice the first stage's quota, never starts stage 2, and keeps what it ran."""
    from babysit.tuning import SearchFailed

    def broken(params, trial):
        raise ValueError(f"bad objective {trial.number}")

    with pytest.raises(SearchFailed, match=r"every trial of stage 1 failed.*bad objective 0$") as e:
        bs.search({"lr": bs.loguniform(1e-4, 1e-1)}, broken, n_trials=4, stages=2, run_dir=tmp_path)
    result = e.value.result
    assert [t["state"] for t in result.trials] == ["FAIL"] * 6 and result.best is None
    assert len(result.stages) == 1  # stage 2 never started
    rows = (tmp_path / "trials.csv").read_text().splitlines()
    assert len(rows) == 7 and all(",FAIL," in r for r in rows[1:])  # kept for the post-mortem


def test_a_second_call_continues_the_same_search(tmp_path):
    calls = []

    def counted(params, trial):
        calls.append(trial.number)
        return _quadratic(params, trial)

    kw = {"n_trials": 9, "stages": 2, "run_dir": tmp_path / "s"}
    first = bs.search({"lr": bs.loguniform(1e-6, 1.0)}, counted, **kw)
    again = bs.search({"lr": bs.loguniform(1e-6, 1.0)}, counted, **kw)
    assert len(calls) == 9  # nothing left to run
    assert len(again.trials) == len(first.trials) == 9
    assert again.stages[1]["ranges"] == first.stages[1]["ranges"]  # stored, not recomputed


def test_builtin_objective_trains_and_breaks_out(tmp_path):
    result = bs.search(
        {"lr": bs.loguniform(1e-4, 1e3), "hidden": bs.choice([16, 32])},
        data="digits",
        epochs=4,
        n_trials=8,
        stages=2,
        seed=1,
        run_dir=tmp_path / "s",
    )
    first = [t for t in result.trials if t["stage"] == 1]
    pruned = [t for t in first if t["state"] == "PRUNED"]
    assert pruned and all(t["params"]["lr"] > 0.1 for t in pruned)  # blown-up lrs, stopped
    assert all(t["epochs_run"] == 0 for t in pruned)  # within the first epoch
    assert result.best is not None and result.best["value"] > 0.85
    assert runs.read_json(tmp_path / "s", "search.json")["best"]["value"] == result.best["value"]


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"n_trials": 0}, ValueError, "n_trials"),
        ({"n_trials": 1, "stages": 2}, ValueError, "cannot fill"),
        ({"sampler": "grid"}, ValueError, "unknown sampler"),
        ({"pruner": "hyperband"}, ValueError, "unknown pruner"),
        ({"direction": "up"}, ValueError, "direction"),
        ({"cv": 5}, ValueError, "built-in objective"),
    ],
)
def test_bad_arguments(kw, error, match):
    with pytest.raises(error, match=match):
        bs.search({"lr": bs.loguniform(1e-4, 1e-1)}, _quadratic, **kw)


def test_builtin_objective_needs_data():
    with pytest.raises(ValueError, match="needs data"):
        bs.search({"lr": bs.loguniform(1e-4, 1e-1)})


def test_unreachable_storage_is_a_clear_error_without_hanging():
    url = "postgresql://nobody:secret@127.0.0.1:1/none"
    with pytest.raises(ConnectionError, match=r"postgresql://nobody:\*\*\*@127") as caught:
        bs.search({"lr": bs.loguniform(1e-4, 1e-1)}, _quadratic, storage=url, n_trials=2)
    assert "secret" not in str(caught.value)


def test_storage_passwords_are_masked_in_the_run_directory(tmp_path):
    from babysit.tuning import mask_url

    assert mask_url("postgresql://u:p4ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    db = tmp_path / "x.db"
    bs.search(
        {"lr": bs.loguniform(1e-4, 1e-1)},
        _quadratic,
        storage=f"sqlite:///{db}",
        n_trials=2,
        stages=1,
        run_dir=tmp_path / "s",
    )
    assert runs.read_json(tmp_path / "s", "search.json")["storage"] == f"sqlite:///{db}"


def test_tpe_sampler_by_name():
    result = bs.search(
        {"lr": bs.loguniform(1e-6, 1.0)}, _quadratic, n_trials=6, stages=1, sampler="tpe"
    )
    assert len(result.trials) == 6 and optuna.__version__


def test_cross_validation_averages_the_folds():
    result = bs.search(
        {"lr": bs.loguniform(3e-3, 3e-2), "hidden": 16},
        data="digits",
        epochs=2,
        n_trials=2,
        stages=1,
        cv=3,
    )
    done = [t for t in result.trials if t["state"] == "COMPLETE"]
    assert done and result.best["value"] > 0.5
    with pytest.raises(ValueError, match="cv must be"):
        bs.search({"lr": bs.loguniform(1e-3, 1e-1)}, data="digits", cv=1)


def test_ensemble_of_the_top_trials(tmp_path):
    result = bs.search(
        {"lr": bs.loguniform(3e-3, 3e-2), "hidden": bs.choice([16, 32])},
        data="digits",
        epochs=4,
        n_trials=6,
        stages=2,
        run_dir=tmp_path / "s",
    )
    report = result.ensemble(2)
    assert report["k"] == 2 and len(report["single_test_acc"]) == 2
    assert report["ensemble_test_acc"] > 0.85
    assert report["ensemble_test_acc"] >= min(report["single_test_acc"]) - 0.02
    for path in (tmp_path / "s" / "models").iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match="on the machine that ran it"):
        result.ensemble(2)
    no_dir = bs.search({"lr": bs.loguniform(1e-3, 1e-1)}, _quadratic, n_trials=2, stages=1)
    with pytest.raises(ValueError, match="run_dir"):
        no_dir.ensemble(2)


def test_plot_survives_an_integer_range_narrowed_to_one_value(tmp_path):
    def objective(params, trial):
        return -((math.log10(params["lr"]) + 3) ** 2) - abs(params["w"] - 5)

    result = bs.search(
        {"lr": bs.loguniform(1e-6, 1.0), "w": bs.intuniform(4, 6)},
        objective,
        n_trials=12,
        run_dir=tmp_path / "s",
        progress=False,
    )
    assert (tmp_path / "s" / "search.png").exists() and result.best is not None


def _pruned_early(params, trial):
    """Reports its first of 10 epochs, then is pruned when lr > 1e-2: a tenth of a trial."""
    trial.set_user_attr("reports_expected", 10)
    trial.report(params["lr"], 0)
    if params["lr"] > 1e-2:
        raise optuna.TrialPruned("bad lr")
    return -abs(math.log10(params["lr"]) + 3)


def test_pruned_trials_give_their_unused_epochs_to_more_trials():
    space = {"lr": bs.loguniform(1e-5, 1e0)}
    result = bs.search(space, _pruned_early, n_trials=12, stages=1, epochs=10, seed=0)
    states = [t["state"] for t in result.trials]
    complete, pruned = states.count("COMPLETE"), states.count("PRUNED")
    assert pruned > 0 and len(states) > 12  # the refund bought trials
    assert complete + 0.1 * pruned <= 12  # but never more than 12 trials' worth of training
    assert len(states) <= 3 * 12


def test_trials_pruned_without_reporting_cost_a_whole_trial():
    def nan_for_high_lr(params, trial):  # never reports: its cost is unknown, so counted whole
        return math.nan if params["lr"] > 1e-2 else 1.0

    space = {"lr": bs.loguniform(1e-5, 1e0)}
    result = bs.search(space, nan_for_high_lr, n_trials=10, stages=1, pruner="none", seed=0)
    assert len(result.trials) == 10 and "PRUNED" in {t["state"] for t in result.trials}


def test_the_median_pruner_never_prunes_a_trial_on_its_last_epoch():
    from types import SimpleNamespace

    from babysit.tuning.objective import TrialReporter as _TrialReporter

    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1)
    )
    study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={0: 1.0, 1: 1.0}))
    trial = study.ask()
    reporter = _TrialReporter(trial, "val_acc")
    with pytest.raises(optuna.TrialPruned):  # below the median after epoch 1 of 3: pruned
        reporter.on_train_epoch_end(SimpleNamespace(epoch=1, epochs=3), {"val_acc": 0.1})
    trial = study.ask()
    reporter = _TrialReporter(trial, "val_acc")
    reporter.on_train_epoch_end(SimpleNamespace(epoch=1, epochs=2), {"val_acc": 0.1})  # kept


def test_the_trial_reporter_breaks_out_by_the_shared_divergence_rule():
    """A loss that starts below zero (negative cosine) is no break-out at -0.05 (the literal
    "> 3 × the start" would be true there at once); 0.3 is (a rise of 0.4 > 2 × 0.1)."""
    from types import SimpleNamespace

    from babysit.tuning.objective import TrialReporter as _TrialReporter
    from babysit.tuning.pruners import BreakOutPruner

    study = optuna.create_study(pruner=BreakOutPruner())
    trial = study.ask()
    reporter = _TrialReporter(trial, "val_acc")
    step = SimpleNamespace(step=1)
    reporter.on_loss(step, -0.1)
    reporter.on_loss(step, -0.05)  # healthy noise: kept
    with pytest.raises(optuna.TrialPruned, match="broke out"):
        reporter.on_loss(step, 0.3)


def test_the_trial_reporter_judges_against_fit_s_measured_start_and_its_spread():
    """Under fit the reporter takes fit's start (the mean over its start batches, 0 ± 0.2 for a
    batch-8 negative cosine) and its spread, as fit's guard does: 0.49, one batch's chance high,
    does not prune the trial (it did against the first loss); 1.2 does. The pruner reads the
    same from the trial's attributes."""
    from types import SimpleNamespace

    from babysit.tuning.objective import TrialReporter as _TrialReporter
    from babysit.tuning.pruners import BreakOutPruner

    study = optuna.create_study(pruner=BreakOutPruner())
    trial = study.ask()
    reporter = _TrialReporter(trial, "val_acc")
    fit = SimpleNamespace(step=2, start_loss=lambda: (-0.01, 8, 0.2))
    reporter.on_fit_start(fit)
    reporter.on_loss(fit, 0.05)  # the first loss no longer sets the start
    reporter.on_loss(fit, 0.49)
    assert trial.user_attrs["breakout_initial"] == -0.01
    assert not study.pruner.broke_out({**trial.user_attrs, "breakout_loss": 0.49})
    with pytest.raises(optuna.TrialPruned, match="broke out"):
        reporter.on_loss(fit, 1.2)


def test_cli_search_whose_every_trial_fails_exits_1_with_the_first_error(tmp_path):
    from typer.testing import CliRunner

    from babysit.cli import app

    out = tmp_path / "s"
    space = '{"lr": ["loguniform", 1e-3, 0.1], "optimizer": "adamm"}'
    args = ["search", "--data", "digits", "--space", space, "--epochs", "1", "--n-trials", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("babysit: every trial of stage 1 failed")
    assert "unknown optimizer 'adamm'" in lines[0]
    assert "FAIL" in (out / "trials.csv").read_text()
