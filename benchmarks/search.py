"""Hyperparameter search at an equal epoch budget (issue 6): grid, random, TPE + median, babysit.

MNIST-1D (``babysit.data.load("mnist1d")``: 3200 training, 800 validation, 1000 test examples,
``Standardize``d on the training split), ``babysit.nn.mlp(40, [width] * depth, 10)`` (ReLU, He
init, depth 2), SGD with momentum 0.9 (``optimizer="momentum"``), batch 64 (50 steps per
epoch), trained with ``babysit.fit(..., monitors=None, progress=False)``. One search space for
every method:

    lr            log-uniform [1e-6, 10]
    weight_decay  log-uniform [1e-7, 1]
    width         integer, log-uniform in [32, 256]

A trial's score is the validation accuracy after its last epoch (what ``babysit.search``'s
built-in objective returns); a method's result is the best score of its completed trials
(``babysit.search``: its ``result.best``, i.e. the best trial of the last stage). Pruned trials
are abandoned and never count as the best.

The budget is counted in epochs, partial trials included: every training forward pass of every
trial is counted by a forward hook on the model (also inside ``babysit.search``, through its
``model=`` builder), and epochs = steps / 50. Each method is sized to the budget B (default 600):

1. grid: ``B // fixed_epochs`` cells (default ``fixed_epochs`` 10: 60 cells) split into
   lr × weight decay × width levels with the largest product that fits, the most levels for lr
   (60 = 5 × 4 × 3). Levels are evenly spaced in log space with a random offset per seed and
   dimension (cell ``i`` of ``n``: ``low + (i + u) (high - low) / n``, ``u ~ U(0, 1)``), so a lucky
   fixed grid cannot contain the optimum on every seed. Each cell trains ``fixed_epochs``.
2. random: Optuna ``RandomSampler`` (log space), ``B // fixed_epochs`` trials of
   ``fixed_epochs`` epochs, no pruning.
3. TPE + median: Optuna ``TPESampler(seed)`` and ``MedianPruner()`` (Optuna's defaults:
   5 startup trials, no warm-up), trials of up to ``--epochs`` (20) epochs reporting the
   validation accuracy every epoch; new trials start until B epochs are spent (the last one is
   cut to what is left). Pruning buys it more trials.
4. babysit: ``babysit.search(space, model=..., data=..., epochs=E, n_trials=n)`` with its
   defaults (random sampler, break-out pruner, 2 stages: 2/3 of the trials at ``E // 4``
   epochs, 1/3 at ``E``), ``E = --epochs`` (20) and ``n`` the largest trial count whose plan
   (``babysit.tuning.plan_stages``) fits in B: 60 trials for B = 600
   (40 × 5 + 20 × 20 = 600). Break-out pruning only ever spends less than the plan.
5. babysit tpe: the same with ``sampler="tpe", pruner="breakout+median"``.

A trial *diverged* when its training loss at some step was NaN/Inf or above 3 × its first
step's loss (the lecture's break-out rule); the table counts them and the epochs they ran
(babysit's are read from the break-out attributes in its Optuna storage). Test accuracy is that
of the best trial's trained model on the 1000 test examples (no retraining).

Paired differences are against TPE + median on the same seed (the seed fixes the samplers, the
grid offset and the trials' initializations; the data split is the same for all seeds): mean ±
standard error over seeds.

Run: ``python benchmarks/search.py [--seeds 0,1,2,3,4] [--budget 600] [--epochs 20]
[--fixed-epochs 10] [--methods grid,random,tpe,babysit,babysit-tpe] [--json out.json]``;
``--quick`` is a smoke test (2 seeds, budget 60).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from torch import nn

import babysit
from babysit.data import Standardize, load
from babysit.tuning.pruners import BreakOutPruner
from babysit.tuning.stages import plan_stages as _plan

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import header, md_table

LR = (1e-6, 10.0)
WEIGHT_DECAY = (1e-7, 1.0)
WIDTH = (32, 256)
BATCH = 64
BREAKOUT = 3.0
METHODS = ("grid", "random", "tpe", "babysit", "babysit-tpe", "babysit-rtpe")
LABELS = {
    "grid": "grid (random offset)",
    "random": "random search (log space)",
    "tpe": "Optuna TPE + MedianPruner",
    "babysit": "babysit.search (random, breakout)",
    "babysit-tpe": "babysit.search (tpe, breakout+median)",
    "babysit-rtpe": "babysit.search (random+tpe, breakout+median)",
}
BASELINE = "tpe"


# ------------------------------------------------------------------------------------ data


@dataclass
class Data:
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    steps_per_epoch: int


def load_mnist1d() -> Data:
    splits = load("mnist1d")
    (x, y), (xv, yv) = splits.train.tensors, splits.val.tensors
    xt, yt = splits.test.tensors
    scaler = Standardize().fit(x)
    x, xv, xt = scaler.transform(x), scaler.transform(xv), scaler.transform(xt)
    return Data((x, y), (xv, yv), (xt, yt), math.ceil(len(y) / BATCH))


@torch.no_grad()
def accuracy(model: nn.Module, xy: tuple[torch.Tensor, torch.Tensor]) -> float:
    model.eval()
    x, y = xy
    return (model(x).argmax(1) == y).float().mean().item()


# ------------------------------------------------------------------------------------ models


class Counted:
    """Builds the models of one search and counts their training steps (forward passes in
    training mode), per model in build order."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.models: list[tuple[dict[str, Any], nn.Module]] = []
        self.steps: list[int] = []

    def __call__(self, params: dict[str, Any]) -> nn.Module:
        width = int(params["hidden"])
        model = babysit.nn.mlp(40, [width] * self.depth, 10, activation="relu", init="he")
        index = len(self.steps)
        self.steps.append(0)
        self.models.append((dict(params), model))

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if module.training:
                self.steps[index] += 1

        model.register_forward_hook(hook)
        return model


