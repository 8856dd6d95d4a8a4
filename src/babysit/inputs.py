"""What the examples and targets must look like: one set of checks for every entry point.

``fit``, ``lr_find`` and the search (through ``fit``) refuse data that cannot train, with one
message per mistake that names the entry point and the fix, before torch fails obscurely
(``Target 6 is out of bounds``, ``mat1 and mat2 shapes cannot be multiplied``, ``expected
scalar type Long but found Int``) or trains silently on nonsense. ``diagnose`` reads its probe
batch through the same :func:`babysit.batches.probe_examples` and :func:`as_labels`, and
reports the same problems (:func:`target_problem`) as findings (``DATA_NAN``,
``LABELS_OUT_OF_RANGE``, ``LABELS_NOT_INTEGER``, ``FORWARD_FAILED``): finding such mistakes is
its job.

The rules depend on the task (:class:`babysit.tasks.Task`):

- classification: integer labels of any dtype are widened to int64 (:func:`as_labels`); they
  lie in ``[0, C)`` (``C`` the output's size along ``class_dim``), except positions equal to
  the loss's ``ignore_index``; the output is the labels' shape with the class dimension added
  (``(N, C)`` for ``(N,)``, ``(N, C, T)`` for ``(N, T)``); float targets of the output's shape
  are class probabilities (non-negative, summing to 1 over the classes); other float targets
  are a mistake (``y.long()``). One output (``C = 1``) is refused: softmax over one class is 1
  whatever the model computes, so cross-entropy is exactly 0 and nothing trains;
- multilabel: float targets in ``[0, 1]`` of the output's shape;
- regression with an element-wise loss (MSE, L1, Huber, SmoothL1): the output and the targets
  have one shape (``(N, 1)`` against ``(N,)`` would broadcast to ``(N, N)``);

and for every loss: inputs are finite and the loss is a scalar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .modes import eval_mode
from .outputs import read_output
from .tasks import CLASSIFICATION_LOSSES, Task

__all__ = [
    "CLASSIFICATION_LOSSES",
    "TargetProblem",
    "as_labels",
    "check_examples",
    "check_loss",
    "check_lr_find_data",
    "check_targets",
    "first_forward",
    "is_classification",
    "target_problem",
]

_CE_HINT = (
    "cross-entropy wants logits of shape (batch, classes) and integer class indices of "
    "shape (batch,); for regression pass loss_fn=torch.nn.MSELoss()"
)
_ELEMENTWISE = (nn.MSELoss, nn.L1Loss, nn.HuberLoss, nn.SmoothL1Loss)
_CLASSIFICATION = Task("classification")


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


def check_examples(
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    name: str,
    labels: bool,
    ignore_index: int | None = None,
) -> None:
    """NaN/Inf inputs, and negative labels when ``labels`` (class indices), before any step.

    ``name`` says which data (``"data"``, ``"val"``, ``"lr_find data"``); labels equal to
    ``ignore_index`` (the loss skips them) are allowed.
    """
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            row = int((~torch.isfinite(x.reshape(len(x), -1))).any(1).nonzero()[0])
            raise ValueError(
                f"{name}: X contains {bad} NaN/Inf values (first in example {row}); training "
                "on them makes the loss NaN. Impute or drop those examples first"
            )
    if not labels or not isinstance(y, torch.Tensor) or y.is_floating_point() or not len(y):
        return
    counted = y if ignore_index is None else y[y != ignore_index]
    if counted.numel() and int(counted.min()) < 0:
        also = "" if ignore_index is None else f" (or the loss's ignore_index={ignore_index})"
        raise ValueError(
            f"{name}: labels must be class indices >= 0{also} for cross-entropy, found "
            f"{int(counted.min())}; to skip positions pass nn.CrossEntropyLoss(ignore_index=...)"
        )


@dataclass(frozen=True)
class TargetProblem:
    """Why targets do not fit the output and the task: the finding code ``diagnose`` reports
    it under (``None``: the loss itself fails, reported as such), the message (which names the
    fix) and plain-JSON evidence."""

    code: str | None
    message: str
    evidence: dict[str, Any]


def target_problem(
    output: Any, target: Any, task: Task | None = None, loss_fn: Any = None
) -> TargetProblem | None:
    """The first way ``target`` does not fit ``output`` under ``task`` (None when it fits, or
    when the shapes cannot be judged). ``task`` defaults to classification."""
    if not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor):
        return None
    task = task or _CLASSIFICATION
    if task.kind == "classification":
        return _classification_problem(output, target, task)
    if task.kind == "multilabel":
        return _multilabel_problem(output, target)
    if task.kind == "regression" and (loss_fn is None or isinstance(loss_fn, _ELEMENTWISE)):
        return _regression_problem(output, target)
    return None


def _classification_problem(out: torch.Tensor, y: torch.Tensor, task: Task) -> TargetProblem | None:
    shape, given = tuple(out.shape), tuple(y.shape)
    if out.dim() < 2:
        return TargetProblem(
            None,
            f"the model outputs shape {shape}, one number per example, but the task is "
            f"classification: {_CE_HINT}; for a binary yes/no with one output pass "
            "loss_fn=nn.BCEWithLogitsLoss() (task='multilabel')",
            {"output_shape": list(shape), "target_shape": list(given)},
        )
    dim = task.class_dim % out.dim()
    classes = out.shape[dim]
    if y.is_floating_point() or y.is_complex():
        if y.shape != out.shape:
            return TargetProblem(
                "LABELS_NOT_INTEGER",
                f"targets are {y.dtype} of shape {given} but the model outputs {shape}: class "
                f"labels must be integers (y.long()); {_CE_HINT}",
                {"output_shape": list(shape), "target_shape": list(given), "dtype": str(y.dtype)},
            )
        if classes < 2:
            return _one_output(shape, given, y)
        sums = y.double().sum(dim)
        if bool((y < 0).any()) or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            return TargetProblem(
                "LABELS_NOT_INTEGER",
                f"float targets of the output's shape {shape} are read as class probabilities, "
                f"but these are not (values {float(y.min()):.3g}..{float(y.max()):.3g}, summing "
                f"to {float(sums.min()):.3g}..{float(sums.max()):.3g} over the classes): pass "
                "integer class indices (y.long()), probabilities (e.g. softmax(teacher / T)), "
                "or for independent yes/no targets loss_fn=nn.BCEWithLogitsLoss()",
                {"output_shape": list(shape), "min": float(y.min()), "max": float(y.max())},
            )
        return None
    expected = shape[:dim] + shape[dim + 1 :]
    if given != expected:
        return TargetProblem(
            None,
            f"the model outputs shape {shape} (classes along dimension {dim}) but the targets "
            f"have shape {given}; integer labels must have shape {expected}: {_CE_HINT}",
            {"output_shape": list(shape), "target_shape": list(given), "class_dim": dim},
        )
    if classes < 2:
        return _one_output(shape, given, y)
    counted = y if task.ignore_index is None else y[y != task.ignore_index]
    if not counted.numel():
        return None
    low, high = int(counted.min()), int(counted.max())
    if low >= 0 and high < classes:
        return None
    bad = int(((counted < 0) | (counted >= classes)).sum())
    if high >= classes:
        message = (
            f"label {high} in the first batch, but the model outputs {classes} classes (labels "
            "must lie in [0, classes)): widen the output layer"
        )
    else:
        ignored = "" if task.ignore_index is None else f" nor the ignore_index {task.ignore_index}"
        message = (
            f"label {low} is negative and not a class{ignored}: labels must lie in "
            f"[0, {classes}); to skip positions pass nn.CrossEntropyLoss(ignore_index={low})"
        )
    return TargetProblem(
        "LABELS_OUT_OF_RANGE",
        message,
        {
            "min_label": low,
            "max_label": high,
            "num_classes": classes,
            "out_of_range": bad,
            "ignore_index": task.ignore_index,
        },
    )


def _one_output(shape: tuple, given: tuple, y: torch.Tensor) -> TargetProblem:
    return TargetProblem(
        "LABELS_NOT_INTEGER" if y.is_floating_point() else "LABELS_OUT_OF_RANGE",
        f"the model has one output (shape {shape}) and the loss is cross-entropy: softmax over "
        "one class is always 1, so the loss is exactly 0 and nothing trains. For real-valued "
        "targets pass task='regression' (loss_fn=nn.MSELoss()); for a binary yes/no pass "
        "loss_fn=nn.BCEWithLogitsLoss() (task='multilabel')",
        {"output_shape": list(shape), "target_shape": list(given), "dtype": str(y.dtype)},
    )


def _multilabel_problem(out: torch.Tensor, y: torch.Tensor) -> TargetProblem | None:
    shape, given = tuple(out.shape), tuple(y.shape)
    if y.shape != out.shape:
        return TargetProblem(
            None,
            f"multilabel targets must have the output's shape {shape}, got {given}: one "
            "0/1 target per output (binary: an (N, 1) output and y.float().unsqueeze(1))",
            {"output_shape": list(shape), "target_shape": list(given)},
        )
    if not y.is_floating_point():
        return TargetProblem(
            None,
            f"multilabel targets are {y.dtype}, but BCE takes float targets: pass y.float()",
            {"dtype": str(y.dtype)},
        )
    if y.numel() and (float(y.min()) < 0 or float(y.max()) > 1):
        return TargetProblem(
            "LABELS_OUT_OF_RANGE",
            f"multilabel targets must lie in [0, 1] (one probability per output), seen "
            f"{float(y.min()):.3g}..{float(y.max()):.3g}; for real-valued targets pass "
            "task='regression' (loss_fn=nn.MSELoss())",
            {"min": float(y.min()), "max": float(y.max())},
        )
    return None


def _regression_problem(out: torch.Tensor, y: torch.Tensor) -> TargetProblem | None:
    """Shapes that broadcast to a third shape: the loss runs, silently comparing every output
    with every target (torch only warns). Shapes that do not broadcast make the loss raise."""
    if out.shape == y.shape:
        return None
    try:
        both = torch.broadcast_shapes(out.shape, y.shape)
    except RuntimeError:
        return None  # the loss raises, and the entry point names it
    if both == out.shape and y.numel() == 1:
        return None  # a scalar target: broadcasting is what is meant
    shapes = {"output_shape": list(out.shape), "target_shape": list(y.shape)}
    if out.dim() and y.dim() and out.shape[0] != y.shape[0]:
        return TargetProblem(
            None,
            f"the model outputs shape {tuple(out.shape)} for targets of shape "
            f"{tuple(y.shape)}: {out.shape[0]} output rows for {y.shape[0]} targets, so a "
            "reshape mixes examples across the batch and the loss only broadcasts; keep the "
            "batch dimension first (x.flatten(1), not x.view(-1, k))",
            shapes,
        )
    fix = ""
    if out.dim() == y.dim() + 1 and out.shape[-1] == 1:
        fix = " (y.unsqueeze(-1), or output.squeeze(-1))"
    elif y.dim() == out.dim() + 1 and y.shape[-1] == 1:
        fix = " (y.squeeze(-1))"
    return TargetProblem(
        None,
        f"the model outputs shape {tuple(out.shape)} but the targets have shape "
        f"{tuple(y.shape)}: the element-wise loss would broadcast them to {tuple(both)} and "
        f"compare every output with every target. Give both one shape{fix}",
        shapes,
    )


def check_targets(output: Any, target: Any, task: Task | None = None, loss_fn: Any = None) -> None:
    """The task's shape and range rules on one batch's output and targets (``ValueError``)."""
    problem = target_problem(output, target, task, loss_fn)
    if problem is not None:
        raise ValueError(problem.message)


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
    task: Task | None = None,
) -> torch.Tensor:
    """Everything ``fit`` checks before its first step, for ``lr_find``'s examples.

    ``model`` is the copy that will be swept (on the device of ``x``): one forward of the first
    ``batch_size`` examples runs in eval mode without gradients (no dropout draw, no batch-norm
    update), then the targets (by ``task``'s rules, default: classification when the loss is a
    classification loss) and the loss are checked as ``fit`` checks them. Returns ``y``.
    """
    if y is None:
        raise ValueError(
            "lr_find needs targets: pass data as (X, y) or a loader yielding (x, y) batches"
        )
    if task is None:
        task = _CLASSIFICATION if is_classification(loss_fn) else Task("custom")
    labels = task.kind == "classification"
    check_examples(x, y, name="lr_find data", labels=labels, ignore_index=task.ignore_index)
    with eval_mode(model), torch.no_grad():
        output = read_output(first_forward(model, x[:batch_size], entry="lr_find"))[0]
        check_targets(output, y[:batch_size], task, loss_fn)
        try:
            loss = loss_fn(output, y[:batch_size])
        except RuntimeError as err:
            raise RuntimeError(
                f"lr_find: loss_fn raised on the first batch (output {tuple(output.shape)}, "
                f"targets {tuple(y.shape)} {y.dtype}): {err}"
            ) from err
        check_loss(loss)
    return y
