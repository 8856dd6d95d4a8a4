"""What the Lightning and Hugging Face callbacks share: options, versions, the step protocol.

A framework owns the loop, so babysit sees a training step only through the framework's hooks.
Both callbacks reduce them to the same protocol on a :class:`Bridge` (a
:class:`~babysit.train.watch.Watcher`, so every statistic is the monitors' own):

1. :meth:`Bridge.add_loss` for each micro-batch's loss (as the framework computed it);
2. :meth:`Bridge.before_update` once the gradients are final and before any optimizer moves a
   weight (Lightning: ``on_before_optimizer_step``, after AMP unscaling; HF:
   ``on_pre_optimizer_step``). The step's loss is judged here — by the same
   :class:`~babysit.train.monitors.LossGuard` ``fit`` uses, so NaN/Inf and the lecture's 3x
   break-out (:mod:`babysit.divergence`) are caught in the step they happen, before the bad
   gradient reaches the weights. When the step must not be applied (``on_error`` "stop" or
   "rollback"), every gradient is set to ``None``: torch's optimizers skip a parameter without
   a gradient, so the step the framework then takes changes nothing;
3. :meth:`Bridge.end_step` after the framework's optimizer step(s): the monitors' step
   post-hooks run (update ratio, activation probes). A step that an AMP ``GradScaler`` skipped
   never called ``optimizer.step()``: it is not measured and raises no finding, as in ``fit``.

Several optimizers (a GAN, manual optimisation) are one step: :class:`Steps` presents them as
one ``torch.optim.Optimizer`` whose step hooks the bridge fires once per training step, so the
update ratio is measured over every parameter that step moved.

``on_error`` (docs/architecture.md, "Integrations"): "stop" restores the last good weights and
asks the framework to end cleanly; "rollback" restores them, divides the learning rate by 10 —
the lecture's remedy, exactly as ``fit`` does it, schedulers included — and goes on (after
``LossGuard.max_rollbacks`` rollbacks it stops); "warn" only reports.
"""

from __future__ import annotations

import difflib
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from .. import distributed, runs
from ..findings import Finding, known_codes
from ..thresholds import resolve
from ..train.activation_snapshots import ActivationSnapshots
from ..train.monitors import resolve_monitors
from ..train.snapshot import StateSnapshot
from ..train.watch import Watcher

__all__ = [
    "ON_ERROR",
    "SUPPORTED",
    "Bridge",
    "Options",
    "Steps",
    "UnsupportedVersion",
    "check_options",
    "check_version",
    "require",
]

ON_ERROR = ("stop", "rollback", "warn")
# [lowest, highest) version of each framework the callbacks are tested against: the hooks they
# use (Lightning's on_before_optimizer_step after unscaling, HF's on_pre_optimizer_step and
# processing_class) exist from these versions on; the next major may rename them.
SUPPORTED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "lightning": ((2, 0), (3, 0)),
    "transformers": ((4, 46), (6, 0)),
}
_GROUP_LRS = ("initial_lr", "max_lr", "min_lr")  # lr-like keys schedulers keep in the groups
# The run directory is written at an epoch's end at most this often (and at once when a new
# finding fired, and always at the end and before a checkpoint): each write syncs two files to
# disk, ~10-20 ms on a busy machine, which is 5-10% of a 32-step Lightning epoch of a small MLP.
FLUSH_EVERY_S = 10.0


class UnsupportedVersion(RuntimeError):
    """The installed framework is outside :data:`SUPPORTED`."""


