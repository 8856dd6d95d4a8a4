"""Learning-rate schedules by name, or a factory ``optimizer -> LRScheduler``.

Names: ``"cosine"`` (cosine annealing to 0 over the whole run, stepped per batch),
``"step"`` (x0.1 at 50% and 75% of the epochs, the classic ResNet schedule, stepped per epoch),
``"onecycle"`` (Smith & Topin 2017, peak at the given lr, stepped per batch). A factory's
scheduler is stepped per epoch (PyTorch's convention), except ``OneCycleLR``/``CyclicLR``, which
are per batch; ``ReduceLROnPlateau`` is stepped with the validation loss (training loss
without validation data).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import lr_scheduler

__all__ = ["SCHEDULES", "Schedule", "make_schedule"]

SCHEDULES = ("cosine", "step", "onecycle")
_PER_BATCH = (lr_scheduler.OneCycleLR, lr_scheduler.CyclicLR)


class Schedule:
    """A scheduler and when to step it (``"batch"`` or ``"epoch"``)."""

    def __init__(self, scheduler: Any, interval: str) -> None:
        self.scheduler = scheduler
        self.interval = interval

    @property
    def on_plateau(self) -> bool:
        return isinstance(self.scheduler, lr_scheduler.ReduceLROnPlateau)

    def step_batch(self) -> None:
        if self.interval == "batch":
            self.scheduler.step()

    def step_epoch(self, metric: float) -> None:
        if self.interval != "epoch":
            return
        if self.on_plateau:
            self.scheduler.step(metric)
        else:
            self.scheduler.step()

    def scale(self, factor: float) -> None:
        """Scale the schedule's base rates too (a rollback lowered the learning rate)."""
        for attr in ("base_lrs", "max_lrs", "min_lrs"):
            values = getattr(self.scheduler, attr, None)
            if isinstance(values, list):
                setattr(self.scheduler, attr, [v * factor for v in values])
        for group in self.scheduler.optimizer.param_groups:
            for key in ("initial_lr", "max_lr", "min_lr"):
                if isinstance(group.get(key), float):
                    group[key] *= factor


def make_schedule(
    schedule: str | Callable[[torch.optim.Optimizer], Any] | None,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
) -> Schedule | None:
    """The :class:`Schedule` for ``schedule`` (``None``: constant learning rate)."""
    if schedule is None:
        return None
    if callable(schedule):
        scheduler = schedule(optimizer)
        if not hasattr(scheduler, "step"):
            raise TypeError(
                f"the schedule factory returned {type(scheduler).__name__}, not a learning-rate "
                "scheduler (e.g. lambda opt: torch.optim.lr_scheduler.StepLR(opt, 5))"
            )
        return Schedule(scheduler, "batch" if isinstance(scheduler, _PER_BATCH) else "epoch")
    key = str(schedule).lower()
    total = max(epochs * max(steps_per_epoch, 1), 1)
    if key == "cosine":
        return Schedule(lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), "batch")
    if key == "step":
        milestones = sorted({max(1, epochs // 2), max(1, (3 * epochs) // 4)})
        return Schedule(lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1), "epoch")
    if key == "onecycle":
        peak = [g["lr"] for g in optimizer.param_groups]
        return Schedule(lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=total), "batch")
    raise ValueError(
        f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}, or a factory such as "
        "lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=5)"
    )
