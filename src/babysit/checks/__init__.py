"""Pre-flight checks: ``babysit.diagnose`` runs the lecture's babysitting steps before training.

Families, one module each: ``execution`` (the forward pass and the loss run, and reach only
registered parameters: these run before any selection), ``data`` (NaN, centring, scale,
labels), ``structure`` (what the layer order makes explicit), ``forward`` (activation
statistics at init), ``loss`` (ln C at init, regularization), ``backward`` (gradient flow,
gradient check, batch independence), ``overfit`` (~20 examples to 100%), ``learning_rate`` (a
short run, the range test).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import runs
from ..batches import preserved_rng, probe_examples, to_device
from ..findings import Diagnosis, Finding, known_codes
from ..optim import DEFAULT_LR, make_optimizer, optimizer_name
from ..outputs import Forward, ForwardContractError
from ..progress_line import ProgressLine, stderr_is_terminal
from ..tasks import Task, default_loss, resolve_task
from ..thresholds import resolve
from . import _base
from ._base import REGISTRY, CannotCheck, Context, finding

__all__ = ["CHECK_SETS", "FAMILIES", "build_context", "diagnose", "list_checks"]

PROBE_BATCH = 512  # >= DEAD_MIN_EXAMPLES (256) so dead ReLUs can be judged (babysit.probes)
DEFAULT_BATCH_SIZE = 64
# checks="default" aims at about this many seconds whatever the model's size: the training
# checks scale their batches to the measured cost of one pass, or say they were not run
# (Context.affordable). checks="all", a check named by hand and budget_s do not use it.
DEFAULT_TIME_S = 10.0
# The progress display appears once diagnose has run this long (a fast diagnose stays quiet).
PROGRESS_AFTER_S = 1.0


# Run order: the forward pass and the loss first (they measure the output and the cost of a
# pass), the training checks last. Within a family, checks run in the order they are defined.
FAMILIES = (
    "execution",
    "structure",
    "data",
    "forward",
    "loss",
    "backward",
    "overfit",
    "learning_rate",
)
# Run whatever the selection: without a forward pass and a loss nothing else can be judged, and
# a diagnosis must not read "ok" for a model whose loss cannot be computed.
ALWAYS = ("forward_runs", "loss_runs")
# Families whose checks read the targets but not the loss: they run when the loss fails (a label
# out of range is often why it fails).
LOSS_FREE = ("execution", "structure", "data")
# Checks that read the model's input tensor (or a loader's labels) themselves: with forward=
# babysit does not know which item of a batch that is, and says so instead of guessing.
_INPUTS_HIDDEN = (
    "it reads the model's input tensor, which forward= hides: run it on (X, y) data without "
    "forward= to check the inputs"
)
HIDDEN_BY_FORWARD = {
    "data_finite": _INPUTS_HIDDEN,
    "data_scale": _INPUTS_HIDDEN,
    "batch_independence": _INPUTS_HIDDEN,
    "gradient_check": _INPUTS_HIDDEN,
    "gradient_check_coordinates": _INPUTS_HIDDEN,
    "batch_order": "it reads the labels of the loader's batches, which forward= hides",
}


def _load_families() -> None:
    from . import (  # noqa: F401
        backward,
        data,
        execution,
        forward,
        learning_rate,
        loss,
        overfit,
        structure,
    )


def list_checks() -> dict[str, _base.CheckSpec]:
    """Every registered check by name, in the order ``diagnose`` runs them."""
    _load_families()
    defined = list(REGISTRY)
    ordered = sorted(
        REGISTRY.values(), key=lambda s: (FAMILIES.index(s.family), defined.index(s.name))
    )
    return {spec.name: spec for spec in ordered}


CHECK_SETS = ("default", "all")


def diagnose(
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
) -> Diagnosis:
    """Run the pre-flight checks of CS231n Lecture 6 on ``model`` and ``data``.

    Args:
        model: any ``nn.Module``. It is never modified: checks run on deep copies.
        data: ``(X, y)`` tensors or arrays, a ``Dataset`` or a ``DataLoader`` yielding
            ``(x, y)``. A probe batch of up to 512 examples is drawn from it.
        loss_fn: ``loss_fn(output, target)``; default cross-entropy on class labels.
        optimizer: a name (``"sgd"``, ``"momentum"``, ``"adam"``, ...) or a factory
            ``params -> Optimizer``; ``lr`` and ``weight_decay`` go with a name.
        lr: the learning rate to judge; ``None`` runs the range test to find one.
        num_classes: default: the model's output width.
        forward: ``forward(model, batch) -> (output, target)`` for batches that are not
            ``(x, y)`` (dicts, several inputs, masks), as in ``fit``. Without it a batch of
            three or more items is a ``ValueError``: babysit never guesses the target.
        checks: ``"default"`` (fast), ``"all"`` (adds the slow ones) or a list of check names
            (see :func:`list_checks`).
        ignore: finding codes to silence (an unknown code is a ``ValueError`` naming the
            closest known ones, as in ``fit``).
        thresholds: overrides by name (see :data:`babysit.thresholds.THRESHOLDS`).
        seed: seeds every random draw; torch's global CPU and CUDA generators, Python's and
            NumPy's, and a DataLoader's generator are restored afterwards.
        budget_s: seconds, >= 0; checks that would not fit in the remaining time are skipped
            and listed in a ``CHECKS_SKIPPED`` finding (a warning when no check ran at all:
            nothing was checked, so nothing may look fine). A check that cannot read the
            output or the loss is listed in a *warning* ``CHECKS_SKIPPED`` naming what to pass.
        device: where the checks run.
        run_dir: if given, ``findings.json`` is written there.
        task: what the output means (:mod:`babysit.tasks`): ``"auto"`` infers it from
            ``loss_fn``; a kind name (``"classification"``, ``"multilabel"``,
            ``"regression"``, ``"custom"``) or a :class:`babysit.Task` (``class_dim``,
            ``ignore_index``). A kind without ``loss_fn`` uses the kind's default loss; a task
            that contradicts the loss or the targets is a ``ValueError``.
        progress: show which check runs (done/total) on stderr once diagnose has taken more
            than a second; default (``None``): only when stderr is a terminal.

    The default set aims at about ``DEFAULT_TIME_S`` seconds on any model: the training checks
    shrink their batches to the measured cost of one pass, and a check that cannot fit is
    listed as skipped (info) with its estimate; ``checks="all"`` runs everything in full.

    Returns:
        A :class:`~babysit.findings.Diagnosis`, most severe findings first.
    """
    selected = _select(checks)
    ignored = known_codes(ignore)
    _check_budget(budget_s)
    start = time.perf_counter()
    with preserved_rng(data, device):
        ctx = build_context(
            model,
            data,
            loss_fn=loss_fn,
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            num_classes=num_classes,
            thresholds=thresholds,
            seed=seed,
            device=device,
            forward=forward,
            task=task,
        )
        if checks == "default" and budget_s is None:
            ctx.time_target_s = DEFAULT_TIME_S
        show = stderr_is_terminal() if progress is None else bool(progress)
        findings = _run_checks(ctx, selected, budget_s, start, progress=show)
    diagnosis = Diagnosis(f for f in findings if f.code not in ignored)
    if run_dir is not None:
        runs.write_json(run_dir, runs.FINDINGS, diagnosis.to_dict())
    return diagnosis


def build_context(
    model: nn.Module,
    data: Any,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    optimizer: str | Callable = "adam",
    lr: float | None = None,
    weight_decay: float = 0.0,
    num_classes: int | None = None,
    thresholds: Mapping[str, float] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    forward: Forward | None = None,
    task: str | Task = "auto",
) -> Context:
    """The :class:`Context` that ``diagnose`` hands to every check (seeds torch's global RNG).

    Validates the arguments, draws the probe batch and deep-copies the model onto ``device``.
    Without ``forward`` the probe batch is ``(x, y)`` (or ``(x,)``) and ``ctx.x``/``ctx.y`` are
    its items; with it, ``ctx.x`` is ``None`` and ``ctx.y`` is the target ``forward`` returns.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"diagnose needs an nn.Module as model, got {type(model).__name__}")
    trial = make_optimizer(optimizer, [nn.Parameter(torch.zeros(1))], lr, weight_decay)
    if callable(optimizer) and lr is None:
        lr = trial.param_groups[0]["lr"]  # a factory's own lr is the one to judge
    device = torch.device(device)
    torch.manual_seed(seed)
    if forward is not None and not callable(forward):
        raise TypeError(
            f"forward must be a function (model, batch) -> (output, target), got "
            f"{type(forward).__name__}"
        )
    batch, n_examples = probe_examples(data, PROBE_BATCH, seed, entry="diagnose", forward=forward)
    batch = to_device(batch, device)
    x = y = None
    if forward is None:
        x, y = batch[0], batch[1] if len(batch) == 2 else None
    resolved = _resolve_task(task, loss_fn, y, num_classes)
    ctx = Context(
        model=copy.deepcopy(model).to(device),
        x=x,
        y=y,
        data=data,
        loss_fn=loss_fn or default_loss(resolved),
        classification=resolved.kind == "classification",
        num_classes=num_classes or resolved.num_classes,
        optimizer=lambda params, lr_, wd: make_optimizer(optimizer, params, lr_, wd),
        optimizer_name=optimizer_name(optimizer),
        lr=lr,
        weight_decay=weight_decay,
        thresholds=resolve(thresholds),
        seed=seed,
        device=device,
        n_examples=n_examples,
        batch_size=getattr(data, "batch_size", None) or DEFAULT_BATCH_SIZE,
        _original=model,
        task=resolved,
        batch=batch,
        forward_fn=forward,
    )
    if forward is not None:
        probed = ctx.probe()
        if isinstance(probed.error, ForwardContractError):
            raise ForwardContractError(f"diagnose: {probed.error}") from probed.error
        ctx.y = probed.target  # what forward returns as the target (None if it failed)
        if isinstance(ctx.y, torch.Tensor):  # the task against the targets forward returns
            ctx.task = _resolve_task(task, loss_fn, ctx.y, num_classes)
    ctx.cache["default_lr"] = DEFAULT_LR.get(ctx.optimizer_name, 1e-3)
    ctx.cache["task_given"] = not (isinstance(task, str) and task.strip().lower() == "auto")
    return ctx


