"""``babysit.search``: the lecture's hyperparameter search, on Optuna.

Lecture: "coarse -> fine cross-validation in stages: first stage, only a few epochs to get a
rough idea of what params work; second stage, longer running time, finer search". And "random
search in log space" (Bergstra & Bengio 2012), and "if the cost is ever > 3 × the original cost,
break out early".

Stages. Stage ``k`` is its own Optuna study (``<name>-stage<k>``) in the same storage; its
ranges and epoch budget live in the study's user attributes, computed from stage ``k-1``'s
finished trials by a deterministic rule (:mod:`babysit.tuning.space`: the span of the top 20%
of trials, at least 2, padded by 25% in log space for log parameters; choices keep the values
the top trials used). Epochs grow geometrically from ``epochs // 10`` to ``epochs``; trials
shrink (2:1 for two stages, 4:2:1 for three). ``n_trials`` is the total over the stages when no
trial is pruned: each stage may spend (its trials × its epochs) epochs, and the epochs a pruned
trial did not use buy more trials (at most 3× the stage's share). A second call with the same
storage and study name continues where the first stopped.

Default sampler ``"random+tpe"``: random search in log space in the coarse stage (the
lecture's), TPE inside the narrowed ranges after it; with break-out + median pruning it is
at least as good as Optuna's TPE + MedianPruner at an equal epoch budget on the MNIST-1D
benchmark (+0.013 ± 0.010 best validation accuracy over 10 paired seeds, ahead on 8;
``benchmarks/search.py``, docs/benchmarks.md), where all-random stages trail it by 2.4 points.

Which series each pruner reads: the built-in objective reports the validation metric once per
epoch (``trial.report``; what ``MedianPruner`` compares) and the training loss to
:class:`~babysit.tuning.pruners.BreakOutPruner` (every epoch, and at once when it blows up).
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from .. import runs
from ..findings import Finding
from ..train import Callback, fit
from .pruners import BreakOutPruner, report_loss
from .space import Param, check_space, describe

__all__ = ["SearchResult", "mask_url", "open_storage", "search"]

TOP_FRACTION = 0.2  # the top 20% of a stage's trials define the next stage's ranges
# Stage 1 trains epochs // 10 epochs (at least 1). Measured (benchmarks/search.py's ranking
# check, 26 MNIST-1D MLP configs trained 20 epochs): the top 8 after 2 epochs held 7 of the top
# 8 after 20 (Spearman 0.92), as after 5 (0.95): longer probes spend budget, not information.
STAGE1_DIVISOR = 10
# A stage runs at most this many times its planned trials when pruning frees epochs.
MAX_TRIALS_FACTOR = 3
# The trial user attribute holding how many times a complete trial reports (epochs or folds).
REPORTS_ATTR = "reports_expected"
SAMPLERS = ("random", "tpe", "random+tpe")
PRUNERS = ("breakout", "breakout+median", "median", "none")

Objective = Callable[[dict[str, Any], optuna.Trial], float]


@dataclass
class SearchResult:
    """The trials of every stage, the best one, and the findings (``BEST_AT_EDGE``)."""

    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    findings: list[Finding] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)  # ranges and epochs per stage
    run_dir: Path | None = None

    metric: str = "metric"  # the name of what ``value`` measures (e.g. "val_acc")
    direction: str = "maximize"  # whether a larger ``value`` is better ("maximize") or not
    _builtin: Any = field(default=None, repr=False)
    _study: str = field(default="", repr=False)

    @property
    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def plot(self, path: str | os.PathLike | None = None):
        """The lecture's search scatter: the metric of every completed trial against each
        numeric parameter (log x for log ranges), one colour per stage, each stage's range
        shaded, the best trial circled; and the metric by stage. Returns the ``Figure``."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        done = [t for t in self.trials if t["state"] == "COMPLETE" and t["value"] is not None]
        numeric = [
            n
            for n, d in (self.stages[0]["ranges"].items() if self.stages else [])
            if d["kind"] != "choice"
        ]
        panels = len(numeric) + 1
        fig = Figure(figsize=(4.2 * panels, 3.6), layout="tight")
        FigureCanvasAgg(fig)
        axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
        for ax, name in zip(axes, numeric, strict=False):
            for stage in self.stages:
                k = stage["stage"]
                pts = [(t["params"][name], t["value"]) for t in done if t["stage"] == k]
                rng = stage["ranges"][name]
                if "low" in rng:  # a range narrowed to one integer is a choice
                    ax.axvspan(rng["low"], rng["high"], color=f"C{k - 1}", alpha=0.08)
                if pts:
                    ax.scatter(
                        *zip(*pts, strict=True),
                        s=14,
                        color=f"C{k - 1}",
                        label=f"stage {k} ({stage['epochs']} epochs)",
                    )
            if self.best is not None:
                ax.scatter(
                    [self.best["params"][name]],
                    [self.best["value"]],
                    s=90,
                    facecolors="none",
                    edgecolors="k",
                    label="best",
                )
            if self.stages[0]["ranges"][name]["kind"] == "loguniform":
                ax.set_xscale("log")
            ax.set_xlabel(name)
            ax.set_ylabel(self.metric)
            ax.set_title(f"{self.metric} vs {name}: is the peak inside the range?", fontsize=9)
            ax.legend(fontsize=7)
        by_stage = [[t["value"] for t in done if t["stage"] == s["stage"]] for s in self.stages]
        axes[-1].boxplot([v or [math.nan] for v in by_stage])
        axes[-1].set_xticks(
            range(1, len(by_stage) + 1), [f"stage {s['stage']}" for s in self.stages]
        )
        axes[-1].set_ylabel(self.metric)
        axes[-1].set_title(f"{self.metric} by stage: the fine stage should sit higher", fontsize=9)
        if path is not None:
            fig.savefig(path, dpi=100)
        return fig

    def _repr_html_(self) -> str:
        """Jupyter: the search scatter, the best trial, each stage's ranges and the findings;
        ``babysit.report(run_dir)`` has the full page."""
        from html import escape

        from ..findings import Diagnosis
        from ..reporting.figures import data_uri

        parts = []
        if self.stages and any(t["state"] == "COMPLETE" for t in self.trials):
            parts.append(f'<img src="{data_uri(self.plot(), dpi=70)}" alt="search scatter">')
        if self.best is not None:
            params = ", ".join(f"{k}={_short(v)}" for k, v in self.best["params"].items())
            parts.append(
                f"<p><b>best {escape(self.metric)} {self.best['value']:.4g}</b> (trial "
                f"{self.best['number']}, stage {self.best['stage']}): {escape(params)}</p>"
            )
        rows = "".join(
            f"<tr><td>{s['stage']}</td><td>{s['trials']}</td><td>{s['epochs']}</td><td>"
            + escape("; ".join(f"{n}: {describe(r)}" for n, r in s["ranges"].items()))
            + "</td></tr>"
            for s in self.stages
        )
        head = "<tr><th>stage</th><th>trials</th><th>epochs</th><th>ranges</th></tr>"
        parts.append(f"<table>{head}{rows}</table>")
        parts.append(Diagnosis(self.findings)._repr_html_())
        return "".join(parts)

    def ensemble(self, k: int = 3) -> dict[str, Any]:
        """The lecture's model ensemble: average the predicted probabilities of the top-``k``
        completed trials of the last stage, on the test split; with each model's own test
        accuracy beside it (the first is the best trial's).

        Needs the built-in objective and a run directory (the trials' weights are kept there).
        """
        if self._builtin is None or self._builtin.models_dir is None:
            raise ValueError(
                "ensemble() needs a search with the built-in objective and a run_dir: the "
                "trials' weights are kept in run_dir/models/"
            )
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        done = [t for t in self.trials if t["state"] == "COMPLETE" and t["value"] is not None]
        if not done:
            raise ValueError("no completed trial to ensemble")
        last = max(t["stage"] for t in done)
        top = sorted((t for t in done if t["stage"] == last), key=lambda t: -t["value"])[:k]
        return self._builtin.ensemble(self._study, top)

    def __repr__(self) -> str:
        best = "none" if self.best is None else f"{self.best['value']:.4g} {self.best['params']}"
        return f"SearchResult({len(self.trials)} trials, {len(self.stages)} stages; best {best})"


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
) -> SearchResult:
    """Coarse -> fine random search in log space, with the lecture's break-out pruning.

    Args:
        space: ``{"lr": loguniform(1e-6, 1e-1), "hidden": choice([50, 100]), ...}``.
        objective: ``(params, trial) -> metric``; by default a builder model is trained on
            ``data`` with :func:`babysit.fit` and scored by ``metric``.
        model: ``params -> nn.Module`` for the built-in objective (default: ``babysit.nn.mlp``
            with ``hidden``/``activation``/``init``/``batchnorm``/``dropout`` from the params).
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
        run_dir: where ``search.db``, ``trials.csv`` and ``findings.json`` go.
        progress: a progress bar per stage (trials done by all workers, best so far).
    """
    params = check_space(space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is noise here
    _check_args(epochs, n_trials, stages, direction, sampler, pruner, n_jobs, cv)
    run_path = Path(run_dir) if run_dir is not None else None
    if run_path is not None:
        run_path.mkdir(parents=True, exist_ok=True)
    if storage is None and run_path is not None:
        storage = f"sqlite:///{run_path / 'search.db'}"
    store = open_storage(storage)
    name = study_name or "babysit-search"
    if cv is not None and objective is not None:
        raise ValueError(
            "cv applies to the built-in objective: a user objective does its own folds"
        )
    builtin = None
    if objective is None:
        models_dir = run_path / "models" if run_path is not None else None
        builtin = _Builtin(model, data, metric, cv, seed, models_dir)
    run = objective or builtin
    plan = _plan(n_trials, stages, epochs)
    findings: list[Finding] = []
    stage_info: list[dict[str, Any]] = []
    all_trials: list[dict[str, Any]] = []
    previous: optuna.Study | None = None
    extended = False
    k = 0
    while k < len(plan):
        stage_trials, stage_epochs = plan[k]
        study = _stage_study(
            name,
            k,
            store,
            sampler,
            pruner,
            direction,
            seed,
            params,
            previous,
            stage_epochs,
            stage_trials,
        )
        ranges = _ranges(study)
        _optimize(study, run, ranges, stage_trials, stage_epochs, seed, n_jobs, progress)
        all_trials += _table(study, k + 1)
        edge = _best_at_edge(study, ranges, k + 1)
        findings += edge
        stage_info.append(
            {
                "stage": k + 1,
                "epochs": stage_epochs,
                "trials": stage_trials,
                "ranges": {n: p.to_dict() for n, p in ranges.items()},
            }
        )
        previous = study
        k += 1
        if k == len(plan) and auto_extend and edge and not extended:
            extended = True
            plan.append((plan[-1][0], plan[-1][1]))
            params = _extend(ranges, edge)
            previous = None  # the extra stage searches the extended ranges, not narrowed ones
    best = _best(all_trials, direction)
    result = SearchResult(
        all_trials,
        best,
        findings,
        stage_info,
        run_path,
        metric if objective is None else "value",
        direction,
    )
    result._builtin, result._study = builtin, name  # for ensemble()
    if run_path is not None:
        _write(run_path, result, None if storage is None else mask_url(str(storage)))
        result.plot(run_path / "search.png")
    return result


# -- stages ---------------------------------------------------------------------------------------


def _plan(n_trials: int, stages: int, epochs: int) -> list[tuple[int, int]]:
    """(trials, epochs) per stage: trials 2:1 (4:2:1 ...), epochs from epochs // 10 up."""
    weights = [2 ** (stages - 1 - i) for i in range(stages)]
    trials = [max(1, round(n_trials * w / sum(weights))) for w in weights]
    trials[-1] = max(1, n_trials - sum(trials[:-1]))
    first = max(1, epochs // STAGE1_DIVISOR)
    budget = [
        round(first * (epochs / first) ** (i / (stages - 1))) if stages > 1 else epochs
        for i in range(stages)
    ]
    return list(zip(trials, budget, strict=True))


def _stage_study(
    name: str,
    k: int,
    storage: Any,
    sampler: str,
    pruner: str,
    direction: str,
    seed: int,
    params: dict[str, Param],
    previous: optuna.Study | None,
    epochs: int,
    n_stage: int,
) -> optuna.Study:
    """Create or load stage ``k``'s study; its ranges are set once (idempotent)."""
    study = optuna.create_study(
        storage=storage,
        study_name=f"{name}-stage{k + 1}",
        sampler=_sampler(_stage_sampler(sampler, k), seed + k, n_stage),
        pruner=_pruner(pruner),
        direction=direction,
        load_if_exists=True,
    )
    if "space" not in study.user_attrs:
        if previous is not None:
            _settle(previous)  # every worker sees the same finished trials: same ranges
        ranges = params if previous is None else _narrow(previous, params, direction)
        study.set_user_attr("space", {n: p.to_dict() for n, p in ranges.items()})
        study.set_user_attr("epochs", epochs)
        study.set_user_attr("stage", k + 1)
    return study


def _narrow(study: optuna.Study, params: dict[str, Param], direction: str) -> dict[str, Param]:
    """Stage k+1's ranges: the span of stage k's top trials (deterministic in its trials)."""
    done = _finished(study)
    if not done:
        return _ranges(study)
    done.sort(key=lambda t: (-t.value if direction == "maximize" else t.value, t.number))
    top = done[: max(2, math.ceil(TOP_FRACTION * len(done)))]
    current = _ranges(study)
    return {n: p.narrowed([t.params[n] for t in top if n in t.params]) for n, p in current.items()}


def _ranges(study: optuna.Study) -> dict[str, Param]:
    from .space import Choice, IntUniform, LogUniform, Uniform

    kinds = {"loguniform": LogUniform, "uniform": Uniform}
    out: dict[str, Param] = {}
    for name, d in study.user_attrs["space"].items():
        if d["kind"] == "choice":
            out[name] = Choice(d["values"])
        elif d["kind"] == "intuniform":
            out[name] = IntUniform(d["low"], d["high"], d["log"])
        else:
            out[name] = kinds[d["kind"]](d["low"], d["high"])
    return out


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
    quota = _StageQuota(n, epochs)
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
    return sum(t.state in _DONE for t in study.get_trials(deepcopy=False))


_DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
# Heartbeats (RDB storages): a worker's running trial is failed when its heartbeat is older than
# the grace period — a worker killed with SIGKILL leaves no trial RUNNING forever. Failed trials
# do not count toward a stage's quota: another worker runs a new trial in its place.
HEARTBEAT_S = int(os.environ.get("BABYSIT_HEARTBEAT_S", "10"))
GRACE_S = 3 * HEARTBEAT_S
CONNECT_TIMEOUT_S = 10


class _StageQuota:
    """Stops a stage (in every worker) once its trials have spent the stage's budget.

    A stage of ``n`` trials of ``epochs`` epochs may spend ``n`` complete trials' worth of
    training. A completed trial costs one; a pruned one the share of its reports it made
    (epochs, or folds under ``cv``: ``REPORTS_ATTR``), so the training that pruning saves buys
    more trials — as Optuna's pruned studies do within a budget. A pruned trial that reported
    nothing (a user objective that never calls ``trial.report``, or returned NaN) costs a whole
    trial. The stage stops when a further complete trial would overspend, or after
    ``MAX_TRIALS_FACTOR × n`` trials; a stage whose trials keep failing stops after ``2 n``
    failed trials. Without pruning this is exactly ``n`` trials.
    """

    def __init__(self, n: int, epochs: int) -> None:
        self.n, self.epochs = n, epochs
        self.cap = MAX_TRIALS_FACTOR * n

    def _cost(self, trial: optuna.trial.FrozenTrial) -> float:
        reported = len(trial.intermediate_values)
        if trial.state == optuna.trial.TrialState.COMPLETE or reported == 0:
            return 1.0
        expected = max(1, int(trial.user_attrs.get(REPORTS_ATTR, self.epochs)))
        return min(1.0, reported / expected)

    def full(self, study: optuna.Study) -> bool:
        trials = study.get_trials(deepcopy=False)  # one storage read (a database query on RDB)
        done = [t for t in trials if t.state in _DONE]
        spent = sum(self._cost(t) for t in done)
        failed = sum(t.state == optuna.trial.TrialState.FAIL for t in trials)
        return spent + 1 > self.n + 1e-9 or len(done) >= self.cap or failed >= 2 * self.n

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.full(study):
            study.stop()


def _settle(study: optuna.Study, timeout: float | None = None) -> None:
    """Wait until no trial of ``study`` is running (other workers finishing, or dead workers'
    trials failed by the heartbeat), so the finished set is final."""
    deadline = time.monotonic() + (timeout if timeout is not None else 4 * GRACE_S + 60)
    running = optuna.trial.TrialState.RUNNING
    while study.get_trials(deepcopy=False, states=(running,)):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"study {study.study_name!r} still has running trials after waiting: are other "
                "workers alive? (their heartbeats fail dead workers' trials)"
            )
        optuna.storages.fail_stale_trials(study)
        time.sleep(0.5)


def open_storage(url: str | None) -> Any:
    """An Optuna storage for ``url`` (None: in memory), with heartbeats and a connect timeout.

    Errors name the URL with its password masked, and never hang: PostgreSQL connections time
    out after ``CONNECT_TIMEOUT_S`` seconds.
    """
    if url is None:
        return None
    if not isinstance(url, str):
        return url  # an Optuna storage object
    shown = mask_url(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith(("postgresql", "postgres")):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        url = _postgres_driver(url)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
            )
    except Exception as err:
        reason = str(err).replace(_password(url), "***") if _password(url) else str(err)
        raise ConnectionError(
            f"cannot open the search storage {shown}: {reason.splitlines()[0]}"
        ) from None


def _postgres_driver(url: str) -> str:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; use psycopg2 when only it is here."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if "+" in scheme or importlib.util.find_spec("psycopg") is not None:
        return url
    if importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2{sep}{rest}"
    return url


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs, files and messages)."""
    password = _password(url)
    return url.replace(f":{password}@", ":***@") if password else url


def _password(url: str) -> str | None:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password
    except Exception:
        return None


def _finished(study: optuna.Study, states: tuple = (optuna.trial.TrialState.COMPLETE,)) -> list:
    return study.get_trials(deepcopy=False, states=states)


# -- the built-in objective ----------------------------------------------------------------------


class _TrialReporter(Callback):
    """Reports the validation metric per epoch and the loss to the break-out pruner."""

    def __init__(self, trial: optuna.Trial, metric: str, *, report: bool = True) -> None:
        self.trial = trial
        self.metric = metric
        self.report = report  # False under cv: folds report their mean instead
        self.initial: float | None = None

    def on_loss(self, trainer: Any, loss: float) -> None:
        if self.initial is None and math.isfinite(loss):
            self.initial = loss
            report_loss(self.trial, loss)
        blown = not math.isfinite(loss) or (self.initial is not None and loss > 3 * self.initial)
        if blown:  # the lecture's break-out: stop within the step, not at the epoch's end
            report_loss(self.trial, loss)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"loss {loss:.4g} at step {trainer.step}: broke out")

    def on_train_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        if "train_loss" in metrics:
            report_loss(self.trial, metrics["train_loss"])
        if self.report and self.metric in metrics and math.isfinite(metrics[self.metric]):
            self.trial.report(metrics[self.metric], trainer.epoch)
        last = trainer.epoch + 1 >= trainer.epochs  # pruning a finished trial saves nothing
        if not last and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {trainer.epoch}")


class _Builtin:
    """The built-in objective: build a model from the params, train it with ``fit``, score it.

    With ``cv=k`` the training and validation splits are pooled and cut into k folds
    (scikit-learn's ``KFold``, shuffled under the search's seed); the score is the mean over the
    folds, reported after each fold. With a run directory, each completed trial's weights are
    kept (``models/<study>-<trial>.pt``) for :meth:`SearchResult.ensemble`.
    """

    def __init__(
        self,
        model: Callable[[dict[str, Any]], torch.nn.Module] | None,
        data: Any,
        metric: str,
        cv: int | None,
        seed: int,
        models_dir: Path | None,
    ) -> None:
        if data is None:
            raise ValueError(
                "search needs data for its built-in objective (e.g. data='mnist1d'), or pass "
                "objective=lambda params, trial: <metric>"
            )
        self.train, self.val, self.test, self.in_features, self.classes = _splits(data)
        self.model, self.metric, self.cv, self.seed = model, metric, cv, seed
        self.models_dir = models_dir

    def build(self, params: dict[str, Any]) -> torch.nn.Module:
        if self.model is not None:
            return self.model(params)
        from ..nn import mlp

        hidden = params.get("hidden", 100)
        depth = int(params.get("depth", 2))
        widths = list(hidden) if isinstance(hidden, list | tuple) else [int(hidden)] * depth
        return mlp(
            self.in_features,
            widths,
            self.classes,
            activation=params.get("activation", "relu"),
            init=params.get("init", "he"),
            batchnorm=bool(params.get("batchnorm", False)),
            dropout=float(params.get("dropout", 0.0)),
        )

    def _fit(self, params: dict[str, Any], trial: optuna.Trial, train: Any, val: Any, report: bool):
        net = self.build(params)
        history = fit(
            net,
            train,
            val=val,
            optimizer=params.get("optimizer", "adam"),
            lr=params.get("lr", 1e-3),
            weight_decay=float(params.get("weight_decay", 0.0)),
            batch_size=int(params.get("batch_size", 64)),
            epochs=int(trial.user_attrs["epochs"]),
            monitors=None,
            progress=False,
            seed=trial.number,
            callbacks=[_TrialReporter(trial, self.metric, report=report)],
        )
        if self.metric not in history.final:
            known = ", ".join(k for k in history.final if k not in ("epoch", "seconds"))
            raise ValueError(f"metric {self.metric!r} is not measured; known: {known}")
        return net, history.final[self.metric]

    def __call__(self, params: dict[str, Any], trial: optuna.Trial) -> float:
        trial.set_user_attr(REPORTS_ATTR, self.cv or int(trial.user_attrs["epochs"]))
        if self.cv is None:
            net, score = self._fit(params, trial, self.train, self.val, report=True)
            self._keep(net, params, trial)
            return score
        from sklearn.model_selection import KFold

        x = torch.cat([self.train[0], self.val[0]])
        y = torch.cat([self.train[1], self.val[1]])
        scores = []
        folds = KFold(self.cv, shuffle=True, random_state=self.seed).split(x.numpy())
        for i, (tr, va) in enumerate(folds):
            tr, va = torch.as_tensor(tr), torch.as_tensor(va)
            _, score = self._fit(params, trial, (x[tr], y[tr]), (x[va], y[va]), report=False)
            scores.append(score)
            trial.report(sum(scores) / len(scores), i)
            if i + 1 < self.cv and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {i + 1} of {self.cv}")
        trial.set_user_attr("cv_scores", scores)
        return sum(scores) / len(scores)

    def _keep(self, net: torch.nn.Module, params: dict[str, Any], trial: optuna.Trial) -> None:
        if self.models_dir is None:
            return
        buffer = io.BytesIO()
        torch.save({"params": params, "state": net.state_dict()}, buffer)
        path = self.models_dir / f"{trial.study.study_name}-{trial.number}.pt"
        runs.atomic_write_bytes(path, buffer.getvalue())

    @torch.no_grad()
    def ensemble(self, study_name: str, trials: list[dict[str, Any]]) -> dict[str, Any]:
        """Test accuracy of the averaged softmax of ``trials``' models, and of each alone."""
        if self.test is None:
            raise ValueError("ensemble needs a test split: search with data='mnist1d', a Splits…")
        x, y = self.test
        probs, singles = [], []
        for t in trials:
            path = self.models_dir / f"{study_name}-stage{t['stage']}-{t['number']}.pt"  # type: ignore[operator]
            if not path.exists():
                raise FileNotFoundError(
                    f"the weights of trial {t['number']} (stage {t['stage']}) are not in {path}: "
                    "they are kept on the machine that ran it; run ensemble() there"
                )
            saved = torch.load(path, weights_only=True)
            net = self.build(saved["params"])
            net.load_state_dict(saved["state"])
            net.eval()
            p = torch.softmax(net(x), dim=1)
            probs.append(p)
            singles.append(float((p.argmax(1) == y).float().mean()))
        mean = torch.stack(probs).mean(0)
        return {
            "k": len(trials),
            "ensemble_test_acc": float((mean.argmax(1) == y).float().mean()),
            "single_test_acc": singles,
            "best_single_test_acc": singles[0],
            "trials": [(t["stage"], t["number"]) for t in trials],
        }


