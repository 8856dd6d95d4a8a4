"""Checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is one ``torch.save`` of plain types and tensors (so ``torch.load(...,
weights_only=True)`` reads it): the model, optimizer and scheduler states, the position (epoch,
next batch, global step), torch's RNG states as tensors (CPU, and CUDA when used), the RNG
state at the start of the epoch (a user's DataLoader shuffles from it), every callback's
``state_dict``, the history, the findings and how many metric rows were on disk. It is written
through a temporary file and ``os.replace`` (:func:`babysit.runs.atomic_write_bytes`): a crash
or a full disk mid-write leaves the previous checkpoint whole.

:class:`Checkpoint` is the callback that decides when: ``last.pt`` at the end of every epoch
(and every ``every_steps`` steps if asked), ``best.pt`` when the monitored metric improves.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import runs
from .callbacks import Callback

if TYPE_CHECKING:
    from .session import Session

__all__ = ["FORMAT", "Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint"]

FORMAT = "babysit-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read: the message says which file and what to do."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus the format marker) to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    try:
        return runs.atomic_write_bytes(path, buffer.getvalue())
    except OSError as err:
        previous = "the previous one is intact" if Path(path).exists() else "none was written yet"
        raise CheckpointError(
            f"could not write checkpoint {path} ({err.strerror or err}); {previous}. Free disk "
            "space or fix permissions, then continue with resume=True"
        ) from err


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupted, or pickled objects weights_only refuses
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is corrupted or was not written by babysit "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Nothing "
            "was changed; delete it to start over, or resume from checkpoints/best.pt"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a babysit checkpoint (format {found!r}, expected {FORMAT!r}); a "
            "plain state_dict loads with model.load_state_dict(torch.load(path)) instead"
        )
    return state


def check_same_model(state: dict[str, Any], model: torch.nn.Module, path: Path) -> None:
    """Raise :class:`CheckpointError` when the checkpoint's parameters do not fit ``model``."""
    saved = {k: tuple(v.shape) for k, v in state["model"].items()}
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(mine) - set(saved))
    extra = sorted(set(saved) - set(mine))
    shapes = [f"{k}: {saved[k]} vs {mine[k]}" for k in mine if k in saved and saved[k] != mine[k]]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if extra:
            parts.append(f"unexpected {extra[:5]}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:5]}")
        raise CheckpointError(
            f"{path} was written for a different model ({'; '.join(parts)}). Nothing was "
            "changed: resume with the model that wrote it, or start a new run in another run_dir"
        )


class Checkpoint(Callback):
    """Save ``checkpoints/last.pt`` every epoch (and every ``every_steps`` steps when given)
    and ``checkpoints/best.pt`` when ``monitor`` improves.

    Args:
        every_steps: also save ``last.pt`` every this many optimizer steps (mid-epoch).
        monitor: the epoch metric that decides "best": ``"auto"`` takes ``val_acc`` when
            validation has accuracy, else ``val_loss``, else ``train_loss``.
        mode: ``"max"``, ``"min"`` or ``"auto"`` (max for accuracies, min for losses).
    """

    def __init__(
        self, *, every_steps: int | None = None, monitor: str = "auto", mode: str = "auto"
    ) -> None:
        if every_steps is not None and (not isinstance(every_steps, int) or every_steps < 1):
            raise ValueError(f"every_steps must be a positive int or None, got {every_steps!r}")
        if mode not in ("auto", "max", "min"):
            raise ValueError(f"mode must be 'auto', 'max' or 'min', got {mode!r}")
        self.every_steps = every_steps
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_train_batch_end(self, trainer: Session, loss: float, batch_index: int) -> None:
        if self.every_steps and (trainer.step + 1) % self.every_steps == 0:
            trainer.save_checkpoint(  # type: ignore[attr-defined]
                "last", next_batch=batch_index + 1, next_step=trainer.step + 1
            )

    def save_epoch(self, trainer: Session, metrics: dict[str, float]) -> None:
        """End of an epoch (called by ``fit`` after every other callback): save last, maybe best."""
        name = self._metric(metrics)
        value = metrics.get(name) if name else None
        improved = False
        if value is not None and math.isfinite(value):
            higher = self.mode == "max" or (self.mode == "auto" and name.endswith("acc"))
            improved = self.best is None or (value > self.best if higher else value < self.best)
        if improved:
            self.best, self.best_epoch = value, trainer.epoch
        trainer.save_checkpoint("last")  # type: ignore[attr-defined]
        if improved:
            trainer.save_checkpoint("best")  # type: ignore[attr-defined]

    def _metric(self, metrics: dict[str, float]) -> str | None:
        if self.monitor != "auto":
            return self.monitor
        for name in ("val_acc", "val_loss", "train_loss"):
            if name in metrics:
                return name
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
