"""Search spaces the lecture's way: ``loguniform`` for scales (learning rate, weight decay),
``uniform`` for fractions (dropout), ``intuniform`` for counts, ``choice`` for categories.

Lecture: "random search in log space" — sample ``10 ** uniform(-6, -3)``, not
``uniform(1e-6, 1e-3)`` (Bergstra & Bengio 2012). Each parameter knows how to be sampled by an
Optuna trial, how to narrow around the best trials of a stage (coarse -> fine) and whether the
best value sits at an edge of its range (``BEST_AT_EDGE``).

>>> space = {"lr": loguniform(1e-6, 1e-1), "dropout": uniform(0, 0.5), "hidden": choice([50, 100])}
>>> space["lr"].narrowed([1e-4, 3e-4, 2e-4])  # the top trials' span, padded
LogUniform(low=4.1e-05, high=0.00073)
>>> space["lr"].edge(2e-6), space["lr"].edge(1e-3)
('low', None)
>>> space["lr"].extended("low")  # BEST_AT_EDGE's suggestion: one decade further
LogUniform(low=1e-07, high=0.1)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EDGE_FRACTION",
    "MIN_NARROW",
    "NARROW_PAD",
    "Choice",
    "IntUniform",
    "LogUniform",
    "Param",
    "Uniform",
    "check_space",
    "choice",
    "describe",
    "intuniform",
    "loguniform",
    "parse_space",
    "uniform",
]

# Coarse -> fine: the next stage's range spans the top trials' values, padded by this fraction
# of that span on each side (in log space for log parameters), within the current range.
NARROW_PAD = 0.25
# ... and it keeps at least this fraction of the current range: a few top trials that happen to
# sit close together are a noisy estimate of where the good region is.
MIN_NARROW = 0.25
# BEST_AT_EDGE: the best value lies in the outer 10% of the range (log space for log
# parameters). Lecture: "best lr all at e-04 — a better one may lie below".
EDGE_FRACTION = 0.1


class Param:
    """A searchable parameter (subclasses: LogUniform, Uniform, IntUniform, Choice)."""

    def suggest(self, trial: Any, name: str) -> Any:
        raise NotImplementedError

    def narrowed(self, values: Sequence[Any]) -> Param:
        """The range for the next stage, around ``values`` (the top trials' values)."""
        raise NotImplementedError

    def edge(self, value: Any) -> str | None:
        """``"low"``/``"high"`` when ``value`` lies at an edge of the range, else ``None``."""
        return None

    def extended(self, side: str) -> Param:
        """The range grown past the edge ``side`` (``BEST_AT_EDGE``'s suggestion)."""
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"kind": type(self).__name__.lower(), **vars(self)}


@dataclass(frozen=True)
class _Range(Param):
    low: float
    high: float

    log = False

    def __post_init__(self) -> None:
        kind = type(self).__name__
        for bound in (self.low, self.high):
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise TypeError(f"{kind} bounds must be numbers, got {bound!r}")
            if not math.isfinite(bound):
                raise ValueError(f"{kind} bounds must be finite, got {bound!r}")
        if not self.low < self.high:
            raise ValueError(
                f"{kind}({self.low!r}, {self.high!r}) is empty or inverted: low must be < high"
            )
        if self.log and self.low <= 0:
            raise ValueError(
                f"{kind}({self.low!r}, {self.high!r}): a log range must be > 0 (log of "
                f"{self.low!r} is undefined); use uniform() for ranges that include 0"
            )

    def _to(self, value: float) -> float:
        return math.log10(value) if self.log else float(value)

    def _from(self, value: float) -> float:
        return 10.0**value if self.log else value

    def narrowed(self, values: Sequence[Any]) -> Param:
        if not values:
            return self
        low, high = self._to(self.low), self._to(self.high)
        points = [min(max(self._to(v), low), high) for v in values]
        span = max(points) - min(points)
        pad = max(NARROW_PAD * span, (MIN_NARROW * (high - low) - span) / 2)
        new_low = max(min(points) - pad, low)
        new_high = min(max(points) + pad, high)
        a = min(max(_round(self._from(new_low)), self.low), self.high)
        b = min(max(_round(self._from(new_high)), self.low), self.high)
        return type(self)(a, b) if a < b else self

    def edge(self, value: Any) -> str | None:
        low, high = self._to(self.low), self._to(self.high)
        where = (self._to(value) - low) / (high - low)
        if where <= EDGE_FRACTION:
            return "low"
        if where >= 1 - EDGE_FRACTION:
            return "high"
        return None

    def extended(self, side: str) -> Param:
        """Past the edge by one decade (log) or half the span (linear; a range starting at
        >= 0 stays >= 0)."""
        low, high = self._to(self.low), self._to(self.high)
        span = 1.0 if self.log else (high - low) / 2
        if side == "low":
            new_low = self._from(low - span)
            if not self.log and self.low >= 0:
                new_low = max(new_low, 0.0)  # a non-negative range (dropout) stays non-negative
            return type(self)(_round(new_low), self.high)
        return type(self)(self.low, _round(self._from(high + span)))


@dataclass(frozen=True)
class LogUniform(_Range):
    """``10 ** uniform(log10(low), log10(high))``: learning rates, weight decays."""

    log = True

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=True)


@dataclass(frozen=True)
class Uniform(_Range):
    """``uniform(low, high)``: fractions such as dropout."""

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high)