class Watch(babysit.Callback):
    """Flags divergence (loss NaN/Inf or > 3 × the first step's); reports val acc to a trial
    and asks its pruner after every epoch when ``prune``."""

    def __init__(self, trial: optuna.Trial | None, prune: bool) -> None:
        self.trial, self.prune = trial, prune
        self.initial: float | None = None
        self.diverged = False

    def on_loss(self, trainer: Any, loss: float) -> None:
        if self.initial is None and math.isfinite(loss):
            self.initial = loss
        if not math.isfinite(loss) or (self.initial is not None and loss > BREAKOUT * self.initial):
            self.diverged = True

    def on_train_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        if self.trial is None:
            return
        self.trial.report(metrics["val_acc"], trainer.epoch)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {trainer.epoch}")


# ------------------------------------------------------------------------------------ results


@dataclass
class Trial:
    params: dict[str, Any]
    state: str  # COMPLETE, PRUNED, FAIL
    value: float | None
    epochs: float  # steps run / steps per epoch
    diverged: bool
    test_acc: float | None = None
    stage: int = 1


@dataclass
class Run:
    method: str
    seed: int
    trials: list[Trial]
    seconds: float
    best: Trial | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs(self) -> float:
        return sum(t.epochs for t in self.trials)

    @property
    def best_value(self) -> float:
        return math.nan if self.best is None else float(self.best.value)  # type: ignore[arg-type]


def best_of(trials: list[Trial]) -> Trial | None:
    done = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
    return max(done, key=lambda t: t.value) if done else None  # type: ignore[arg-type,return-value]


# ------------------------------------------------------------------------------------ trials


def train_trial(
    params: dict[str, Any],
    epochs: int,
    data: Data,
    build: Counted,
    seed: int,
    trial: optuna.Trial | None = None,
    prune: bool = False,
) -> Trial:
    """Train one configuration; a pruned trial comes back with state PRUNED and its epochs."""
    torch.manual_seed(seed)
    model = build(params)
    watch = Watch(trial, prune)
    state, value = "COMPLETE", None
    try:
        history = babysit.fit(
            model,
            data.train,
            val=data.val,
            optimizer="momentum",
            lr=params["lr"],
            weight_decay=params["weight_decay"],
            epochs=epochs,
            batch_size=BATCH,
            monitors=None,
            progress=False,
            seed=seed,
            callbacks=[watch],
        )
        value = float(history.final["val_acc"])
    except optuna.TrialPruned:
        state = "PRUNED"
    ran = build.steps[-1] / data.steps_per_epoch
    test = accuracy(model, data.test) if state == "COMPLETE" else None
    return Trial(dict(params), state, value, ran, watch.diverged, test)


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "lr": trial.suggest_float("lr", *LR, log=True),
        "weight_decay": trial.suggest_float("weight_decay", *WEIGHT_DECAY, log=True),
        "hidden": trial.suggest_int("hidden", *WIDTH, log=True),
    }


