"""What the model's output means: the task every check, monitor and metric judges.

A loss value alone does not say whether training is right: "loss 2.3 at init" is perfect for a
10-class classifier and absurd for a regression on standardized targets. :class:`Task` says how
to read the output and the targets, and :func:`resolve_task` derives it from what the user
passed (``task="auto"`` reads the loss object; see docs/architecture.md, "Data: tasks, batches
and ``forward=``"):

========================  =====================================================================
kind                      output and targets
========================  =====================================================================
``"classification"``      scores (logits, or log-probabilities for ``NLLLoss``) with the classes
                          along ``class_dim`` (``(N, C)``, sequences ``(N, C, T)``); targets are
                          integer class indices (one dimension fewer; ``ignore_index`` marks
                          positions that do not count) or class probabilities of the output's
                          shape (soft targets, distillation)
``"multilabel"``          one independent yes/no per output (BCE on logits; binary = one
                          output); targets in ``[0, 1]`` of the output's shape
``"regression"``          real-valued outputs compared with real-valued targets
``"custom"``              the loss only: checks that need to know what the output means are
                          skipped, and said to be
========================  =====================================================================

``"auto"`` infers: ``None`` (the default cross-entropy), ``CrossEntropyLoss``, ``NLLLoss`` ->
classification, with ``ignore_index`` and ``label_smoothing`` read from the loss object;
``BCEWithLogitsLoss``/``BCELoss`` -> multilabel; ``MSELoss``, ``L1Loss``, ``HuberLoss``,
``SmoothL1Loss``, ``GaussianNLLLoss`` -> regression; anything else -> custom. A task given by
name or as a :class:`Task` that contradicts the loss (``task="regression"`` with
cross-entropy) or the targets (``task="classification"`` on real-valued targets) is a
``ValueError`` naming what to pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

__all__ = [
    "KINDS",
    "Task",
    "default_loss",
    "hits",
    "infer_kind",
    "resolve_task",
]

KINDS = ("classification", "multilabel", "regression", "custom")

CLASSIFICATION_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss)
MULTILABEL_LOSSES = (nn.BCEWithLogitsLoss, nn.BCELoss)
REGRESSION_LOSSES = (nn.MSELoss, nn.L1Loss, nn.HuberLoss, nn.SmoothL1Loss, nn.GaussianNLLLoss)
_LOSS_FOR = {
    "classification": "nn.CrossEntropyLoss()",
    "multilabel": "nn.BCEWithLogitsLoss()",
    "regression": "nn.MSELoss()",
}


@dataclass(frozen=True)
class Task:
    """How to read a model's output and its targets.

    Args:
        kind: ``"classification"``, ``"multilabel"``, ``"regression"`` or ``"custom"``.
        num_classes: classification: the number of classes (default: the output's size along
            ``class_dim``).
        class_dim: classification: the output dimension that holds the classes (1: ``(N, C)``
            and ``(N, C, T)``, as cross-entropy wants them).
        ignore_index: classification: a target value that marks positions not to count (as
            ``nn.CrossEntropyLoss(ignore_index=...)``; ``task="auto"`` reads it from the loss).
        label_smoothing: classification: the loss's label smoothing ε (read from the loss):
            the best a model can reach is then the entropy of the smoothed targets, not 0.
    """

    kind: str
    num_classes: int | None = None
    class_dim: int = 1
    ignore_index: int | None = None
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"unknown task kind {self.kind!r}; pass one of {', '.join(map(repr, KINDS))} "
                "(or task='auto' to infer it from loss_fn)"
            )
        if self.num_classes is not None and (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 1
        ):
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")
        if isinstance(self.class_dim, bool) or not isinstance(self.class_dim, int):
            raise ValueError(f"class_dim must be an int, got {self.class_dim!r}")
        if self.class_dim == 0:
            raise ValueError(
                "class_dim=0 is the batch dimension; the classes are along dimension 1 for "
                "(N, C) and (N, C, T) outputs (cross-entropy's layout)"
            )
        if self.ignore_index is not None and (
            isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, int)
        ):
            raise ValueError(f"ignore_index must be an int or None, got {self.ignore_index!r}")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for ``config.json`` and findings' evidence."""
        return asdict(self)

    def __str__(self) -> str:
        extra = [
            f"{k}={v!r}"
            for k, v in self.to_dict().items()
            if k != "kind" and v != Task.__dataclass_fields__[k].default
        ]
        return f"{self.kind}" + (f" ({', '.join(extra)})" if extra else "")


def infer_kind(loss_fn: Any) -> str:
    """The task kind a loss implies: ``None`` is the default cross-entropy."""
    if loss_fn is None or isinstance(loss_fn, CLASSIFICATION_LOSSES):
        return "classification"
    if isinstance(loss_fn, MULTILABEL_LOSSES):
        return "multilabel"
    if isinstance(loss_fn, REGRESSION_LOSSES):
        return "regression"
    return "custom"


