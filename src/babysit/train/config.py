"""One run's settings: a frozen, validated :class:`FitConfig`, shared by ``fit``, the CLI's
``train`` command and the run's ``config.json``.

``fit``'s keyword arguments are gathered here once and checked once (a bad value is a
``ValueError`` that names the value and the fix), then read as attributes, never as loose
``kw["..."]`` lookups. :meth:`FitConfig.record` is the part of ``config.json`` the settings
decide (same keys as before, so old runs still load); :meth:`FitConfig.from_record` rebuilds
the settings from it, which is how ``babysit train --resume`` continues a run with the settings
it was started with.

Resuming is only honest when the settings that shaped the trained state are the same:
:data:`RESUME_KEYS` lists them (the optimizer and its lr and weight decay decide what the
optimizer's saved state means; the batch size and the seed decide the order of the examples
and, in the CLI, the data split). :func:`conflicts` compares a call's values with the recorded
ones. The epoch count may change (training continues to the new count), except under a
schedule, whose shape was planned for the recorded count.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from ..optim import OPTIMIZERS
from .schedules import SCHEDULES

__all__ = ["RESUME_KEYS", "FitConfig", "check_task", "conflicts", "same_value"]

# Settings a resumed run must share with the run it continues (config.json keys).
RESUME_KEYS = ("optimizer", "lr", "weight_decay", "schedule", "batch_size", "seed")


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """The settings of one ``fit`` run (see :func:`babysit.fit` for each one's meaning).

    Values are normalised once (names lower-cased, ``device`` a string, lists tuples).
    Objects that are code, not settings (the model, the data, ``loss_fn``, ``metrics``,
    ``forward``, ``callbacks``) travel beside it. Construction validates every field.
    """

    optimizer: str | Callable[..., torch.optim.Optimizer] = "adam"
    lr: float | None = 1e-3
    weight_decay: float = 0.0
    schedule: str | Callable[[torch.optim.Optimizer], Any] | None = None
    epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    device: str | torch.device = "cpu"  # kept as a str
    monitors: str | Iterable[Any] | None = "default"  # a list is kept as a tuple
    thresholds: Mapping[str, float] | None = None
    ignore: str | Iterable[str] = ()  # kept as a tuple of codes
    progress: bool = True
    task: Any = "auto"  # "auto", a kind name (lower-cased) or a babysit.tasks.Task

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalised values are set once, here
        if isinstance(self.optimizer, str):
            key = self.optimizer.strip().lower()
            if key not in OPTIMIZERS:
                raise ValueError(
                    f"unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}, or "
                    "pass a factory such as lambda params: torch.optim.SGD(params, lr=0.1)"
                )
            set_(self, "optimizer", key)
        elif not callable(self.optimizer):
            raise TypeError(
                f"optimizer must be a name or a factory params -> Optimizer, got "
                f"{type(self.optimizer).__name__}"
            )
        if self.lr is not None:
            set_(self, "lr", _positive_float("lr", self.lr))
        set_(self, "weight_decay", _float("weight_decay", self.weight_decay, low=0.0))
        if isinstance(self.schedule, str):
            key = self.schedule.strip().lower()
            if key not in SCHEDULES:
                raise ValueError(
                    f"unknown schedule {self.schedule!r}; known: {', '.join(SCHEDULES)}, or a "
                    "factory such as lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=5)"
                )
            set_(self, "schedule", key)
        elif self.schedule is not None and not callable(self.schedule):
            raise TypeError(
                f"schedule must be a name, a factory optimizer -> scheduler or None, got "
                f"{type(self.schedule).__name__}"
            )
        set_(self, "epochs", _positive_int("epochs", self.epochs))
        set_(self, "batch_size", _positive_int("batch_size", self.batch_size))
        set_(self, "seed", _int("seed", self.seed))
        try:
            set_(self, "device", str(torch.device(self.device)))
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"device={self.device!r} is not a device ({err}); use 'cpu', 'cuda' or 'cuda:1'"
            ) from err
        if self.monitors is not None and not isinstance(self.monitors, str):
            set_(self, "monitors", tuple(self.monitors))
        if self.thresholds is not None:
            from ..thresholds import resolve

            resolve(self.thresholds)  # unknown names: a ValueError listing the known ones
            set_(self, "thresholds", dict(self.thresholds))
        ignore = self.ignore
        set_(self, "ignore", (ignore,) if isinstance(ignore, str) else tuple(ignore))
        set_(self, "progress", bool(self.progress))
        set_(self, "task", check_task(self.task))

    @property
    def optimizer_name(self) -> str:
        """The optimizer's name; a factory's ``__name__`` (``custom`` when it has none)."""
        if isinstance(self.optimizer, str):
            return self.optimizer
        return getattr(self.optimizer, "__name__", "custom")

    @property
    def schedule_name(self) -> str | None:
        return self.schedule if isinstance(self.schedule, str | None) else "custom"

    def replace(self, **changes: Any) -> FitConfig:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def record(self, *, lr: float | None = None) -> dict[str, Any]:
        """The ``config.json`` keys these settings decide. ``lr`` is the rate the optimizer
        was built with (``lr=None`` resolves to the optimizer's or the factory's default)."""
        return {
            "optimizer": self.optimizer_name,
            "lr": self.lr if lr is None else float(lr),
            "weight_decay": self.weight_decay,
            "schedule": self.schedule_name,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "device": self.device,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], **changes: Any) -> FitConfig:
        """The settings a ``config.json`` records, with ``changes`` applied. A run trained with
        a factory (optimizer or schedule) cannot be rebuilt from its name: ``ValueError``."""
        fields = {}
        for key in ("optimizer", "lr", "weight_decay", "schedule", "epochs", "batch_size", "seed"):
            if key in record:
                fields[key] = record[key]
        for key in ("optimizer", "schedule"):
            value = fields.get(key)
            known = OPTIMIZERS if key == "optimizer" else SCHEDULES
            if isinstance(value, str) and value not in known and key not in changes:
                raise ValueError(
                    f"the run was trained with the {key} {value!r}, a factory that cannot be "
                    "rebuilt from config.json; resume it from Python with the same factory"
                )
        return cls(**{**fields, **changes})


def same_value(a: Any, b: Any) -> bool:
    """Equal settings; floats compared to a relative 1e-9 (config.json round-trips them)."""
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().lower() == b.strip().lower()
    return a == b


def conflicts(
    given: Mapping[str, Any], recorded: Mapping[str, Any], keys: Iterable[str]
) -> list[tuple[str, Any, Any]]:
    """``(key, given, recorded)`` for each of ``keys`` that both hold with different values.
    A key the record lacks (a run written by an older babysit) cannot conflict."""
    return [
        (key, given[key], recorded[key])
        for key in keys
        if key in given and key in recorded and not same_value(given[key], recorded[key])
    ]


def check_task(value: Any) -> Any:
    """``"auto"``, a kind name or a :class:`Task` (resolved against the loss by the trainer)."""
    from ..tasks import KINDS, Task

    if isinstance(value, Task):
        return value
    if isinstance(value, str) and value.strip().lower() in ("auto", *KINDS):
        return value.strip().lower()
    raise ValueError(
        f"task must be 'auto', one of {', '.join(map(repr, KINDS))} or babysit.Task(...), "
        f"got {value!r}"
    )


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {value!r}") from None


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _float(name: str, value: Any, *, low: float) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < low:
        raise ValueError(f"{name} must be a finite number >= {low:g}, got {value!r}")
    return number


def _positive_float(name: str, value: Any) -> float:
    number = _float(name, value, low=0.0)
    if number == 0.0:
        raise ValueError(f"{name} must be positive, got {value!r}; or None for the default")
    return number