# ------------------------------------------------------------------------------------ methods


def grid_levels(cells: int) -> tuple[int, int, int]:
    """(lr, weight decay, width) level counts with lr >= weight decay >= width: the largest
    product <= ``cells``, then the most width levels, then the most weight decay levels."""
    best = (1, 1, 1)
    for a in range(1, cells + 1):
        for b in range(1, a + 1):
            for c in range(1, b + 1):
                if a * b * c <= cells and (a * b * c, c, b) > (
                    best[0] * best[1] * best[2],
                    best[2],
                    best[1],
                ):
                    best = (a, b, c)
    return best


def offset_levels(low: float, high: float, n: int, rng: torch.Generator) -> list[float]:
    """``n`` log-spaced levels in [low, high], shifted by one random offset within a cell."""
    lo, hi = math.log10(low), math.log10(high)
    u = torch.rand((), generator=rng).item()
    return [10 ** (lo + (i + u) * (hi - lo) / n) for i in range(n)]


def run_grid(data: Data, seed: int, args: argparse.Namespace) -> Run:
    cells = args.budget // args.fixed_epochs
    a, b, c = grid_levels(cells)
    rng = torch.Generator().manual_seed(seed)
    lrs = offset_levels(*LR, a, rng)
    wds = offset_levels(*WEIGHT_DECAY, b, rng)
    widths = [round(w) for w in offset_levels(*WIDTH, c, rng)]
    build = Counted(args.depth)
    start = time.perf_counter()
    trials = []
    for i, (lr, wd, width) in enumerate(
        (lr, wd, width) for lr in lrs for wd in wds for width in widths
    ):
        params = {"lr": lr, "weight_decay": wd, "hidden": width}
        trials.append(train_trial(params, args.fixed_epochs, data, build, 1000 * seed + i))
    run = Run("grid", seed, trials, time.perf_counter() - start, best_of(trials))
    run.notes["levels"] = f"{a}x{b}x{c}"
    return run


def run_random(data: Data, seed: int, args: argparse.Namespace) -> Run:
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=optuna.pruners.NopPruner(),
    )
    build = Counted(args.depth)
    start = time.perf_counter()
    trials = []
    for i in range(args.budget // args.fixed_epochs):
        trial = study.ask()
        t = train_trial(suggest(trial), args.fixed_epochs, data, build, 1000 * seed + i, trial)
        study.tell(trial, t.value)
        trials.append(t)
    return Run("random", seed, trials, time.perf_counter() - start, best_of(trials))


def run_tpe(data: Data, seed: int, args: argparse.Namespace) -> Run:
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(),
    )
    build = Counted(args.depth)
    start = time.perf_counter()
    trials: list[Trial] = []
    spent = 0.0
    while (epochs := min(args.epochs, math.floor(args.budget - spent + 1e-9))) >= 1:
        trial = study.ask()
        t = train_trial(
            suggest(trial), epochs, data, build, 1000 * seed + len(trials), trial, prune=True
        )
        if t.state == "PRUNED":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, t.value)
        trials.append(t)
        spent += t.epochs
    return Run("tpe", seed, trials, time.perf_counter() - start, best_of(trials))


def babysit_size(budget: int, epochs: int) -> int:
    """The largest ``n_trials`` whose 2-stage plan spends at most ``budget`` epochs."""
    best = 2
    for n in range(2, budget + 1):
        if sum(k * e for k, e in _plan(n, 2, epochs)) <= budget:
            best = n
    return best


