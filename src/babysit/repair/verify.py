"""The training half of ``fix``'s verification rule: a short run, the same for every candidate.

A remedy is accepted only when the repaired set-up reaches a lower *validation* loss than the
set-up it replaces, after the same number of steps, from the same seed, on the same training
examples, judged on the same held-out examples (``docs/architecture.md``, "Repair"). The split
and the step budget (``STEPS`` minibatches of ``BATCH_SIZE``, never sized by a timing, so a
verdict does not depend on the machine) are fixed once per ``fix`` call (:class:`ShortRun`), so
two runs differ only by what the remedy changed.

- In-memory data and map-style datasets: up to ``MAX_EXAMPLES`` examples are drawn (seeded,
  :func:`babysit.batches.probe_examples`); ``VAL_FRACTION`` of them (at most ``MAX_VAL``) are
  held out; minibatches are drawn from the rest with a seeded generator.
- A ``DataLoader``: the held-out examples are taken from its dataset and the loader is rebuilt
  over the rest with the same batch size, collate function and sampler kind (sequential stays
  sequential), so a remedy that changes the order (a shuffled loader) is judged on its order.

"Lower" means lower by more than ``MARGIN`` of the loss's scale (``max(|loss|, 0.1)``, as the
divergence rule scales it): a tie is no evidence that the remedy helps. A run whose loss turns
NaN/Inf ends there with a validation loss of +inf.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Subset

from ..batches import preserved_rng, probe_examples, to_device
from ..divergence import MIN_SCALE
from ..modes import eval_mode
from ..optim import make_optimizer
from ..outputs import batch_size_of, run_batch, take
from ..tasks import default_loss, resolve_task
from .setup import SetUp

__all__ = ["MARGIN", "RunResult", "ShortRun", "better"]

MAX_EXAMPLES = 4096
VAL_FRACTION = 0.2
MAX_VAL = 1024
BATCH_SIZE = 64
STEPS = 200  # fixed, not sized by timing: the verdicts must not depend on the machine
EVALS = 6  # validation points on the curve (the last one decides)
MARGIN = 0.01


@dataclass
class RunResult:
    """One short run: the final validation loss (+inf after a NaN) and its curve."""

    val_loss: float
    curve: list[list[float]] = field(default_factory=list)  # [[step, val_loss], ...]
    diverged: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "val_loss": self.val_loss if math.isfinite(self.val_loss) else None,
            "diverged": self.diverged,
            "curve": self.curve,
        }


def better(candidate: float, reference: float) -> bool:
    """Whether ``candidate`` is a lower validation loss than ``reference`` beyond noise."""
    if not math.isfinite(candidate):
        return False
    if not math.isfinite(reference):
        return True
    return candidate < reference - MARGIN * max(abs(reference), MIN_SCALE)


class ShortRun:
    """The verification run, its split and step budget fixed by the first set-up it sees."""

    def __init__(self, *, seed: int = 0, steps: int | None = None, device: Any = "cpu") -> None:
        self.seed = seed
        self.steps = STEPS if steps is None else int(steps)
        self.device = torch.device(device)
        self.batch_size = BATCH_SIZE

    def run(self, setup: SetUp) -> RunResult:
        start = time.perf_counter()
        with preserved_rng(setup.data, self.device):
            torch.manual_seed(self.seed)
            model = copy.deepcopy(setup.model).to(self.device)
            train, val = self._split(setup)
            loss_fn = _loss_fn(setup, val)
            opts = setup.options
            opt = make_optimizer(
                opts.get("optimizer", "adam"),
                model.parameters(),
                lr=opts.get("lr"),
                weight_decay=float(opts.get("weight_decay") or 0.0),
            )
            post = copy.deepcopy(setup.postprocess)
            result = self._train(model, opt, train, val, loss_fn, setup.forward, post)
        result.seconds = time.perf_counter() - start
        return result

    # -- the split -------------------------------------------------------------------------

    def _split(self, setup: SetUp) -> tuple[Iterator[Any], Any]:
        data = setup.data
        gen = torch.Generator().manual_seed(self.seed)
        if isinstance(data, DataLoader) and hasattr(data.dataset, "__len__"):
            dataset = data.dataset
            n = len(dataset)  # type: ignore[arg-type]
            order = torch.randperm(n, generator=gen).tolist()
            n_val = _n_val(n)
            val_idx, train_idx = order[:n_val], sorted(order[n_val:])
            loader = DataLoader(
                Subset(dataset, train_idx),
                batch_size=data.batch_size,
                shuffle=isinstance(data.sampler, RandomSampler),
                collate_fn=data.collate_fn,
                generator=torch.Generator().manual_seed(self.seed),
            )
            val = data.collate_fn([dataset[i] for i in val_idx])
            return _cycle(loader, self.device), to_device(val, self.device)
        batch, _ = probe_examples(data, MAX_EXAMPLES, self.seed, entry="fix", forward=setup.forward)
        n = batch_size_of(batch) or 0
        if n < 4:
            raise ValueError(f"fix needs at least 4 examples to hold some out, got {n}")
        batch = to_device(batch, self.device)
        order = torch.randperm(n, generator=gen)
        n_val = _n_val(n)
        val = take(batch, order[:n_val], n)
        train = take(batch, order[n_val:], n)
        return _minibatches(train, n - n_val, self.batch_size, gen, self.device), val

    # -- the run ---------------------------------------------------------------------------

    def _train(self, model, opt, train, val, loss_fn, forward, post=None) -> RunResult:
        steps = int(self.steps or STEPS)
        marks = {max(1, round(steps * (i + 1) / EVALS)) for i in range(EVALS)}
        curve: list[list[float]] = [[0, _evaluate(model, val, loss_fn, forward, post)]]
        for step in range(1, steps + 1):
            loss = _step(model, opt, next(train), loss_fn, forward)
            if not math.isfinite(loss):
                curve.append([step, math.inf])
                return RunResult(math.inf, _finite(curve), diverged=True)
            if step in marks:
                curve.append([step, _evaluate(model, val, loss_fn, forward, post)])
        final = curve[-1][1]
        return RunResult(final if math.isfinite(final) else math.inf, _finite(curve))


def _n_val(n: int) -> int:
    return max(1, min(MAX_VAL, int(n * VAL_FRACTION)))


def _minibatches(
    batch: Any, n: int, size: int, gen: torch.Generator, device: torch.device
) -> Iterator[Any]:
    while True:
        order = torch.randperm(n, generator=gen)
        for chunk in order.split(size):
            if len(chunk) == size or n < size:
                yield take(batch, chunk.to(device), n)


def _cycle(loader: DataLoader, device: torch.device) -> Iterator[Any]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield to_device(batch, device)
        if empty:
            raise ValueError("fix: the DataLoader yields no batch")


def _loss_fn(setup: SetUp, val: Any):
    loss_fn = setup.options.get("loss_fn")
    if loss_fn is not None:
        return loss_fn
    return default_loss(resolve_task(setup.options.get("task", "auto"), None))


def _step(model: nn.Module, opt, batch: Any, loss_fn, forward) -> float:
    output, target, _ = run_batch(model, batch, forward)
    loss = loss_fn(output, target)
    if not torch.isfinite(loss):
        return math.inf
    if not loss.requires_grad:  # nothing trainable reaches the loss: the run trains nothing
        return float(loss.detach())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _evaluate(model: nn.Module, val: Any, loss_fn, forward, post=None) -> float:
    """The validation loss in eval mode; with ``post`` (standardized targets) both the output
    and the targets are mapped back to the targets' units, so every run is judged on one scale."""
    with eval_mode(model), torch.no_grad():
        output, target, _ = run_batch(model, val, forward)
        if post is not None:
            post = post.to(output.device)
            output, target = post(output), post(target)
        loss = float(loss_fn(output, target))
    return loss if math.isfinite(loss) else math.inf


def _finite(curve: list[list[float]]) -> list[list[float]]:
    """The curve for JSON: a non-finite loss as None."""
    return [[s, v if math.isfinite(v) else None] for s, v in curve]  # type: ignore[misc]
