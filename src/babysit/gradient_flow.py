"""The gradient-flow rule: do the first layers get a gradient comparable to the last ones?

AUTOTRAINER (Zhang et al., ICSE'21) judges vanishing and exploding gradients on the ratio of the
first to the last weight layer's gradient norm, ``r = ‖g_first‖ / ‖g_last‖`` (layers in forward
order): vanishing when ``r < gradient_vanishing_ratio`` *and* ``‖g_first‖ <
gradient_vanishing_abs`` (a small ratio with a healthy absolute gradient is a large last
layer, not a dying first one), exploding when ``r > gradient_exploding_ratio``. The thresholds
live in :mod:`babysit.thresholds`.

Shared by ``diagnose``'s ``gradient_flow`` check (one backward on the probe batch) and the
training monitor that reads the real steps' gradients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .findings import Finding, finding

__all__ = ["vanishing_or_exploding"]


def vanishing_or_exploding(
    norms: dict[str, float], thresholds: Mapping[str, float]
) -> list[Finding]:
    """AUTOTRAINER's rule on ``‖g_first‖ / ‖g_last‖`` (first and last weight layer, in forward
    order); shared by ``diagnose`` and the training monitor."""
    if len(norms) < 2:
        return []
    layers = list(norms)
    first, last = layers[0], layers[-1]
    g_first, g_last = norms[first], norms[last]
    ratio = g_first / g_last if g_last > 0 else (math.inf if g_first > 0 else 1.0)
    evidence = {
        "first_layer": first,
        "last_layer": last,
        "ratio": ratio if math.isfinite(ratio) else None,
        "first_grad_norm": g_first,
        "last_grad_norm": g_last,
        "grad_norms": norms,
    }
    t = thresholds
    if ratio < t["gradient_vanishing_ratio"] and g_first < t["gradient_vanishing_abs"]:
        return [
            finding(
                "VANISHING_GRADIENTS",
                f"the weight gradient of the first layer '{first}' ({g_first:.2g}) is "
                f"{ratio:.2g}× that of the last layer '{last}' ({g_last:.2g}): the early "
                "layers will barely learn",
                "use ReLU-family activations with He init (not sigmoid/tanh in a deep net), "
                "add batch norm or residual connections, or make the net shallower",
                evidence,
                layer=first,
            )
        ]
    if ratio > t["gradient_exploding_ratio"]:
        return [
            finding(
                "EXPLODING_GRADIENTS",
                f"the weight gradient of the first layer '{first}' ({g_first:.2g}) is "
                f"{ratio:.3g}× that of the last layer '{last}' ({g_last:.2g}): gradients "
                "grow layer by layer on the way back",
                "lower the init scale (He/Xavier instead of a large std), add batch norm, or "
                "clip gradients (torch.nn.utils.clip_grad_norm_)",
                evidence,
                layer=first,
            )
        ]
    return []
