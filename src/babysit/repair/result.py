"""What ``babysit.fix`` returns: the steps it tried, what they fixed, what is left to do by hand.

A :class:`Repair` is a record, not a promise: every remedy tried is a :class:`RepairStep` with
the evidence that accepted or rejected it (``docs/architecture.md``, "Repair"), every finding
left is a :class:`Remaining` with a patch-like line naming the module and the change, and
``fixed`` holds only codes that a re-diagnosis no longer shows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from ..findings import Diagnosis

__all__ = ["Remaining", "Repair", "RepairStep", "format_repair", "merge_patch"]

SCHEMA = 1
FIX_JSON = "fix.json"


@dataclass(frozen=True)
class RepairStep:
    """One remedy tried for one finding code, in the order tried.

    ``remedy`` names an entry of :data:`babysit.repair.remedies.REMEDIES` (``"a + b"`` when
    two interacting remedies were verified together); ``accepted`` is True only when the
    verification rule held; ``evidence`` holds what decided it: the codes before and after,
    the validation losses of the short training runs, or why the remedy was skipped.
    """

    code: str
    remedy: str
    accepted: bool
    evidence: dict[str, Any] = field(default_factory=dict)
    patch: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["patch"] = list(self.patch)
        return out


@dataclass(frozen=True)
class Remaining:
    """A finding still present after the repair: ``line`` says where and what to change."""

    code: str
    severity: str
    line: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Repair:
    """The result of :func:`babysit.fix`.

    ``model`` is a repaired copy that takes the user's raw inputs (a fitted preprocessing
    module is prepended when the data needed one); ``config`` the training set-up to use with
    it (``optimizer``, ``lr``, ``weight_decay``); ``data`` the data to train on (the user's,
    or a shuffled ``DataLoader`` over the same dataset); ``steps`` every remedy tried;
    ``before``/``after`` the diagnoses of the original and the repaired set-up; ``patch`` the
    accepted changes as lines a user can follow; ``not_tried`` remedies left out (budget).
    """

    model: nn.Module
    config: dict[str, Any]
    steps: list[RepairStep]
    before: Diagnosis
    after: Diagnosis
    remaining: list[Remaining]
    data: Any = None
    not_tried: list[dict[str, str]] = field(default_factory=list)
    curves: dict[str, list[list[float]]] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def fixed(self) -> list[str]:
        """Codes at warning/error before that no re-diagnosis shows any more."""
        after = self.after.codes
        return sorted({f.code for f in self.before if f.severity != "info"} - after)

    @property
    def patch(self) -> list[str]:
        """The accepted changes, in order, as readable lines; a setting accepted twice
        (``lr=`` after a data remedy's retune and again after an init remedy's) reads once,
        as its final value (:func:`merge_patch`)."""
        lines: list[str] = []
        for step in self.steps:
            if step.accepted:
                lines = merge_patch(lines, step.patch)
        return lines

    @property
    def changed(self) -> bool:
        """Whether any remedy was accepted (False: the repaired set-up is the original)."""
        return any(step.accepted for step in self.steps)

    @property
    def ok(self) -> bool:
        """True when nothing at warning or error severity remains."""
        return not self.remaining

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "ok": self.ok,
            "changed": self.changed,
            "config": _plain_config(self.config),
            "fixed": self.fixed,
            "patch": self.patch,
            "steps": [s.to_dict() for s in self.steps],
            "remaining": [r.to_dict() for r in self.remaining],
            "not_tried": list(self.not_tried),
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "curves": self.curves,
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **{"indent": 2, **kwargs})

    def __repr__(self) -> str:
        return (
            f"Repair(fixed={self.fixed}, remaining={[r.code for r in self.remaining]}, "
            f"patch={self.patch})"
        )


def _plain_config(config: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | type(None)) else repr(v)
        for k, v in config.items()
    }


def format_repair(repair: Repair) -> str:
    """The repair as plain text: the plan tried, the patch, what remains (``babysit fix``)."""
    lines: list[str] = []
    before = sorted({f.code for f in repair.before if f.severity != "info"})
    if not before:
        lines.append("Nothing at warning or error: nothing to repair, nothing changed.")
        return "\n".join(lines)
    lines.append(f"Found: {', '.join(before)}")
    if repair.steps:
        lines.append("Tried:")
        for step in repair.steps:
            verdict = "accepted" if step.accepted else "rejected"
            lines.append(f"  {step.code}: {step.remedy} -> {verdict} ({_why_text(step)})")
    if repair.patch:
        lines.append("Patch:")
        lines.extend(f"  {line}" for line in repair.patch)
    else:
        lines.append("No change verified: the repaired set-up is the original.")
    if repair.fixed:
        lines.append(f"Fixed: {', '.join(repair.fixed)}")
    if repair.remaining:
        lines.append("Remaining (change by hand):")
        for r in repair.remaining:
            lines.append(f"  [{r.severity}] {r.code}: {r.line}")
            lines.append(f"      ({r.reason})")
    if repair.not_tried:
        names = ", ".join(f"{n['remedy']} ({n['code']})" for n in repair.not_tried)
        lines.append(f"Not tried: {names}")
    return "\n".join(lines)


def _why_text(step: RepairStep) -> str:
    ev = step.evidence
    if "skipped" in ev:
        return f"skipped: {ev['skipped']}"
    if not ev.get("finding_gone", False):
        return "the finding is still there"
    if ev.get("new_findings"):
        return f"new findings: {', '.join(ev['new_findings'])}"
    before, after = ev.get("val_loss_before"), ev.get("val_loss_after")
    return f"validation loss {_loss(before)} -> {_loss(after)}"


def _loss(value: Any) -> str:
    return "nan/inf" if value is None else f"{value:.4g}"


def merge_patch(patch: Sequence[str], new: Sequence[str]) -> list[str]:
    """``patch`` then ``new``; a setting set again (``lr=``, ``weight_decay=``) replaces the
    earlier line, so a repeated remedy reads as its final value."""
    out = list(patch)
    for line in new:
        key = re.match(r"^(\w+)=", line)
        same = [i for i, old in enumerate(out) if key and old.startswith(key.group(0))]
        if same:
            out[same[-1]] = line
        else:
            out.append(line)
    return out
