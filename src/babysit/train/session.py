"""What monitors see of a training run, whoever drives it: ``fit``'s loop or a ``Watcher``.

A :class:`Session` holds the model, the optimizer, the step and epoch counters, the findings
emitted so far and the metric rows logged so far. Monitors (callbacks) read it and call
:meth:`Session.emit` and :meth:`Session.log`; ``fit`` adds what only a loop that owns the
training can do (:meth:`Session.remember_good_state`, :meth:`Session.request_rollback`).

Under ``torchrun`` (DDP) every rank holds its own session, and the sessions agree
(docs/architecture.md, "Distributed training"): every step's loss is shared across ranks before
any ``on_loss`` hook runs (:attr:`Session.rank_losses`, one all-reduce of ``world_size``
float64s), so the loss guard takes the same decision on every rank in the same step and calls
:meth:`Session.request_rollback`, :meth:`Session.restore_good_state` or
:meth:`Session.request_stop` on all of them together; monitors judge statistics reduced across
ranks, so every rank emits the same findings; only rank 0 writes the run directory and prints
alerts. Monitors hook and name the user's module inside a ``DistributedDataParallel`` wrapper
(:attr:`Session.measured_model`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import distributed, runs
from ..findings import Finding, known_codes
from ..thresholds import resolve
from .callbacks import Callback

__all__ = ["MetricRow", "Session", "loss_slots", "unwrap"]

MetricRow = tuple[int, int, str, str, Any]  # (step, epoch, split, name, value: float | 0-d tensor)


class Session:
    """Shared state of one training run; the base of ``fit``'s trainer and of ``Watcher``."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        callbacks: Iterable[Callback] = (),
        thresholds: Mapping[str, float] | None = None,
        ignore: Iterable[str] = (),
        run_dir: Path | None = None,
    ) -> None:
        self.model = model
        self.run_dir = run_dir
        self.optimizer = optimizer
        self.callbacks: list[Callback] = list(callbacks)
        self.thresholds = resolve(thresholds)
        self.ignore = _codes(ignore)
        self.step = 0  # global index of the current optimizer step (0-based)
        self.epoch = 0
        self.findings: list[Finding] = []
        self.rows: list[MetricRow] = []  # metric rows logged since the last write (metrics.csv)
        self.sinks: list[Callable[[list], None]] = []  # also receive the rows when written
        self.stats: dict[str, float] = {}  # summaries monitors share (e.g. the update ratio)
        self.alert: Callable[[Finding], None] | None = None  # live one-line alerts
        self.stop_reason: str | None = None
        self._emitted: set[tuple[str, str | None, str]] = set()
        self._rows_on_disk = 0
        self._dispatch: dict[str, list[Callable[..., None]]] = {}  # hook -> bound methods
        self._skip = False  # set by a rollback until the loop moves to the next batch
        # every rank's loss of the current step (index = rank), shared before on_loss
        self.rank_losses: tuple[float, ...] = ()
        self._sharing: Callable[[], torch.Tensor] | None = None  # a share begun, not yet read

    @property
    def measured_model(self) -> nn.Module:
        """The model monitors hook, measure and name layers by: ``model`` itself, or the module
        inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (so layer names are the
        model's own, without ``module.``; hooks on it fire inside the wrapper's forward)."""
        return unwrap(self.model)

    def start_loss(self) -> tuple[float, int, float] | None:
        """The loss of the initial weights, measured over several mini-batches before the
        first step, how many, and the standard deviation of their losses: the start the loss
        guard judges a break-out against
        (:class:`babysit.train.monitors.LossGuard`). ``None`` here: a session that does not
        own the training (``watch``, the integrations) cannot run its model on data of its
        own before the user's first step, so the guard starts from the first loss it sees.
        ``fit``'s trainer measures it (docs/architecture.md, "The divergence rule")."""
        return None

    @property
    def global_loss(self) -> float:
        """The mean of the current step's loss over all ranks (NaN when any rank's is NaN):
        the number logs and loss-curve rules read. The step's loss itself in one process."""
        losses = self.rank_losses
        if len(losses) <= 1:
            return losses[0] if losses else math.nan
        return math.fsum(losses) / len(losses)

    def share_loss(self, loss: float) -> tuple[float, ...]:
        """Every rank's ``loss`` for this step, on every rank (:attr:`rank_losses`).

        One all-reduce of ``world_size`` float64s: each rank puts its loss at its own index
        and zeros elsewhere, so the sum is every rank's loss, NaN and Inf included. In one
        process: ``(loss,)``, no collective. :meth:`call` runs it before the ``on_loss`` hooks
        (waiting for the one :meth:`begin_loss_share` started, if any); every rank must reach
        it once per step.
        """
        wait, self._sharing = self._sharing, None
        if wait is None:
            if not distributed.is_distributed():
                self.rank_losses = (float(loss),)
                return self.rank_losses
            wait = distributed.all_reduce_sum_start(loss_slots(loss))
        self.rank_losses = tuple(wait().tolist())
        return self.rank_losses

    def begin_loss_share(self, loss: float) -> None:
        """Start sharing this step's loss across ranks without waiting (under DDP).

        A loop calls it as soon as it has the loss and ``call("on_loss", loss)`` later: the
        all-reduce then runs while the loop works (``watch`` overlaps it with the user's
        backward). In one process it does nothing.
        """
        if distributed.is_distributed():
            self._sharing = distributed.all_reduce_sum_start(loss_slots(loss))

    def end_loss_share(self, summed: Callable[[], torch.Tensor]) -> None:
        """The step's loss slots were summed elsewhere (``fit`` carries them in DDP's gradient
        all-reduce, :mod:`babysit.train.loss_carrier`): ``summed()`` returns the summed
        :func:`loss_slots`, read by the next :meth:`share_loss` instead of a collective."""
        self._sharing = summed

    # -- what monitors call ----------------------------------------------------------------------

    def emit(self, finding: Finding, *, once: bool = True) -> bool:
        """Record ``finding`` at the current step; ``once`` drops a repeat of the same code,
        layer and severity. Returns whether it was recorded."""
        if finding.code in self.ignore:
            return False
        key = (finding.code, finding.layer, finding.severity)
        if once and key in self._emitted:
            return False
        self._emitted.add(key)
        if finding.step is None:
            finding = dataclasses.replace(finding, step=self.step)
        self.findings.append(finding)
        if self.alert is not None and distributed.is_main():
            self.alert(finding)
        return True

    def log(self, name: str, value: Any, *, split: str = "train", step: int | None = None) -> None:
        """Append one metric row; ``value`` may be a 0-d tensor, read only when rows are written
        (no device sync in the step). Without a run directory nothing is kept."""
        if self.run_dir is not None:
            self.rows.append((self.step if step is None else step, self.epoch, split, name, value))

    def lr(self) -> float:
        """The first parameter group's learning rate."""
        return float(self.optimizer.param_groups[0]["lr"])

    def remember_good_state(self) -> None:
        """Keep the current model and optimizer state as the one to roll back to (``fit``)."""

    def request_rollback(self, reason: Finding, lr_factor: float) -> bool:
        """Ask the loop to restore the last good state and scale the learning rate by
        ``lr_factor``. Returns whether it will (only ``fit`` can; a ``Watcher`` cannot).

        Under DDP the loss guard decides on every rank's loss (:attr:`rank_losses`), so this,
        :meth:`restore_good_state` and :meth:`request_stop` are called on every rank in the same
        step: a loop restores (and answers) the same on every rank, and no rank runs the
        step's backward (with its gradient all-reduce) while another skips it."""
        return False

    def restore_good_state(self) -> bool:
        """Put the last good state back without changing the learning rate (``fit`` only)."""
        return False

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop after this step (the lecture's break-out)."""
        self.stop_reason = reason

    def flush(self) -> None:
        """Write the rows logged since the last write to ``metrics.csv`` (and to the sinks),
        and all findings to ``findings.json``. Without a run directory the rows are dropped;
        under DDP only rank 0 writes (the other ranks hold the same findings in memory)."""
        if self.run_dir is None or not distributed.is_main():
            self.rows.clear()
            return
        rows = plain_rows(self.rows) if self.rows else []
        self.rows.clear()
        if rows:
            runs.append_metrics(self.run_dir, rows)
            self._rows_on_disk += len(rows)
            for sink in self.sinks:
                sink(rows)
        runs.write_json(
            self.run_dir,
            runs.FINDINGS,
            {"findings": [f.to_dict() for f in self.findings], "stop_reason": self.stop_reason},
        )

    # -- dispatch --------------------------------------------------------------------------------

    def call(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every callback that implements it, in order.

        ``on_loss`` first shares the loss across ranks (:meth:`share_loss`; nothing to share
        in one process), so each hook can read :attr:`rank_losses` and :attr:`global_loss`.
        """
        methods = self._dispatch.get(hook) or self.methods(hook)
        if hook == "on_loss":
            self.share_loss(args[0])
            for method in methods:
                method(self, *args)
                if self._skip:  # rolled back: later callbacks skip the step
                    break
            return
        for method in methods:
            method(self, *args)

    def methods(self, hook: str) -> list[Callable[..., None]]:
        """The bound ``hook`` methods :meth:`call` runs, in order: the callbacks that override
        it (looked up once per hook; ``_dispatch.clear()`` after changing ``callbacks``)."""
        methods = self._dispatch.get(hook)
        if methods is None:
            methods = self._dispatch[hook] = [
                getattr(cb, hook)
                for cb in self.callbacks
                if getattr(type(cb), hook, None) is not getattr(Callback, hook)
            ]
        return methods

    def callback_states(self) -> dict[str, Any]:
        """Every callback's ``state_dict()``, by its ``state_key`` (numbered when repeated)."""
        return {key: cb.state_dict() for key, cb in self._keyed_callbacks()}

    def load_callback_states(self, states: Mapping[str, Any]) -> None:
        for key, callback in self._keyed_callbacks():
            if key in states:
                callback.load_state_dict(states[key])

    def _keyed_callbacks(self) -> list[tuple[str, Callback]]:
        seen: dict[str, int] = {}
        keyed = []
        for callback in self.callbacks:
            key = callback.state_key
            n = seen.get(key, 0)
            seen[key] = n + 1
            keyed.append((key if n == 0 else f"{key}#{n}", callback))
        return keyed


def loss_slots(loss: float) -> torch.Tensor:
    """This rank's loss at its own index of a ``world_size`` float64 vector, zeros elsewhere:
    summed over ranks, it is every rank's loss (NaN and Inf included) on every rank."""
    slots = torch.zeros(distributed.world_size(), dtype=torch.float64)
    slots[distributed.rank()] = float(loss)
    return slots


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a ``DistributedDataParallel`` or ``DataParallel`` wrapper."""
    parallel = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, parallel):
        model = model.module
    return model


def plain_rows(rows: Iterable[MetricRow]) -> list[tuple[int, int, str, str, float]]:
    """Rows with every value as a Python float (tensors are read here, in one pass)."""
    out = []
    for step, epoch, split, name, value in rows:
        if isinstance(value, torch.Tensor):
            value = value.item()
        out.append((step, epoch, split, name, float(value)))
    return out


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def _codes(ignore: Iterable[str]) -> frozenset[str]:
    return known_codes(ignore)  # the same check (and message) as diagnose's
