"""``babysit.lr_find``: the learning-rate range test on a user's model and data.

The sweep, its result and the rules that read a learning rate off the curve live in
:mod:`babysit.range_test` (low in the layers: ``diagnose`` runs it too); this module reads the
user's data through :mod:`babysit.batches`, validates it with :mod:`babysit.inputs` (the same
errors ``fit`` gives) and trains a copy of the model.

>>> import torch
>>> from torch import nn
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> X, y = torch.randn(512, 10), torch.randint(0, 3, (512,))
>>> result = lr_find(nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3)), (X, y))
>>> 1e-7 <= result.suggestion <= 10, sorted(result.suggestions)
(True, ['combined', 'minimum', 'steepest', 'valley'])
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..batches import probe_batch
from ..inputs import check_lr_find_data
from ..optim import make_optimizer, optimizer_name
from ..range_test import (
    DEFAULT_RULE,
    LR_FIND_FILE,
    MAX_EXAMPLES,
    MINIMUM_DIVISOR,
    RULES,
    LRFinderResult,
    check_args,
    range_test,
)
from ..tasks import Task, default_loss, resolve_task

__all__ = [
    "DEFAULT_RULE",
    "LR_FIND_FILE",
    "MINIMUM_DIVISOR",
    "RULES",
    "LRFinderResult",
    "lr_find",
    "range_test",
]


def lr_find(
    model: nn.Module,
    data: Any,
    *,
    optimizer: str | Callable = "adam",
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    batch_size: int = 64,
    seed: int = 0,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    weight_decay: float = 0.0,
    device: str | torch.device = "cpu",
    run_dir: str | os.PathLike | None = None,
    task: str | Task = "auto",
) -> LRFinderResult:
    """Run the LR range test on a copy of ``model`` (the model itself is never changed).

    Args:
        model: any ``nn.Module``; a deep copy is trained in train mode.
        data: ``(X, y)`` tensors or arrays, a ``Dataset`` or a ``DataLoader`` yielding
            ``(x, y)``; up to 4096 examples are drawn (seeded) and mini-batches sampled from them.
        optimizer: a name (``"adam"``, ``"momentum"``, ``"sgd"``, ...) or a factory
            ``params -> Optimizer`` (its lr is overwritten at each step).
        start_lr, end_lr: the sweep's first and last learning rates, ``0 < start_lr < end_lr``.
        steps: mini-batches in the sweep (at least 5; fastai and Lightning use 100).
        batch_size: examples per mini-batch.
        seed: seeds the example draw, the batches and the model's randomness (dropout).
        loss_fn: ``loss_fn(output, target)``; default cross-entropy on class labels.
        weight_decay: passed to a named optimizer.
        device: where the copy trains.
        run_dir: if given, the result is written there as ``lr_find.json``.
        task: ``"auto"`` (inferred from ``loss_fn``), a kind name or a :class:`babysit.Task`;
            its rules check the targets, and a kind without ``loss_fn`` trains with the kind's
            default loss (``babysit.tasks.default_loss``).

    Returns:
        An :class:`LRFinderResult`: ``.suggestion``, ``.suggestions``, ``.confident``,
        ``.lrs``, ``.losses``, ``.plot()``.

    Raises:
        ValueError: bad arguments (the message names the value and the fix), empty data,
            data without targets, NaN/Inf inputs, labels or shapes that do not fit the model
            and the loss (the same messages as ``fit``).
    """
    check_args(start_lr, end_lr, steps, batch_size)
    if not isinstance(model, nn.Module):
        raise TypeError(f"lr_find needs an nn.Module as model, got {type(model).__name__}")
    x, y, _ = probe_batch(data, MAX_EXAMPLES, seed, entry="lr_find")
    device = torch.device(device)
    resolved = resolve_task(task, loss_fn, y)
    loss_fn = loss_fn or default_loss(resolved)
    swept = copy.deepcopy(model).to(device)
    x, y = x.to(device), None if y is None else y.to(device)
    y = check_lr_find_data(swept, x, y, loss_fn, batch_size=batch_size, task=resolved)

    def factory(params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        return make_optimizer(optimizer, params, lr, weight_decay)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        result = range_test(
            swept,
            x,
            y,
            factory,
            loss_fn=loss_fn,
            start_lr=start_lr,
            end_lr=end_lr,
            steps=steps,
            batch_size=batch_size,
            seed=seed,
            optimizer=optimizer_name(optimizer),
        )
    if run_dir is not None:
        from .. import runs

        runs.write_json(run_dir, LR_FIND_FILE, result.to_dict())
    return result