def run_babysit(
    data: Data, seed: int, args: argparse.Namespace, tpe: bool = False, extra: dict | None = None
) -> Run:
    n_trials = babysit_size(args.budget, args.epochs)
    storage = optuna.storages.InMemoryStorage()
    build = Counted(args.depth)
    space = {
        "lr": babysit.loguniform(*LR),
        "weight_decay": babysit.loguniform(*WEIGHT_DECAY),
        "hidden": babysit.intuniform(*WIDTH, log=True),
        "optimizer": "momentum",
        "batch_size": BATCH,
    }
    if extra is None:
        extra = {"sampler": "tpe", "pruner": "breakout+median"} if tpe else {}
    start = time.perf_counter()
    result = babysit.search(
        space,
        model=build,
        data=(data.train, data.val),
        epochs=args.epochs,
        n_trials=n_trials,
        storage=storage,
        study_name="bench",
        seed=seed,
        **extra,
    )
    seconds = time.perf_counter() - start
    # result.trials is in execution order (stage by stage, trial numbers ascending), as are the
    # builder's models: one model per trial.
    frozen = []
    for stage in range(1, len(result.stages) + 1):
        study = optuna.load_study(study_name=f"bench-stage{stage}", storage=storage)
        frozen += study.get_trials(deepcopy=False)
    if len(frozen) != len(build.steps) or len(frozen) != len(result.trials):
        raise RuntimeError(
            f"{len(frozen)} trials but {len(build.steps)} models were built: cannot count epochs"
        )
    pruner = BreakOutPruner()
    trials = []
    run_epochs = 0
    for row, ft, steps in zip(result.trials, frozen, build.steps, strict=True):
        run_epochs += row["epochs_run"]
        trials.append(
            Trial(
                dict(row["params"]),
                row["state"],
                row["value"],
                steps / data.steps_per_epoch,
                pruner.broke_out(ft.user_attrs),
                stage=row["stage"],
            )
        )
    best = None
    if result.best is not None:
        stage, number = result.best["stage"], result.best["number"]
        i = next(
            k for k, r in enumerate(result.trials) if r["stage"] == stage and r["number"] == number
        )
        best = trials[i]
        best.test_acc = accuracy(build.models[i][1], data.test)
    label = "babysit-tpe" if tpe else "babysit"
    if extra.get("sampler") == "random+tpe":
        label = "babysit-rtpe"
    run = Run(label, seed, trials, seconds, best)
    planned = sum(k * e for k, e in _plan(n_trials, 2, args.epochs))
    run.notes.update(
        n_trials=n_trials,
        planned_epochs=planned,
        epochs_run_column=run_epochs,
        stages=[
            {
                "trials": s["trials"],
                "epochs": s["epochs"],
                "spent": sum(t.epochs for t in trials if t.stage == k),
                "lr": s["ranges"]["lr"],
                "hidden": s["ranges"]["hidden"],
            }
            for k, s in enumerate(result.stages, 1)
        ],
        stage1_best=max(
            (r["value"] for r in result.trials if r["stage"] == 1 and r["state"] == "COMPLETE"),
            default=math.nan,
        ),
    )
    return run


RUNNERS: dict[str, Callable[[Data, int, argparse.Namespace], Run]] = {
    "grid": run_grid,
    "random": run_random,
    "tpe": run_tpe,
    "babysit": run_babysit,
    "babysit-tpe": lambda d, s, a: run_babysit(d, s, a, tpe=True),
    "babysit-rtpe": lambda d, s, a: run_babysit(
        d, s, a, extra={"sampler": "random+tpe", "pruner": "breakout+median"}
    ),
}


# ------------------------------------------------------------------------------------ report


def pm(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def paired(a: list[float], b: list[float]) -> str:
    diffs = [x - y for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)]
    if not diffs:
        return "—"
    if len(diffs) == 1:
        return f"{diffs[0]:+.3f}"
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    wins = sum(d > 0 for d in diffs)
    return f"{statistics.mean(diffs):+.3f} ± {se:.3f} ({wins}/{len(diffs)} higher)"


