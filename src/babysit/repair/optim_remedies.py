"""Remedies on how the model is trained: the learning rate (the range test's, / 10, x 10) and
the weight decay (/ 10 while it dominates, decoupled)."""

from __future__ import annotations

import math

from ..findings import Finding
from .edit import Change, Skip, current_lr, fmt
from .setup import SetUp


def lr_range_test(setup: SetUp, finding: Finding | None) -> Change:
    """The learning rate the LR range test suggests for this (already repaired) set-up, its
    pick verified by short constant-lr probes (:func:`babysit.lr_find`)."""
    return _range_test(setup, verify=True)


def lr_sweep(setup: SetUp, finding: Finding | None) -> Change:
    """The range test's curve pick without the probes (one 100-step sweep): the cheap retune
    ``fix`` tries with a remedy that changes the scale of activations or gradients."""
    return _range_test(setup, verify=False)


def _range_test(setup: SetUp, *, verify: bool) -> Change:
    from ..tuning import lr_find

    opts = setup.options
    result = lr_find(
        setup.model,
        setup.data,
        optimizer=opts.get("optimizer", "adam"),
        loss_fn=opts.get("loss_fn"),
        weight_decay=opts.get("weight_decay", 0.0),
        forward=opts.get("forward"),
        task=opts.get("task", "auto"),
        device=opts.get("device", "cpu"),
        seed=opts.get("seed", 0),
        verify=verify,
        progress=False,  # fix prints its own line per remedy (and its diagnose none)
    )
    if result.suggestion is None or not math.isfinite(result.suggestion):
        reasons = "; ".join(result.reasons) or "no suggestion"
        raise Skip(f"the range test gave no learning rate ({reasons})")
    lr = float(f"{result.suggestion:.2g}")
    setup.options["lr"] = lr
    return Change(setup, (f"lr={fmt(lr)} (the LR range test's suggestion)",))


def lr_down(setup: SetUp, finding: Finding | None) -> Change:
    """lr / 10 (the lecture: when the cost explodes, the lr is too high)."""
    lr = current_lr(setup) / 10
    setup.options["lr"] = lr
    return Change(setup, (f"lr={fmt(lr)}",))


def lr_up(setup: SetUp, finding: Finding | None) -> Change:
    """lr x 10 (the lecture: a loss that barely moves means the lr is too low)."""
    lr = current_lr(setup) * 10
    setup.options["lr"] = lr
    return Change(setup, (f"lr={fmt(lr)}",))


def weight_decay_down(setup: SetUp, finding: Finding | None) -> Change:
    """weight_decay / 10; ``fix`` repeats it while the regularization still dominates."""
    wd = float(setup.options.get("weight_decay") or 0.0)
    if wd <= 0:
        raise Skip("weight_decay is already 0: the regularization is in the loss or the model")
    setup.options["weight_decay"] = wd / 10
    return Change(setup, (f"weight_decay={fmt(wd / 10)}",))


def decoupled_weight_decay(setup: SetUp, finding: Finding | None) -> Change:
    """Adam + L2 -> AdamW (Loshchilov & Hutter, 2019): the decay no longer enters the gradient."""
    optimizer = setup.options.get("optimizer", "adam")
    if not isinstance(optimizer, str) or optimizer.strip().lower() != "adam":
        raise Skip(f"decoupled weight decay replaces Adam; the optimizer is {optimizer!r}")
    setup.options["optimizer"] = "adamw"
    return Change(setup, ('optimizer="adamw" (decoupled weight decay)',))
