"""The gradient-flow rule: do the first layers get a gradient comparable to the last ones?

AUTOTRAINER (Zhang et al., ICSE'21) judges vanishing and exploding gradients on the ratio of the
first to the last weight layer's gradient norm, ``r = ‖g_first‖ / ‖g_last‖`` (layers in forward
order): vanishing when ``r < gradient_vanishing_ratio`` *and* ``‖g_first‖ <
gradient_vanishing_abs`` (a small ratio with a healthy absolute gradient is a large last
layer, not a dying first one), exploding when ``r > gradient_exploding_ratio``. The thresholds
live in :mod:`babysit.thresholds`.

"First" and "last" are *depth groups*, not single layers: weight layers that read the same
input tensor (the query, key and value projections of an attention block, the branches of an
Inception block) sit at the same depth, and a group's gradient is the largest of its members'.
The rule is about a gradient shrinking (or growing) with depth, a product of per-layer factors
on the way back; a member whose gradient is small for a reason of its own is not that. The
case that forced it: in a healthy tiny BERT at init (2 layers, hidden 32) the first layer in
forward order, ``layer.0.attention.self.query``, gets ‖g‖ ≈ 3e-6, 1.5e-5 × the classifier's
0.19, because queries and keys reach the loss only through the attention logits, which are
near-uniform at init (the softmax's Jacobian is then ~0 in the logits' direction); the value
projection beside it, at the same depth, gets 1.5e-3, as does the rest of the block. A deep
sigmoid net has no siblings (each layer reads its predecessor's output), so it is judged as
before. Siblings are found by observation (:class:`SameInput`), with no model names.

The layers measured (:func:`measured_layer`): ``nn.Linear``, ``nn.Conv1d/2d/3d`` and
transformers' ``Conv1D`` (GPT-2's projections: a linear layer whose weight is stored
transposed, ``(in, out)``; the rule reads only its gradient's norm, which does not depend on
that layout). Without it a GPT-2 had one measured layer (its ``lm_head``) and its gradient flow
could not be judged at all.

Shared by ``diagnose``'s ``gradient_flow`` check (one backward on the probe batch) and the
training monitor that reads the real steps' gradients.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from .findings import Finding, finding
from .nn.activations import WEIGHT_LAYERS

__all__ = ["SameInput", "measured_layer", "vanishing_or_exploding"]

# What the messages call the layers :func:`measured_layer` accepts.
MEASURED_LAYERS_TEXT = "nn.Linear, nn.Conv1d/2d/3d, transformers' Conv1D"


def measured_layer(module: nn.Module) -> bool:
    """Whether the gradient-flow rule measures ``module``'s ``weight``: a Linear/Conv layer
    (``WEIGHT_LAYERS``) or transformers' ``Conv1D`` or a subclass of it, recognised by the
    class's name and module (``transformers.pytorch_utils``; ``transformers_modules.*`` for a
    model's remote code) so that transformers is not imported to ask."""
    if isinstance(module, WEIGHT_LAYERS):
        return True
    return isinstance(getattr(module, "weight", None), nn.Parameter) and any(
        kind.__name__ == "Conv1D" and kind.__module__.startswith(_TRANSFORMERS)
        for kind in type(module).__mro__
    )


_TRANSFORMERS = ("transformers.", "transformers_modules.")  # the library, remote model code


class SameInput:
    """Which weight layers read the same input tensor: ``groups[name]`` is the first layer of
    the run of consecutive calls on one tensor (the layer's own name when it has no sibling).

    Forward pre-hooks on ``layers`` (``{module: name}``) compare each call's first argument
    with the previous call's, by identity, through a weak reference (a freed tensor whose
    memory is reused is not mistaken for the same one). Each hook removes itself after its
    layer's first call, and a forward hook on ``root`` (the model) removes the rest when its
    first forward returns (layers it never called: a ``nn.MultiheadAttention``'s
    ``out_proj``), so no hook outlives the first forward (a model with hooks that are
    closures cannot be pickled); ``remove()`` drops them all.
    """

    def __init__(self, layers: Mapping[nn.Module, str], root: nn.Module | None = None) -> None:
        self.groups: dict[str, str] = {}
        self._last: tuple[Any, str] | None = None  # (weakref to the input, its group)
        self._handles: dict[str, Any] = {}
        for module, name in layers.items():
            self._handles[name] = module.register_forward_pre_hook(self._hook(name))
        self._root = None if root is None else root.register_forward_hook(self._done)

    def _done(self, *_: Any) -> None:
        self.remove()

    def _hook(self, name: str) -> Any:
        def seen(_module: nn.Module, args: tuple) -> None:
            handle = self._handles.pop(name, None)
            if handle is not None:
                handle.remove()
            if name in self.groups or not args:
                return
            x = args[0]
            last = self._last
            same = last is not None and last[0]() is x
            self.groups[name] = last[1] if same and last is not None else name
            try:
                self._last = (weakref.ref(x), self.groups[name])
            except TypeError:  # not weak-referenceable: no sibling can be told
                self._last = None

        return seen

    def remove(self) -> None:
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()
        if self._root is not None:
            self._root.remove()
            self._root = None


def _group(
    layers: Iterable[str], norms: Mapping[str, float], at: str, groups: Mapping[str, str]
) -> str:
    """The member of ``at``'s depth group with the largest gradient norm."""
    key = groups.get(at, at)
    members = [n for n in layers if groups.get(n, n) == key]
    return max(members, key=lambda n: norms[n])


def vanishing_or_exploding(
    norms: dict[str, float],
    thresholds: Mapping[str, float],
    groups: Mapping[str, str] | None = None,
) -> list[Finding]:
    """AUTOTRAINER's rule on ``‖g_first‖ / ‖g_last‖`` (first and last depth group, layers in
    forward order); shared by ``diagnose`` and the training monitor.

    ``groups`` maps a layer to its depth group (:attr:`SameInput.groups`); a layer not in it
    is a group of its own. A group's gradient norm is its members' largest.
    """
    if len(norms) < 2:
        return []
    layers = list(norms)
    groups = groups or {}
    first = _group(layers, norms, layers[0], groups)
    last = _group(layers, norms, layers[-1], groups)
    if groups.get(first, first) == groups.get(last, last):
        return []  # one depth group: nothing to compare across depth
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
    for end, name in (("first_group", first), ("last_group", last)):
        key = groups.get(name, name)
        members = [n for n in layers if groups.get(n, n) == key]
        if len(members) > 1:
            evidence[end] = members
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
