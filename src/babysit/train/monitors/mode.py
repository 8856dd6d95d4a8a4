"""Training with dropout or batch norm in eval mode (``MODEL_IN_EVAL_MODE``).

A model left in ``model.eval()`` trains without dropout and with frozen batch-norm statistics:
it works, just worse, and nothing complains. Checked at the first step and then every
``every`` steps, from the optimizer's step pre-hook (so a user's own loop is covered too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from ._base import Monitor, finding

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["EvalMode", "modules_in_eval"]

_MODE_MODULES = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


def modules_in_eval(model: nn.Module) -> list[str]:
    """Names of the dropout and batch-norm modules that are in eval mode; a batch norm whose
    parameters are all frozen (requires_grad=False) is frozen on purpose (fine-tuning) and not
    listed."""
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, _MODE_MODULES) and not m.training and not _frozen_on_purpose(m)
    ]


def _frozen_on_purpose(module: nn.Module) -> bool:
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


class EvalMode(Monitor):
    """MODEL_IN_EVAL_MODE when an optimizer step runs with dropout/BN modules in eval mode."""

    def __init__(self, *, every: int = 100) -> None:
        self.every = every
        self._handle: Any = None
        self._trainer: Session | None = None

    def on_fit_start(self, trainer: Session) -> None:
        self._trainer = trainer
        self._handle = trainer.optimizer.register_step_pre_hook(self._step_hook)

    def on_fit_end(self, trainer: Session) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._trainer = None

    def _step_hook(self, *_: Any) -> None:
        """The optimizer's step pre-hook (a bound method: it runs every step)."""
        trainer = self._trainer
        if trainer is not None and not trainer.step % self.every:
            self._check(trainer)

    def _check(self, trainer: Session) -> None:
        names = modules_in_eval(trainer.measured_model)
        if names:
            trainer.emit(
                finding(
                    "MODEL_IN_EVAL_MODE",
                    f"training step {trainer.step} ran with {len(names)} dropout/batch-norm "
                    f"module(s) in eval mode ({', '.join(names[:5])}): dropout is off and "
                    "batch norm uses frozen running statistics",
                    "call model.train() before training (and model.eval() only to evaluate); "
                    "if frozen on purpose, pass ignore=['MODEL_IN_EVAL_MODE']",
                    {"modules": names, "step": trainer.step},
                    layer=names[0],
                )
            )

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every}
