"""The train/validation accuracy gap (lecture, "monitor and visualize the accuracy").

"Big gap = overfitting: increase regularization strength. No gap: increase model capacity."
Judged at the end of each epoch that has both accuracies (``train_acc`` is the running accuracy
over the epoch's batches, dropout on, as training sees it):

- ``OVERFITTING``: ``train_acc - val_acc > overfit_gap`` for two epochs in a row;
- ``UNDERFITTING`` (at the end of training, unless it broke out): ``|gap| < underfit_gap`` and
  train accuracy ``< underfit_accuracy``, on ``train_eval_acc`` when ``fit`` measured it (eval
  mode on up to 1000 training examples: with dropout on, the running accuracy sits below the
  validation accuracy and fakes "no gap").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import Monitor, finding

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["Generalization"]


class Generalization(Monitor):
    """OVERFITTING / UNDERFITTING from the per-epoch train and validation accuracy."""

    def __init__(self) -> None:
        self.gaps: list[tuple[int, float, float]] = []  # (epoch, train_acc, val_acc)
        self.eval_acc: float | None = None  # the last epoch's train accuracy in eval mode

    def on_validation_epoch_end(self, trainer: Session, metrics: dict[str, float]) -> None:
        if "train_acc" not in metrics or "val_acc" not in metrics:
            return
        self.gaps.append((trainer.epoch, metrics["train_acc"], metrics["val_acc"]))
        self.eval_acc = metrics.get("train_eval_acc")
        limit = trainer.thresholds["overfit_gap"]
        recent = self.gaps[-2:]
        if len(recent) == 2 and all(tr - va > limit for _, tr, va in recent):
            _, tr, va = recent[-1]
            trainer.emit(
                finding(
                    "OVERFITTING",
                    f"train accuracy {tr:.1%} vs validation {va:.1%} (gap {tr - va:.1%} for two "
                    "epochs): the model memorizes the training set",
                    "increase regularization (weight_decay x10, dropout), get more data, or "
                    "stop earlier (checkpoints/best.pt keeps the best epoch)",
                    self._evidence(),
                )
            )

    def on_fit_end(self, trainer: Session) -> None:
        if not self.gaps or trainer.stop_reason:
            return
        t = trainer.thresholds
        _, tr, va = self.gaps[-1]
        tr = tr if self.eval_acc is None else self.eval_acc
        if abs(tr - va) < t["underfit_gap"] and tr < t["underfit_accuracy"]:
            trainer.emit(
                finding(
                    "UNDERFITTING",
                    f"train accuracy {tr:.1%} and validation {va:.1%} are close and both low: "
                    "the model cannot fit the training set",
                    "increase capacity (wider or deeper layers), train longer, or lower "
                    "regularization",
                    self._evidence(),
                )
            )

    def _evidence(self) -> dict[str, Any]:
        return {
            "epochs": [e for e, _, _ in self.gaps],
            "train_acc": [tr for _, tr, _ in self.gaps],
            "val_acc": [va for _, _, va in self.gaps],
        }
