"""The Callback base class: hooks into ``babysit.fit`` (and, for monitors, ``babysit.watch``).

Lightning's style (``lightning.pytorch.Callback``): hooks are named ``on_<stage>_<start|end>``,
each a no-op, so a subclass overrides only what it needs; the first argument is always the
trainer (a :class:`~babysit.train.session.Session`: ``fit``'s loop or a ``Watcher``); each
callback owns :meth:`Callback.state_dict` / :meth:`Callback.load_state_dict`, which checkpoints
store (plain Python types only: they are loaded with ``torch.load(weights_only=True)``).

The order of one training step in ``fit``::

    on_train_batch_start -> forward -> on_loss -> backward -> optimizer.step() -> on_train_batch_end

``on_loss`` sees the loss before any gradient exists, so a monitor can stop a NaN from reaching
the weights. The optimizer's own step hooks (``register_step_pre_hook``) carry what happens
inside the step; ``watch`` has no batch hooks, only ``on_loss`` (from ``watcher.observe``).

>>> class CountSteps(Callback):
...     def __init__(self):
...         self.steps = 0
...     def on_train_batch_end(self, trainer, loss, batch_index):
...         self.steps += 1
...     def state_dict(self):
...         return {"steps": self.steps}
...     def load_state_dict(self, state):
...         self.steps = state["steps"]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Callback"]


class Callback:
    """Base class of everything that hooks into training. Every hook is a no-op."""

    def on_fit_start(self, trainer: Session) -> None:
        """Training begins (after a resume restored the state)."""

    def on_fit_end(self, trainer: Session) -> None:
        """Training ended, normally, by a break-out, or by an exception (then after
        :meth:`on_exception`)."""

    def on_train_epoch_start(self, trainer: Session) -> None:
        """An epoch begins; ``trainer.epoch`` is its index."""

    def on_train_batch_start(self, trainer: Session, batch_index: int) -> None:
        """A batch is about to run forward; ``trainer.step`` is the global step index."""

    def on_loss(self, trainer: Session, loss: float) -> None:
        """The step's loss is known (before backward). May call ``trainer.request_rollback``."""

    def on_train_batch_end(self, trainer: Session, loss: float, batch_index: int) -> None:
        """The optimizer step is done (``trainer.step`` not yet advanced)."""

    def on_train_epoch_end(self, trainer: Session, metrics: dict[str, float]) -> None:
        """An epoch's training metrics (``train_loss``, ``train_acc``, ``lr``) are known."""

    def on_validation_start(self, trainer: Session) -> None:
        """Validation is about to run (eval mode, no grad)."""

    def on_validation_end(self, trainer: Session) -> None:
        """Validation ran; training mode is back."""

    def on_validation_epoch_end(self, trainer: Session, metrics: dict[str, float]) -> None:
        """Validation ran at the end of an epoch: ``metrics`` has the epoch's train and val
        numbers (``val_loss``, ``val_acc``, ...)."""

    def on_rollback(self, trainer: Session, to_step: int) -> None:
        """The loop restored the last good state (from step ``to_step``)."""

    def on_exception(self, trainer: Session, error: BaseException) -> None:
        """Training raised (a ``KeyboardInterrupt`` included); :meth:`on_fit_end` follows."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint stores of this callback: plain Python types and tensors only."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    @property
    def state_key(self) -> str:
        """The key under which checkpoints store this callback's state (its class name)."""
        return type(self).__qualname__
