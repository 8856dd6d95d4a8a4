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
(True, ['combined', 'minimum', 'steepest', 'valley', 'verified'])
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed
from torch import nn

from .. import distributed
from ..batches import preserved_rng, probe_examples, to_device
from ..inputs import check_loss, check_lr_find_data, check_targets
from ..modes import eval_mode
from ..optim import make_optimizer, optimizer_name
from ..outputs import (
    Forward,
    ForwardContractError,
    default_forward,
    describe_batch,
    run_batch,
    take,
)
from ..progress_line import ProgressLine, stderr_is_terminal
from ..range_test import (
    DEFAULT_RULE,
    LR_FIND_FILE,
    MAX_EXAMPLES,
    MINIMUM_DIVISOR,
    RULES,
    LRFinderResult,
    amp_dtype,
    check_accumulate_amp,
    check_args,
    range_test,
)
from ..tasks import Task, default_loss, resolve_task

# lr_find's progress line appears once the test has run this long (a fast one stays quiet)
PROGRESS_AFTER_S = 1.0

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
    forward: Forward | None = None,
    verify: bool = True,
    task: str | Task = "auto",
    accumulate: int = 1,
    amp: bool = False,
    progress: bool | None = None,
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
        forward: ``forward(model, batch) -> (output, target)`` for batches that are not
            ``(x, y)`` (dicts, several inputs, masks), as in ``fit``. Without it a batch of
            three or more items is a ``ValueError``. A tuple, dict or ``ModelOutput`` output is
            read as its ``"logits"``, else its first tensor.
        verify: check the curve's pick with short constant-lr probes and re-run an unclear
            sweep longer (the default; ``False``: the curve's ``minimum`` rule alone, 100
            steps).
        task: ``"auto"`` (inferred from ``loss_fn``), a kind name or a :class:`babysit.Task`;
            its rules check the targets, and a kind without ``loss_fn`` trains with the kind's
            default loss (``babysit.tasks.default_loss``).
        accumulate: mini-batches of ``batch_size`` whose gradients add up to one optimizer
            step (each loss scaled by ``1/accumulate``), as a training loop with gradient
            accumulation takes it: the suggestion is for an effective batch of
            ``batch_size * accumulate``. ``steps`` counts optimizer steps.
        amp: run the forwards under ``torch.autocast`` as a mixed-precision training does:
            float16 with a ``torch.amp.GradScaler`` on CUDA, bfloat16 on CPU (float16
            autocast is not the supported mixed precision there); ``result.amp_dtype`` says
            which. A step the scaler skips (overflowed float16 gradients) is counted in
            ``result.skipped_steps``, not taken for a divergence.
        progress: a transient line on stderr (the pass running now: the sweep, a probe's lr;
            the batches done, one per optimizer step plus the few the probes' start loss
            reads; the time) once the test has run for ``PROGRESS_AFTER_S`` seconds: 650-1300
            batches of a large model take a while. ``None`` (the default): when stderr is a
            terminal; on rank 0 only. The line needs a terminal: elsewhere nothing is shown.

    Under torchrun (``WORLD_SIZE > 1``; the process group is initialised from the environment
    when the user has not done it, and destroyed again afterwards): ``batch_size`` is per
    process, each rank trains on its own share of every step's batch, gradients are averaged
    across ranks, the curve is the loss averaged across ranks and every stop is decided by all
    ranks together, so every rank returns the same suggestion; only rank 0 writes
    ``lr_find.json``.

    Returns:
        An :class:`LRFinderResult`: ``.suggestion``, ``.suggestions``, ``.confident``,
        ``.lrs``, ``.losses``, ``.plot()``.

    Raises:
        ValueError: bad arguments (the message names the value and the fix; ``accumulate``
            not a positive integer, ``amp`` not a bool, among them), empty data,
            data without targets, NaN/Inf inputs, labels or shapes that do not fit the model
            and the loss (the same messages as ``fit``); a batch of 3+ items without
            ``forward``; an output whose rows differ from the targets'.
        TypeError: a ``forward`` that does not return ``(output, target)``.

    Torch's global CPU and CUDA generators, Python's and NumPy's, and a ``DataLoader``'s own
    generator are left as they were; the user's model (weights, buffers, modes) is untouched.
    """
    check_args(start_lr, end_lr, steps, batch_size)
    check_accumulate_amp(accumulate, amp)
    if not isinstance(model, nn.Module):
        raise TypeError(f"lr_find needs an nn.Module as model, got {type(model).__name__}")
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module  # the range test averages gradients across ranks itself
    if forward is not None and not callable(forward):
        raise TypeError(
            f"forward must be a function (model, batch) -> (output, target), got "
            f"{type(forward).__name__}"
        )
    device = torch.device(device)
    if amp:
        amp_dtype(device)  # autocast must exist on the device: the error before any work
    with distributed.process_group(device, who="lr_find"):
        show = stderr_is_terminal() if progress is None else bool(progress)
        line = ProgressLine(
            None,
            label="lr_find",
            enabled=show and distributed.is_main(),
            after_s=PROGRESS_AFTER_S,
            unit="batches",
        )
        done = 0

        def tick(name: str) -> None:
            nonlocal done
            done += 1
            try:
                line.update(done, name)
            except Exception:  # a display must never stop the test: other ranks would wait
                line.enabled = False

        with line:
            return _lr_find(
                model, data, optimizer, start_lr, end_lr, steps, batch_size, seed, loss_fn,
                weight_decay, device, run_dir, forward, verify, task, accumulate, amp,
                tick if line.enabled else None,
            )  # fmt: skip


def _lr_find(
    model: nn.Module,
    data: Any,
    optimizer: str | Callable,
    start_lr: float,
    end_lr: float,
    steps: int,
    batch_size: int,
    seed: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    weight_decay: float,
    device: torch.device,
    run_dir: str | os.PathLike | None,
    forward: Forward | None,
    verify: bool,
    task: str | Task,
    accumulate: int,
    amp: bool,
    progress: Callable[[str], None] | None,
) -> LRFinderResult:
    def factory(params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        return make_optimizer(optimizer, params, lr, weight_decay)

    with preserved_rng(data, device):
        batch, _ = probe_examples(data, MAX_EXAMPLES, seed, entry="lr_find", forward=forward)
        batch = to_device(batch, device)
        swept = copy.deepcopy(model).to(device)
        # the task against the targets (under forward=, _check_first_batch applies its rules)
        targets = batch[1] if forward is None and len(batch) == 2 else None
        resolved = resolve_task(task, loss_fn, targets)
        loss_fn = loss_fn or default_loss(resolved)
        if forward is None:
            x, y = batch[0], batch[1] if len(batch) == 2 else None
            batch = (
                x,
                check_lr_find_data(swept, x, y, loss_fn, batch_size=batch_size, task=resolved),
            )
        _check_first_batch(swept, take(batch, slice(0, batch_size)), forward, loss_fn, resolved)
        # (without forward, check_lr_find_data has already called loss_fn on the first batch)
        torch.manual_seed(seed)
        result = range_test(
            swept,
            batch,
            None,
            factory,
            loss_fn=loss_fn,
            start_lr=start_lr,
            end_lr=end_lr,
            steps=steps,
            batch_size=batch_size,
            seed=seed,
            optimizer=optimizer_name(optimizer),
            forward=forward or default_forward,
            verify=verify,
            accumulate=accumulate,
            amp=amp,
            progress=progress,
        )
    if run_dir is not None and distributed.is_main():
        from .. import runs

        runs.write_json(run_dir, LR_FIND_FILE, result.to_dict())
    distributed.barrier()  # no rank returns before the file is there
    return result


def _check_first_batch(
    model: nn.Module,
    batch: Any,
    forward: Forward | None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    task: Task,
) -> None:
    """One forward of the first batch (eval mode, no gradients) through ``forward``: it must
    return ``(output, target)``, the output must hold a tensor, the targets must fit it by the
    task's rules (:func:`babysit.inputs.check_targets`), the loss must take it (one output row
    per target for torch's losses) and be a scalar. Each failure names the fix."""
    with eval_mode(model), torch.no_grad():
        try:
            output, target, source = run_batch(model, batch, forward)
        except ForwardContractError as err:
            raise ForwardContractError(f"lr_find: {err}") from err
        except Exception as err:
            if forward is None:
                raise
            raise RuntimeError(
                f"lr_find: forward(model, batch) raised on the first batch "
                f"({describe_batch(batch)}): {type(err).__name__}: {err}"
            ) from err
        if target is None:
            raise ValueError(
                "lr_find needs targets: forward(model, batch) returned (output, None); "
                "return (output, target)"
            )
        shapes = f"{source} of shape {tuple(output.shape)}, targets " + (
            f"of shape {tuple(target.shape)}"
            if isinstance(target, torch.Tensor)
            else type(target).__name__
        )
        if (
            isinstance(loss_fn, nn.modules.loss._Loss)
            and isinstance(target, torch.Tensor)
            and output.dim() > 0
            and target.dim() > 0
            and output.shape[0] != target.shape[0]
        ):
            raise ValueError(
                f"lr_find: the loss cannot be computed on the model's output ({shapes}): "
                f"{output.shape[0]} output rows for {target.shape[0]} targets; keep the "
                "batch dimension first (x.flatten(1), not x.view(-1, k)), or pass forward="
            )
        if forward is None:
            return  # check_lr_find_data computed the loss on this batch already
        check_targets(output, target, task, loss_fn)
        try:
            loss = loss_fn(output, target)
        except Exception as err:
            raise RuntimeError(
                f"lr_find: loss_fn raised on the first batch ({shapes}): {err}"
            ) from err
        check_loss(loss)
