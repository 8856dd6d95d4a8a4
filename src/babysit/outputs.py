"""Reading one batch through the model: ``forward(model, batch) -> (output, target)``.

Every entry point that runs the user's model on a batch (``diagnose``'s checks, ``lr_find``,
``fit``) goes through :func:`run_batch`, so a batch and an output are read the same way
everywhere (docs/architecture.md, "Data: tasks, batches and ``forward=``").

- **Batches.** By default a batch is ``(x, y)`` (or ``x`` alone, without targets): the output
  is ``model(x)`` and the target ``y``. A batch of three or more items, or a dict, is never
  guessed at: it is a ``ValueError`` naming ``forward=``, the function that says how to run the
  model on one batch.
- **Outputs.** Models return a tensor, or a tuple, a dict or a ``ModelOutput``-like object
  (Hugging Face returns an ordered dict that also has attributes). Such an output is read as its
  ``"logits"`` (key or attribute), else as its first tensor; :func:`read_output` returns the
  tensor and where it came from (``"output"``, ``"output['logits']"``, ``"output.logits"``,
  ``"output[0]"``), which findings put in their evidence.
- **Slicing.** :func:`take` indexes every tensor of a batch whose first dimension is the batch
  size (nested tuples, lists and dicts), so checks can use a few examples of any batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "FORWARD_HINT",
    "Forward",
    "ForwardContractError",
    "batch_size_of",
    "default_forward",
    "describe_batch",
    "map_tensors",
    "read_output",
    "run_batch",
    "take",
]

Forward = Callable[[nn.Module, Any], tuple[Any, Any]]

FORWARD_HINT = (
    "pass forward=lambda model, batch: (model(batch['x']), batch['y']), a function that says "
    "how to run the model on one batch and returns (output, target)"
)


class ForwardContractError(TypeError):
    """A user's ``forward`` that does not return an ``(output, target)`` pair: a mistake in the
    argument, raised by every entry point (never reported as a finding about the model)."""


def default_forward(model: nn.Module, batch: Any) -> tuple[Any, Any]:
    """``(x, y) -> (model(x), y)``; a lone tensor ``x`` gives ``(model(x), None)``.

    Anything else (a dict, a 3-tuple such as ``(x, mask, y)``) is a ``ValueError`` naming
    ``forward=``: reading it as ``(x, y)`` would silently use the wrong target.
    """
    if isinstance(batch, torch.Tensor):
        return model(batch), None
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return model(batch[0]), batch[1]
    if isinstance(batch, tuple | list) and len(batch) == 1:
        return model(batch[0]), None
    raise ValueError(
        describe_batch(batch) + "; babysit reads (x, y) batches by default: " + FORWARD_HINT
    )


def describe_batch(batch: Any) -> str:
    """``"a batch of 3 items (Tensor, Tensor, Tensor)"``, for messages."""
    if isinstance(batch, Mapping):
        return f"a batch that is a dict with keys {sorted(map(str, batch))}"
    if isinstance(batch, tuple | list):
        kinds = ", ".join(type(b).__name__ for b in batch)
        return f"a batch of {len(batch)} items ({kinds})"
    return f"a batch of type {type(batch).__name__}"


def read_output(output: Any) -> tuple[torch.Tensor, str]:
    """The tensor a loss is computed on, and where it was found in ``output``.

    A tensor is itself (``"output"``); a dict (or ``ModelOutput``) gives its ``"logits"`` key,
    an object its ``logits`` attribute, else the first tensor among its values/items
    (``"output['hidden']"``, ``"output[0]"``). Raises ``TypeError`` when there is no tensor.
    """
    if isinstance(output, torch.Tensor):
        return output, "output"
    if isinstance(output, Mapping):
        if isinstance(output.get("logits"), torch.Tensor):
            return output["logits"], "output['logits']"
        found = _first_tensor(output.items(), "output[{!r}]")
    elif isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits, "output.logits"
    elif isinstance(output, tuple | list):
        found = _first_tensor(enumerate(output), "output[{}]")
    else:
        found = None
    if found is not None:
        return found
    raise TypeError(
        f"the model's output is a {type(output).__name__} with no tensor in it; babysit reads "
        "a tensor, or the 'logits' (key or attribute) or first tensor of a tuple, dict or "
        "ModelOutput. Return the logits from forward, or " + FORWARD_HINT
    )


def _first_tensor(items: Any, where: str) -> tuple[torch.Tensor, str] | None:
    """The first tensor with a batch dimension (a 0-d ``loss`` that a model returns first, as
    Hugging Face models do when given labels, is not the output), else the first tensor."""
    tensors = [(key, value) for key, value in items if isinstance(value, torch.Tensor)]
    for key, value in tensors:
        if value.dim() > 0:
            return value, where.format(key)
    if tensors:
        return tensors[0][1], where.format(tensors[0][0])
    return None


def run_batch(
    model: nn.Module, batch: Any, forward: Forward | None = None
) -> tuple[torch.Tensor, Any, str]:
    """``(output tensor, target, where the output was read)`` for one batch.

    ``forward`` is the user's function (``None``: :func:`default_forward`). A ``forward`` that
    does not return an ``(output, target)`` pair is a ``TypeError`` saying what it returned.
    """
    if forward is None:
        output, target = default_forward(model, batch)
    else:
        result = forward(model, batch)
        if not (isinstance(result, tuple | list) and len(result) == 2):
            got = (
                f"a {type(result).__name__} of {len(result)} items"
                if isinstance(result, tuple | list)
                else f"a {type(result).__name__}"
            )
            raise ForwardContractError(
                f"forward(model, batch) must return a pair (output, target), got {got}; e.g. "
                "forward=lambda model, batch: (model(batch['x']), batch['y'])"
            )
        output, target = result
    tensor, source = read_output(output)
    return tensor, target, source


def batch_size_of(batch: Any) -> int | None:
    """The first dimension of the batch's first tensor (``None`` when it holds no tensor)."""
    if isinstance(batch, torch.Tensor):
        return len(batch) if batch.dim() else None
    values = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(values, tuple | list) or isinstance(batch, Mapping):
        for value in values:
            n = batch_size_of(value)
            if n is not None:
                return n
    return None


def take(batch: Any, index: Any, size: int | None = None) -> Any:
    """The examples ``index`` (a slice or an index tensor) of every tensor in ``batch`` whose
    first dimension is the batch size; other values are kept as they are."""
    if size is None:
        size = batch_size_of(batch)
    if isinstance(batch, torch.Tensor):
        if batch.dim() and len(batch) == size:
            if isinstance(index, torch.Tensor):
                index = index.to(batch.device)
            return batch[index]
        return batch
    if isinstance(batch, Mapping):
        return type(batch)({k: take(v, index, size) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple | list):
        return _rebuilt(batch, [take(v, index, size) for v in batch])
    return batch


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``batch`` with ``fn`` applied to every tensor (tuples, lists and dicts nested)."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return type(batch)({k: map_tensors(v, fn) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple | list):
        return _rebuilt(batch, [map_tensors(v, fn) for v in batch])
    return batch


def _rebuilt(batch: tuple | list, items: list[Any]) -> Any:
    """A sequence of ``batch``'s type holding ``items`` (a namedtuple takes them as fields)."""
    if hasattr(batch, "_fields"):
        return type(batch)(*items)
    return type(batch)(items)
