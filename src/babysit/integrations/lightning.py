"""babysit's monitors as a PyTorch Lightning callback (``pip install babysit[lightning]``).

::

    from babysit.integrations.lightning import BabysitCallback
    trainer = lightning.pytorch.Trainer(max_epochs=10, callbacks=[BabysitCallback()])
    trainer.fit(module, datamodule)
    print(trainer.callbacks[0].findings)        # or: babysit report <log_dir>/babysit

Hooks, and why each (the step protocol is :mod:`babysit.integrations._bridge`):

- ``on_train_batch_start`` (first batch): start the monitors on ``trainer.optimizers`` — they
  exist only once the strategy has set up — with the first batch's inputs as the sample of
  ``activations.json``.
- ``on_before_backward``: the micro-batch's loss, as Lightning back-propagates it; Lightning has
  divided it by ``accumulate_grad_batches`` (automatic optimisation) and an AMP ``GradScaler``
  has multiplied it by its scale: both are undone, so the loss judged is the model's own.
- ``on_before_optimizer_step``: gradients are final (accumulated, and unscaled under
  ``"16-mixed"``) and no weight has moved: the step's loss is judged here, the NaN and 3x
  break-out caught in the step they happen. Under automatic and manual optimisation alike, and
  once per step however many optimizers step.
- ``on_train_batch_end``: the update is done; the monitors' step hooks run (update ratio,
  activation probes). Steps the scaler skipped never stepped: not measured, no finding.
- ``on_validation_start``/``end``: validation forwards are not training statistics.
- ``on_train_epoch_end``: the epoch's logged ``train_acc``/``val_acc``/``val_loss`` (from
  ``trainer.callback_metrics``) for the train/val gap and the loss-curve rules.
- ``on_fit_end``/``on_exception``: the end-of-training rules and the run directory.

Findings go to the trainer's loggers (a ``babysit/<CODE>`` scalar, and the message as text
where the logger takes text, e.g. TensorBoard), to Lightning's console log, and to ``run_dir``
(default ``trainer.log_dir + "/babysit"``). :meth:`BabysitCallback.state_dict` carries the
monitors' history, so a run resumed from a checkpoint keeps it. Under DDP the step's loss is
averaged over ranks before it is judged (one decision on every rank) and only rank 0 writes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..findings import Finding
from ._bridge import (
    Bridge,
    check_options,
    check_version,
    diagnose_own_loss,
    loss_as_output,
    require,
)

_lightning = require("lightning", "lightning")
from lightning.pytorch import Callback as _LightningCallback  # noqa: E402

__all__ = ["BabysitCallback", "diagnose", "training_step_loss"]

log = logging.getLogger("babysit")
_SAMPLE = 512  # first-batch examples kept for activations.json
# Hooks Lightning calls on every callback at every batch that this one does not use. Lightning
# skips a callback's hook whose attribute is not callable (``_call_callback_hooks``: ``if
# callable(fn)``, in every 2.x release), and each call it makes costs 5-8 µs (its profiler
# context, the hook's name formatted): for the two a training step calls, 0.6% of a 2 ms step
# (benchmarks/integrations_hooks.py). So they are None on the instance, unless a subclass
# overrides them. ``on_train_batch_start`` goes the same way once the monitors have started.
_UNUSED = (
    "on_before_zero_grad",
    "on_after_backward",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)
_SEVERITY = {"info": 0.0, "warning": 1.0, "error": 2.0}


class BabysitCallback(_LightningCallback):
    """babysit's training monitors inside ``lightning.pytorch.Trainer``.

    Args:
        monitors: ``"default"``, ``"all"``, ``None`` or a list of monitors
            (:mod:`babysit.train.monitors`), as in :func:`babysit.fit`.
        run_dir: where ``config.json``, ``metrics.csv``, ``findings.json`` and
            ``activations.json`` go (``babysit report DIR`` reads them); default
            ``trainer.log_dir + "/babysit"``. A directory holding another run is renamed with a
            timestamp first, as ``fit`` does.
        on_error: what a NaN or diverged loss does: ``"stop"`` (restore the last good weights
            and end training cleanly through ``trainer.should_stop``), ``"rollback"`` (restore
            them, divide the learning rate by 10 and go on), ``"warn"`` (report only).
        thresholds, ignore: as in :func:`babysit.diagnose`.

    Raises:
        ValueError: ``on_error``, ``thresholds`` or ``ignore`` name something unknown.
        babysit.integrations._bridge.UnsupportedVersion: Lightning outside the supported range.
    """

    def __init__(
        self,
        *,
        monitors: Any = "default",
        run_dir: str | Path | None = None,
        on_error: str = "stop",
        thresholds: Mapping[str, float] | None = None,
        ignore: Iterable[str] = (),
    ) -> None:
        check_version("lightning", _lightning.__version__)
        self.options = check_options(
            monitors=monitors, run_dir=run_dir, on_error=on_error, thresholds=thresholds,
            ignore=ignore,
        )  # fmt: skip
        self.bridge: Bridge | None = None
        self._saved: dict[str, Any] | None = None
        self._run_dir: Path | None = None
        self._trainer: Any = None
        self._off = False  # no optimizer to watch
        self._scaler: Any = None  # the AMP GradScaler, when Lightning has one
        self._loss_factor = 1
        for hook in _UNUSED:  # not dispatched by Lightning at all (see _UNUSED)
            base = getattr(_LightningCallback, hook, None)
            if base is not None and getattr(type(self), hook, None) is base:
                setattr(self, hook, None)

    # -- what the user reads ---------------------------------------------------------------------

    @property
    def findings(self) -> list[Finding]:
        """The findings so far (all severities), in the order they fired."""
        return [] if self.bridge is None else list(self.bridge.findings)

    @property
    def run_dir(self) -> Path | None:
        """Where this run is written (known once training started)."""
        return self._run_dir

    # -- Lightning hooks -------------------------------------------------------------------------

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.bridge is not None:  # this callback's second fit: a run of its own
            self.bridge.close()
            self.bridge = None
        self._off = False
        run_dir = self.options.run_dir
        if run_dir is None:
            base = trainer.log_dir  # a collective under DDP: every rank asks
            run_dir = Path(base if base is not None else trainer.default_root_dir) / "babysit"
        self._run_dir = run_dir
        self._trainer = trainer
        vars(self).pop("on_train_batch_start", None)  # a new fit starts at its first batch

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.bridge is None and not self._off:
            self._start(trainer, pl_module, batch)
        if type(self).on_train_batch_start is BabysitCallback.on_train_batch_start:
            self.on_train_batch_start = None  # type: ignore[assignment]  # started (_UNUSED)

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
        if self.bridge is None:
            return
        value = loss.item()
        scaler = self._scaler  # read once at the start: Lightning's properties cost µs a step
        if scaler is not None:
            value /= float(scaler.get_scale())
        self.bridge.add_loss(value * self._loss_factor)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self.bridge is None:
            return
        self.bridge.before_update()
        if self.bridge.stop_requested:
            trainer.should_stop = True

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.bridge is not None:
            self.bridge.end_step()
            if self.bridge.stop_requested:
                trainer.should_stop = True

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if self.bridge is not None:
            self.bridge.call("on_validation_start")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.bridge is not None:
            self.bridge.call("on_validation_end")

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.bridge is not None:
            self.bridge.end_epoch(**epoch_metrics(trainer.callback_metrics))

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._close()

    def state_dict(self) -> dict[str, Any]:
        if self.bridge is not None:
            return {"babysit": self.bridge.state()}
        return {"babysit": self._saved} if self._saved else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved = state_dict.get("babysit") or None

    # -- internals -------------------------------------------------------------------------------

    def _start(self, trainer: Any, pl_module: Any, batch: Any) -> None:
        optimizers = [opt for opt in trainer.optimizers if opt.param_groups]  # not Lightning's mock
        if not optimizers:
            self._off = True
            log.warning(
                "babysit: the Trainer has no optimizer (configure_optimizers returned none), so "
                "the training monitors did not run"
            )
            return
        schedulers = [config.scheduler for config in getattr(trainer, "lr_scheduler_configs", [])]
        self.bridge = Bridge(
            pl_module,
            optimizers,
            options=self.options,
            run_dir=self._run_dir,
            framework="lightning",
            schedulers=schedulers,
            sample=_inputs(batch) if _has_forward(pl_module) else None,
            state=self._saved,
            record={
                "precision": str(trainer.precision),
                "accumulate_grad_batches": trainer.accumulate_grad_batches,
                "automatic_optimization": bool(pl_module.automatic_optimization),
                "world_size": distributed.world_size(),
            },
        )
        self._saved = None
        self._scaler = getattr(trainer.precision_plugin, "scaler", None)
        # Lightning divides the loss by accumulate_grad_batches before backward (automatic
        # optimisation only): the step's loss is the micro-batches' mean of the unscaled ones
        self._loss_factor = (
            trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
        )
        if distributed.is_main():
            self.bridge.alert = self._report

    def _report(self, finding: Finding) -> None:
        """A finding, as it fires, to Lightning's loggers and console."""
        trainer = self._trainer
        line = f"babysit {finding.severity} {finding.code}: {finding.message}"
        if finding.advice:
            line += f" -> {finding.advice}"
        log.warning(line) if finding.severity != "info" else log.info(line)
        step = int(getattr(trainer, "global_step", 0)) if trainer is not None else 0
        for logger in getattr(trainer, "loggers", None) or []:
            try:
                logger.log_metrics({f"babysit/{finding.code}": _SEVERITY[finding.severity]}, step)
                experiment = getattr(logger, "experiment", None)
                if hasattr(experiment, "add_text"):
                    experiment.add_text(f"babysit/{finding.code}", line, step)
            except Exception as err:  # a logger's failure never stops training
                log.debug("babysit: logger %s refused a finding: %s", type(logger).__name__, err)

    def _close(self) -> None:
        if self.bridge is not None:
            self.bridge.close()


