"""``babysit.fit``: a plain, fast training loop with monitors, checkpoints and resume.

One step::

    zero_grad -> forward -> loss -> on_loss (monitors may roll back here) -> backward -> step

No framework underneath: in-memory tensors are batched by indexing, the loss is read once per
step (``loss.item()``, which the progress bar and the NaN guard need), accuracy is summed as a
tensor. Everything else a monitor measures is sampled (see :mod:`babysit.train.monitors`).

Under torchrun every rank's loss is shared once per step (``W`` scalars, carried in DDP's own
gradient all-reduce by :mod:`babysit.train.loss_carrier` on the wrapper fit makes), so every
rank logs and judges the same number and no rank skips a backward another one runs;
docs/distributed.md lists every collective the loop adds.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import distributed as bd
from .. import inputs, runs
from ..batches import Batches, TensorBatches, UserLoader, make_batches, preserved_rng, to_device
from ..divergence import START_BATCHES, spread
from ..findings import Finding
from ..optim import make_optimizer
from ..outputs import batch_size_of, read_output, run_batch
from ..tasks import Task, default_loss, hits, resolve_task
from .activation_snapshots import ActivationSnapshots
from .callbacks import Callback
from .checkpoint import Checkpoint, CheckpointError, check_same_model, load_checkpoint
from .checkpoint import save_checkpoint as _save
from .config import RESUME_KEYS, FitConfig, conflicts
from .history import History
from .loss_carrier import LossCarrier
from .schedules import Schedule, make_schedule
from .session import Session, loss_slots
from .sharding import shard_eval, shard_training
from .snapshot import StateSnapshot

__all__ = ["fit"]

Forward = Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor]]
Metric = Callable[[torch.Tensor, torch.Tensor], Any]
# Training examples evaluated in eval mode at each epoch's end (``train_eval_acc``), with
# validation: the gap monitors compare like with like (no dropout on either side).
TRAIN_SAMPLE = 1000


def fit(
    model: nn.Module,
    data: Any,
    *,
    val: Any = None,
    optimizer: str | Callable[..., torch.optim.Optimizer] = "adam",
    lr: float | None = 1e-3,
    weight_decay: float = 0.0,
    schedule: str | Callable[[torch.optim.Optimizer], Any] | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    metrics: Mapping[str, Metric] | None = None,
    forward: Forward | None = None,
    callbacks: Iterable[Callback] | None = None,
    monitors: str | Iterable[Callback] | None = "default",
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    thresholds: Mapping[str, float] | None = None,
    ignore: Iterable[str] = (),
    task: str | Task = "auto",
) -> History:
    """Train ``model`` on ``data`` with the lecture's babysitting running alongside.

    Args:
        model: any ``nn.Module``; it is moved to ``device`` and trained in place.
        data: ``(X, y)`` tensors or arrays, a ``Dataset`` or a ``DataLoader``; anything else
            with ``forward``.
        val: validation data in the same forms; evaluated after every epoch (eval mode, no grad).
        optimizer: a name (``sgd``, ``momentum``, ``nesterov``, ``adam``, ``adamw``,
            ``rmsprop``, ``adagrad``) or a factory ``params -> Optimizer`` (its own lr is kept
            when ``lr=None``).
        lr: learning rate; ``None`` takes the optimizer's default (or the factory's).
        weight_decay: L2 regularization strength, passed to the optimizer.
        schedule: ``"cosine"``, ``"step"``, ``"onecycle"`` or ``optimizer -> scheduler``.
        loss_fn: default: the task's (cross-entropy for classification); for regression pass
            e.g. ``nn.MSELoss()`` or ``task="regression"``.
        metrics: extra ``{name: fn(output, target)}``, averaged over examples, train and val
            (a name that is also a built-in metric replaces it). Built in, by the task:
            ``acc`` for classification (argmax along ``class_dim``, ``ignore_index``
            positions not counted, probability targets by their argmax) and multilabel (each
            output thresholded), ``mae`` and ``r2`` (1 - SSE/SST over every target value of
            the epoch) for regression with an output of the targets' shape.
        forward: ``(model, batch) -> (output, target)`` for batches that are not ``(x, y)``.
        callbacks: extra :class:`Callback` s (a :class:`Checkpoint` replaces the default one).
        monitors: ``"default"``, ``"all"``, ``None`` (a plain loop), or a list of monitors
            (:mod:`babysit.train.monitors`).
        run_dir: where ``config.json``, ``metrics.csv``, ``findings.json``, ``checkpoints/``
            and ``tb/`` go. An existing one is renamed with a timestamp unless ``resume``.
        resume: continue from ``run_dir/checkpoints/last.pt`` (model, optimizer, scheduler,
            RNG states, callbacks, position): on CPU the metrics equal an uninterrupted run's.
            The call must repeat the run's ``optimizer``, ``lr``, ``weight_decay``,
            ``schedule``, ``batch_size``, ``seed`` and data size (``ValueError`` otherwise,
            before any file is touched); ``epochs`` may grow (recorded in ``config.json``).
        progress: a rich progress bar with loss/acc/lr and live alerts; off a terminal, plain
            epoch lines (at most one a second) and alerts; ``False`` is quiet.
        seed: seeds torch's global generator (dropout) and the shuffling.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        thresholds: overrides of :data:`babysit.thresholds.THRESHOLDS` for the monitors.
        ignore: finding codes to silence.
        task: what the output means (:mod:`babysit.tasks`): ``"auto"`` (from ``loss_fn``), a
            kind name or a :class:`babysit.Task`; it decides the target checks and the
            metrics, and is recorded in ``config.json``. A task that contradicts the loss or
            the targets is a ``ValueError``.

    Under torchrun (``WORLD_SIZE > 1``) the same call trains with DDP: the process group
    from torchrun's environment (unless the user created one), a ``DistributedSampler`` shard
    per rank, ``batch_size`` **per process** (the global batch is ``world_size`` times it),
    the loss and the metrics averaged over ranks, one decision (rollback, stop) for all
    ranks, one run directory written by rank 0, and checkpoints that resume exactly with the
    same number of processes (another number is refused). See docs/distributed.md.

    Returns:
        A :class:`History`: per-epoch metrics, ``.findings``, ``.stop_reason``, ``.rollbacks``.
    """
    config = FitConfig(
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        device=device,
        monitors=monitors,
        thresholds=thresholds,
        ignore=ignore,
        progress=progress,
        task=task,
    )
    with bd.process_group(config.device, who="fit"):  # torchrun: the group from its env
        trainer = Trainer(
            model,
            data,
            config,
            val=val,
            loss_fn=loss_fn,
            metrics=metrics,
            forward=forward,
            callbacks=callbacks,
            run_dir=run_dir,
            resume=resume,
        )
        history = trainer.run()
        # the DDP wrapper (and the loss carrier's comm hook on it) goes before the process
        # group does: a reducer outliving its group can abort the process at exit
        del trainer
        return history


class Trainer(Session):
    """The loop behind :func:`fit` (a :class:`Session` that owns the training).

    ``config`` holds the run's settings (validated); the rest is code and data. ``record``
    adds keys to ``config.json`` (the CLI records how it built the model and the data there).
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        config: FitConfig,
        *,
        val: Any = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        metrics: Mapping[str, Metric] | None = None,
        forward: Forward | None = None,
        callbacks: Iterable[Callback] | None = None,
        run_dir: str | Path | None = None,
        resume: bool = False,
        record: Mapping[str, Any] | None = None,
    ) -> None:
        from .monitors import resolve_monitors  # monitors import the session, not the reverse

        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        from torch.nn.parallel import DistributedDataParallel

        wrapped = model if isinstance(model, DistributedDataParallel) else None
        if wrapped is not None:  # the user's own DDP wrapper: trained through, watched inside
            model = wrapped.module
        _check_trainable(model)
        self._wrapped = wrapped
        self._loss_carrier: LossCarrier | None = None  # set when fit wraps the model in DDP
        self.settings = config
        self._world, self._rank = bd.world_size(), bd.rank()
        self.device = _device(config.device, distributed=self._world > 1)
        self.seed = config.seed
        self.epochs = config.epochs
        batch_size = config.batch_size
        self.forward_fn: Forward | None = forward
        # The user's per-module choices: modules put in eval mode under a model in train mode
        # (a frozen BatchNorm in a fine-tune) stay in eval while fit trains (docs/architecture.md,
        # "Data: tasks, batches and forward="). A model wholly in eval mode is trained as usual.
        self._kept_eval = [m for m in model.modules() if not m.training] if model.training else []
        self.metric_fns: dict[str, Metric] = dict(metrics or {})
        full = make_batches(
            data, batch_size, shuffle=True, seed=self.seed, device=self.device, name="data"
        )
        self.batches = full
        tensors = getattr(full, "tensors", None)
        sample = tensors[1] if tensors is not None and len(tensors) == 2 else None
        self.task = resolve_task(config.task, loss_fn, sample)
        self.loss_fn = loss_fn if loss_fn is not None else default_loss(self.task)
        self.classification = self.task.kind == "classification"
        self.probabilities = isinstance(self.loss_fn, nn.BCELoss)  # multilabel accuracy at 0.5
        model.to(self.device)
        opt = make_optimizer(config.optimizer, model.parameters(), config.lr, config.weight_decay)
        built_lr = float(opt.param_groups[0]["lr"])  # before a schedule moves it (onecycle)
        self.val_batches = (
            None
            if val is None
            else make_batches(
                val, batch_size, shuffle=False, seed=0, device=self.device, name="val"
            )
        )
        self._on_device = _in_memory(full)
        self._check_data(full, "data")
        self._train_sample = _sample(full, TRAIN_SAMPLE, batch_size)
        if self.val_batches is not None:
            self._check_data(self.val_batches, "val")
        # What this process evaluates: all of it, or under torchrun its shard (sums reduced).
        self._val_eval, self._sample_eval = self.val_batches, self._train_sample
        self.net: nn.Module = model  # what the training forward calls (DDP under torchrun)
        if self._world > 1:
            self._shard(full, model)
        self.schedule: Schedule | None = make_schedule(
            config.schedule, opt, epochs=self.epochs, steps_per_epoch=len(self.batches)
        )
        monitors = resolve_monitors(config.monitors)
        user = list(callbacks or [])
        checkpoints = [c for c in user if isinstance(c, Checkpoint)]
        run_path = Path(run_dir) if run_dir is not None else None
        extra: list[Callback] = []
        main = bd.is_main()  # only rank 0 prints and writes files
        if config.progress and main:
            from .progress import ProgressBar

            extra.append(ProgressBar())
        if run_path is not None:
            from .tensorboard import TensorBoard

            if TensorBoard.available() and main:
                extra.append(TensorBoard(run_path / runs.TENSORBOARD))
            if main:
                extra.append(ActivationSnapshots())
            if not checkpoints:
                checkpoints = [Checkpoint()]
        others = [c for c in user if not isinstance(c, Checkpoint)]
        every = [*monitors, *others, *extra, *checkpoints]  # checkpoints see everything
        super().__init__(
            model,
            opt,
            callbacks=every,
            thresholds=config.thresholds,
            ignore=config.ignore,
            run_dir=run_path,
        )
        self.config = {**self._config(built_lr), **dict(record or {})}
        self.resume = bool(resume)
        self.history: list[dict[str, Any]] = []
        self.rollbacks = 0
        self._start = (0, 0)  # (epoch, batch) to start from
        self._epoch_rng: torch.Tensor | None = None
        self._resume_rng: torch.Tensor | None = None
        self._good: StateSnapshot | None = None
        self._good_schedule: dict[str, Any] | None = None
        self._skip = False
        self._start_step = 0
        self._sums = _Sums()
        self._resume_sums: _Sums | None = None
        self._batch_done = -1
        self.initial_lr = self.lr()
        self._start_loss: object = _UNMEASURED

    def _shard(self, full: Batches, model: nn.Module) -> None:
        """Under torchrun: this rank's shard of the data, and the model wrapped in DDP (its
        constructor broadcasts rank 0's weights, so every rank starts from the same ones)."""
        from torch.nn.parallel import DistributedDataParallel

        n = full.n_examples
        if n is not None and n < self._world:
            raise ValueError(
                f"fit under torchrun: {self._world} processes but only {n} training examples; "
                f"each process needs examples of its own: launch at most {n} processes "
                "(--nproc-per-node), or train in one process"
            )
        self.batches = shard_training(full, self._rank, self._world, self.seed, "data")
        if self.val_batches is not None:
            self._val_eval = shard_eval(self.val_batches, self._rank, self._world, "val")
        if self._train_sample is not None:
            self._sample_eval = shard_eval(self._train_sample, self._rank, self._world, "data")
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.net = self._wrapped or DistributedDataParallel(model, device_ids=ids)
        # the ranks' losses ride in DDP's gradient all-reduce (no round trip of their own);
        # not on a wrapper the user made (a hook cannot be removed)
        if self._wrapped is None:
            self._loss_carrier = LossCarrier.attach(self.net, self._world)

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> History:
        torch.manual_seed(self.seed)
        self._prepare_run_dir()
        self._train_mode()
        self.call("on_fit_start")
        try:
            for epoch in range(self._start[0], self.epochs):
                self.epoch = epoch
                self._train_epoch(self._start[1] if epoch == self._start[0] else 0)
                if self.stop_reason:
                    break
        except BaseException as err:
            self.call("on_exception", err)
            self._save_on_interrupt(err)
            self.call("on_fit_end")
            self.flush()
            raise
        self.call("on_fit_end")
        self.flush()
        return History(
            self.history,
            self.findings,
            stop_reason=self.stop_reason,
            rollbacks=self.rollbacks,
            run_dir=self.run_dir,
        )

    def _train_epoch(self, start: int) -> None:
        self._train_mode()
        self.call("on_train_epoch_start")
        started = time.perf_counter()
        sums = self._sums = self._resume_sums or _Sums()
        self._resume_sums = None
        self._batch_done = start - 1
        for batch_index, batch in self._epoch_batches(start):
            self.call("on_train_batch_start", batch_index)
            loss_value = self._train_step(batch, sums)
            if not self._skip:
                self.call("on_train_batch_end", loss_value, batch_index)
            self._skip = False
            self._batch_done = batch_index
            self.step += 1
            if self.stop_reason:
                break
        train = sums.reduced(self.metric_fns)  # the global batch's sums under torchrun
        metrics = {"epoch": self.epoch, **train.means("train"), "lr": self.lr()}
        if self._val_eval is not None:
            metrics.update(self.evaluate(self._val_eval))
            if self._sample_eval is not None and "val_acc" in metrics:
                metrics["train_eval_acc"] = self.evaluate(self._sample_eval)["val_acc"]
        metrics["seconds"] = time.perf_counter() - started
        self._log_epoch(metrics)
        self.history.append(metrics)
        self.call("on_train_epoch_end", metrics)
        if self.val_batches is not None:
            self.call("on_validation_epoch_end", metrics)
        if self.schedule is not None:
            self.schedule.step_epoch(metrics.get("val_loss", metrics.get("train_loss", math.nan)))
        for callback in self.callbacks:
            if isinstance(callback, Checkpoint):
                callback.save_epoch(self, metrics)
        if not any(isinstance(c, Checkpoint) for c in self.callbacks):
            self.flush()  # without a run_dir this drops the rows: History keeps the epochs

    def _epoch_batches(self, start: int) -> Iterable[tuple[int, Any]]:
        """The epoch's batches from ``start``; a resumed user loader re-draws its shuffle."""
        resuming = self._resume_rng is not None
        if resuming and self._epoch_rng is not None:
            torch.set_rng_state(self._epoch_rng)
        else:
            self._epoch_rng = torch.get_rng_state()
        iterator = iter(self.batches.epoch(self.epoch, start))
        if resuming:
            head = next(iterator, None) if isinstance(self.batches, UserLoader) else None
            torch.set_rng_state(self._resume_rng)  # type: ignore[arg-type]
            self._resume_rng = None
            if head is not None:
                iterator = itertools.chain([head], iterator)
        return iterator

    def _train_step(self, batch: Any, sums: _Sums) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        output, target = self._forward(batch, self._on_device)
        if self.step == self._start_step:
            self._check_targets(output, target)
        loss = self.loss_fn(output, target)
        if self.step == self._start_step:
            self._check_loss(loss)
        local = loss.item()
        if self._world > 1:  # every rank's loss shared by DDP's backward (or beside it)
            carrier = self._loss_carrier
            if carrier is not None:
                carrier.load(loss_slots(local))
                loss.backward()
                self.end_loss_share(carrier.take)
            else:
                self.begin_loss_share(local)
                loss.backward()
        self.call("on_loss", local)  # waits for the share: self.rank_losses, self.global_loss
        value = self.global_loss  # the mean over ranks (the loss itself in one process)
        self.log("loss", value)
        if self._skip or self.stop_reason:  # rolled back or breaking out: no update from it
            return value
        if self._world == 1:
            loss.backward()
        self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step_batch()
        sums.add(value, output.detach() if self.metric_fns else output, target, self)
        return value

    def _forward(
        self, batch: Any, on_device: bool = False, net: nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch through ``net`` (default: the training forward, DDP under torchrun)."""
        net = self.net if net is None else net
        if self.forward_fn is not None:
            output, target, _ = run_batch(net, to_device(batch, self.device), self.forward_fn)
            return output, target
        x, y = _xy(batch)
        if not on_device:  # in-memory tensors were moved (and int labels widened) at the start
            x, y = to_device(x, self.device), to_device(y, self.device)
            y = inputs.as_labels(y) if isinstance(y, torch.Tensor) else y
        if self.step == self._start_step:
            return read_output(_first_forward(net, x))[0], y
        return read_output(net(x))[0], y

    def start_loss(self) -> tuple[float, int, float] | None:
        """The mean training-mode loss of the initial weights over up to ``START_BATCHES``
        mini-batches of the fixed training sample, their number and the standard deviation of
        their losses (:func:`babysit.divergence.spread`): the loss guard's start
        (docs/architecture.md, "The divergence rule"). Forward only, on the model itself (no
        DDP collective), with torch's RNG and the model's buffers (BatchNorm's running
        statistics) put back, so the run trains exactly as without it; rank 0's number on
        every rank. ``None`` (the guard then starts from the first loss) when the data is not
        in memory (a user's DataLoader is not drawn twice), on a resumed run, or when the
        loss is not finite or cannot be computed here (the first step then reports why)."""
        if self._start_loss is not _UNMEASURED:
            return self._start_loss  # type: ignore[return-value]
        measured: tuple[float, int, float] | None = None
        if self._train_sample is not None and self.step == 0:
            measured = self._measure_start(self._train_sample)
        if self._world > 1:
            measured = bd.broadcast_object(measured)
        self._start_loss = measured
        return measured

    def _measure_start(self, sample: Batches) -> tuple[float, int, float] | None:
        model = self.model
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
        losses: list[float] = []
        sizes: list[int] = []
        try:
            with preserved_rng(device=self.device), torch.no_grad():
                for i, batch in sample.epoch(0):
                    if i >= START_BATCHES:
                        break
                    output, target = self._forward(batch, True, net=model)
                    losses.append(float(self.loss_fn(output, target)))
                    sizes.append(batch_size_of(batch) or 0)
        except Exception:  # the first training step raises it, with its context
            return None
        finally:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])
        if not losses or not all(math.isfinite(v) for v in losses):
            return None
        return math.fsum(losses) / len(losses), len(losses), spread(losses, sizes)

    def _train_mode(self) -> None:
        """``model.train()``, keeping the modules the user had put in eval mode in eval."""
        self.model.train()
        for module in self._kept_eval:
            module.eval()

    @torch.no_grad()
    def evaluate(self, batches: Batches) -> dict[str, float]:
        """Loss, accuracy (classification) and custom metrics on ``batches``, in eval mode.

        Under torchrun each rank passes its shard; the sums and counts are reduced over ranks
        before they are divided (the plain module runs: no DDP hooks, shards may be uneven)."""
        self.call("on_validation_start")
        self.model.eval()
        sums = _Sums()
        on_device = _in_memory(batches)
        try:
            for _, batch in batches.epoch(0):
                output, target = self._forward(batch, on_device, self.model)
                sums.add(self.loss_fn(output, target).item(), output, target, self)
        finally:
            self._train_mode()
            self.call("on_validation_end")
        return sums.reduced(self.metric_fns).means("val")

    # -- rollback (the lecture's break-out, done without losing progress) ---------------------

    def remember_good_state(self) -> None:
        if self._good is None:
            self._good = StateSnapshot(self.model, self.optimizer)
        self._good.take(self.step)
        if self.schedule is not None:
            self._good_schedule = copy.deepcopy(self.schedule.scheduler.state_dict())

    def restore_good_state(self) -> bool:
        if self._good is None or self._good.step is None:
            return False
        self._good.restore()
        if self.schedule is not None:
            self.schedule.scheduler.load_state_dict(copy.deepcopy(self._good_schedule))
        self._skip = True
        return True

    def request_rollback(self, reason: Finding, lr_factor: float) -> bool:
        if self._good is None or self._good.step is None:
            return False
        lr_now = [g["lr"] for g in self.optimizer.param_groups]
        self._good.restore()
        if self.schedule is not None:
            self.schedule.scheduler.load_state_dict(copy.deepcopy(self._good_schedule))
            self.schedule.scale(lr_factor * lr_now[0] / max(self.lr(), 1e-300))
        for group, lr in zip(self.optimizer.param_groups, lr_now, strict=True):
            group["lr"] = lr * lr_factor
        self.rollbacks += 1
        self._skip = True
        self.call("on_rollback", self._good.step)
        return True

    # -- checkpoints and the run directory -----------------------------------------------------

    def save_checkpoint(
        self, name: str, *, next_batch: int | None = None, next_step: int | None = None
    ) -> None:
        """Write ``checkpoints/<name>.pt``. Mid-epoch, ``next_batch``/``next_step`` say where to
        continue (with the epoch's running sums); at an epoch's end, the next epoch."""
        if self.run_dir is None:
            return
        self.flush()
        if next_batch is None:
            position = {"epoch": self.epoch + 1, "batch": 0, "step": self.step}
            sums = None
        else:
            step = self.step if next_step is None else next_step
            position = {"epoch": self.epoch, "batch": next_batch, "step": step}
            sums = self._sums.state_dict()
        per_rank = self._per_rank_state(sums)  # a collective: every rank is here
        if not bd.is_main():
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": None if self.schedule is None else self.schedule.scheduler.state_dict(),
            "position": position,
            "sums": sums,
            "rng": torch.get_rng_state(),
            "epoch_rng": self._epoch_rng if self._epoch_rng is not None else torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "callbacks": self.callback_states(),
            "history": self.history,
            "findings": [f.to_dict() for f in self.findings],
            "emitted": [list(k) for k in self._emitted],
            "rollbacks": self.rollbacks,
            "metric_rows": self._rows_on_disk,
            "initial_lr": self.initial_lr,
            "config": {k: v for k, v in self.config.items() if k != "model_repr"},
            **per_rank,
        }
        _save(self.run_dir / runs.CHECKPOINTS / f"{name}.pt", state)

    def _per_rank_state(self, sums: dict[str, Any] | None) -> dict[str, Any]:
        """Under torchrun, what exact resume needs from every rank: each one's RNG states
        (its dropout draws; a user's loader shuffles from them) and its epoch's running sums,
        gathered from every rank (an all-reduce each, at checkpoints only)."""
        if self._world == 1:
            return {}
        rng = _gather(torch.get_rng_state())
        epoch_rng = _gather(self._epoch_rng if self._epoch_rng is not None else rng[self._rank])
        out: dict[str, Any] = {"world_size": self._world, "rank_rng": rng}
        out["rank_epoch_rng"] = epoch_rng
        if self.device.type == "cuda":
            out["rank_cuda_rng"] = _gather(torch.cuda.get_rng_state(self.device))
        if sums is not None:
            out["rank_sums"] = _gather_sums(sums, self.metric_fns)
        return out

    def _prepare_run_dir(self) -> None:
        """Check everything first, then write: a refused run or resume changes no file.

        Under torchrun rank 0 reads and checks, every rank learns the outcome (an error is
        raised on all of them, so none is left waiting), every rank restores the checkpoint
        rank 0 read, and only rank 0 writes."""
        if self.run_dir is None:
            if self.resume:
                raise ValueError("resume=True needs the run_dir of the run to continue")
            return
        last = self.run_dir / runs.CHECKPOINTS / "last.pt"
        opened: tuple[dict[str, Any], dict[str, Any] | None] | None = None
        failure: BaseException | None = None
        if bd.is_main():
            try:
                opened = self._open_resume(last)
            except Exception as err:  # told to every rank, then raised on each
                failure = err
        if self._world > 1:
            failure, resuming = bd.broadcast_object((failure, opened is not None))
            if failure is not None:
                raise failure
            opened = bd.broadcast_object(opened) if resuming else None
        elif failure is not None:
            raise failure
        if opened is not None:
            state, recorded = opened
            self._restore(state, last)  # the model, optimizer, RNG... in memory only
            self.config = self._resumed_config(recorded)
            self._rows_on_disk = state["metric_rows"]
            if bd.is_main():
                runs.truncate_metrics(self.run_dir, state["metric_rows"])
        elif bd.is_main():
            if self.run_dir.exists() and any(self.run_dir.iterdir()):
                runs.fresh_run_dir(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if bd.is_main():
            runs.write_json(self.run_dir, runs.CONFIG, self.config)

    def _open_resume(self, last: Path) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """The checkpoint to continue and the run's settings, checked (nothing written); None
        for a new run (the run directory checked writable)."""
        if self.resume and last.exists():
            state = load_checkpoint(last)
            recorded = self._recorded(state)
            self._check_resume(state, recorded, last)
            return state, recorded
        if self.resume:
            warnings.warn(
                f"resume=True but {last} does not exist: starting a new run", stacklevel=5
            )
        _writable(self.run_dir)  # type: ignore[arg-type]
        return None

    def _recorded(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """The settings the run was trained with: ``config.json`` merged over the copy the
        checkpoint carries (the checkpoint wins: it is the state being continued)."""
        try:
            document = runs.read_json(self.run_dir, runs.CONFIG)  # type: ignore[arg-type]
        except (OSError, ValueError) as err:
            raise ValueError(
                f"cannot read {self.run_dir / runs.CONFIG} ({err}), so this resume cannot be "
                "checked against the run's settings; restore the file, or start a new run"
            ) from err
        merged = {**(document or {}), **(state.get("config") or {})}
        if not merged:
            warnings.warn(
                f"{self.run_dir} has no config.json and its checkpoint records no settings: "
                "this resume's optimizer, lr, batch size and seed cannot be checked against "
                "the run's",
                stacklevel=6,
            )
            return None
        return merged

    def _check_resume(
        self, state: dict[str, Any], recorded: dict[str, Any] | None, path: Path
    ) -> None:
        """Refuse a resume whose settings contradict the run's (``ValueError``) or whose model
        or optimizer does not fit the checkpoint (:class:`CheckpointError`)."""
        where = f"cannot resume {self.run_dir}"
        keep = "nothing was changed"
        check_same_model(state, self.model, path)
        saved_world = state.get("world_size", (recorded or {}).get("world_size", 1))
        if saved_world != self._world:
            raise ValueError(
                f"{where}: it was trained by {saved_world} process(es) and this job has "
                f"{self._world}; each process's shard of the data and its random state are "
                f"in the checkpoint, so another count cannot continue it exactly. Relaunch "
                f"with {saved_world} process(es) (torchrun --nproc-per-node {saved_world}), or "
                f"start a new run in another run_dir; {keep}"
            )
        if recorded is not None:
            if recorded.get("kind", "fit") != "fit":
                raise ValueError(
                    f"{where}: it holds a {recorded.get('kind')!r} run, not a fit; {keep}"
                )
            keys = list(RESUME_KEYS)
            for key in ("n_train", "n_val"):  # a size unknown (an iterable) or validation
                if self.config[key] is not None and recorded.get(key) is not None:
                    keys.append(key)  # added or dropped at a resume: nothing to compare
            bad = conflicts(self.config, recorded, keys)
            if bad:
                said = "; ".join(f"{k}={g!r} but the run has {k}={r!r}" for k, g, r in bad)
                raise ValueError(
                    f"{where}: this call passes {said} (config.json). Pass the run's values to "
                    f"continue it, or start a new run in another run_dir; {keep}"
                )
            planned = recorded.get("epochs")
            if self.schedule is not None and planned is not None and planned != self.epochs:
                raise ValueError(
                    f"{where}: its {recorded.get('schedule')} schedule was planned for {planned} "
                    f"epochs, so epochs={self.epochs} cannot continue it; resume with "
                    f"epochs={planned}, or start a new run; {keep}"
                )
        done = state["position"]["epoch"]
        if self.epochs < done:
            raise ValueError(
                f"{where}: it has already trained {done} epochs, more than epochs={self.epochs}; "
                f"pass epochs >= {done}; {keep}"
            )
        saved = state["optimizer"]["param_groups"]
        mine = self.optimizer.param_groups
        if len(saved) != len(mine) or any(
            set(s) - {"params"} != set(m) - {"params"} for s, m in zip(saved, mine, strict=False)
        ):
            raise CheckpointError(
                f"{path} was written by another optimizer (its settings "
                f"{sorted(set(saved[0]) - {'params'})} do not fit "
                f"{type(self.optimizer).__name__}); resume with the optimizer that wrote it; "
                f"{keep}"
            )

    def _resumed_config(self, recorded: dict[str, Any] | None) -> dict[str, Any]:
        """``config.json`` after a resume: the run's record, this call's settings over it (they
        agree, but for ``epochs`` and ``device``), and the resume itself appended to
        ``resumes``."""
        before = recorded or {}
        entry = {"at_epoch": self._start[0], "at_step": self.step, "epochs": self.epochs}
        if before.get("epochs") not in (None, self.epochs):
            entry["epochs_before"] = before["epochs"]
        return {**before, **self.config, "resumes": [*before.get("resumes", []), entry]}

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(
                f"{path}: its optimizer state does not fit this optimizer ({err}); resume with "
                "the optimizer that wrote it"
            ) from err
        self.model.load_state_dict(state["model"])
        if self.schedule is not None and state["schedule"] is not None:
            self.schedule.scheduler.load_state_dict(state["schedule"])
        pos = state["position"]
        self._start = (pos["epoch"], pos["batch"])
        sums = state["sums"]
        rank_sums = state.get("rank_sums")
        if rank_sums is not None:
            sums = _sums_state(rank_sums[self._rank], sums)
        if sums is not None:
            self._resume_sums = _Sums.from_state(sums)
        self.step = self._start_step = pos["step"]
        self.epoch = self._start[0]
        rng, epoch_rng = state["rng"], state["epoch_rng"]
        if "rank_rng" in state:  # torchrun: this rank's own states
            rng = state["rank_rng"][self._rank].to(torch.uint8)
            epoch_rng = state["rank_epoch_rng"][self._rank].to(torch.uint8)
        torch.set_rng_state(rng)
        if self.device.type == "cuda" and "rank_cuda_rng" in state:
            cuda_rng = state["rank_cuda_rng"][self._rank].to(torch.uint8)
            torch.cuda.set_rng_state(cuda_rng, self.device)
        elif self.device.type == "cuda" and state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self._epoch_rng = epoch_rng
        self._resume_rng = rng if self._start[1] > 0 else None
        if self._resume_rng is None:
            self._epoch_rng = None
        self.load_callback_states(state["callbacks"])
        self.history = list(state["history"])
        self.findings = [Finding.from_dict(f) for f in state["findings"]]
        self._emitted = {tuple(k) for k in state["emitted"]}  # type: ignore[misc]
        self.rollbacks = state["rollbacks"]
        self.initial_lr = state["initial_lr"]

    def _save_on_interrupt(self, err: BaseException) -> None:
        """Ctrl-C keeps the progress: a mid-epoch ``last.pt`` after the last completed step."""
        if not isinstance(err, KeyboardInterrupt) or self.run_dir is None:
            return
        if self._world > 1:  # ranks stop at different points: a collective could hang
            return
        with contextlib.suppress(CheckpointError):
            self.save_checkpoint("last", next_batch=self._batch_done + 1, next_step=self.step)

    def flush(self) -> None:
        """Write the rows and findings (rank 0 only: the others drop their rows)."""
        if not bd.is_main():
            self.rows.clear()
            return
        super().flush()

    # -- checks and bookkeeping ----------------------------------------------------------------

    def _check_data(self, batches: Batches, name: str) -> None:
        """Non-finite inputs and bad labels in in-memory data, before the first step."""
        tensors = getattr(batches, "tensors", None)
        if tensors is not None:
            labels = self.classification and self.forward_fn is None
            ignore = self.task.ignore_index
            inputs.check_examples(
                tensors[0], tensors[1], name=name, labels=labels, ignore_index=ignore
            )

    def _check_targets(self, output: Any, target: Any) -> None:
        """The task's target rules (:func:`babysit.inputs.check_targets`), stated before torch
        fails obscurely or the loss trains on nonsense (first step)."""
        inputs.check_targets(output, target, self.task, self.loss_fn)

    def _check_loss(self, loss: Any) -> None:
        inputs.check_loss(loss)

    def _log_epoch(self, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if key in ("epoch", "seconds") or not isinstance(value, float | int):
                continue
            split, _, name = key.partition("_")
            if split not in ("train", "val"):
                split, name = "train", key
            self.log(
                f"epoch_{name}" if split == "train" and name == "loss" else name, value, split=split
            )

    def _config(self, lr: float) -> dict[str, Any]:
        """``config.json``: the settings (:meth:`FitConfig.record`) and what the run is made of."""
        n_params = sum(p.numel() for p in self.model.parameters())
        return {
            "kind": "fit",
            "model": type(self.model).__name__,
            "model_repr": repr(self.model),
            "n_parameters": n_params,
            **self.settings.record(lr=lr),
            "loss_fn": repr(self.loss_fn),
            "task": self.task.to_dict(),
            "monitors": [type(c).__name__ for c in self.callbacks],
            "n_train": self.batches.n_examples,
            "world_size": self._world,
            "n_val": None if self.val_batches is None else self.val_batches.n_examples,
        }


class _Sums:
    """Running sums of loss, accuracy counts, regression errors and custom metrics over an epoch.

    Accuracy costs one op per step: the prediction (argmax, or thresholded outputs) is kept and
    compared with the targets when the epoch's numbers are read (``means``), not summed into a
    tensor step by step. Regression keeps four running sums as one tensor (|e|, e², y, y²) and
    a count of target values, for ``mae`` and ``r2``.
    """

    def __init__(self) -> None:
        self.loss = 0.0
        self.n = 0
        self.correct = 0  # counted so far (from a checkpoint, or folded in by ``_fold``)
        self.acc_n = 0  # predictions counted for accuracy (positions not ignored)
        self.counted = False  # whether accuracy applies (classification/multilabel outputs)
        self.preds: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.kind: tuple[Task, bool] | None = None  # what ``preds`` hold (task, probabilities)
        self.reg: torch.Tensor | None = None  # running [Σ|e|, Σe², Σy, Σy²]
        self.reg_n = 0
        self.custom: dict[str, Any] = {}

    def add(self, loss: float, output: torch.Tensor, target: torch.Tensor, t: Trainer) -> None:
        n = len(target) if isinstance(target, torch.Tensor) and target.dim() > 0 else 1
        self.loss += loss * n
        self.n += n
        kind = t.task.kind
        if kind in ("classification", "multilabel") and isinstance(output, torch.Tensor):
            self._keep_prediction(output.detach(), target, t)
        elif kind == "regression":
            self._add_errors(output, target)
        for name, fn in t.metric_fns.items():
            with torch.no_grad():
                value = fn(output, target) * n
            self.custom[name] = value + self.custom.get(name, 0.0)

    def _keep_prediction(self, output: torch.Tensor, target: Any, t: Trainer) -> None:
        if not isinstance(target, torch.Tensor):
            return
        task = t.task
        if task.kind == "classification":
            if output.dim() < 2:
                return
            dim = task.class_dim % output.dim()
            pred = output.argmax(dim)
            if target.is_floating_point():
                if target.shape != output.shape:
                    return
                target = target.argmax(dim)
        else:
            if output.shape != target.shape:
                return
            pred = output
        if pred.shape != target.shape:
            return
        self.kind = (task, t.probabilities)
        self.preds.append(pred)
        self.targets.append(target)
        self.counted = True

    def _add_errors(self, output: Any, target: Any) -> None:
        ok = isinstance(output, torch.Tensor) and isinstance(target, torch.Tensor)
        if not ok or output.shape != target.shape or not target.is_floating_point():
            return
        with torch.no_grad():
            e = (output.detach() - target).double()
            y = target.double()
            sums = torch.stack([e.abs().sum(), e.pow(2).sum(), y.sum(), y.pow(2).sum()])
        self.reg = sums if self.reg is None else self.reg.to(sums.device) + sums
        self.reg_n += target.numel()

    def _fold(self) -> None:
        if self.preds and self.kind is not None:
            task, probabilities = self.kind
            pred = torch.cat([p.reshape(-1) for p in self.preds])
            target = torch.cat([t.reshape(-1) for t in self.targets])
            if task.kind == "classification":  # pred is the argmax already
                correct = pred == target
                mask = None if task.ignore_index is None else target != task.ignore_index
            else:
                correct, _ = hits(pred, target, task, probabilities=probabilities)  # type: ignore
                mask = None
            self.correct += int((correct if mask is None else correct & mask).sum())
            self.acc_n += len(target) if mask is None else int(mask.sum())
            self.preds, self.targets = [], []

    def state_dict(self) -> dict[str, Any]:
        self._fold()
        return {
            "loss": self.loss,
            "n": self.n,
            "correct": self.correct if self.counted else None,
            "acc_n": self.acc_n,
            "reg": None if self.reg is None else [float(v) for v in self.reg],
            "reg_n": self.reg_n,
            "custom": {k: float(v) for k, v in self.custom.items()},
        }

    def reduced(self, metric_fns: Mapping[str, Any]) -> _Sums:
        """The sums over all ranks (one all-reduce of a short float64 vector; ``self`` in one
        process). Every rank calls it, an empty shard too."""
        if not bd.is_distributed():
            return self
        names = sorted(metric_fns)
        total = bd.all_reduce_sum(_sums_vector(self.state_dict(), names))
        return _Sums.from_state(_sums_from_vector(total, names))

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Sums:
        sums = cls()
        sums.loss, sums.n, sums.custom = state["loss"], state["n"], dict(state["custom"])
        if state["correct"] is not None:
            sums.correct, sums.counted = state["correct"], True
            sums.acc_n = state.get("acc_n", state["n"])  # older checkpoints: one per example
        if state.get("reg") is not None:
            sums.reg = torch.tensor(state["reg"], dtype=torch.float64)
            sums.reg_n = state["reg_n"]
        return sums

    def means(self, split: str) -> dict[str, float]:
        if self.n == 0:
            return {}
        self._fold()
        out = {f"{split}_loss": self.loss / self.n}
        if self.counted and self.acc_n:
            out[f"{split}_acc"] = self.correct / self.acc_n
        if self.reg is not None and self.reg_n:
            abs_e, sq_e, sum_y, sum_y2 = (float(v) for v in self.reg)
            out[f"{split}_mae"] = abs_e / self.reg_n
            total = sum_y2 - sum_y * sum_y / self.reg_n
            if total > 0:
                out[f"{split}_r2"] = 1.0 - sq_e / total
        for name, total in self.custom.items():
            out[f"{split}_{name}"] = float(total) / self.n
        return out


def _sums_vector(state: dict[str, Any], names: list[str]) -> torch.Tensor:
    """A :meth:`_Sums.state_dict` as float64 numbers (exact: Python floats, counts < 2**53)."""
    reg = state["reg"]
    values = [
        state["loss"],
        state["n"],
        state["correct"] or 0,
        state["acc_n"],
        state["correct"] is not None,  # counted (a count of ranks, once summed)
        reg is not None,
        *(reg if reg is not None else [0.0] * 4),
        state["reg_n"],
        *(state["custom"].get(name, 0.0) for name in names),
    ]
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


def _sums_from_vector(vector: torch.Tensor, names: list[str]) -> dict[str, Any]:
    v = vector.tolist()
    n_custom = v[11:]
    return {
        "loss": v[0],
        "n": int(v[1]),
        "correct": int(v[2]) if v[4] > 0 else None,
        "acc_n": int(v[3]),
        "reg": v[6:10] if v[5] > 0 else None,
        "reg_n": int(v[10]),
        "custom": dict(zip(names, n_custom, strict=True)),
    }


def _gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same length on each), as float64 rows (exact for bytes and
    for counts): one all-reduce of a ``world_size x len`` matrix holding this rank's row."""
    flat = tensor.detach().reshape(-1).to("cpu", torch.float64)
    rows = torch.zeros(bd.world_size(), flat.numel(), dtype=torch.float64)
    rows[bd.rank()] = flat
    return [row.clone() for row in bd.all_reduce_sum(rows).unbind(0)]


def _gather_sums(sums: dict[str, Any], metric_fns: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every rank's epoch sums (plain types, for the checkpoint)."""
    names = sorted(metric_fns)
    return [_sums_from_vector(row, names) for row in _gather(_sums_vector(sums, names))]


def _sums_state(mine: dict[str, Any], fallback: dict[str, Any] | None) -> dict[str, Any]:
    """This rank's sums from a checkpoint's ``rank_sums`` entry."""
    return mine if mine is not None else fallback  # type: ignore[return-value]


_UNMEASURED = object()  # Trainer.start_loss not asked for yet


def _in_memory(batches: Batches) -> bool:
    """Tensors already on the training device, batched by indexing."""
    return isinstance(batches, TensorBatches) and hasattr(batches, "tensors")


def _sample(batches: Batches, n: int, batch_size: int) -> Batches | None:
    """A fixed sample of in-memory training data (every k-th example), as unshuffled batches."""
    tensors = getattr(batches, "tensors", None)
    if not isinstance(batches, TensorBatches) or tensors is None:
        return None
    stride = max(len(tensors[0]) // n, 1)
    picked = tuple(t[::stride][:n] for t in tensors)
    return TensorBatches(picked, batch_size, shuffle=False, seed=0)


def _xy(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(
        f"fit expects (x, y) batches, got {type(batch).__name__}"
        + (f" of length {len(batch)}" if isinstance(batch, tuple | list) else "")
        + "; for other batches pass forward=lambda model, batch: (model(batch['x']), batch['y'])"
    )


def _check_trainable(model: nn.Module) -> None:
    """Refuse, before anything runs or is written, a model with nothing to train (torch would
    fail later with "element 0 of tensors does not require grad")."""
    params = list(model.parameters())
    if not params:
        raise ValueError(
            f"fit: the model ({type(model).__name__}) has no parameters: nothing to train"
        )
    if not any(p.requires_grad for p in params):
        raise ValueError(
            f"fit: every parameter of the model ({len(params)} tensors) has requires_grad=False: "
            "nothing would train. Unfreeze the layers to train (layer.requires_grad_(True)); to "
            "measure a frozen model use babysit.diagnose"
        )


def _first_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return inputs.first_forward(model, x, entry="fit")


def _device(device: str | torch.device, *, distributed: bool = False) -> torch.device:
    """The training device; under torchrun a bare ``"cuda"`` is this process's GPU
    (``cuda:LOCAL_RANK``), made the current one for nccl."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available here; use 'cpu'")
    if distributed and device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def _writable(run_dir: Path) -> None:
    """Fail before training when the run directory cannot be created or written."""
    try:
        runs.check_writable(run_dir)
    except OSError as err:
        raise CheckpointError(
            f"the run directory {run_dir} is not writable ({err.strerror or err}); choose one you "
            "can write to (run_dir= in fit, --out on the command line), or run_dir=None to keep "
            "nothing on disk"
        ) from err