def default_loss(task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss a task trains with when ``loss_fn`` is not given."""
    if task.kind == "classification":
        return nn.CrossEntropyLoss(
            ignore_index=-100 if task.ignore_index is None else task.ignore_index,
            label_smoothing=task.label_smoothing,
        )
    if task.kind == "multilabel":
        return nn.BCEWithLogitsLoss()
    if task.kind == "regression":
        return nn.MSELoss()
    raise ValueError("task='custom' needs a loss_fn: pass loss_fn=your_loss(output, target)")


def resolve_task(task: Any, loss_fn: Any, targets: torch.Tensor | None = None) -> Task:
    """The :class:`Task` for ``task`` (``"auto"``, a kind name or a :class:`Task`).

    ``"auto"`` reads the kind, ``ignore_index`` and ``label_smoothing`` from ``loss_fn``. A task
    given explicitly is checked against the loss (a known loss of another kind, a different
    ``ignore_index``) and against ``targets`` when given (real-valued targets for
    classification, targets outside [0, 1] for multilabel): one ``ValueError`` naming what to
    pass. ``targets`` (optional) are a sample of the targets, e.g. the probe batch's.
    """
    implied = infer_kind(loss_fn)
    if task is None or (isinstance(task, str) and task.strip().lower() == "auto"):
        return _from_loss(Task(implied), loss_fn)
    if isinstance(task, str):
        task = Task(task.strip().lower())
    elif not isinstance(task, Task):
        raise TypeError(
            f"task must be 'auto', a kind name ({', '.join(KINDS)}) or babysit.Task(...), "
            f"got {type(task).__name__}"
        )
    if loss_fn is not None and implied != "custom" and task.kind not in (implied, "custom"):
        raise ValueError(
            f"task={task.kind!r} contradicts loss_fn={type(loss_fn).__name__}(), which is a "
            f"{implied} loss: pass task={implied!r} (or task='auto'), or "
            f"loss_fn={_LOSS_FOR.get(task.kind, 'a loss of that task')} for a {task.kind} task"
        )
    if loss_fn is None and task.kind == "custom":
        raise ValueError("task='custom' needs a loss_fn: pass loss_fn=your_loss(output, target)")
    task = _from_loss(task, loss_fn)
    if targets is not None:
        _check_against_targets(task, targets)
    return task


def _from_loss(task: Task, loss_fn: Any) -> Task:
    """Fill ``ignore_index`` and ``label_smoothing`` from a classification loss object (no
    loss: the default cross-entropy, which ignores -100 as torch's does)."""
    if task.kind == "classification" and loss_fn is None:
        loss_fn = default_loss(task)
    if task.kind != "classification" or not isinstance(loss_fn, CLASSIFICATION_LOSSES):
        return task
    ignore = int(loss_fn.ignore_index)
    if task.ignore_index is not None and task.ignore_index != ignore:
        name = type(loss_fn).__name__
        raise ValueError(
            f"Task(ignore_index={task.ignore_index}) contradicts loss_fn={name}(ignore_index="
            f"{ignore}): the loss decides which targets are ignored; pass "
            f"loss_fn=nn.{name}(ignore_index={task.ignore_index})"
        )
    smoothing = float(getattr(loss_fn, "label_smoothing", 0.0))
    if task.label_smoothing not in (0.0, smoothing):
        raise ValueError(
            f"Task(label_smoothing={task.label_smoothing}) contradicts the loss's "
            f"label_smoothing={smoothing}: set it on the loss (nn.CrossEntropyLoss("
            f"label_smoothing={task.label_smoothing}))"
        )
    return replace(task, ignore_index=ignore, label_smoothing=smoothing)


def _check_against_targets(task: Task, y: torch.Tensor) -> None:
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or not y.numel():
        return
    finite = y[torch.isfinite(y)]
    if not finite.numel():
        return
    low, high = float(finite.min()), float(finite.max())
    if task.kind in ("classification", "multilabel") and (low < 0 or high > 1):
        raise ValueError(
            f"task={task.kind!r} contradicts the targets: they are real numbers in "
            f"[{low:.3g}, {high:.3g}], neither class indices (integers; y.long()) nor "
            "probabilities in [0, 1]; for real-valued targets pass task='regression' (loss "
            "nn.MSELoss())"
        )


def hits(
    output: torch.Tensor, target: torch.Tensor, task: Task, *, probabilities: bool = False
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-prediction correctness for accuracy: ``(correct, counted)`` boolean tensors of one
    shape, or ``None`` when accuracy does not apply (regression, custom, shapes that do not
    fit).

    Classification: the argmax along ``class_dim`` against integer labels (positions equal to
    ``ignore_index`` not counted) or against the argmax of probability targets. Multilabel:
    each output thresholded (logit > 0, or probability > 0.5 when ``probabilities``, as for
    ``BCELoss``) against targets > 0.5; binary with one output is the same rule.
    """
    if not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor):
        return None
    if task.kind == "classification" and output.dim() >= 2:
        dim = task.class_dim % output.dim()
        pred = output.detach().argmax(dim)
        if target.is_floating_point():
            if target.shape != output.shape:
                return None
            target = target.argmax(dim)
        if pred.shape != target.shape:
            return None
        counted = (
            torch.ones_like(target, dtype=torch.bool)
            if task.ignore_index is None
            else target != task.ignore_index
        )
        return pred == target, counted
    if task.kind == "multilabel" and output.shape == target.shape:
        pred = output.detach() > (0.5 if probabilities else 0.0)
        return pred == (target > 0.5), torch.ones_like(pred)
    return None
