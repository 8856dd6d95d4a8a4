"""``babysit.search``: the lecture's hyperparameter search, on Optuna — the orchestration.

Lecture: "coarse -> fine cross-validation in stages", "random search in log space" (Bergstra &
Bengio 2012), and "if the cost is ever > 3 × the original cost, break out early". The pieces
live beside this module: the stages' plan, ranges and quota (:mod:`.stages`), the storage and
its secrets (:mod:`.storage`), the built-in objective (:mod:`.objective`), the settings a search
may be continued with (:mod:`.settings`), the result and its files (:mod:`.result`).

``n_trials`` is the total over the stages when no trial is pruned: each stage may spend (its
trials × its epochs) epochs, and the epochs a pruned trial did not use buy more trials (at most
3× the stage's share). A second call with the same storage, study name and settings continues
where the first stopped; with other settings it is refused before anything is written.

Default sampler ``"random+tpe"``: random search in log space in the coarse stage (the
lecture's), TPE inside the narrowed ranges after it; with break-out + median pruning. How it
compares with Optuna's TPE + MedianPruner at an equal epoch budget is measured in
docs/search.md ("Samplers") and docs/benchmarks.md.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import torch

from ..findings import Finding
from ..train.config import check_task
from .objective import Builtin, check_names
from .pruners import BreakOutPruner
from .result import SearchFailed, SearchResult, best_trial, trial_rows, write_run
from .settings import SETTINGS_ATTR, check_run_dir, check_study, settings, write_config
from .space import Param, check_space
from .stages import (
    StageQuota,
    best_at_edge,
    extend,
    finished_count,
    plan_stages,
    stage_study,
    stored_ranges,
)
from .storage import mask_url, open_storage, scrubbed_errors, wait_for_running

__all__ = ["PRUNERS", "SAMPLERS", "search"]

SAMPLERS = ("random", "tpe", "random+tpe")
# A storage object passed in may lack heartbeats: then a running trial of another process is
# waited for this long after a stage (it may be a dead worker's, which nothing would fail).
NO_HEARTBEAT_WAIT_S = 120
PRUNERS = ("breakout", "breakout+median", "median", "none")

Objective = Callable[[dict[str, Any], optuna.Trial], float]


def search(
    space: Mapping[str, Any],
    objective: Objective | None = None,
    *,
    model: Callable[[dict[str, Any]], torch.nn.Module] | None = None,
    data: Any = None,
    epochs: int = 20,
    n_trials: int = 60,
    stages: int = 2,
    metric: str = "val_acc",
    direction: str = "maximize",
    sampler: str = "random+tpe",
    pruner: str = "breakout+median",
    storage: str | None = None,
    study_name: str | None = None,
    n_jobs: int = 1,
    cv: int | None = None,
    auto_extend: bool = False,
    seed: int = 0,
    run_dir: str | Path | None = None,
    progress: bool = True,
    task: Any = "auto",
) -> SearchResult:
    """Coarse -> fine random search in log space, with the lecture's break-out pruning.

    Args:
        space: ``{"lr": loguniform(1e-6, 1e-1), "hidden": choice([50, 100]), ...}``.
        objective: ``(params, trial) -> metric``; by default a builder model is trained on
            ``data`` with :func:`babysit.fit` and scored by ``metric`` (it reads ``lr``,
            ``weight_decay``, ``optimizer``, ``batch_size`` and, without ``model``, ``hidden``,
            ``depth``, ``activation``, ``init``, ``batchnorm``, ``dropout``; other names are an
            error).
        model: ``params -> nn.Module`` for the built-in objective (default: ``babysit.nn.mlp``
            with ``hidden``/``depth``/``activation``/``init``/``batchnorm``/``dropout``).
        data: ``"mnist1d"``/``"digits"`` (loaded and standardized), a ``Splits``, or
            ``((X, y), (Xv, yv))``.
        epochs: the last stage's epochs (earlier stages train fewer).
        n_trials: trials over all stages.
        sampler: ``"random+tpe"`` (default: the lecture's random search in log space in the
            coarse stage, Optuna's TPE inside the narrowed ranges of the later ones),
            ``"random"`` (every stage) or ``"tpe"`` (every stage).
        pruner: ``"breakout+median"`` (default), ``"breakout"``, ``"median"`` or ``"none"``.
        storage: an Optuna storage URL; default a SQLite file in ``run_dir`` (in memory
            without one). A PostgreSQL URL lets several machines share the search.
        auto_extend: when the best value of a range sits at its edge after the last stage,
            extend that range and run one more stage.
        run_dir: where ``search.db``, ``config.json``, ``trials.csv`` and ``findings.json`` go.
        progress: a progress bar per stage (trials done by all workers, best so far).
        task: the built-in objective's task, passed to :func:`babysit.fit` (``"auto"``:
            classification; ``"regression"`` trains with MSE and the default model gets one
            output per target column; score it with ``metric="val_r2"`` or ``"val_loss"``
            and ``direction="minimize"``). Recorded with the settings when not ``"auto"``.

    Raises:
        ValueError: bad arguments, a parameter the built-in objective does not use, or a run
            directory / study that holds a search started with other settings (nothing is
            written then).
        ConnectionError: the storage cannot be opened or fails (its password masked).
        SearchFailed: every trial of a stage failed (the first one's error in the message).
    """
    params = check_space(space)
    _check_args(epochs, n_trials, stages, direction, sampler, pruner, n_jobs, cv)
    if cv is not None and objective is not None:
        raise ValueError(
            "cv applies to the built-in objective: a user objective does its own folds"
        )
    if objective is None:
        check_names(params, custom_model=model is not None)
    name = study_name or "babysit-search"
    run_path = Path(run_dir) if run_dir is not None else None
    given = mask_url(storage) if isinstance(storage, str) else None
    wanted = settings(
        space=params,
        objective=objective,
        model=model,
        data=data,
        epochs=epochs,
        n_trials=n_trials,
        stages=stages,
        metric=metric,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        cv=cv,
    )
    task = check_task(task)
    if task != "auto":
        wanted["task"] = task if isinstance(task, str) else task.to_dict()
    if run_path is not None and run_path.is_dir():
        check_run_dir(run_path, wanted, name, given)  # reads only: refused before any write
    builtin = None
    if objective is None:
        models_dir = run_path / "models" if run_path is not None else None
        builtin = Builtin(model, data, metric, cv, seed, models_dir, task=task)
    run = objective or builtin
    if storage is None and run_path is not None:
        run_path.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{run_path / 'search.db'}"
    url = storage if isinstance(storage, str) else None
    # Optuna logs every trial, and a failed one with its traceback: babysit keeps each trial's
    # error with the trial and says once what failed (_say_failures), so only errors pass.
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with scrubbed_errors(url):
            store = open_storage(storage)
            if store is not None:
                check_study(store, name, wanted)
            if run_path is not None:
                run_path.mkdir(parents=True, exist_ok=True)
                write_config(run_path, wanted, name, given)
            result, failed = _run_stages(
                store,
                name,
                params,
                run,
                wanted,
                stages=plan_stages(n_trials, stages, epochs),
                direction=direction,
                sampler=sampler,
                pruner=pruner,
                seed=seed,
                n_jobs=n_jobs,
                auto_extend=auto_extend,
                progress=progress,
                heartbeats=url is not None,  # open_storage gave it heartbeats
            )
    finally:
        optuna.logging.set_verbosity(level)
    result.run_dir = run_path
    result.metric = metric if objective is None else "value"
    result._builtin, result._study = builtin, name  # for ensemble()
    if run_path is not None:
        write_run(run_path, result, None if url is None else mask_url(url))
        result.plot(run_path / "search.png")
    if failed is not None:
        raise SearchFailed(failed, result)
    _say_failures(result.trials)
    return result


def _run_stages(
    store: Any,
    name: str,
    params: dict[str, Param],
    run: Callable[..., float],
    wanted: dict[str, Any],
    *,
    stages: list[tuple[int, int]],
    direction: str,
    sampler: str,
    pruner: str,
    seed: int,
    n_jobs: int,
    auto_extend: bool,
    progress: bool,
    heartbeats: bool,
) -> tuple[SearchResult, str | None]:
    """Run (or continue) every stage; the result, and why it stopped early (every trial of a
    stage failed) or ``None``."""
    plan = list(stages)
    findings: list[Finding] = []
    stage_info: list[dict[str, Any]] = []
    all_trials: list[dict[str, Any]] = []
    previous: optuna.Study | None = None
    extended = False
    failed: str | None = None
    k = 0
    while k < len(plan):
        stage_trials, stage_epochs = plan[k]
        study = stage_study(
            name,
            k,
            store,
            sampler=_sampler(_stage_sampler(sampler, k), seed + k, stage_trials),
            pruner=_pruner(pruner),
            direction=direction,
            params=params,
            previous=previous,
            epochs=stage_epochs,
            attrs={SETTINGS_ATTR: wanted} if k == 0 else None,
        )
        ranges = stored_ranges(study)
        _optimize(study, run, ranges, stage_trials, stage_epochs, seed, n_jobs, progress)
        # Every trial of the stage has ended (other workers' finished, dead workers' failed by
        # their stale heartbeat): the next stage's ranges are final, and none stays RUNNING.
        wait_for_running(study, _say, timeout=None if heartbeats else NO_HEARTBEAT_WAIT_S)
        rows = trial_rows(study, k + 1)
        all_trials += rows
        stage_info.append(
            {
                "stage": k + 1,
                "epochs": stage_epochs,
                "trials": stage_trials,
                "ranges": {n: p.to_dict() for n, p in ranges.items()},
            }
        )
        failed = _all_failed(rows, k + 1)
        if failed is not None:
            break
        edge = best_at_edge(study, ranges, k + 1)
        findings += edge
        previous = study
        k += 1
        if k == len(plan) and auto_extend and edge and not extended:
            extended = True
            plan.append((plan[-1][0], plan[-1][1]))
            params = extend(ranges, edge)
            previous = None  # the extra stage searches the extended ranges, not narrowed ones
    best = best_trial(all_trials, direction)
    return SearchResult(all_trials, best, findings, stage_info, direction=direction), failed


def _all_failed(rows: list[dict[str, Any]], stage: int) -> str | None:
    """The message when no trial of a stage completed and some failed with an error."""
    if any(r["state"] == "COMPLETE" for r in rows):
        return None
    errors = [r for r in rows if r["state"] == "FAIL"]
    if not errors or any(r["state"] == "PRUNED" for r in rows):
        return None  # pruned trials are results (broke out), not errors
    first = min(errors, key=lambda r: r["number"])
    why = first.get("error") or "no error recorded (the worker running it died)"
    return (
        f"every trial of stage {stage} failed ({len(errors)} trials); the first, trial "
        f"{first['number']}: {why}"
    )


def _say_failures(trials: list[dict[str, Any]]) -> None:
    """One line when some trials failed (the search went on without them)."""
    failed = [t for t in trials if t["state"] == "FAIL"]
    if not failed:
        return
    first = min(failed, key=lambda t: (t["stage"], t["number"]))
    why = first.get("error") or "its worker stopped (no heartbeat)"
    _say(
        f"{len(failed)} of {len(trials)} trials failed and were replaced; the first, trial "
        f"{first['number']} of stage {first['stage']}: {why} (trials.csv, column error)"
    )


def _say(message: str) -> None:
    print(f"babysit search: {message}", file=sys.stderr, flush=True)


def _optimize(
    study: optuna.Study,
    run: Callable[..., float],
    ranges: dict[str, Param],
    n: int,
    epochs: int,
    seed: int,
    n_jobs: int,
    progress: bool,
) -> None:
    """Run the stage until it holds ``n`` finished trials (a resumed search tops it up)."""
    quota = StageQuota(n, epochs)
    if quota.full(study):
        return

    def trial_objective(trial: optuna.Trial) -> float:
        values = {name: p.suggest(trial, name) for name, p in ranges.items()}
        torch.manual_seed(seed + trial.number)
        trial.set_user_attr("epochs", epochs)
        try:
            value = float(run(values, trial))
        except optuna.TrialPruned:
            raise
        except Exception as err:  # kept with the trial: the table shows why it failed
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            raise
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"the objective returned {value}")
        return value

    callbacks: list[Callable[..., None]] = [quota]
    bar = _StageBar(study, n, epochs) if progress else None
    if bar is not None:
        callbacks.insert(0, bar)
    try:
        study.optimize(
            trial_objective,
            callbacks=callbacks,
            n_trials=None,  # until the quota callback stops it (across all workers)
            n_jobs=n_jobs,
            catch=(Exception,),  # a failing trial is kept as FAIL with its error; search goes on
            gc_after_trial=False,
            show_progress_bar=False,
        )
    finally:
        if bar is not None:
            bar.close()


class _StageBar:
    """A rich progress bar per stage: trials done (all workers), the best value so far."""

    def __init__(self, study: optuna.Study, n: int, epochs: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        self._n = n
        name = study.study_name.rsplit("-", 1)[-1]
        self._task = self._progress.add_task(
            f"{name} ({epochs} epochs)", total=n, completed=_done(study), best=""
        )

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = _done(study)
        try:
            best = f"best {study.best_value:.4g}"
        except ValueError:  # no completed trial yet
            best = ""
        total = max(self._n, done)  # pruned trials' epochs buy extra trials
        self._progress.update(self._task, completed=done, total=total, best=best)

    def close(self) -> None:
        self._progress.stop()


def _done(study: optuna.Study) -> int:
    return finished_count(study)


def _stage_sampler(name: str, k: int) -> str:
    """``"random+tpe"``: random search in the first (coarse) stage, TPE in the later ones."""
    if name == "random+tpe":
        return "random" if k == 0 else "tpe"
    return name


def _sampler(name: str, seed: int, n: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":  # each stage is a fresh study: start modelling after a fifth of it
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, n // 5)))
    return optuna.samplers.RandomSampler(seed=seed)


def _pruner(name: str) -> optuna.pruners.BasePruner:
    median = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    return {
        "breakout": BreakOutPruner(),
        "breakout+median": BreakOutPruner(inner=median),
        "median": median,
        "none": optuna.pruners.NopPruner(),
    }[name]


def _check_args(
    epochs: int,
    n_trials: int,
    stages: int,
    direction: str,
    sampler: str,
    pruner: str,
    n_jobs: int,
    cv: int | None,
) -> None:
    for name, value in (
        ("epochs", epochs),
        ("n_trials", n_trials),
        ("stages", stages),
        ("n_jobs", n_jobs),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if n_trials < stages:
        raise ValueError(f"n_trials={n_trials} cannot fill {stages} stages: use >= 1 per stage")
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise ValueError(f"unknown pruner {pruner!r}; known: {', '.join(PRUNERS)}")
    if cv is not None and (isinstance(cv, bool) or not isinstance(cv, int) or cv < 2):
        raise ValueError(f"cv must be an int >= 2 (folds) or None, got {cv!r}")
