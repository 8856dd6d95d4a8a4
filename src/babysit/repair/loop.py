"""``babysit.fix``: from findings to a verified repair.

The loop (``docs/architecture.md``, "Repair"):

1. ``diagnose`` the set-up as given (``Repair.before``). Nothing at warning/error: nothing is
   changed, and the repair says so. An error under which nothing can train (the forward pass
   or the loss fails, NaN inputs, labels out of range) stops here: every remedy is listed as
   not tried, and the findings are ``remaining`` with the change to make.
2. A short training run of the set-up as given is the reference (:mod:`.verify`).
3. Codes are taken in :data:`~.remedies.CODE_ORDER` (structure and data, then initialization,
   then regularization and the learning rate); for each code still found, its remedies are
   tried in order on a copy of the current set-up. A remedy is **accepted** only if (a) a
   re-diagnosis no longer shows its code and shows no warning/error that the current set-up
   did not have, and (b) the short run reaches a lower validation loss than the current
   set-up's. Every remedy of the code is tried and the verified one with the lowest
   validation loss becomes the current set-up (``_best_of=False``: the first verified one, as
   AUTOTRAINER does; the default for an injected ``_order``); rejected, skipped and
   outperformed ones stay in ``Repair.steps`` with their evidence.
4. Interacting findings: when a remedy removes its code but uncovers another (standardized
   data now needs another learning rate; a re-initialised net now saturates differently), the
   new code's remedies are applied on top and the two are verified *together*, as one step.
   A remedy that changes the scale of activations or gradients (``Remedy.retune_lr``) is also
   tried with the range test's lr for the repaired set-up (data scale + lr, init + lr), kept
   when that trains better. When a pass accepted something, one more pass retries what is left.
5. ``budget_s``: no remedy starts after the budget is spent; those not tried are listed.

The order of remedies can be injected (``_order``, with ``_best_of``): the benchmark compares
babysit's with a random remedy and AUTOTRAINER's fixed order (:mod:`.baselines`) at the same
short-run length.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import runs
from ..batches import preserved_rng
from ..checks import diagnose
from ..findings import Diagnosis, Finding
from ..optim import DEFAULT_LR
from ..outputs import Forward
from ..progress_line import stderr_is_terminal
from ..tasks import Task
from .remaining import BLOCKING, remaining
from .remedies import CODE_ORDER, REMEDIES, Skip, remedies_for
from .result import FIX_JSON, Remaining, Repair, RepairStep, merge_patch
from .setup import SetUp
from .verify import ShortRun, better

__all__ = ["Order", "default_order", "fix"]

# (code, the remedy names registered for it) -> the names to try, in order
Order = Callable[[str, tuple[str, ...]], Sequence[str]]

NOT_TRAINABLE = "the set-up cannot train until this is fixed, so no remedy could be verified"
NO_REMEDY = "no automatic remedy: the change is in your code"
ALL_REJECTED = "every remedy for it was tried and rejected (see Repair.steps)"
BUDGET = "not tried: budget_s was spent"
MAX_PASSES = 2
RETUNE = "lr_sweep"  # the lr tried with a scale-changing remedy
REMEDY_ERRORS = (ValueError, TypeError, RuntimeError, AttributeError, KeyError, IndexError)


def default_order(code: str, names: tuple[str, ...]) -> Sequence[str]:
    """babysit's order: the registry's (the lecture's advice first, then AUTOTRAINER's)."""
    return names


def fix(
    model: nn.Module,
    data: Any,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    optimizer: str | Callable = "adam",
    lr: float | None = None,
    weight_decay: float = 0.0,
    num_classes: int | None = None,
    forward: Forward | None = None,
    checks: str | Sequence[str] = "default",
    ignore: Iterable[str] = (),
    thresholds: Mapping[str, float] | None = None,
    seed: int = 0,
    budget_s: float | None = None,
    device: str | torch.device = "cpu",
    run_dir: str | Path | None = None,
    task: str | Task = "auto",
    progress: bool | None = None,
    _order: Order | None = None,
    _steps: int | None = None,
    _best_of: bool | None = None,
) -> Repair:
    """Apply the lecture's remedies to what ``diagnose`` finds, and keep those that verify.

    Takes ``diagnose``'s keyword arguments (same meaning). The user's model, optimizer and
    data are never modified: every remedy edits a copy; torch's, Python's and NumPy's random
    generators (and a DataLoader's) are left as they were.

    Args:
        lr: the learning rate; ``None`` takes the optimizer's default (``fit``'s), which the
            diagnoses judge and the short runs train with (``Repair.config`` names it).
        budget_s: seconds, >= 0 (``None``: no limit); no remedy starts once it is spent, and
            the remedies not tried are listed in ``Repair.not_tried``.
        run_dir: if given, ``fix.json`` (``Repair.to_dict()``) is written there, atomically.
        progress: one line per remedy on stderr; default: when stderr is a terminal.

    Returns:
        A :class:`~babysit.repair.Repair`: ``model`` (a repaired copy that takes the raw
        inputs), ``config`` (optimizer, lr, weight_decay to train it with), ``steps`` (every
        remedy tried, accepted or not, with evidence), ``fixed``, ``remaining`` (with the
        change to make by hand), ``before``/``after`` and ``patch``.
    """
    if budget_s is not None and not budget_s >= 0:
        raise ValueError(f"budget_s must be >= 0 seconds, got {budget_s!r}")
    start = time.perf_counter()
    order = _order or default_order
    if lr is None and isinstance(optimizer, str) and optimizer.strip().lower() in DEFAULT_LR:
        # the lr the short runs train with (fit's default), judged by every diagnosis: one
        # setting throughout, and no range test in each of the re-diagnoses
        lr = DEFAULT_LR[optimizer.strip().lower()]
    say = _printer(progress)
    options = {
        "loss_fn": loss_fn,
        "optimizer": optimizer,
        "lr": lr,
        "weight_decay": weight_decay,
        "num_classes": num_classes,
        "forward": forward,
        "thresholds": thresholds,
        "seed": seed,
        "device": device,
        "task": task,
    }
    diag_kw = {"checks": checks, "ignore": tuple(ignore)}

    def rediagnose(setup: SetUp) -> Diagnosis:
        return diagnose(setup.model, setup.data, progress=False, **setup.options, **diag_kw)

    with preserved_rng(data, device):  # torch's, Python's and NumPy's generators, as diagnose
        current = SetUp(copy.deepcopy(model), data, data, options)
        say("fix: diagnosing the set-up as given")
        before = rediagnose(current)
        best_of = _order is None if _best_of is None else _best_of
        state = _State(start, budget_s, order, say, rediagnose, steps=_steps, best_of=best_of)
        repair = state.repair(current, before)
    if run_dir is not None:
        runs.write_json(run_dir, FIX_JSON, repair.to_dict())
    return repair


class _State:
    """One ``fix`` call: the budget, the order, the short run and the steps taken so far."""

    def __init__(
        self, start, budget_s, order, say, rediagnose, *, steps=None, best_of=True
    ) -> None:
        self.start = start
        self.best_of = best_of  # try every remedy of a code and keep the best verified one
        self.train_steps = steps  # None: verify.STEPS
        self.budget_s = budget_s
        self.order = order
        self.say = say
        self.rediagnose = rediagnose
        self.steps: list[RepairStep] = []
        self.not_tried: list[dict[str, str]] = []
        self.trainer: ShortRun | None = None

    def spent(self) -> bool:
        return self.budget_s is not None and time.perf_counter() - self.start >= self.budget_s

    def repair(self, current: SetUp, before: Diagnosis) -> Repair:
        loud = _loud(before)
        if not loud:
            self.say("fix: nothing at warning or error: nothing to repair, nothing changed")
            return self._result(current, before, before, [], {})
        blocking = sorted(loud & BLOCKING)
        if blocking:
            for code in sorted(loud):
                for name in remedies_for(code):
                    self.not_tried.append(
                        {"code": code, "remedy": name, "reason": f"blocked by {blocking[0]}"}
                    )
            left = remaining(before.findings, "")
            left = [_with_reason(r, NOT_TRAINABLE if r.code in BLOCKING else _why(r.code, []))
                    for r in left]  # fmt: skip
            return self._result(current, before, before, left, {})
        if not loud & set(CODE_ORDER):  # nothing has a remedy: no run to verify anything with
            left = [_with_reason(r, _why(r.code, [])) for r in remaining(before.findings, "")]
            return self._result(current, before, before, left, {})
        self.trainer = ShortRun(
            seed=int(current.options.get("seed", 0)),
            steps=self.train_steps,
            device=current.options.get("device", "cpu"),
        )
        self.say("fix: a short training run of the set-up as given (the reference)")
        try:
            reference = self.trainer.run(current)
        except (ValueError, TypeError, RuntimeError) as err:  # cannot train: cannot verify
            reason = f"the short training run failed ({type(err).__name__}: {err}): {NOT_TRAINABLE}"
            for code in sorted(loud):
                for name in remedies_for(code):
                    self.not_tried.append({"code": code, "remedy": name, "reason": reason})
            left = [_with_reason(r, reason) for r in remaining(before.findings, "")]
            return self._result(current, before, before, left, {})
        current_diag, current_run = before, reference
        tried: set[str] = set()
        passes, accepted_in_pass = 1, False
        while True:
            present = _loud(current_diag)
            code = next((c for c in CODE_ORDER if c in present and c not in tried), None)
            if code is None and accepted_in_pass and passes < MAX_PASSES and present & set(tried):
                # a remedy rejected before another was accepted may verify now (standardized
                # targets make an input remedy measurable): one more pass over what is left
                passes, accepted_in_pass, tried = passes + 1, False, set()
                continue
            if code is None:
                break
            tried.add(code)
            names = list(self.order(code, remedies_for(code)))
            verified: list[tuple[int, Any]] = []  # (index in steps, (set-up, diagnosis, run))
            for i, name in enumerate(names):
                if self.spent():
                    for rest in names[i:]:
                        self.not_tried.append({"code": code, "remedy": rest, "reason": BUDGET})
                    break
                self.say(f"fix: {code}: trying {name}")
                step, candidate = self._attempt(code, name, current, current_diag, current_run)
                self.steps.append(step)
                self.say(f"fix: {code}: {name} {'verified' if step.accepted else 'rejected'}")
                if step.accepted and candidate is not None:
                    verified.append((len(self.steps) - 1, candidate))
                    if not self.best_of:
                        break
            if verified:
                current, current_diag, current_run = self._keep_best(verified)
                accepted_in_pass = True
        reached = {s.code for s in self.steps} | {n["code"] for n in self.not_tried}
        for code in sorted(_loud(current_diag) - reached):
            if code in CODE_ORDER:  # never reached: the budget ran out first
                for name in self.order(code, remedies_for(code)):
                    self.not_tried.append({"code": code, "remedy": name, "reason": BUDGET})
        left = [
            _with_reason(r, _why(r.code, self.steps)) for r in remaining(current_diag.findings, "")
        ]
        curves = {"before": reference.curve, "after": current_run.curve}
        return self._result(current, before, current_diag, left, curves)

    def _keep_best(self, verified: list[tuple[int, Any]]) -> Any:
        """The verified remedy with the lowest validation loss; the others stay in the steps,
        not accepted, with the loss that beat them."""
        best_index, best = min(verified, key=lambda item: item[1][2].val_loss)
        for index, _ in verified:
            if index != best_index:
                step = self.steps[index]
                evidence = {
                    **step.evidence,
                    "rejected": f"verified, but {self.steps[best_index].remedy} trained better "
                    f"(validation loss {_num(best[2].val_loss)})",
                }
                self.steps[index] = dataclasses.replace(step, accepted=False, evidence=evidence)
        return best

    def _attempt(
        self, code: str, name: str, current: SetUp, current_diag: Diagnosis, current_run
    ) -> tuple[RepairStep, tuple[SetUp, Diagnosis, Any] | None]:
        remedy = REMEDIES[name]
        finding = _finding(current_diag, code)
        try:
            change = remedy.apply(current.copy(), finding)
        except Skip as skip:
            return RepairStep(code, name, False, {"skipped": str(skip)}), None
        except REMEDY_ERRORS as err:  # an unusual model a remedy cannot handle: say so, go on
            reason = f"the remedy failed on this model: {type(err).__name__}: {err}"
            return RepairStep(code, name, False, {"skipped": reason}), None
        candidate, patch = change.setup, list(change.patch)
        diag = self._diagnose(candidate)
        if diag is None:
            return RepairStep(code, name, False, {"skipped": "the edited set-up does not run"},
                              tuple(patch)), None  # fmt: skip
        repeats = 1
        while code in _loud(diag) and repeats < remedy.repeat + 1:
            try:
                change = remedy.apply(candidate.copy(), _finding(diag, code))
            except Skip:
                break
            again = self._diagnose(change.setup)
            if again is None:  # an empty Diagnosis is falsy: compare with None
                break
            candidate, patch, diag = change.setup, merge_patch(patch, change.patch), again
            repeats += 1
        names = [name]
        base = _loud(current_diag)
        gone = code not in _loud(diag)
        new = _loud(diag) - base
        if gone and new:  # interacting findings: repair what the remedy uncovered, together
            candidate, diag, patch, names = self._together(candidate, diag, patch, names, base)
            new = _loud(diag) - base
        evidence: dict[str, Any] = {
            "finding_gone": gone,
            "new_findings": sorted(new),
            "codes_after": sorted(_loud(diag)),
        }
        if not gone or new:
            return RepairStep(code, " + ".join(names), False, evidence, tuple(patch)), None
        assert self.trainer is not None
        try:
            run = self.trainer.run(candidate)
        except (ValueError, TypeError, RuntimeError) as err:
            evidence["rejected"] = f"the short training run failed: {type(err).__name__}: {err}"
            return RepairStep(code, " + ".join(names), False, evidence, tuple(patch)), None
        accepted = better(run.val_loss, current_run.val_loss)
        evidence.update(
            val_loss_before=_num(current_run.val_loss),
            val_loss_after=_num(run.val_loss),
            train_steps=self.trainer.steps,
        )
        if remedy.retune_lr and not {"lr_range_test", RETUNE} & set(names) and not self.spent():
            # data scale + lr, init + lr: the lr that suited the old set-up may not suit the
            # repaired one; the range test's lr for it, verified together with the remedy and
            # kept when it trains better than the remedy alone (or than the current set-up)
            retuned = self._retuned(candidate, code, base)
            run2 = self._run(retuned[0]) if retuned is not None else None
            if retuned is not None and run2 is not None:
                evidence["val_loss_with_lr_retuned"] = _num(run2.val_loss)
                if better(run2.val_loss, run.val_loss if accepted else current_run.val_loss):
                    candidate, diag, patch2 = retuned
                    accepted, run, patch = True, run2, merge_patch(patch, patch2)
                    names.append(RETUNE)
                    evidence["val_loss_after"] = _num(run2.val_loss)
                    evidence["codes_after"] = sorted(_loud(diag))
        if not accepted:
            evidence["rejected"] = (
                "the finding is gone but the short run's validation loss is not lower"
            )
        step = RepairStep(code, " + ".join(names), accepted, evidence, tuple(patch))
        return step, ((candidate, diag, run) if accepted else None)

    def _retuned(self, candidate: SetUp, code: str, base: set[str]):
        try:
            change = REMEDIES[RETUNE].apply(candidate.copy(), None)  # type: ignore[arg-type]
        except Skip:
            return None
        diag = self._diagnose(change.setup)
        if diag is None or code in _loud(diag) or _loud(diag) - base:
            return None
        return change.setup, diag, list(change.patch)

    def _run(self, setup: SetUp):
        assert self.trainer is not None
        try:
            return self.trainer.run(setup)
        except (ValueError, TypeError, RuntimeError):
            return None

    def _together(self, candidate, diag, patch, names, base):
        for code in [c for c in CODE_ORDER if c in _loud(diag) - base]:
            if code not in _loud(diag):  # gone with an earlier one (UPDATE_RATIO_LOW with the lr)
                continue
            for name in self.order(code, remedies_for(code)):
                try:
                    change = REMEDIES[name].apply(candidate.copy(), _finding(diag, code))
                except Skip:
                    continue
                diag2 = self._diagnose(change.setup)
                if diag2 is not None and code not in _loud(diag2):
                    candidate, diag = change.setup, diag2
                    patch = merge_patch(patch, change.patch)
                    names = [*names, name]
                    break
        return candidate, diag, patch, names

    def _diagnose(self, setup: SetUp) -> Diagnosis | None:
        try:
            return self.rediagnose(setup)
        except (ValueError, TypeError, RuntimeError):
            return None

    def _result(self, current, before, after, left, curves) -> Repair:
        return Repair(
            model=current.full_model,
            config=current.config(),
            steps=self.steps,
            before=before,
            after=after,
            remaining=left,
            data=current.raw_data,
            not_tried=self.not_tried,
            curves=curves,
            elapsed_s=time.perf_counter() - self.start,
        )


def _loud(diagnosis: Diagnosis) -> set[str]:
    return {f.code for f in diagnosis if f.severity != "info"}


def _finding(diagnosis: Diagnosis, code: str) -> Finding:
    return next(f for f in diagnosis if f.code == code)


def _why(code: str, steps: list[RepairStep]) -> str:
    if not remedies_for(code):
        return NO_REMEDY
    if any(s.code == code for s in steps):
        return ALL_REJECTED
    return BUDGET


def _with_reason(r: Remaining, reason: str) -> Remaining:
    return Remaining(r.code, r.severity, r.line, reason)


def _num(value: float) -> float | None:
    import math

    return float(f"{value:.6g}") if math.isfinite(value) else None


def _printer(progress: bool | None) -> Callable[[str], None]:
    show = stderr_is_terminal() if progress is None else bool(progress)

    def say(message: str) -> None:
        if show:
            print(message, file=sys.stderr, flush=True)

    return say