def _resolve_task(task: str | Task, loss_fn: Any, y: Any, num_classes: int | None) -> Task:
    resolved = resolve_task(task, loss_fn, y)
    if num_classes is not None and resolved.num_classes not in (None, num_classes):
        raise ValueError(
            f"num_classes={num_classes} contradicts Task(num_classes={resolved.num_classes}): "
            "pass one of them"
        )
    return resolved


def _check_budget(budget_s: float | None) -> None:
    if budget_s is None:
        return
    if isinstance(budget_s, bool) or not isinstance(budget_s, int | float):
        raise TypeError(f"budget_s must be a number of seconds or None, got {budget_s!r}")
    if not budget_s >= 0:  # also rejects NaN
        raise ValueError(
            f"budget_s must be >= 0 seconds (or None for no limit), got {budget_s!r}; a "
            "negative budget would skip every check"
        )


def _select(checks: str | Sequence[str]) -> list[_base.CheckSpec]:
    available = list_checks()
    if isinstance(checks, str):
        if checks not in CHECK_SETS:
            if checks in available:  # one check by name: still after the execution checks
                wanted = {checks} | set(ALWAYS)
                return [spec for name, spec in available.items() if name in wanted]
            raise ValueError(
                f"checks must be 'default', 'all' or a list of check names, got {checks!r}; "
                f"check names: {', '.join(available)}"
            )
        return [spec for spec in available.values() if checks == "all" or not spec.slow]
    unknown = [name for name in checks if name not in available]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; known: {', '.join(available)}")
    wanted = set(checks) | set(ALWAYS)
    return [spec for name, spec in available.items() if name in wanted]