def report(runs: dict[str, list[Run]], seeds: list[int], args: argparse.Namespace) -> str:
    out = [header("Hyperparameter search at an equal epoch budget (MNIST-1D MLP, SGD momentum)")]
    out.append(
        f"budget {args.budget} epochs per search (steps / {BATCH}-example batches, partial "
        f"trials included); seeds {','.join(map(str, seeds))}; grid/random trials of "
        f"{args.fixed_epochs} epochs, TPE and babysit's last stage {args.epochs} epochs; "
        f"babysit n_trials={babysit_size(args.budget, args.epochs)}; depth {args.depth}\n"
    )
    base = runs.get(BASELINE)
    rows = []
    for method, rs in runs.items():
        values = [r.best_value for r in rs]
        tests = [
            r.best.test_acc if r.best and r.best.test_acc is not None else math.nan for r in rs
        ]
        div = [t for r in rs for t in r.trials if t.diverged]
        div_epochs = (
            f"{statistics.mean(t.epochs for t in div):.2f} (max {max(t.epochs for t in div):.2f})"
            if div
            else "—"
        )
        rows.append(
            [
                LABELS[method],
                pm(values),
                "—"
                if base is None or method == BASELINE
                else paired(values, [r.best_value for r in base]),
                pm(tests),
                f"{statistics.mean(r.epochs for r in rs):.0f}",
                f"{statistics.mean(len(r.trials) for r in rs):.1f}",
                f"{statistics.mean(r.seconds for r in rs):.0f}",
                f"{len(div) / len(rs):.1f}",
                div_epochs,
            ]
        )
    out.append(
        md_table(
            [
                "method",
                "best val acc",
                f"paired diff vs {LABELS[BASELINE]} (mean ± s.e.)",
                "test acc of best",
                "epochs spent",
                "trials",
                "wall s",
                "diverged trials / seed",
                "epochs a diverged trial ran (mean, max)",
            ],
            rows,
        )
    )
    out.append("\nBest validation accuracy per seed:\n")
    out.append(
        md_table(
            ["method", *map(str, seeds)],
            [[LABELS[m], *(f"{r.best_value:.3f}" for r in rs)] for m, rs in runs.items()],
        )
    )
    for method in ("babysit", "babysit-tpe", "babysit-rtpe"):
        if method not in runs:
            continue
        out.append(f"\n{LABELS[method]}, per seed: stage spend and stage-2 ranges:\n")
        rows = []
        for r in runs[method]:
            s1, s2 = r.notes["stages"][0], r.notes["stages"][-1]
            lr, hidden = s2["lr"], s2["hidden"]
            hid = (
                f"[{hidden['low']}, {hidden['high']}]" if "low" in hidden else str(hidden["values"])
            )
            rows.append(
                [
                    str(r.seed),
                    f"{s1['trials']}×{s1['epochs']}: {s1['spent']:.1f}",
                    f"{s2['trials']}×{s2['epochs']}: {s2['spent']:.1f}",
                    f"{r.notes['planned_epochs'] - r.epochs:.1f}",
                    f"{r.notes['epochs_run_column']}",
                    f"[{lr['low']:.2g}, {lr['high']:.2g}] "
                    f"({math.log10(lr['high'] / lr['low']):.2f} dec)",
                    hid,
                    f"{r.notes['stage1_best']:.3f}",
                    f"{r.best_value:.3f}",
                ]
            )
        out.append(
            md_table(
                [
                    "seed",
                    "stage 1 (planned: spent)",
                    "stage 2 (planned: spent)",
                    "epochs left unspent",
                    "sum of epochs_run",
                    "stage-2 lr range",
                    "stage-2 width",
                    "stage-1 best",
                    "best (stage 2)",
                ],
                rows,
            )
        )
    return "\n".join(out)


def to_json(runs: dict[str, list[Run]]) -> dict[str, Any]:
    return {
        m: [
            {
                "seed": r.seed,
                "seconds": r.seconds,
                "epochs": r.epochs,
                "best_value": r.best_value,
                "best": None if r.best is None else vars(r.best),
                "notes": r.notes,
                "trials": [vars(t) for t in r.trials],
            }
            for r in rs
        ]
        for m, rs in runs.items()
    }


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    from _common import add_write_docs_arg, emit  # here, not above: the import block is shared

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma list of seeds")
    parser.add_argument("--budget", type=int, default=600, help="epochs per search")
    parser.add_argument("--epochs", type=int, default=20, help="TPE's and babysit's max epochs")
    parser.add_argument("--fixed-epochs", type=int, default=10, help="grid/random trial epochs")
    parser.add_argument("--depth", type=int, default=2, help="hidden layers of the MLP")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of methods")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, help="write every trial here")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 seeds, budget 60")
    add_write_docs_arg(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.budget = "0,1", 60
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds:
        parser.error("--seeds needs at least one seed")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
    if args.budget < args.epochs or args.budget < args.fixed_epochs:
        parser.error("--budget must be at least --epochs and --fixed-epochs")
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_mnist1d()
    runs: dict[str, list[Run]] = {m: [] for m in methods}
    for seed in seeds:  # seeds outermost: an interrupted run still has paired results
        for method in methods:
            run = RUNNERS[method](data, seed, args)
            runs[method].append(run)
            print(
                f"seed {seed} {method:12s} best val {run.best_value:.3f}  "
                f"epochs {run.epochs:6.1f}  trials {len(run.trials):3d}  "
                f"diverged {sum(t.diverged for t in run.trials):2d}  {run.seconds:6.1f} s",
                file=sys.stderr,
                flush=True,
            )
    emit(args, __file__, [report(runs, seeds, args)])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_json(runs), f, indent=1, default=str)


if __name__ == "__main__":
    main()