def _splits(data: Any) -> tuple[Any, Any, Any, int, int]:
    """(train, val, test or None, in_features, classes); a data set name is standardized on
    its training split."""
    from ..data import Standardize, load

    if isinstance(data, str):
        splits = load(data)
        (x, y), (xv, yv), (xt, yt) = (s.tensors for s in (splits.train, splits.val, splits.test))
        scaler = Standardize().fit(x)
        x, xv, xt = (scaler.transform(t) for t in (x, xv, xt))
        return (x, y), (xv, yv), (xt, yt), x.shape[1], splits.num_classes
    if hasattr(data, "train") and hasattr(data, "val"):
        (x, y), (xv, yv) = data.train.tensors, data.val.tensors
        test = data.test.tensors if getattr(data, "test", None) is not None else None
    else:
        (x, y), (xv, yv), *rest = data
        test = rest[0] if rest else None
    return (x, y), (xv, yv), test, int(x.shape[1]), int(torch.as_tensor(y).max()) + 1


# -- findings and results ------------------------------------------------------------------------


def _best_at_edge(study: optuna.Study, ranges: dict[str, Param], stage: int) -> list[Finding]:
    """BEST_AT_EDGE for each range whose best value lies in its outer 10%."""
    done = _finished(study)
    if not done:
        return []
    best = study.best_trial
    found = []
    for name, param in ranges.items():
        if name not in best.params:
            continue
        side = param.edge(best.params[name])
        if side is None:
            continue
        bigger = param.extended(side)
        found.append(
            Finding(
                "BEST_AT_EDGE",
                "warning",
                f"stage {stage}: the best {name} = {best.params[name]:.3g} lies at the {side} "
                f"edge of its range {_range_text(param)}: a better value may lie beyond it",
                f"extend the range to {_range_text(bigger)} (or search with auto_extend=True)",
                {
                    "param": name,
                    "value": best.params[name],
                    "side": side,
                    "range": param.to_dict(),
                    "suggested": bigger.to_dict(),
                    "stage": stage,
                },
            )
        )
    return found


