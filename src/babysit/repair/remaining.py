"""What ``fix`` cannot repair: a patch-like line naming the module and the change to make.

Some findings have no automatic remedy because the fix is in the user's code, not in a setting:
a ``view`` that mixes the batch, a wrong custom backward, labels out of range, parameters that
get no gradient, a model or loss that does not run. ``fix`` never reports them as fixed: each
stays in ``Repair.remaining`` with the line below, built from the finding's layer and advice.
"""

from __future__ import annotations

from ..findings import Finding
from .edit import show
from .result import Remaining

__all__ = ["BLOCKING", "CHANGES", "remaining", "remaining_line"]

# Errors under which no training run can be verified: nothing is tried until they are fixed.
BLOCKING = frozenset(
    {"FORWARD_FAILED", "LOSS_FAILED", "DATA_NAN", "LABELS_OUT_OF_RANGE", "LABELS_NOT_INTEGER"}
)

# code -> the change to make, where the finding's own advice is not specific enough
CHANGES: dict[str, str] = {
    "BATCH_DEPENDENCE": (
        "an operation mixes examples of the batch: replace view/reshape across the batch "
        "dimension with permute/transpose then flatten(1), or set batch_first to match the input"
    ),
    "GRADIENT_CHECK_FAILED": (
        "the custom autograd backward disagrees with finite differences: fix its backward, or "
        "drop the autograd.Function and let autograd differentiate forward"
    ),
    "PARAMS_WITHOUT_GRAD": (
        "these parameters get no gradient: remove the .detach()/no_grad on their path, use "
        "them in forward, or freeze them on purpose with requires_grad_(False)"
    ),
    "UNREGISTERED_PARAMS": (
        "tensors that require grad are not parameters of the model: keep layers in "
        "nn.ModuleList/nn.ModuleDict and tensors in nn.Parameter"
    ),
    "LABELS_OUT_OF_RANGE": (
        "labels outside [0, C): give the output layer C units, or relabel; padding must use "
        "the loss's ignore_index"
    ),
    "CANNOT_OVERFIT": (
        "the model cannot fit ~20 examples even after the repairs: check the loss, the labels "
        "and the model's capacity"
    ),
}


def remaining_line(f: Finding) -> str:
    """``"<where>: <change>"`` for one finding."""
    where = show(f.layer) if f.layer else "model"
    change = CHANGES.get(f.code) or f.advice or f.message
    if f.code in BLOCKING and f.message:  # what failed, then what to change
        change = f"{f.message.rstrip('.')}; {change}"
    return f"{where}: {change}"


def remaining(findings: list[Finding], reason: str) -> list[Remaining]:
    """Every warning/error finding of ``findings`` as a :class:`Remaining`."""
    out = []
    seen = set()
    for f in findings:
        if f.severity == "info" or (f.code, f.layer) in seen:
            continue
        seen.add((f.code, f.layer))
        out.append(Remaining(f.code, f.severity, remaining_line(f), reason))
    return out
