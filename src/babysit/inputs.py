"""What the examples and targets must look like: one set of checks for every entry point.

``fit``, ``lr_find`` and the search (through ``fit``) refuse data that cannot train, with one
message per mistake that names the entry point and the fix, before torch fails obscurely
(``Target 6 is out of bounds``, ``mat1 and mat2 shapes cannot be multiplied``, ``expected
scalar type Long but found Int``). ``diagnose`` reads its probe batch through the same
:func:`babysit.batches.probe_examples` and :func:`as_labels`, but reports bad data as findings
(``DATA_NAN``, ``LABELS_OUT_OF_RANGE``, ``FORWARD_FAILED``): finding such mistakes is its job.

The rules, for cross-entropy style losses (``CrossEntropyLoss``, ``NLLLoss``) on class labels:

- labels of any integer dtype are accepted and widened to int64 (:func:`as_labels`);
- labels lie in ``[0, C)`` where ``C`` is the model's output width;
- the output is ``(batch, C, ...)`` and the labels ``(batch, ...)`` (one dimension fewer);
  float targets of the output's shape are class probabilities (allowed), other float targets
  are a mistake (``y.long()``);

and for every loss: inputs are finite and the loss is a scalar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .outputs import read_output

__all__ = [
    "CLASSIFICATION_LOSSES",
    "as_labels",
    "check_examples",
    "check_loss",
    "check_lr_find_data",
    "check_targets",
    "first_forward",
    "is_classification",
]

CLASSIFICATION_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss)
_CE_HINT = (
    "cross-entropy wants logits of shape (batch, classes) and integer class indices of "
    "shape (batch,); for regression pass loss_fn=torch.nn.MSELoss()"
)


def is_classification(loss_fn: Any) -> bool:
    """Whether ``loss_fn`` takes class labels (``None`` means the default cross-entropy)."""
    return loss_fn is None or isinstance(loss_fn, CLASSIFICATION_LOSSES)


def as_labels(y: torch.Tensor) -> torch.Tensor:
    """Integer targets as int64, the only index dtype cross-entropy accepts; others unchanged.

    Widening an integer never changes a value, so this is safe for any loss.
    """
    if y.dtype in (torch.int64, torch.bool) or y.is_floating_point() or y.is_complex():
        return y
    return y.long()


def check_examples(x: torch.Tensor, y: torch.Tensor | None, *, name: str, labels: bool) -> None:
    """NaN/Inf inputs, and negative labels when ``labels`` (class indices), before any step.

    ``name`` says which data (``"data"``, ``"val"``, ``"lr_find data"``).
    """
    if x.is_floating_point():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            row = int((~torch.isfinite(x.reshape(len(x), -1))).any(1).nonzero()[0])
            raise ValueError(
                f"{name}: X contains {bad} NaN/Inf values (first in example {row}); training "
                "on them makes the loss NaN. Impute or drop those examples first"
            )
    if labels and y is not None and not y.is_floating_point() and len(y) and int(y.min()) < 0:
        raise ValueError(
            f"{name}: labels must be class indices >= 0 for cross-entropy, found {int(y.min())}"
        )


def check_targets(output: Any, target: Any) -> None:
    """Cross-entropy's shape and range rules on one batch's output and targets."""
    if not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor):
        return
    if target.is_floating_point() and target.shape != output.shape:
        raise ValueError(
            f"targets are {target.dtype} of shape {tuple(target.shape)} but the model outputs "
            f"{tuple(output.shape)}: class labels must be integers (y.long()); {_CE_HINT}"
        )
    if target.is_floating_point():
        return
    if output.dim() != target.dim() + 1 or output.shape[0] != target.shape[0]:
        raise ValueError(
            f"the model outputs shape {tuple(output.shape)} but the targets have shape "
            f"{tuple(target.shape)}: {_CE_HINT}"
        )
    top = int(target.max()) if target.numel() else 0
    if top >= output.shape[1]:
        raise ValueError(
            f"label {top} in the first batch, but the model outputs {output.shape[1]} "
            "classes (labels must lie in [0, classes)): widen the output layer"
        )


def check_loss(loss: Any) -> None:
    """The loss must be a scalar tensor (``reduction='mean'``)."""
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {shape}; use reduction='mean'")


def first_forward(model: nn.Module, x: torch.Tensor, *, entry: str) -> torch.Tensor:
    """``model(x)``, with the input's shape and dtype in the message when the model rejects it."""
    try:
        return model(x)
    except RuntimeError as err:
        raise RuntimeError(
            f"{entry}: the model raised on the first batch (x of shape {tuple(x.shape)}, "
            f"{x.dtype}): {err}. Check that the data's feature shape matches the model's input"
        ) from err


def check_lr_find_data(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    batch_size: int = 64,
) -> torch.Tensor:
    """Everything ``fit`` checks before its first step, for ``lr_find``'s examples.

    ``model`` is the copy that will be swept (on the device of ``x``): one forward of the first
    ``batch_size`` examples runs in eval mode without gradients (no dropout draw, no batch-norm
    update), then the targets and the loss are checked as ``fit`` checks them. Returns ``y``.
    """
    if y is None:
        raise ValueError(
            "lr_find needs targets: pass data as (X, y) or a loader yielding (x, y) batches"
        )
    labels = is_classification(loss_fn)
    check_examples(x, y, name="lr_find data", labels=labels)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = read_output(first_forward(model, x[:batch_size], entry="lr_find"))[0]
            if labels:
                check_targets(output, y[:batch_size])
            try:
                loss = loss_fn(output, y[:batch_size])
            except RuntimeError as err:
                raise RuntimeError(
                    f"lr_find: loss_fn raised on the first batch (output {tuple(output.shape)}, "
                    f"targets {tuple(y.shape)} {y.dtype}): {err}"
                ) from err
            check_loss(loss)
    finally:
        model.train(was_training)
    return y