def _extend(ranges: dict[str, Param], edge: list[Finding]) -> dict[str, Param]:
    out = dict(ranges)
    for f in edge:
        name = f.evidence["param"]
        out[name] = ranges[name].extended(f.evidence["side"])
    return out


def _range_text(p: Param) -> str:
    d = p.to_dict()
    return f"[{d['low']:.3g}, {d['high']:.3g}]" if "low" in d else str(d.get("values"))


def _table(study: optuna.Study, stage: int) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "stage": stage,
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": dict(t.params),
                "epochs": t.user_attrs.get("epochs"),
                "epochs_run": len(t.intermediate_values),
                "error": t.user_attrs.get("error"),
            }
        )
    return rows


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _best(trials: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    if not done:
        return None
    last = max(t["stage"] for t in done)  # the longest-trained stage decides
    pool = [t for t in done if t["stage"] == last]
    pick = max if direction == "maximize" else min
    return pick(pool, key=lambda t: t["value"])


def _write(run_dir: Path, result: SearchResult, storage: str | None) -> None:
    names = sorted({n for t in result.trials for n in t["params"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["stage", "number", "state", "value", "epochs", "epochs_run", *names])
    for t in result.trials:
        writer.writerow(
            [
                t["stage"],
                t["number"],
                t["state"],
                t["value"],
                t["epochs"],
                t["epochs_run"],
                *(t["params"].get(n) for n in names),
            ]
        )
    runs.atomic_write_bytes(run_dir / "trials.csv", buffer.getvalue().encode())
    runs.write_json(run_dir, runs.FINDINGS, {"findings": [f.to_dict() for f in result.findings]})
    runs.write_json(
        run_dir,
        "search.json",
        {
            "metric": result.metric,
            "direction": result.direction,
            "stages": result.stages,
            "best": result.best,
            "storage": storage,
            "trials": result.trials,  # typed parameters, for the report
        },
    )


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
