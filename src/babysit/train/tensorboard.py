"""TensorBoard event files in ``run_dir/tb`` when the ``tensorboard`` package is installed.

Scalars: every metric row ``fit`` logs (loss per step, epoch metrics, update ratios, dead and
saturated fractions, gradient norms), written at each epoch's end. Histograms: every parameter
and its gradient at each epoch's end. ``tensorboard --logdir runs/`` shows them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .callbacks import Callback

if TYPE_CHECKING:
    from .session import Session

__all__ = ["TensorBoard"]


class TensorBoard(Callback):
    """Write scalars and histograms for TensorBoard."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    @staticmethod
    def available() -> bool:
        """Whether ``tensorboard`` is installed (torch's SummaryWriter needs it)."""
        return importlib.util.find_spec("tensorboard") is not None

    def on_fit_start(self, trainer: Session) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(self.log_dir), purge_step=trainer.step or None)
        trainer.sinks.append(self._scalars)

    def on_train_epoch_end(self, trainer: Session, metrics: dict[str, float]) -> None:
        for name, p in trainer.model.named_parameters():
            self._histogram(f"weights/{name}", p, trainer.step)
            if p.grad is not None:
                self._histogram(f"grads/{name}", p.grad, trainer.step)
        self._writer.flush()

    def _histogram(self, tag: str, tensor: torch.Tensor, step: int) -> None:
        values = tensor.detach().float().cpu()
        values = values[torch.isfinite(values)]  # TensorBoard refuses NaN/Inf
        if values.numel():
            self._writer.add_histogram(tag, values, step)

    def _scalars(self, rows: list[tuple[int, int, str, str, float]]) -> None:
        """A sink for the metric rows ``fit`` writes to metrics.csv."""
        if self._writer is None:
            return
        for step, _, split, name, value in rows:
            self._writer.add_scalar(f"{split}/{name}", value, step)
        self._writer.flush()

    def on_fit_end(self, trainer: Session) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
