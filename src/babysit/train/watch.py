"""``babysit.watch``: the same monitors in a training loop the user keeps.

::

    watcher = babysit.watch(model, optimizer)
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        watcher.observe(loss)        # the one added line (before or after backward)
        loss.backward()
        optimizer.step()
    watcher.close()                  # or `with babysit.watch(...) as watcher:`
    print(watcher.findings)

``watcher.observe(loss, output, target)`` (the model's output and the targets, as the loss
compares them) also lets the watcher count the task's training metric over the epoch: accuracy
for classification and multilabel (:func:`babysit.tasks.hits`, ``ignore_index`` honoured), the
mean absolute error for regression. :meth:`Watcher.end_epoch` then supplies ``train_acc`` /
``train_mae`` when the loop does not pass them, so ``end_epoch(val_acc=...)`` is enough for the
train/val gap monitor. The counts are running sums on the output's device (one ``argmax`` and
two sums a step, detached, no host sync, no reference to the output kept); they are read once,
at ``end_epoch``.

The watcher registers an optimizer step pre-hook and post-hook (the update ratio is measured
from the real step; the post-hook also ends the step for the probes) and, on sampled steps
only, module hooks. It never changes what the loop computes: no gradient is touched, no
parameter moves, no random number is drawn. It cannot roll back a loop it does not own: a NaN
or diverged loss (:func:`babysit.divergence.diverged`, the rule ``fit`` uses) is reported and
``watcher.diverged`` becomes True for the loop to act on.

Under ``torchrun`` (DDP) the loop stays the same: wrap the model in ``DistributedDataParallel``,
call ``babysit.watch(ddp_model, optimizer)`` on every rank and the same one-line
``watcher.observe(loss)``. Every ``observe`` shares the rank's loss with the others (one small
all-reduce), so a NaN or a break-out on any rank makes ``watcher.diverged`` True on every rank
in the same step: the loop breaks out everywhere at once, and no rank is left waiting in the
next gradient all-reduce. Activation statistics are judged on the global batch, every rank holds
the same findings, and rank 0 alone writes the run directory and prints. Call
:meth:`Watcher.end_epoch` and :meth:`Watcher.close` on every rank too (``end_epoch`` sums the
epoch's counts across ranks and takes the metrics rank 0 passes). See docs/architecture.md,
"Distributed training".

``babysit.watch(ddp_model, optimizer, carry_loss=True)`` saves that small all-reduce: the loss
rides in DDP's own gradient all-reduce (:mod:`babysit.train.loss_carrier`, a communication
hook on the user's wrapper, as ``fit`` does on its own), so the agreement costs no round trip
of its own. The fast order is ``observe(loss)`` *before* ``loss.backward()`` and
``watcher.diverged`` read *after* it (as in the loop above): the loss is then loaded before the
gradient bucket leaves. Any other order stays correct and the same on every rank, and costs
the separate all-reduce for that step: ``observe`` after ``backward`` (the bucket left without
the loss: every rank learns it from the carried "missing" count and shares the losses the
usual way), or ``diverged`` / :meth:`Watcher.settle` read before ``backward`` (nothing carried
yet), or a backward under ``no_sync()``. Every rank must follow the same order (as the same
loop does). Opt-in because a hook cannot be removed and DDP takes one per wrapper: with
``carry_loss=True`` your own later ``register_comm_hook`` fails (register yours first and leave
``carry_loss`` off). In one process it is accepted and does nothing.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import distributed, runs
from ..outputs import read_output
from ..tasks import Task, hits, resolve_task
from .callbacks import Callback
from .loss_carrier import LossCarrier
from .session import Session, loss_slots

__all__ = ["Watcher", "watch"]


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    monitors: str | Iterable[Callback] | None = "default",
    run_dir: str | Path | None = None,
    thresholds: Mapping[str, float] | None = None,
    ignore: Iterable[str] = (),
    progress: bool = False,
    task: Any = "auto",
    carry_loss: bool = False,
) -> Watcher:
    """Attach babysit's monitors to a training loop you keep; add ``watcher.observe(loss)``.

    Args:
        model: the model the loop trains.
        optimizer: the optimizer whose ``step()`` the loop calls (its hooks count the steps).
        monitors: ``"default"``, ``"all"`` or a list (:mod:`babysit.train.monitors`).
        run_dir: when given, ``config.json``, ``metrics.csv`` and ``findings.json`` are
            written there (at each :meth:`Watcher.end_epoch` and at :meth:`Watcher.close`).
        thresholds, ignore: as in :func:`babysit.diagnose`.
        progress: print a line per finding as it fires.
        task: what the loop's output means (``"auto"``, a kind name or a
            :class:`babysit.Task`), used when :meth:`Watcher.observe` gets the output and
            target. The loop's loss is not seen, so ``"auto"`` reads integer class labels (one
            dimension fewer than the output) as classification (ignoring -100, as
            ``nn.CrossEntropyLoss`` does) and refuses to guess anything else: pass the task.
            Recorded in ``config.json`` (the resolved task once the first output is seen).
        carry_loss: under torchrun, carry every rank's loss in DDP's own gradient all-reduce
            (a communication hook registered on ``model``, which must then be the
            ``DistributedDataParallel`` wrapper) instead of an all-reduce of its own each step.
            Fastest with ``observe(loss)`` before ``loss.backward()`` and ``diverged`` read
            after it; other orders fall back to the separate all-reduce for that step (see the
            module's docstring). The hook stays on the wrapper: your own later
            ``register_comm_hook`` fails. Ignored in one process.

    Raises:
        ValueError: ``carry_loss=True`` under torchrun with a model that is not a
            ``DistributedDataParallel`` wrapper, has parameters that are not all float32 or all
            float64, or runs on a process group other than the default one.
        RuntimeError: ``carry_loss=True`` and the wrapper already has a communication hook
            (or another open watcher carries on it).
    """
    return Watcher(
        model,
        optimizer,
        monitors=monitors,
        run_dir=run_dir,
        thresholds=thresholds,
        ignore=ignore,
        progress=progress,
        task=task,
        carry_loss=carry_loss,
    )


class Watcher(Session):
    """Monitors hooked into a user's loop; see :func:`watch`."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        monitors: str | Iterable[Callback] | None = "default",
        run_dir: str | Path | None = None,
        thresholds: Mapping[str, float] | None = None,
        ignore: Iterable[str] = (),
        progress: bool = False,
        task: Any = "auto",
        carry_loss: bool = False,
    ) -> None:
        from .config import check_task
        from .monitors import resolve_monitors

        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if not isinstance(carry_loss, bool):
            raise TypeError(f"carry_loss must be True or False, got {carry_loss!r}")
        run_dir = None if run_dir is None else Path(run_dir)
        task = check_task(task)
        self.task = task if isinstance(task, str) else task.to_dict()
        super().__init__(
            model,
            optimizer,
            callbacks=resolve_monitors(monitors),
            thresholds=thresholds,
            ignore=ignore,
            run_dir=run_dir,
        )
        # after every check that can refuse the arguments: a hook cannot be taken back
        self._carrier = _carrier(model, self) if carry_loss else None
        if run_dir is not None and distributed.is_main():  # under DDP rank 0 writes
            if run_dir.exists() and any(run_dir.iterdir()):
                runs.fresh_run_dir(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            runs.write_json(run_dir, runs.CONFIG, self._config())
        if progress:
            from rich.console import Console

            from .progress import alert_line

            console = Console(stderr=True)
            self.alert = lambda f: console.print(alert_line(f))
        self.history: list[dict[str, Any]] = []
        self._last_loss = math.nan
        self._task: Task | None = None  # resolved at the first observe with output and target
        self._probabilities = False  # multilabel outputs read as probabilities (> 0.5)
        self._sums = _EpochSums()
        self._closed = False
        self._pending: float | None = None  # under DDP: a loss observed, its share in flight
        # registered before the monitors' hooks, so it runs first: the step's loss is judged
        # before anything inside the step is (under DDP, the share ends here at the latest)
        self._settle_handle = optimizer.register_step_pre_hook(lambda *_: self.settle())
        self.call("on_fit_start")
        # registered after the monitors' hooks, so it runs last: it ends the step
        self._handle = optimizer.register_step_post_hook(lambda *_: self._after_step())

    def observe(self, loss: torch.Tensor | float, output: Any = None, target: Any = None) -> None:
        """Report this step's loss (a tensor or a float). Reads one number.

        ``output`` and ``target`` (optional, both or neither): the model's output (a tensor,
        or a tuple/dict/``ModelOutput`` read as its logits) and the targets, as the loss
        compares them. The task's training metric is then counted over the epoch (see
        :func:`watch`, ``task=``) and supplied at :meth:`end_epoch`. Shapes the task cannot
        take (e.g. a regression output ``(N, 1)`` against targets ``(N,)``) are a
        ``ValueError`` naming them, raised before anything is recorded.
        """
        if (output is None) != (target is None):
            given, missing = ("output", "target") if target is None else ("target", "output")
            raise ValueError(
                f"watcher.observe got {given} without {missing}: pass both "
                "(watcher.observe(loss, output, target)) or neither"
            )
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if output is not None:
            output, target = self._check_pair(output, target)
        self.settle()  # a loss observed twice without a step: the first one is judged now
        self._last_loss = value
        if distributed.is_distributed():
            # judged when the ranks' losses are in: at diverged, at the optimizer step, or at
            # the next observe / end_epoch / close, all within this step
            carrier = self._carrier
            if carrier is not None and carrier.idle():  # before backward: the loss rides along
                carrier.load(loss_slots(value))
                self.end_loss_share(lambda: self._carried(carrier, value))
            else:
                if carrier is not None:  # the bucket left without it (on every rank: "missing")
                    carrier.reset()
                self.begin_loss_share(value)
            self._pending = value
        else:
            self._judge_loss(value)
        if output is not None and self._task is not None:
            self._sums.add(output, target, self._task, self._probabilities)

    @staticmethod
    def _carried(carrier: LossCarrier, value: float) -> torch.Tensor:
        """Every rank's loss: carried by the backward, or (nothing carried yet, or a rank's
        loss missing: the same answer on every rank) one all-reduce of its own, on every rank."""
        summed = carrier.poll()
        if summed is None:
            return distributed.all_reduce_sum(loss_slots(value))
        return summed

    def _judge_loss(self, value: float) -> None:
        self.call("on_loss", value)  # shares the loss across ranks first (Session.call)
        self.log("loss", self.global_loss if len(self.rank_losses) > 1 else value)

    def settle(self) -> None:
        """Under DDP: wait for every rank's loss of this step and judge it now.

        ``observe`` only starts the exchange, so that it overlaps the backward; reading
        :attr:`diverged`, the optimizer step, the next ``observe``, :meth:`end_epoch` and
        :meth:`close` settle it. A driver that must act on the verdict right after ``observe``
        (drop the update, roll back) calls this first. With ``carry_loss=True`` settling before
        ``backward`` costs the step a separate all-reduce (the loss had not ridden yet); call
        it on every rank at the same point. In one process ``observe`` judges at once and this
        does nothing."""
        if self._pending is not None:
            value, self._pending = self._pending, None
            self._judge_loss(value)

    def end_epoch(self, **metrics: float) -> None:
        """Optional: report epoch metrics (``train_acc=..., val_acc=..., val_loss=...``) so the
        train/val gap monitor can judge them; also writes the run directory.

        When :meth:`observe` got outputs and targets this epoch, ``train_acc`` (classification,
        multilabel) or ``train_mae`` (regression) is the epoch's running value, unless given.

        Under DDP call it on every rank: the counts are summed over all ranks' examples, and
        the ``metrics`` rank 0 passes are the ones judged and written on every rank (pass values
        already reduced over ranks, or the same on every rank).
        """
        self.settle()
        counted = self._sums.read()
        if distributed.is_distributed():
            metrics = distributed.broadcast_object(dict(metrics))
        for key, value in counted.items():
            metrics.setdefault(key, value)
        self._sums = _EpochSums()
        row = {"epoch": self.epoch, **{k: float(v) for k, v in metrics.items()}}
        self.history.append(row)
        for key, value in metrics.items():
            split, _, name = key.partition("_")
            self.log(
                name if split in ("train", "val") else key,
                float(value),
                split=split if split in ("train", "val") else "train",
            )
        self.call("on_train_epoch_end", row)
        if any(k.startswith("val_") for k in metrics):
            self.call("on_validation_epoch_end", row)
        self.epoch += 1
        self.flush()

    @property
    def diverged(self) -> bool:
        """True once the loss went NaN/Inf or diverged from its start (above 3x it for a loss
        that starts at 0.1 or more; :mod:`babysit.divergence`): the loop should stop.

        Under DDP it is True on every rank in the same step, when the loss is NaN or diverged
        on any rank; reading it waits for every rank's ``observe`` of the step (read it after
        ``backward()`` to let that exchange overlap the backward pass; with ``carry_loss=True``
        reading it before ``backward()`` costs the step a separate all-reduce)."""
        self.settle()
        return self.stop_reason is not None

    def close(self) -> None:
        """Run the end-of-training rules, remove every hook and write the run directory."""
        if self._closed:
            return
        self._closed = True
        self.settle()
        if self._carrier is not None:  # the hook stays on the wrapper, idle (see _carrier)
            self._carrier.reset()
            self._carrier.user = None
        self._handle.remove()
        self._settle_handle.remove()
        self.call("on_fit_end")
        self.flush()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Watcher(step={self.step}, findings={sorted({f.code for f in self.findings})})"

    def _check_pair(self, output: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The output tensor and the target, checked against the task (resolved on first use);
        raises before the watcher records anything."""
        out, _ = read_output(output)
        if not isinstance(target, torch.Tensor):
            raise TypeError(
                f"watcher.observe: target must be a tensor, got {type(target).__name__}"
            )
        first = self._task is None
        task = self._resolve(out, target) if first else self._task
        if task is None:  # custom: the loss only
            return out, target
        problem = _misfit(out, target, task)
        if problem:
            raise ValueError(
                f"watcher.observe: an output of shape {tuple(out.shape)} and a target of shape "
                f"{tuple(target.shape)} do not fit a {task} task ({problem}); pass the output "
                "and target as the loss compares them"
            )
        if first:
            self._task = task
            self.task = task.to_dict()
            if task.kind == "multilabel":
                with torch.no_grad():  # a sigmoid's output lies in [0, 1]; logits rarely all do
                    self._probabilities = bool(((out >= 0) & (out <= 1)).all())
                self.task["outputs"] = "probabilities" if self._probabilities else "logits"
            if self.run_dir is not None and distributed.is_main():
                runs.write_json(self.run_dir, runs.CONFIG, self._config())
        return out, target

    def _resolve(self, out: torch.Tensor, target: torch.Tensor) -> Task | None:
        """The task for ``self.task`` (``None``: custom); ``"auto"`` only reads class labels."""
        setting = self.task
        if isinstance(setting, dict):
            setting = Task(**setting)
        if setting == "custom" or (isinstance(setting, Task) and setting.kind == "custom"):
            return None
        if setting == "auto":
            labels = not (target.is_floating_point() or target.is_complex())
            labels = labels and target.dtype != torch.bool
            if not labels or out.dim() < 2 or target.shape == out.shape:
                raise ValueError(
                    f"babysit.watch(task='auto') cannot tell what an output of shape "
                    f"{tuple(out.shape)} means against a target of shape {tuple(target.shape)} "
                    f"and dtype {str(target.dtype).removeprefix('torch.')} without the loss (only "
                    "integer class labels, one dimension fewer than the output, are read as "
                    "classification); pass task='regression', task='multilabel' or "
                    "babysit.Task('classification', ...) to babysit.watch"
                )
            setting = "classification"
        return resolve_task(setting, None, targets=target)

    def _after_step(self) -> None:
        self.settle()  # normally done by the step's pre-hook already
        if self._carrier is not None:  # a backward after settle carried nothing of this step
            self._carrier.reset()
        self.call("on_train_batch_end", self._last_loss, self.step)
        self.step += 1

    def _config(self) -> dict[str, Any]:
        config = {
            "kind": "watch",
            "model": type(self.measured_model).__name__,
            "model_repr": repr(self.model),
            "optimizer": type(self.optimizer).__name__,
            "lr": self.lr(),
            "task": self.task,
            "monitors": [type(c).__name__ for c in self.callbacks],
        }
        if distributed.is_distributed():
            config["world_size"] = distributed.world_size()
            config["carry_loss"] = self._carrier is not None
        return config


def _carrier(model: nn.Module, watcher: Watcher) -> LossCarrier | None:
    """The loss carrier on the user's DDP wrapper for ``watcher`` (``carry_loss=True``); None
    in one process. Raises, with what to do, when the loss cannot ride in the wrapper's
    gradient all-reduce; the wrapper is unchanged then."""
    if not distributed.is_distributed():
        return None  # one process: no loss to share
    off = "leave carry_loss off (each step then shares the loss with an all-reduce of its own)"
    reason = LossCarrier.refusal(model)
    if reason is not None:
        raise ValueError(f"babysit.watch(carry_loss=True): {reason}; {_fix(model)}{off}")
    carrier = LossCarrier.of(model)  # registered by an earlier watcher: a hook stays for good
    if carrier is not None:
        owner = carrier.user() if carrier.user is not None else None
        if owner is not None and not getattr(owner, "_closed", True):  # True: a failed __init__
            raise RuntimeError(
                "babysit.watch(carry_loss=True): another open watcher carries the loss on this "
                f"DistributedDataParallel wrapper; close it first (watcher.close()), or {off}"
            )
        carrier.reset()
    else:
        try:
            carrier = LossCarrier.register(model, distributed.world_size())
        except RuntimeError as err:
            raise RuntimeError(
                "babysit.watch(carry_loss=True): this DistributedDataParallel wrapper already "
                "has a communication hook, and DDP takes one per wrapper (the loss carrier is "
                f"one); {off}"
            ) from err
    carrier.user = weakref.ref(watcher)
    return carrier


def _fix(model: nn.Module) -> str:
    """What to change so the loss can ride, ending in "or " ("" when only leaving it off)."""
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(model, DistributedDataParallel):
        return "pass the DistributedDataParallel wrapper the loop trains through, or "
    dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
    if dtypes and not dtypes <= {torch.float32, torch.float64}:
        return (
            "keep the parameters float32 (torch.autocast computes in float16/bfloat16 with "
            "float32 weights), or "
        )
    return ""


def _misfit(out: torch.Tensor, target: torch.Tensor, task: Task) -> str | None:
    """Why ``task`` cannot read ``out`` against ``target`` (``None``: it can)."""
    if out.device != target.device:
        return f"the output is on {out.device}, the target on {target.device}"
    if task.kind == "classification":
        if out.dim() < 2:
            return "classification wants scores with the classes along class_dim, (N, C)"
        dim = task.class_dim % out.dim()
        if task.num_classes is not None and out.shape[dim] != task.num_classes:
            return f"{task.num_classes} classes along dimension {dim}"
        if target.is_floating_point():
            if target.shape != out.shape:
                return "class probabilities must have the output's shape"
            return None
        want = out.shape[:dim] + out.shape[dim + 1 :]
        if target.shape != want:
            return f"class labels of shape {tuple(want)}, the output's without dimension {dim}"
        return None
    if target.shape != out.shape:
        return f"{task.kind} targets must have the output's shape"
    return None


class _EpochSums:
    """Running counts of one epoch's training metric, on the output's device.

    Classification and multilabel: ``[correct, counted]`` (:func:`babysit.tasks.hits`;
    positions equal to ``ignore_index`` are not counted). Regression: ``Σ|output - target|``
    in float64 and the number of target values. Adding never syncs with the device and keeps
    no reference to the output; :meth:`read` syncs once.
    """

    def __init__(self) -> None:
        self.hits: torch.Tensor | None = None  # [correct, counted] (int64)
        self.abs_err: torch.Tensor | None = None  # Σ|e| (float64)
        self.values = 0  # target values in abs_err

    def add(self, out: torch.Tensor, target: torch.Tensor, task: Task, prob: bool) -> None:
        with torch.no_grad():
            if task.kind == "regression":
                err = (out.detach().double() - target.double()).abs().sum()
                self.abs_err = err if self.abs_err is None else self.abs_err + err
                self.values += target.numel()
                return
            found = hits(out.detach(), target, task, probabilities=prob)
            if found is None:  # _misfit let through what hits cannot read: count nothing
                return
            correct, counted = found
            pair = torch.stack([(correct & counted).sum(), counted.sum()])
            self.hits = pair if self.hits is None else self.hits + pair

    def read(self) -> dict[str, float]:
        """The epoch's metrics; under DDP over every rank's examples (one all-reduce of four
        float64s, on every rank, whatever each counted)."""
        correct = counted = abs_err = 0.0
        if self.hits is not None:
            correct, counted = (float(v) for v in self.hits.tolist())
        if self.abs_err is not None:
            abs_err = float(self.abs_err)
        values = float(self.values)
        if distributed.is_distributed():
            sums = torch.tensor([correct, counted, abs_err, values], dtype=torch.float64)
            correct, counted, abs_err, values = distributed.all_reduce_sum(sums).tolist()
        out: dict[str, float] = {}
        if counted:
            out["train_acc"] = correct / counted
        if values:
            out["train_mae"] = abs_err / values
        return out
