"""babysit's monitors as a Hugging Face ``Trainer`` callback (``babysit[transformers]``).

::

    from babysit.integrations.transformers import BabysitCallback
    trainer = transformers.Trainer(model, args, train_dataset=..., callbacks=[BabysitCallback()])
    trainer.train()                    # then: babysit report <output_dir>/babysit

Hooks, and why each (the step protocol is :mod:`babysit.integrations._bridge`):

- ``on_train_begin``: start the monitors on the Trainer's optimizer (unwrapped from
  ``accelerate``'s wrapper) and learning-rate scheduler; a forward hook on the model reads
  each training forward's ``outputs.loss`` — the Trainer's own loss — *before* the Trainer's
  ``logging_nan_inf_filter`` replaces a NaN step with the running average, so a NaN is seen.
  A model that accepts ``num_items_in_batch`` returns its micro-batch's share of the
  accumulated step's loss (summed over micro-batches); any other model returns each
  micro-batch's mean (averaged): both read as the step's mean loss.
- ``on_pre_optimizer_step``: gradients are final (accumulated, clipped) and no weight has
  moved: the step's loss is judged here (NaN, the 3x break-out). "stop" ends training through
  ``control.should_training_stop``; "rollback" restores the last good weights and divides the
  learning rate by 10, the scheduler's ``base_lrs`` with it.
- ``on_optimizer_step``: the update is done; the monitors' step hooks run (update ratio,
  activation probes). A step an fp16 ``GradScaler`` skipped never stepped: no finding.
- ``on_step_end``/``on_evaluate``/``on_epoch_end``: the epoch's ``eval_loss``/``eval_accuracy``
  (as ``val_loss``/``val_acc``) for the curve and gap rules, after the epoch's evaluation.
- ``on_log``: the learning rate the Trainer logged, into ``metrics.csv``.
- ``on_train_end``: the end-of-training rules and the run directory (default
  ``args.output_dir + "/babysit"``).

A model whose output carries no ``loss`` (a ``compute_loss_func``, a custom ``compute_loss``)
cannot have its loss judged: a ``CHECKS_SKIPPED`` warning says so, and the other monitors run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..findings import Finding, finding
from ._bridge import (
    Bridge,
    check_options,
    check_version,
    diagnose_own_loss,
    loss_as_output,
    require,
)

_transformers = require("transformers", "transformers")
from transformers import TrainerCallback as _TrainerCallback  # noqa: E402
from transformers.trainer_callback import ExportableState as _ExportableState  # noqa: E402

__all__ = ["BabysitCallback", "diagnose", "model_loss"]

log = logging.getLogger("babysit")
_LOSS_CHECKS = ["NAN_LOSS", "LR_TOO_HIGH", "LOSS_PLATEAU_AT_START", "LOSS_OSCILLATING"]


class BabysitCallback(_TrainerCallback, _ExportableState):
    """babysit's training monitors inside ``transformers.Trainer``.

    A resumed run (``trainer.train(resume_from_checkpoint=...)``) keeps its history: every
    checkpoint stores the monitors' state in the Trainer's ``trainer_state.json``
    (:meth:`state`, Hugging Face's ``ExportableState``), and ``on_train_begin`` of a resumed run
    reads it back, continuing the same run directory (``metrics.csv`` cut to the checkpoint's
    rows). This does not need ``restore_callback_states_from_checkpoint``; with it on, the
    Trainer rebuilds the callback from the stored arguments (``monitors`` given as a list of
    monitor objects cannot be stored: the rebuilt one has the default monitors).

    Args:
        monitors: ``"default"``, ``"all"``, ``None`` or a list of monitors
            (:mod:`babysit.train.monitors`), as in :func:`babysit.fit`.
        run_dir: where ``config.json``, ``metrics.csv`` and ``findings.json`` go
            (``babysit report DIR`` reads them); default ``args.output_dir + "/babysit"``. A
            directory holding another run is renamed with a timestamp first, as ``fit`` does.
        on_error: what a NaN or diverged loss does: ``"stop"`` (restore the last good weights
            and end training through ``control.should_training_stop``), ``"rollback"`` (restore
            them, divide the learning rate by 10, go on), ``"warn"`` (report only).
        thresholds, ignore: as in :func:`babysit.diagnose`.

    Raises:
        ValueError: ``on_error``, ``thresholds`` or ``ignore`` name something unknown.
        babysit.integrations._bridge.UnsupportedVersion: transformers outside the supported range.
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
        check_version("transformers", _transformers.__version__)
        self.options = check_options(
            monitors=monitors, run_dir=run_dir, on_error=on_error, thresholds=thresholds,
            ignore=ignore,
        )  # fmt: skip
        self.bridge: Bridge | None = None
        self._run_dir: Path | None = None
        self._hooks: list[Any] = []
        self._losses: list[float] = []
        self._scaled = False  # the model divided its loss by the accumulated step's item count
        self._evaluating = False
        self._val: dict[str, float] = {}
        self._epoch_pending = False
        self._no_loss_said = False
        self._saved: dict[str, Any] | None = None  # the monitors' state read from a checkpoint
        self._args = {
            "monitors": monitors if monitors is None or isinstance(monitors, str) else "default",
            "run_dir": None if run_dir is None else str(run_dir),
            "on_error": on_error,
            "thresholds": dict(thresholds or {}),
            "ignore": list(ignore),
        }

    def state(self) -> dict[str, Any]:
        """What a Trainer checkpoint stores (``ExportableState``, JSON): the constructor's
        arguments and, once training started, the monitors' history (:meth:`Bridge.state`)."""
        saved = self.bridge.state() if self.bridge is not None else self._saved
        return {"args": dict(self._args), "attributes": {"_saved": _json_safe(saved)}}

    @property
    def findings(self) -> list[Finding]:
        """The findings so far (all severities), in the order they fired."""
        return [] if self.bridge is None else list(self.bridge.findings)

    @property
    def run_dir(self) -> Path | None:
        """Where this run is written (known once training started)."""
        return self._run_dir

    # -- Trainer events --------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs["model"]
        optimizer = _unwrap(kwargs.get("optimizer"), "optimizer")
        scheduler = _unwrap(kwargs.get("lr_scheduler"), "scheduler")
        self._run_dir = self.options.run_dir or Path(args.output_dir) / "babysit"
        # a resumed run continues its history: from the checkpoint's trainer_state.json, or
        # set by the Trainer itself (restore_callback_states_from_checkpoint)
        self._saved = (_resumed_state(state) or self._saved) if state.global_step else None
        self.bridge = Bridge(
            model,
            [optimizer],
            options=self.options,
            run_dir=self._run_dir,
            framework="transformers",
            schedulers=[] if scheduler is None else [scheduler],
            state=self._saved,
            record={
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "fp16": bool(args.fp16),
                "bf16": bool(args.bf16),
                "logging_nan_inf_filter": bool(args.logging_nan_inf_filter),
                "world_size": distributed.world_size(),
            },
        )
        if distributed.is_main():
            self.bridge.alert = _report
        self._hooks = [
            model.register_forward_pre_hook(self._before_forward),
            model.register_forward_hook(self._after_forward, with_kwargs=True),
        ]

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        bridge = self.bridge
        if bridge is None:
            return
        if self._losses:
            total = math.fsum(self._losses)
            bridge.add_loss(total if self._scaled else total / len(self._losses))
        elif not self._no_loss_said:
            self._no_loss_said = True
            bridge.emit(_no_loss_finding(type(kwargs.get("model")).__name__))
        self._losses = []
        bridge.before_update()
        if bridge.stop_requested:
            control.should_training_stop = True

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bridge is not None:
            self.bridge.end_step()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bridge is not None and self.bridge.stop_requested:
            control.should_training_stop = True

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        metrics = kwargs.get("metrics") or {}
        for key, value in metrics.items():
            name = key.removeprefix("eval_").replace("accuracy", "acc")
            if name in ("loss", "acc") and isinstance(value, int | float) and math.isfinite(value):
                self._val[f"val_{name}"] = float(value)
        if self._epoch_pending:
            self._end_epoch()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # DefaultFlowCallback ran first: when this epoch ends in an evaluation, wait for it
        self._epoch_pending = True
        if not control.should_evaluate:
            self._end_epoch()

    def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        logs = kwargs.get("logs") or {}
        lr = logs.get("learning_rate")
        if self.bridge is not None and isinstance(lr, int | float):
            self.bridge.log("lr", float(lr))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._epoch_pending:
            self._end_epoch()
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        if self.bridge is not None:
            self.bridge.close()

    # -- the model's forward ---------------------------------------------------------------------

    def _before_forward(self, module: torch.nn.Module, args: Any) -> None:
        """Evaluation forwards (run without grad) are not training statistics."""
        evaluating = not torch.is_grad_enabled()
        if evaluating != self._evaluating and self.bridge is not None:
            self._evaluating = evaluating
            self.bridge.call("on_validation_start" if evaluating else "on_validation_end")

    def _after_forward(self, module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if not torch.is_grad_enabled() or not module.training:
            return
        loss = _loss_of(output)
        if loss is not None:
            self._scaled = kwargs.get("num_items_in_batch") is not None
            self._losses.append(float(loss.detach().float()))

    def _end_epoch(self) -> None:
        self._epoch_pending = False
        if self.bridge is not None:
            self.bridge.end_epoch(**self._val)
        self._val = {}


def model_loss(model: Any, batch: Any) -> tuple[torch.Tensor, Any]:
    """``diagnose``'s ``forward=`` for a Hugging Face model: ``model(**batch).loss``, the loss
    the ``Trainer`` trains (the batch must hold the labels)."""
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"a Hugging Face batch is a dict of tensors (input_ids, labels, ...), got "
            f"{type(batch).__name__}"
        )
    output = model(**batch)
    loss = _loss_of(output)
    if loss is None:
        raise ValueError(
            f"{type(model).__name__}(**batch) returned no loss: put the labels in the batch "
            f"(its keys: {', '.join(batch)})"
        )
    return loss_as_output(loss, batch)


def diagnose(model: Any, data: Any, **kwargs: Any) -> Any:
    """:func:`babysit.diagnose` on a Hugging Face model, judged on its own ``outputs.loss``.

    ``data``: a ``Dataset`` of dict examples (as the ``Trainer`` takes), a ``DataLoader`` of
    dict batches, or anything :func:`babysit.diagnose` takes. Other keyword arguments go to
    :func:`babysit.diagnose`; the task is ``"custom"``, so the checks that read logits against
    labels are listed as skipped.
    """
    return diagnose_own_loss(model, data, model_loss, **kwargs)


def _loss_of(output: Any) -> torch.Tensor | None:
    """``output.loss`` / ``output["loss"]`` of a ``ModelOutput`` or dict, when a scalar."""
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    if isinstance(loss, torch.Tensor) and loss.numel() == 1:
        return loss
    return None


def _resumed_state(state: Any) -> dict[str, Any] | None:
    """The monitors' state a resumed Trainer loaded from its checkpoint's
    ``trainer_state.json`` (``state.stateful_callbacks``), if babysit's callback stored one."""
    stored = (getattr(state, "stateful_callbacks", None) or {}).get(BabysitCallback.__name__)
    if isinstance(stored, list):  # several callbacks of the class: the first one's
        stored = stored[0] if stored else None
    if not isinstance(stored, Mapping):
        return None
    saved = (stored.get("attributes") or {}).get("_saved")
    return dict(saved) if isinstance(saved, Mapping) else None


def _json_safe(value: Any) -> Any:
    """``value`` with tensors as lists and tuples as lists: trainer_state.json is JSON."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    return value  # (NaN/Infinity: Python's json writes and reads them, as the Trainer does)


def _unwrap(obj: Any, attribute: str) -> Any:
    """The torch object inside ``accelerate``'s wrappers (``.optimizer``, ``.scheduler``)."""
    while obj is not None and hasattr(obj, attribute) and getattr(obj, attribute) is not obj:
        inner = getattr(obj, attribute)
        if inner is None:
            break
        obj = inner
    return obj


def _no_loss_finding(model: str) -> Finding:
    return finding(
        "CHECKS_SKIPPED",
        f"{model}'s output carries no loss (outputs.loss), so the loss checks did not run: "
        f"{', '.join(_LOSS_CHECKS)}",
        "let the model compute its loss (pass labels), or report the loss yourself with "
        "babysit.watch(model, optimizer).observe(loss) in a loop you keep",
        {"skipped": _LOSS_CHECKS, "reason": "no outputs.loss"},
        severity="warning",
    )


def _report(finding: Finding) -> None:
    line = f"babysit {finding.severity} {finding.code}: {finding.message}"
    if finding.advice:
        line += f" -> {finding.advice}"
    log.warning(line) if finding.severity != "info" else log.info(line)