def _run_checks(
    ctx: Context,
    selected: list[_base.CheckSpec],
    budget_s: float | None,
    start: float,
    *,
    progress: bool = False,
) -> list[Finding]:
    with ProgressLine(
        len(selected), label="diagnose", enabled=progress, after_s=PROGRESS_AFTER_S
    ) as shown:
        return _run_selected(ctx, selected, budget_s, start, shown)


def _run_selected(
    ctx: Context, selected: list[_base.CheckSpec], budget_s: float | None, start: float, shown
) -> list[Finding]:
    findings: list[Finding] = []
    skipped: dict[str, str] = {}
    unreadable: set[str] = set()  # not run because the output or the loss could not be read
    for done, spec in enumerate(selected):
        shown.update(done, spec.name)
        if ctx.cache.get("stop"):
            skipped[spec.name] = ctx.cache["stop"]
            unreadable.add(spec.name)
            continue
        if spec.needs_labels and ctx.y is None:
            skipped[spec.name] = (
                "the data has no targets: pass (X, y), or forward= returning (output, target)"
            )
            unreadable.add(spec.name)
            continue
        if ctx.cache.get("loss_failed") and spec.needs_labels and spec.family not in LOSS_FREE:
            skipped[spec.name] = "the loss cannot be computed on the output (LOSS_FAILED)"
            unreadable.add(spec.name)
            continue
        if spec.name in HIDDEN_BY_FORWARD and ctx.forward_fn is not None:
            skipped[spec.name] = HIDDEN_BY_FORWARD[spec.name]
            continue
        elapsed = time.perf_counter() - start
        estimate = ctx.cache.get("pass_s", 0.0) * _COST_IN_PASSES.get(spec.name, 1)
        if budget_s is not None and elapsed + estimate > budget_s:
            skipped[spec.name] = f"over budget_s={budget_s:g} ({elapsed:.2f} s spent)"
            continue
        torch.manual_seed(ctx.seed)
        try:
            found = spec.run(ctx)
            _say_where_the_output_was_read(ctx, spec, found)
            findings += found
        except CannotCheck as why:  # cannot judge this set-up: say so, and what to pass
            skipped[spec.name] = why.reason
            if why.warning:
                unreadable.add(spec.name)
        except Exception as err:  # a failing check must not cost the user the other findings
            if os.environ.get("BABYSIT_STRICT_CHECKS") == "1":
                raise
            skipped[spec.name] = f"the check itself failed ({type(err).__name__}: {err})"
            unreadable.add(spec.name)
    if skipped:
        nothing_ran = len(skipped) == len(selected)
        findings.append(
            finding(
                "CHECKS_SKIPPED",
                f"{len(skipped)} check(s) not run: "
                + "; ".join(f"{name} ({why})" for name, why in skipped.items())
                + ("; no check ran, so nothing was checked" if nothing_ran else ""),
                "fix the errors above, pass what the reasons name, or raise budget_s, and run "
                "diagnose again",
                {"skipped": skipped, "unreadable": sorted(unreadable), "task": ctx.task.to_dict()},
                severity="warning" if nothing_ran or unreadable else None,
            )
        )
    return findings


def _say_where_the_output_was_read(
    ctx: Context, spec: _base.CheckSpec, found: list[Finding]
) -> None:
    """A model output that is a tuple, dict or ModelOutput was read as one of its tensors: the
    findings of checks that judge the output say which (``output_read_from``)."""
    probed = ctx.cache.get("probed")
    if probed is None or probed.source == "output" or spec.family == "data":
        return
    for f in found:
        f.evidence.setdefault("output_read_from", probed.source)


# Rough cost of each check in forward+backward passes of the probe batch, for budget_s.
_COST_IN_PASSES: dict[str, float] = {
    "overfit_small_sample": 60,
    "find_lr": 150,
    "lr_range_test": 150,
    "learning_rate": 60,
    "gradient_check": 3,
    "gradient_check_coordinates": 10,
}
