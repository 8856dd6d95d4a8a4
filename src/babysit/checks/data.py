"""Data checks: NaN/Inf, centring and scale (lecture: zero-centre, normalize), labels and
targets as the task reads them (:mod:`babysit.tasks`), classes.

They read the probe batch; the labels check also reads the model's output (the number of
classes, the shape the targets must have).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..findings import Finding
from ..inputs import TargetProblem, target_problem
from ._base import CannotCheck, Context, check, finding


@check("data_finite", codes=["DATA_NAN"])
def data_finite(ctx: Context) -> list[Finding]:
    """Inputs must be finite: one NaN poisons every loss and gradient it touches."""
    x, scope = _whole_inputs(ctx)
    if not x.is_floating_point():
        return []
    bad = ~torch.isfinite(x)
    count = int(bad.sum())
    if not count:
        return []
    where = bad.reshape(len(x), -1).nonzero()[:5].tolist()
    return [
        finding(
            "DATA_NAN",
            f"{count} of {x.numel()} input values in {scope} are NaN or Inf "
            f"(first (example, feature) positions: {where})",
            "clean the data (torch.nan_to_num, drop or impute the examples) before training",
            {"nonfinite": count, "total": x.numel(), "positions": where},
        )
    ]


def _whole_inputs(ctx: Context) -> tuple[torch.Tensor, str]:
    """All inputs when the user passed tensors or arrays (cheap to scan), else the probe batch."""
    data = ctx.data
    if isinstance(data, tuple | list) and data and hasattr(data[0], "shape"):
        return torch.as_tensor(data[0]), "the data"
    if isinstance(data, torch.Tensor):
        return data, "the data"
    return ctx.x, f"the probe batch ({len(ctx.x)} examples)"


@check("data_scale", codes=["DATA_NOT_CENTERED", "DATA_SCALE"])
def data_scale(ctx: Context) -> list[Finding]:
    """Zero-centred, similarly scaled inputs (lecture: subtract the mean, maybe divide by std)."""
    x = ctx.x
    if not x.is_floating_point() or len(x) < 2 or not torch.isfinite(x).all():
        return []
    flat = x.reshape(len(x), -1).double()
    means, stds = flat.mean(0), flat.std(0)
    rms_mean = float(means.pow(2).mean().sqrt())
    rms_std = float(stds.pow(2).mean().sqrt())
    rms = float(flat.pow(2).mean().sqrt())
    varying = stds[stds > 1e-12 * max(rms, 1e-30)]
    spread = float(varying.max() / varying.median()) if len(varying) else 1.0
    found = []
    ratio = rms_mean / max(rms_std, 1e-30)
    if ratio > ctx.thresholds["data_center_ratio"]:
        found.append(
            finding(
                "DATA_NOT_CENTERED",
                f"input features are far from zero-centred: their means (rms {rms_mean:.3g}) "
                f"exceed their spread (rms std {rms_std:.3g}) {ratio:.1f}×",
                "fit babysit.data.ZeroCenter() or Standardize() on the training set "
                "and transform every split",
                {"rms_feature_mean": rms_mean, "rms_feature_std": rms_std, "ratio": ratio},
            )
        )
    if rms > ctx.thresholds["data_rms_scale"] or spread > ctx.thresholds["data_std_spread"]:
        found.append(
            finding(
                "DATA_SCALE",
                f"input values are badly scaled: rms {rms:.3g}, features' std ranging "
                f"{spread:.3g}× around their median (e.g. raw 0-255 pixels)",
                "fit babysit.data.Standardize() on the training set (or divide pixels by 255 "
                "and zero-centre them)",
                {"rms": rms, "std_spread": spread, "max_abs": float(flat.abs().max())},
            )
        )
    return found


@check(
    "labels",
    codes=["LABELS_NOT_INTEGER", "LABELS_OUT_OF_RANGE", "LOSS_FAILED"],
    needs_labels=True,
)
def labels(ctx: Context) -> list[Finding]:
    """Targets the task can read (:func:`babysit.inputs.target_problem`): classification labels
    are integers in [0, C) or the loss's ``ignore_index``, C the output's size along
    ``class_dim``, or class probabilities of the output's shape; multilabel targets lie in
    [0, 1]. Shapes that the loss would fail on or silently broadcast (regression ``(N, 1)``
    against ``(N,)``): when the loss ran, it broadcast them, an error ``LOSS_FAILED`` naming the
    shapes; when it raised, ``loss_runs`` reports it and this check is skipped (warning)."""
    if ctx.task.kind == "custom":
        raise custom_skip(ctx, "the targets' format is unknown")
    if ctx.y is None:
        return []
    out = ctx.output()  # computed here when the check runs alone; CannotCheck if it failed
    task = ctx.task
    if ctx.num_classes and task.num_classes is None:
        task = replace(task, num_classes=ctx.num_classes)
    problem = target_problem(out, ctx.y, task, ctx.loss_fn)
    if problem is None and task.kind == "classification" and task.num_classes:
        problem = _beyond_num_classes(ctx.y, task)
    if problem is not None and problem.code is None:  # shapes the loss fails on or broadcasts
        if ctx.probe().loss_error is None:
            # The loss ran: it broadcast the shapes and trains every output against every
            # target. Certainly wrong, so an error, not a skip (the loss "cannot be computed
            # on the model's output" as meant; loss_runs names a loss that raised).
            return [
                finding(
                    "LOSS_FAILED",
                    f"the loss runs but compares the wrong pairs: {problem.message}",
                    "give the output and the targets one shape before the loss; for outputs "
                    "and targets that need reshaping, pass forward=lambda model, batch: "
                    "(output, target)",
                    {**problem.evidence, "task": ctx.task.to_dict(), "broadcast": True},
                )
            ]
        raise CannotCheck(f"the targets do not fit the output: {problem.message}", warning=True)
    if problem is None:
        return []
    advice = (
        "relabel the classes to 0..C-1 (e.g. y - y.min()), give the model's last layer one "
        "output per class, or mark skipped positions with the loss's ignore_index"
        if problem.code == "LABELS_OUT_OF_RANGE"
        else "cast class labels with y.long(); for regression pass task='regression' (or "
        "loss_fn=nn.MSELoss()) to diagnose/fit"
    )
    evidence = {**problem.evidence, "task": ctx.task.to_dict()}
    if ctx.y.is_floating_point():
        y = ctx.y
        evidence["whole_values"] = bool(torch.isfinite(y).all() and (y == y.round()).all())
        evidence["example"] = y.reshape(-1)[:5].tolist()
    return [finding(problem.code, problem.message, advice, evidence)]


def _beyond_num_classes(y: torch.Tensor, task) -> TargetProblem | None:
    """Labels >= ``num_classes`` when the user named fewer classes than the output has."""
    if y.is_floating_point():
        return None
    counted = y if task.ignore_index is None else y[y != task.ignore_index]
    if not counted.numel() or int(counted.max()) < task.num_classes:
        return None
    return TargetProblem(
        "LABELS_OUT_OF_RANGE",
        f"label {int(counted.max())} seen, but num_classes={task.num_classes} (labels must "
        f"lie in [0, {task.num_classes}))",
        {"max_label": int(counted.max()), "num_classes": task.num_classes},
    )


def custom_skip(ctx: Context, what: str) -> CannotCheck:
    """A task-dependent check on a custom loss: a warning when the task was inferred (the user
    may not know), info when the user said ``task="custom"``."""
    return CannotCheck(
        f"{what} for the custom loss {type(ctx.loss_fn).__name__}: pass task='classification'"
        ", 'multilabel' or 'regression' (or a standard loss_fn) to run it",
        warning=not ctx.cache.get("task_given", False),
    )


@check("target_scale", codes=["TARGET_SCALE"], needs_labels=True)
def target_scale(ctx: Context) -> list[Finding]:
    """Regression targets near unit scale (lecture: "normalize the data" holds for the targets
    too): the loss, its gradients and so the useful learning rate scale with the targets'
    square (MSE), so targets of scale 1000 need a learning rate ~1e6 times smaller, and a
    freshly initialised network (outputs ~N(0, 1)) starts far from them."""
    y = ctx.y
    if ctx.task.kind != "regression" or not isinstance(y, torch.Tensor):
        return []
    if not y.is_floating_point() or len(y) < 2:
        return []
    finite = y[torch.isfinite(y)].double()
    if finite.numel() < 2:
        return []
    mean, std = float(finite.mean()), float(finite.std())
    rms = float(finite.pow(2).mean().sqrt())
    high, low = ctx.thresholds["target_scale_high"], ctx.thresholds["target_scale_low"]
    if low <= rms <= high:
        return []
    return [
        finding(
            "TARGET_SCALE",
            f"regression targets are far from unit scale: rms {rms:.3g} (mean {mean:.3g}, "
            f"std {std:.3g}); the network's outputs start near N(0, 1)",
            f"standardize the targets (y - {mean:.3g}) / {std:.3g} for training and undo it "
            "on predictions, or set the last layer's bias to the targets' mean",
            {"rms": rms, "mean": mean, "std": std, "task": ctx.task.to_dict()},
        )
    ]


@check("class_balance", codes=["CLASS_IMBALANCE", "TOO_FEW_EXAMPLES"])
def class_balance(ctx: Context) -> list[Finding]:
    """Enough examples, and no class far rarer than the others (info)."""
    found = []
    enough = max(ctx.thresholds["min_examples"], ctx.batch_size)
    if ctx.n_examples < enough:
        found.append(
            finding(
                "TOO_FEW_EXAMPLES",
                f"only {ctx.n_examples} examples: fewer than the batch size ({ctx.batch_size}) "
                f"or the ~{int(ctx.thresholds['min_examples'])} the checks need",
                "give more data, or a smaller batch size",
                {"n_examples": ctx.n_examples, "batch_size": ctx.batch_size},
            )
        )
    y = ctx.y
    if not ctx.classification or y is None or y.is_floating_point() or len(y) < 20:
        return found
    counts = torch.bincount(y[y >= 0].long())
    counts = counts[counts > 0]
    if len(counts) >= 2 and float(counts.min()) < ctx.thresholds["class_imbalance"] * float(
        counts.max()
    ):
        found.append(
            finding(
                "CLASS_IMBALANCE",
                f"the rarest class has {int(counts.min())} examples in the probe batch, the "
                f"commonest {int(counts.max())}",
                "watch per-class accuracy; consider class weights (nn.CrossEntropyLoss(weight=))"
                " or resampling",
                {"min_count": int(counts.min()), "max_count": int(counts.max())},
            )
        )
    return found
