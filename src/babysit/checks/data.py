"""Data checks: NaN/Inf, centring and scale (lecture: zero-centre, normalize), labels, classes.

They read only the probe batch, before any forward pass.
"""

from __future__ import annotations

import torch

from ..findings import Finding
from ._base import Context, check, finding


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


@check("labels", codes=["LABELS_NOT_INTEGER", "LABELS_OUT_OF_RANGE"], needs_labels=True)
def labels(ctx: Context) -> list[Finding]:
    """Class labels must be integers in [0, C), C = the model's output width."""
    if not ctx.classification or ctx.y is None:
        return []
    y = ctx.y
    if y.is_floating_point() or y.is_complex():
        whole = bool(torch.isfinite(y).all() and (y == y.round()).all())
        return [
            finding(
                "LABELS_NOT_INTEGER",
                f"targets are {str(y.dtype).replace('torch.', '')} "
                + ("with whole values" if whole else "with fractional values")
                + " but the loss is a classification loss (it wants integer class indices)",
                "cast class labels with y.long(); for regression pass loss_fn=nn.MSELoss() "
                "(and metrics) to diagnose/fit",
                {"dtype": str(y.dtype), "whole_values": whole, "example": y[:5].tolist()},
            )
        ]
    classes = ctx.output_width()
    low, high = int(y.min()), int(y.max())
    if low >= 0 and (classes is None or high < classes):
        return []
    bad = (y < 0) | (y >= classes) if classes else y < 0
    return [
        finding(
            "LABELS_OUT_OF_RANGE",
            f"{int(bad.sum())} labels outside [0, {classes}): seen {low}..{high} while the "
            f"model outputs {classes} classes",
            "relabel the classes to 0..C-1 (e.g. y - y.min()), or give the model's last layer "
            "one output per class",
            {"min_label": low, "max_label": high, "num_classes": classes},
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