def require(package: str, extra: str) -> Any:
    """Import ``package``; without it, an ``ImportError`` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise ImportError(
            f"babysit.integrations.{extra} needs the {package!r} package, which is not "
            f"installed: pip install babysit[{extra}]"
        ) from err


def _parse(version: str) -> tuple[int, ...] | None:
    match = re.match(r"(\d+)\.(\d+)", str(version))
    return None if match is None else (int(match[1]), int(match[2]))


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def check_version(package: str, version: str) -> None:
    """Raise :class:`UnsupportedVersion` naming the supported range unless ``version`` is in it."""
    low, high = SUPPORTED[package]
    found = _parse(version)
    if found is None or not low <= found < high:
        wanted = f"{package}>={_dotted(low)},<{_dotted(high)}"
        raise UnsupportedVersion(
            f"babysit's {package} callback supports {wanted}, but {package} {version} is "
            f"installed: pip install '{wanted}' (or pip install babysit[{package}])"
        )


@dataclass(frozen=True)
class Options:
    """The callback's arguments, checked (``monitors`` stays a spec: each run builds fresh ones)."""

    monitors: Any
    run_dir: Path | None
    on_error: str
    thresholds: dict[str, float]
    ignore: frozenset[str]
    user_thresholds: Mapping[str, float] | None


def check_options(
    *,
    monitors: Any,
    run_dir: str | Path | None,
    on_error: str,
    thresholds: Mapping[str, float] | None,
    ignore: Iterable[str],
) -> Options:
    """Every argument checked at construction, each error naming what to pass instead."""
    if not isinstance(on_error, str) or on_error not in ON_ERROR:
        close = difflib.get_close_matches(str(on_error), ON_ERROR, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"on_error must be one of {', '.join(repr(c) for c in ON_ERROR)}, got "
            f"{on_error!r}{hint}"
        )
    if not (monitors is None or isinstance(monitors, str)):
        monitors = list(monitors)
    resolve_monitors(monitors)  # raises on a bad spec; the instances are built per run
    if run_dir is not None and not isinstance(run_dir, str | Path):
        raise TypeError(f"run_dir must be a path (str or Path) or None, got {type(run_dir)}")
    return Options(
        monitors=monitors,
        run_dir=None if run_dir is None else Path(run_dir),
        on_error=on_error,
        thresholds=resolve(thresholds),
        ignore=known_codes(ignore),
        user_thresholds=dict(thresholds) if thresholds else None,
    )


def prepare_run_dir(run_dir: Path, *, resumed: bool) -> None:
    """``fit``'s rule: fail early when it cannot be written; a directory that holds another
    run is renamed ``<dir>-<timestamp>`` (:func:`babysit.runs.fresh_run_dir`), never
    overwritten. A resumed run continues its own directory."""
    try:
        runs.check_writable(run_dir)
    except OSError as err:
        raise OSError(
            f"the run directory {run_dir} is not writable ({err.strerror or err}); pass "
            "BabysitCallback(run_dir=...) a directory you can write to"
        ) from err
    if not resumed and any(run_dir.iterdir()):
        runs.fresh_run_dir(run_dir)


class Steps(torch.optim.Optimizer):
    """Several optimizers as one, for the monitors: its step hooks mean "a training step".

    Not an optimizer to step: the framework steps the real ones, and :class:`Bridge` fires
    these hooks once per training step (:meth:`pre` before the first update, :meth:`post`
    after the last). ``param_groups`` and ``state`` are the real optimizers' own (shared, so a
    learning rate set here is set there).
    """

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        # torch.optim.Optimizer.__init__ would copy the groups: the real ones are shared instead
        self.optimizers = list(optimizers)
        self.defaults: dict[str, Any] = {}
        self._optimizer_step_pre_hooks: OrderedDict[int, Callable] = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict[int, Callable] = OrderedDict()

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    @property  # type: ignore[override]
    def state(self) -> dict[Any, Any]:
        return {p: s for opt in self.optimizers for p, s in opt.state.items()}

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        raise RuntimeError("babysit's Steps is stepped by the framework's own optimizers")

    def pre(self) -> None:
        for hook in list(self._optimizer_step_pre_hooks.values()):
            hook(self, (), {})

    def post(self) -> None:
        for hook in list(self._optimizer_step_post_hooks.values()):
            hook(self, (), {})

    def __repr__(self) -> str:
        return f"Steps({', '.join(type(o).__name__ for o in self.optimizers)})"


