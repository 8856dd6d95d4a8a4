"""Coarse -> fine stages: how many trials and epochs each stage gets, its ranges, its quota.

Lecture: "coarse -> fine cross-validation in stages: first stage, only a few epochs to get a
rough idea of what params work; second stage, longer running time, finer search".

Stage ``k`` is its own Optuna study (``<name>-stage<k>``) in the search's storage; its ranges
and epoch budget live in the study's user attributes, set once, computed from stage ``k-1``'s
finished trials by a deterministic rule (:mod:`babysit.tuning.space`: the span of the top 20%
of trials, at least 2, padded by 25% in log space for log parameters; choices keep the values
the top trials used), so every worker computes the same ranges. Epochs grow geometrically
from ``epochs // 10`` to ``epochs``; trials shrink (2:1 for two stages, 4:2:1 for three).
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from ..findings import Finding
from .space import Choice, IntUniform, LogUniform, Param, Uniform

__all__ = [
    "MAX_TRIALS_FACTOR",
    "REPORTS_ATTR",
    "STAGE1_DIVISOR",
    "TOP_FRACTION",
    "StageQuota",
    "best_at_edge",
    "extend",
    "plan_stages",
    "stage_study",
    "stored_ranges",
]

TOP_FRACTION = 0.2  # the top 20% of a stage's trials define the next stage's ranges
# Stage 1 trains epochs // 10 epochs (at least 1): a short probe already ranks configurations
# nearly as a long one does, so longer probes spend budget without adding information
# (measured in docs/search.md, "Coarse -> fine stages").
STAGE1_DIVISOR = 10
# A stage runs at most this many times its planned trials when pruning frees epochs.
MAX_TRIALS_FACTOR = 3
# The trial user attribute holding how many times a complete trial reports (epochs or folds).
REPORTS_ATTR = "reports_expected"

_DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def plan_stages(n_trials: int, stages: int, epochs: int) -> list[tuple[int, int]]:
    """(trials, epochs) per stage: trials 2:1 (4:2:1 ...), epochs from ``epochs // 10`` up.

    >>> plan_stages(60, 2, 20)
    [(40, 2), (20, 20)]
    """
    weights = [2 ** (stages - 1 - i) for i in range(stages)]
    trials = [max(1, round(n_trials * w / sum(weights))) for w in weights]
    trials[-1] = max(1, n_trials - sum(trials[:-1]))
    first = max(1, epochs // STAGE1_DIVISOR)
    budget = [
        round(first * (epochs / first) ** (i / (stages - 1))) if stages > 1 else epochs
        for i in range(stages)
    ]
    return list(zip(trials, budget, strict=True))


def stage_study(
    name: str,
    k: int,
    storage: Any,
    *,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    direction: str,
    params: dict[str, Param],
    previous: optuna.Study | None,
    epochs: int,
    attrs: dict[str, Any] | None = None,
) -> optuna.Study:
    """Create or load stage ``k``'s study (0-based); its ranges are set once (idempotent).

    ``previous`` (stage ``k-1``'s study, all of whose trials have finished) gives the ranges by
    narrowing; without it the ranges are ``params``. ``attrs`` are further user attributes
    set with the ranges (the search's settings, on the first stage).
    """
    study = optuna.create_study(
        storage=storage,
        study_name=f"{name}-stage{k + 1}",
        sampler=sampler,
        pruner=pruner,
        direction=direction,
        load_if_exists=True,
    )
    if "space" not in study.user_attrs:
        for key, value in (attrs or {}).items():
            study.set_user_attr(key, value)
        ranges = params if previous is None else _narrow(previous, direction)
        study.set_user_attr("space", {n: p.to_dict() for n, p in ranges.items()})
        study.set_user_attr("epochs", epochs)
        study.set_user_attr("stage", k + 1)
    return study


def _narrow(study: optuna.Study, direction: str) -> dict[str, Param]:
    """Stage k+1's ranges: the span of stage k's top trials (deterministic in its trials)."""
    done = completed(study)
    current = stored_ranges(study)
    if not done:
        return current
    done.sort(key=lambda t: (-t.value if direction == "maximize" else t.value, t.number))
    top = done[: max(2, math.ceil(TOP_FRACTION * len(done)))]
    return {n: p.narrowed([t.params[n] for t in top if n in t.params]) for n, p in current.items()}


def stored_ranges(study: optuna.Study) -> dict[str, Param]:
    """The ranges a stage's study holds in its user attributes."""
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


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def finished_count(study: optuna.Study) -> int:
    """Completed and pruned trials (what a stage's quota counts)."""
    return sum(t.state in _DONE for t in study.get_trials(deepcopy=False))


class StageQuota:
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


def best_at_edge(study: optuna.Study, ranges: dict[str, Param], stage: int) -> list[Finding]:
    """BEST_AT_EDGE for each range whose best value lies in its outer 10%."""
    if not completed(study):
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


def extend(ranges: dict[str, Param], edge: list[Finding]) -> dict[str, Param]:
    """``ranges`` with each range of a ``BEST_AT_EDGE`` finding grown past its edge."""
    out = dict(ranges)
    for f in edge:
        name = f.evidence["param"]
        out[name] = ranges[name].extended(f.evidence["side"])
    return out


def _range_text(p: Param) -> str:
    d = p.to_dict()
    return f"[{d['low']:.3g}, {d['high']:.3g}]" if "low" in d else str(d.get("values"))