def training_step_loss(module: Any, batch: Any) -> tuple[torch.Tensor, Any]:
    """``diagnose``'s ``forward=`` for a LightningModule: its own ``training_step`` loss.

    ``diagnose`` runs it on deep copies of the module, never on the one you train. The module
    is not attached to a Trainer there: ``self.log`` calls only warn.
    """
    return loss_as_output(module.training_step(batch, 0), batch)


def diagnose(module: Any, data: Any, **kwargs: Any) -> Any:
    """:func:`babysit.diagnose` on a ``LightningModule``, judged on its ``training_step`` loss.

    ``data``: a ``LightningDataModule`` (its ``train_dataloader()``, after ``setup("fit")``), a
    ``DataLoader`` or anything :func:`babysit.diagnose` takes. Other keyword arguments go to
    :func:`babysit.diagnose` (``lr=``, ``checks=``, ``ignore=``, ...); the task is
    ``"custom"``, so the checks that read logits against labels are listed as skipped.
    """
    datamodule = getattr(_lightning.pytorch, "LightningDataModule", None)
    if datamodule is not None and isinstance(data, datamodule):
        data.prepare_data()
        data.setup("fit")
        data = data.train_dataloader()
    return diagnose_own_loss(module, data, training_step_loss, **kwargs)


def epoch_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``train_acc``, ``val_acc``, ``train_loss``, ``val_loss`` from what the module logged.

    Lightning users name them ``val_acc``, ``val/acc``, ``val_accuracy`` or ``val_acc_epoch``;
    all read the same. Anything else is left alone (babysit does not guess a metric's meaning).
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = key.replace("/", "_").removesuffix("_epoch").replace("accuracy", "acc")
        if name in ("train_acc", "val_acc", "train_loss", "val_loss"):
            number = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            if math.isfinite(number):
                out[name] = number
    return out


def _has_forward(module: Any) -> bool:
    """``activations.json`` runs ``module(x)``: only a module that defines ``forward`` can."""
    return type(module).forward is not _lightning.pytorch.LightningModule.forward


def _inputs(batch: Any) -> torch.Tensor | None:
    """The first batch's inputs, when it is ``(x, y)`` with float ``x`` (else no snapshot)."""
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        x = batch[0]
        if x.is_floating_point() and x.dim() >= 2:
            return x[:_SAMPLE].detach().clone()
    return None
