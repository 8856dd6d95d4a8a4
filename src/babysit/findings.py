"""Findings: what a check or monitor concluded, as a code, a severity, evidence and advice.

Every feature of babysit ends here: ``diagnose`` returns a :class:`Diagnosis`, monitors emit
:class:`Finding` s while training, the search warns with them and the report draws them. The
codes are a shared vocabulary (:data:`CODES`): they are added to, never renamed.

Severity: ``error`` = training is certainly wrong; ``warning`` = very likely hurts; ``info`` =
context.

>>> f = Finding("DEAD_RELU", "warning", "72% of layer 2's ReLUs never fire",
...             "use He init or Leaky ReLU", {"fraction": 0.72}, layer="2")
>>> Diagnosis([f]).codes, Diagnosis([f]).ok
({'DEAD_RELU'}, True)
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from html import escape
from typing import Any, Literal

import torch

__all__ = ["CODES", "SEVERITIES", "Diagnosis", "Finding", "finding", "known_codes"]

Severity = Literal["info", "warning", "error"]
SEVERITIES: tuple[str, ...] = ("error", "warning", "info")  # most severe first

# code -> (default severity, meaning). docs/architecture.md (findings); add codes, never rename.
CODES: dict[str, tuple[str, str]] = {
    "DATA_NAN": ("error", "inputs contain NaN/Inf"),
    "LABELS_OUT_OF_RANGE": ("error", "a label outside [0, C)"),
    "LABELS_NOT_INTEGER": ("error", "class labels that are not integers"),
    "DATA_NOT_CENTERED": ("warning", "feature means far from 0 relative to their spread"),
    "DATA_SCALE": ("warning", "features on very different or very large scales"),
    "CLASS_IMBALANCE": ("info", "some class much rarer than others"),
    "TOO_FEW_EXAMPLES": ("warning", "fewer examples than the batch size or the checks need"),
    "FORWARD_FAILED": ("error", "the model raised on the data"),
    "INIT_LOSS_MISMATCH": ("warning", "loss at init far from ln C with regularization off"),
    "REG_LOSS_NOT_INCREASING": ("warning", "adding regularization does not raise the loss"),
    "REG_TOO_STRONG": ("warning", "the regularization term dominates the data loss"),
    "SYMMETRIC_INIT": ("error", "units in a layer identical: symmetry never breaks"),
    "VANISHING_ACTIVATIONS": ("warning", "activation std collapses with depth"),
    "EXPLODING_ACTIVATIONS": ("warning", "activation std grows with depth"),
    "SATURATED_ACTIVATIONS": ("warning", "> 50% of a layer's sigmoid/tanh units saturated"),
    "DEAD_RELU": ("warning", "most of a layer's ReLUs output 0 for every example"),
    "VANISHING_GRADIENTS": ("warning", "gradient norm shrinks by orders of magnitude"),
    "EXPLODING_GRADIENTS": ("warning", "gradient norm grows by orders of magnitude"),
    "PARAMS_WITHOUT_GRAD": ("error", "parameters that never receive a gradient"),
    "GRADIENT_CHECK_FAILED": ("error", "analytic gradient disagrees with finite differences"),
    "BATCH_DEPENDENCE": ("error", "an output depends on other examples of the batch"),
    "DOUBLE_SOFTMAX": ("error", "model outputs probabilities but the loss expects logits"),
    "MISSING_NONLINEARITY": ("warning", "two linear layers in a row collapse to one"),
    "ACTIVATION_ON_OUTPUT": ("warning", "ReLU/sigmoid/tanh applied to the logits"),
    "DROPOUT_TOO_HIGH": ("warning", "dropout rate above 0.5"),
    "BATCHES_NOT_SHUFFLED": ("warning", "a DataLoader that yields label-sorted batches"),
    "CANNOT_OVERFIT": ("warning", "cannot drive the loss to ~0 on ~20 examples"),
    "LR_TOO_HIGH": ("warning", "loss explodes or exceeds 3× its start"),
    "LR_TOO_LOW": ("warning", "loss barely moves"),
    "NAN_LOSS": ("error", "loss became NaN/Inf"),
    "UPDATE_RATIO_HIGH": ("warning", "update/weight ratio far above ~1e-3"),
    "UPDATE_RATIO_LOW": ("warning", "update/weight ratio far below ~1e-3"),
    "LOSS_PLATEAU_AT_START": ("warning", "flat, then a sudden drop: bad initialization"),
    "LOSS_OSCILLATING": ("warning", "loss/accuracy swinging instead of descending"),
    "OVERFITTING": ("warning", "big train/val gap"),
    "UNDERFITTING": ("warning", "no gap and low accuracy"),
    "MODEL_IN_EVAL_MODE": ("warning", "training with dropout/batch-norm modules in eval mode"),
    "BEST_AT_EDGE": ("warning", "search optimum at the edge of a range"),
    "LR_SUGGESTION": ("info", "the LR range test's suggestion"),
    "CHECKS_SKIPPED": ("info", "checks not run, and why"),
    "FROZEN_PARAMS": ("info", "parameters frozen with requires_grad=False"),
    "LOSS_FAILED": ("error", "the loss cannot be computed on the model's output"),
    "UNREGISTERED_PARAMS": ("error", "tensors requiring grad used in the loss but not registered"),
    "TARGET_SCALE": ("warning", "regression targets far from unit scale"),
}


@dataclass(frozen=True)
class Finding:
    """One conclusion: ``code`` from :data:`CODES`, a one-line ``message``, one line of
    ``advice`` naming the fix, and the measured numbers that triggered it in ``evidence``."""

    code: str
    severity: Severity
    message: str
    advice: str
    evidence: dict[str, Any] = field(default_factory=dict)
    layer: str | None = None
    step: int | None = None

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown finding code {self.code!r}; known: {', '.join(CODES)}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(**data)


class Diagnosis:
    """The findings of ``babysit.diagnose``, most severe first.

    ``codes`` holds every code (all severities); ``ok`` is True when no finding is an error.
    """

    def __init__(self, findings: Iterable[Finding] = ()) -> None:
        order = {s: i for i, s in enumerate(SEVERITIES)}
        self.findings: list[Finding] = sorted(findings, key=lambda f: order[f.severity])

    @property
    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.findings)

    def __len__(self) -> int:
        return len(self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": 1, "ok": self.ok, "findings": [f.to_dict() for f in self.findings]}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **{"indent": 2, **kwargs})

    def __repr__(self) -> str:
        counts = ", ".join(f"{sum(f.severity == s for f in self.findings)} {s}" for s in SEVERITIES)
        return f"Diagnosis({counts}; codes={sorted(self.codes)})"

    def _repr_html_(self) -> str:
        colors = {"error": "#b00020", "warning": "#a05a00", "info": "#335"}
        rows = "".join(
            f"<tr><td style='color:{colors[f.severity]}'><b>{escape(f.severity)}</b></td>"
            f"<td><code>{escape(f.code)}</code></td><td>{escape(f.message)}</td>"
            f"<td>{escape(f.advice)}</td></tr>"
            for f in self.findings
        )
        head = "<tr><th>severity</th><th>code</th><th>finding</th><th>advice</th></tr>"
        return f"<table>{head}{rows}</table>" if rows else "<p>No findings: all checks passed.</p>"


def finding(
    code: str,
    message: str,
    advice: str,
    evidence: Mapping[str, Any] | None = None,
    *,
    layer: str | None = None,
    severity: str | None = None,
) -> Finding:
    """A :class:`Finding` with the code's default severity unless told otherwise.

    Every check and monitor builds its findings here, so evidence is always JSON-ready: plain
    types, tensors as lists, floats rounded to 6 significant digits.
    """
    return Finding(
        code=code,
        severity=severity or CODES[code][0],
        message=message,
        advice=advice,
        evidence=_plain(dict(evidence or {})),
        layer=layer,
    )


def known_codes(codes: str | Iterable[str], *, name: str = "ignore") -> frozenset[str]:
    """``codes`` as a set, each checked against :data:`CODES`.

    A ``ValueError`` names every unknown code with its closest known ones (a typo such as
    ``DEAD_RELUS`` would otherwise silence nothing, silently). ``diagnose`` and ``fit`` both
    check ``ignore=`` here.
    """
    found = frozenset([codes] if isinstance(codes, str) else codes)
    unknown = sorted(c for c in found if c not in CODES)
    if unknown:
        hints = []
        for code in unknown:
            close = difflib.get_close_matches(str(code).upper(), CODES, n=3, cutoff=0.6)
            hints.append(f"{code!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ValueError(
            f"{name} names unknown finding codes: {'; '.join(hints)}. Known codes: "
            f"{', '.join(CODES)} (babysit explain CODE describes one)"
        )
    return found


def _plain(value: Any) -> Any:
    """Evidence as JSON-ready plain types (floats rounded to 6 significant digits)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value