@dataclass(frozen=True)
class IntUniform(Param):
    """An integer in ``[low, high]``, uniform or (``log=True``) log-uniform: widths, depths."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        for bound in (self.low, self.high):
            if isinstance(bound, bool) or not isinstance(bound, int):
                raise TypeError(f"IntUniform bounds must be ints, got {bound!r}")
        if not self.low < self.high:
            raise ValueError(
                f"IntUniform({self.low}, {self.high}) is empty or inverted: low must be < high"
            )
        if self.log and self.low < 1:
            raise ValueError(f"IntUniform({self.low}, {self.high}, log=True) needs low >= 1")

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def _as_range(self) -> _Range:
        return (LogUniform if self.log else Uniform)(self.low, self.high)

    def narrowed(self, values: Sequence[Any]) -> Param:
        if not values:
            return self
        r = self._as_range().narrowed(values)
        low, high = math.floor(r.low), math.ceil(r.high)  # type: ignore[attr-defined]
        low, high = max(low, self.low), min(high, self.high)
        if low >= high:
            return Choice((low,)) if low == high else self
        return IntUniform(low, high, self.log)

    def edge(self, value: Any) -> str | None:
        return self._as_range().edge(value)

    def extended(self, side: str) -> Param:
        r = self._as_range().extended(side)
        low, high = math.floor(r.low), math.ceil(r.high)  # type: ignore[attr-defined]
        return IntUniform(max(low, 1 if self.log else low), high, self.log)


@dataclass(frozen=True)
class Choice(Param):
    """One of ``values`` (activations, init schemes, optimizers, widths)."""

    values: tuple[Any, ...]

    def __init__(self, values: Sequence[Any]) -> None:
        if isinstance(values, str) or not isinstance(values, Sequence):
            raise TypeError(f"choice() takes a list of values, got {values!r}")
        values = tuple(values)
        if not values:
            raise ValueError("choice([]) is empty: give at least one value")
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"choice({list(values)!r}) repeats a value")
        object.__setattr__(self, "values", values)

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.values))

    def narrowed(self, values: Sequence[Any]) -> Param:
        kept = tuple(v for v in self.values if v in set(values))
        return Choice(kept) if kept else self

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "choice", "values": list(self.values)}


def describe(spec: Mapping[str, Any]) -> str:
    """A range as text from its ``to_dict()`` form (as stored with each stage): ``"1e-05 … 0.1
    (log)"``, ``"0 … 0.5"``, or a choice's values.

    >>> describe(loguniform(1e-5, 0.1).to_dict()), describe(choice([50, 100]).to_dict())
    ('1e-05 … 0.1 (log)', '50, 100')
    """
    if "low" in spec:
        log = " (log)" if spec.get("kind") == "loguniform" else ""
        return f"{spec['low']:.3g} … {spec['high']:.3g}{log}"
    return ", ".join(str(v) for v in spec.get("values", []))


def loguniform(low: float, high: float) -> LogUniform:
    """``10 ** uniform(log10(low), log10(high))`` (lecture: search scales in log space)."""
    return LogUniform(low, high)


def uniform(low: float, high: float) -> Uniform:
    """Uniform in ``[low, high]``."""
    return Uniform(low, high)


def intuniform(low: int, high: int, log: bool = False) -> IntUniform:
    """An integer in ``[low, high]`` (log-uniform with ``log=True``)."""
    return IntUniform(low, high, log)


def choice(values: Sequence[Any]) -> Choice:
    """One of ``values``."""
    return Choice(values)


def check_space(space: Mapping[str, Any]) -> dict[str, Param]:
    """Validate a space: names are strings, values are parameters (plain values are fixed)."""
    if not isinstance(space, Mapping) or not space:
        raise ValueError(
            "space must be a non-empty dict such as {'lr': babysit.loguniform(1e-5, 1e-1)}"
        )
    checked: dict[str, Param] = {}
    for name, param in space.items():
        if not isinstance(name, str):
            raise TypeError(f"space keys must be parameter names (str), got {name!r}")
        if isinstance(param, Param):
            checked[name] = param
        elif isinstance(param, int | float | str | bool) or param is None:
            checked[name] = Choice((param,))  # a fixed value
        else:
            raise TypeError(
                f"space[{name!r}] is {type(param).__name__}: use babysit.loguniform, uniform, "
                "intuniform or choice (or a plain value to fix it)"
            )
    return checked


def parse_space(spec: Mapping[str, Any]) -> dict[str, Param]:
    """A space from plain JSON: ``{"lr": ["loguniform", 1e-6, 0.1], "hidden": ["choice", [50,
    100]], "depth": ["intuniform", 1, 4], "optimizer": "adam"}`` (plain values are fixed)."""
    makers = {"loguniform": loguniform, "uniform": uniform, "intuniform": intuniform}
    out: dict[str, Any] = {}
    for name, value in dict(spec).items():
        if isinstance(value, list) and value and isinstance(value[0], str):
            kind, *args = value
            if kind == "choice" and len(args) == 1:
                out[name] = choice(args[0])
            elif kind in makers:
                out[name] = makers[kind](*args)
            else:
                raise ValueError(
                    f"space[{name!r}]: unknown kind {kind!r}; use loguniform, uniform, "
                    'intuniform or choice, e.g. ["loguniform", 1e-5, 0.1]'
                )
        else:
            out[name] = value
    return check_space(out)


def _round(value: float) -> float:
    """Two significant digits: readable ranges in tables and study attributes."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.2g}")