class _Placeholder(nn.Module):
    """The model of the snapshots of a step's second and later optimizers (the first
    optimizer's snapshot copies the model; a snapshot needs at least one tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("nothing", torch.zeros(()))


class Bridge(Watcher):
    """A :class:`~babysit.train.watch.Watcher` driven by a framework's hooks; see the module.

    Args:
        model: the module the framework trains.
        optimizers: the (unwrapped) torch optimizers it steps.
        options: :func:`check_options`'s result.
        run_dir: where to write (``None``: nowhere); only the main process writes.
        framework: ``"lightning"`` or ``"transformers"`` (``config.json``'s ``kind``).
        schedulers: learning-rate schedulers whose ``base_lrs`` a rollback scales with the lr.
        sample: up to 512 training inputs (a float tensor) for ``activations.json``.
        state: a saved :meth:`state` to continue from (a resumed run).
        record: more settings for ``config.json``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizers: Sequence[torch.optim.Optimizer],
        *,
        options: Options,
        run_dir: Path | None,
        framework: str,
        schedulers: Iterable[Any] = (),
        sample: torch.Tensor | None = None,
        state: Mapping[str, Any] | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> None:
        if not optimizers:
            raise ValueError(f"babysit's {framework} callback found no optimizer to watch")
        self.on_error = options.on_error
        self.framework = framework
        self.steps = Steps(optimizers)
        self.schedulers = list(schedulers)
        self.rollbacks = 0
        self.skip_update = False  # this step's update must not reach the weights
        self.stop_requested = False  # the framework should end training
        self._losses: list[float] = []
        self._judged = False  # before_update ran for the current step
        self._pre_fired = False
        self._stepped = False  # a real optimizer stepped in the current step
        self._snapshots: list[StateSnapshot] | None = None
        self._record = dict(record or {})
        self._flushed_at = time.monotonic()
        self._findings_on_disk = 0
        # fit's ActivationSnapshots reads the trainer's fixed training sample by this name
        self._train_sample = None if sample is None else SimpleNamespace(tensors=[sample])
        write = run_dir is not None and distributed.is_main()
        self._resume_state = dict(state) if state else None  # loaded before the monitors start
        # the framework set up its process group before the first batch, when this is built
        self._one_process = not distributed.is_distributed()
        super().__init__(
            model,
            self.steps,
            monitors=resolve_monitors(options.monitors),
            thresholds=options.user_thresholds,
            ignore=options.ignore,
        )
        self._real = [opt.register_step_post_hook(self._real_stepped) for opt in optimizers]
        if self._one_process:
            # end_step ends the step itself (as Watcher._after_step would), and nothing is ever
            # pending to settle in one process: the Watcher's two step hooks would only add calls
            self._handle.remove()
            self._settle_handle.remove()
        if write:
            assert run_dir is not None
            prepare_run_dir(run_dir, resumed=bool(state))
            if state:
                runs.truncate_metrics(run_dir, int(state.get("metric_rows", 0)))
            self.run_dir = run_dir
            self._rows_on_disk = int(state.get("metric_rows", 0)) if state else 0
            runs.write_json(run_dir, runs.CONFIG, self._config())
            snapshots = ActivationSnapshots()
            self.callbacks.append(snapshots)
            self._dispatch.clear()
            snapshots.on_fit_start(self)

    # -- the step protocol -----------------------------------------------------------------------

    def add_loss(self, loss: torch.Tensor | float) -> None:
        """One micro-batch's loss (the mean of a step's micro-batches is the step's loss)."""
        self._losses.append(float(loss.detach()) if isinstance(loss, torch.Tensor) else loss)

    def before_update(self) -> bool:
        """Judge the step's loss before any weight moves; True when the update is dropped.

        Called for each optimizer of a step; only the first call judges.
        """
        if self._judged:
            # a NaN in a loss seen after this step was judged (manual optimisation with several
            # losses); not under DDP, where judging is a collective every rank must enter
            late = any(not math.isfinite(v) for v in self._losses)
            if late and not distributed.is_distributed():
                self._judge(self._take_loss())
            if self.skip_update:
                self._drop_gradients()
            return self.skip_update
        self._judged = True
        self._stepped = False
        if self._losses:
            self._judge(self._take_loss())
        if self.skip_update:
            self._drop_gradients()
        else:
            self.steps.pre()
            self._pre_fired = True
        return self.skip_update

    def end_step(self) -> None:
        """The framework's optimizer step(s) of this training step are done."""
        if not self._judged:
            return  # a micro-batch of an accumulated step: no update yet
        self._judged = False
        if self.skip_update:
            self.skip_update = False
            self._pre_fired = False
            self.step += 1  # fit counts a rolled-back step too
            return
        if self._pre_fired and self._stepped:
            self.steps.post()  # the monitors' post-hooks, then Watcher._after_step (step += 1)
            if self._one_process:  # Watcher._after_step, inline (its hook is removed)
                loss, step = self._last_loss, self.step
                for method in self._dispatch.get("on_train_batch_end") or self.methods(
                    "on_train_batch_end"
                ):
                    method(self, loss, step)
                self.step = step + 1
        self._pre_fired = False

    def _take_loss(self) -> float:
        losses, self._losses = self._losses, []
        return math.fsum(losses) / len(losses) if losses else math.nan

    def _judge(self, loss: float) -> None:
        if self._one_process:
            self._judge_one(loss)
            return
        # under DDP observe() shares every rank's loss (the guard judges each against its own
        # start: one decision on all ranks, naming the rank); settle() waits for the verdict
        self.observe(loss)
        self.settle()

    # In one process, the two things the bridge does every step are inline (_judge_one, and
    # the end of end_step): what observe(loss) and Watcher._after_step come to there (nothing to
    # share across ranks, nothing pending to settle), without their checks and their layers of
    # calls — a framework's step is short (benchmarks/integrations_hooks.py).
    # tests/integrations/test_bridge_trace.py holds them to the general path's findings, metric
    # rows and steps.

    def _judge_one(self, loss: float) -> None:
        """``observe(loss)`` in one process: the on_loss monitors, then the loss row."""
        self._last_loss = loss
        self.rank_losses = (loss,)  # Session.share_loss in one process
        for method in self._dispatch.get("on_loss") or self.methods("on_loss"):
            method(self, loss)
            if self._skip:
                break
        self.log("loss", loss)

    def _real_stepped(self, *_: Any) -> None:
        self._stepped = True

    def _drop_gradients(self) -> None:
        for group in self.steps.param_groups:
            for p in group["params"]:
                p.grad = None

    # -- what LossGuard asks for (Session's rollback interface) ------------------------------

    def remember_good_state(self) -> None:
        if self.on_error == "warn":
            return
        if self._snapshots is None:
            first, *rest = self.steps.optimizers
            self._snapshots = [StateSnapshot(self.model, first)] + [
                StateSnapshot(_Placeholder(), opt) for opt in rest
            ]
        for snapshot in self._snapshots:
            snapshot.take(self.step)

    def _restore(self) -> int | None:
        if self._snapshots is None or self._snapshots[0].step is None:
            return None
        for snapshot in self._snapshots:
            snapshot.restore()
        return self._snapshots[0].step

    def restore_good_state(self) -> bool:
        if self.on_error == "warn":
            return False
        self.skip_update = True
        return self._restore() is not None

    def request_rollback(self, reason: Finding, lr_factor: float) -> bool:
        if self.on_error != "rollback":
            return False
        lr_now = [group["lr"] for group in self.steps.param_groups]
        to_step = self._restore()
        if to_step is None:
            return False
        for group, lr in zip(self.steps.param_groups, lr_now, strict=True):
            group["lr"] = lr * lr_factor
            for key in _GROUP_LRS:
                if isinstance(group.get(key), int | float):
                    group[key] *= lr_factor
        for scheduler in self.schedulers:
            if isinstance(getattr(scheduler, "base_lrs", None), list):
                scheduler.base_lrs = [lr * lr_factor for lr in scheduler.base_lrs]
        self.rollbacks += 1
        self.skip_update = True
        self.call("on_rollback", to_step)
        return True

    def request_stop(self, reason: str) -> None:
        super().request_stop(reason)
        if self.on_error != "warn":
            self.skip_update = True
            self.stop_requested = True

    # -- the end, and resuming -------------------------------------------------------------------

    def flush(self, *, force: bool = False) -> None:
        """Write the run directory (see ``FLUSH_EVERY_S``); ``force``: now, whatever the time."""
        now = time.monotonic()
        fresh = len(self.findings) != self._findings_on_disk
        recent = now - self._flushed_at < FLUSH_EVERY_S
        if not force and not fresh and recent and self.run_dir is not None:
            return
        super().flush()
        self._flushed_at, self._findings_on_disk = now, len(self.findings)

    def close(self) -> None:
        for handle in self._real:
            handle.remove()
        self._real = []
        super().close()
        self.flush(force=True)

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs to keep its history (plain types only)."""
        self.flush(force=True)
        return {
            "step": self.step,
            "epoch": self.epoch,
            "rollbacks": self.rollbacks,
            "stop_reason": self.stop_reason,
            "findings": [f.to_dict() for f in self.findings],
            "emitted": [list(k) for k in self._emitted],
            "callbacks": self.callback_states(),
            "metric_rows": self._rows_on_disk,
        }

    def call(self, hook: str, *args: Any) -> None:
        if hook == "on_fit_start" and self._resume_state is not None:
            self.load(self._resume_state)  # so that the monitors start from the saved step
            self._resume_state = None
        super().call(hook, *args)

    def load(self, state: Mapping[str, Any]) -> None:
        self.step = int(state.get("step", 0))
        self.epoch = int(state.get("epoch", 0))
        self.rollbacks = int(state.get("rollbacks", 0))
        self.findings = [Finding.from_dict(f) for f in state.get("findings", [])]
        self._emitted = {tuple(k) for k in state.get("emitted", [])}  # type: ignore[misc]
        self.load_callback_states(state.get("callbacks", {}))

    def _config(self) -> dict[str, Any]:
        return {
            **super()._config(),
            "kind": self.framework,
            "optimizer": ", ".join(type(o).__name__ for o in self.steps.optimizers),
            "on_error": self.on_error,
            **self._record,
        }


def loss_as_output(loss: Any, batch: Any) -> tuple[torch.Tensor, Any]:
    """``(output, target)`` for ``diagnose``'s ``forward=`` when the model computes its loss.

    The output is the loss itself, shape ``(1,)``, and :func:`own_loss` returns it: every check
    then judges the framework's own loss (a LightningModule's ``training_step``, a Hugging Face
    model's ``outputs.loss``). Checks that must read logits against labels cannot run on it and
    are listed in ``CHECKS_SKIPPED`` (the task is ``"custom"``: cannot check means say so).
    """
    if isinstance(loss, Mapping):
        loss = loss.get("loss")
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(
            "the model's own loss must be a scalar tensor (or a dict with one under 'loss'), "
            f"got {type(loss).__name__}; pass diagnose a forward= and loss_fn= of your own"
        )
    return loss.reshape(1), _target_of(batch)


def own_loss(output: torch.Tensor, target: Any) -> torch.Tensor:
    """The loss :func:`loss_as_output` put in the output."""
    return output.sum()


def _target_of(batch: Any) -> Any:
    if isinstance(batch, Mapping):
        return batch.get("labels")
    if isinstance(batch, list | tuple) and len(batch) >= 2:
        return batch[-1]
    return None


def diagnose_own_loss(model: nn.Module, data: Any, own_forward: Callable, /, **kwargs: Any) -> Any:
    """:func:`babysit.diagnose` with ``own_forward``'s loss (``task="custom"`` by default)."""
    from ..checks import diagnose

    clash = sorted({"forward", "loss_fn"} & set(kwargs))
    if clash:
        raise TypeError(
            f"this diagnose uses the model's own loss: it takes no {' or '.join(clash)} (call "
            "babysit.diagnose(model, data, forward=..., loss_fn=...) for a loss of your own)"
        )
    kwargs.setdefault("task", "custom")
    return diagnose(model, data, forward=own_forward, loss_fn=own_loss, **kwargs)
