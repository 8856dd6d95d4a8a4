"""Each rank's share of the data under torchrun (DDP): training shards and evaluation shards.

Training (:func:`shard_training`). ``torch.utils.data.DistributedSampler`` cuts every epoch's
order into ``world_size`` strided shards: rank ``r`` takes positions ``r, r + W, r + 2W, ...``
of the epoch's permutation, padded (by repeating its first examples, the sampler's default
``drop_last=False``) to a multiple of ``W`` so every rank runs the same number of steps (a rank
with one step fewer would leave the others waiting in DDP's gradient all-reduce). Its seed is
``seed * 1_000_003`` and ``set_epoch(e)`` is called every epoch, so epoch ``e``'s permutation is
exactly the one a single process draws (:meth:`babysit.batches.TensorBatches.order`).

What is equivalent. Rank ``r``'s batch ``i`` holds the permutation's positions ``(i*B + j)*W + r``
(``B`` the per-process ``batch_size``), so the ranks' batches ``i`` together are positions
``[i*B*W, (i+1)*B*W)``: the single-process run with ``batch_size = W*B`` sees the same global
batches in the same order, and DDP's averaged gradient is that batch's mean gradient because
every rank holds the same number of its examples. When ``W`` divides the number of examples
nothing is padded and the two runs are the same computation (up to float summation order);
otherwise the last ``W - n % W`` positions repeat examples from the epoch's start.

Evaluation (:func:`shard_eval`): rank ``r`` takes examples ``r, r + W, ...`` with no padding
(uneven shards are fine there: the loop reduces sums and counts, not means), so validation
counts every example once.

A user's ``DataLoader`` keeps its batch size, collate function and workers: one with a
``DistributedSampler`` is used as it is (``set_epoch`` called every epoch); one over a
map-style dataset is rebuilt with a ``DistributedSampler`` (shuffled when its sampler was a
``RandomSampler``), as Lightning does. An iterable of batches cannot be split by index: it
is refused with what to pass instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset

from ..batches import Batches, DatasetBatches, TensorBatches, UserLoader

__all__ = ["SEED_STRIDE", "ShardedBatches", "ShardedLoader", "shard_eval", "shard_training"]

SEED_STRIDE = 1_000_003  # as babysit.batches: epoch e of seed s is shuffled by s * STRIDE + e


class _Indices:
    """A sized stand-in for a dataset: ``DistributedSampler`` only reads its length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class ShardedBatches(Batches):
    """This rank's batches of in-memory tensors or a map-style dataset (see the module doc)."""

    def __init__(self, inner: TensorBatches, rank: int, world: int) -> None:
        self.inner = inner
        self.batch_size = inner.batch_size
        self.n_examples = inner.n_examples
        self.sampler = DistributedSampler(
            _Indices(inner.n_examples),  # type: ignore[arg-type]
            num_replicas=world,
            rank=rank,
            shuffle=inner.shuffle,
            seed=inner.seed * SEED_STRIDE,
            drop_last=False,
        )

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[int, Any]]:
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        if isinstance(self.inner, DatasetBatches):
            chunks = order.split(self.batch_size)[start:]
            loader = DataLoader(self.inner.dataset, batch_sampler=[c.tolist() for c in chunks])
            yield from enumerate(loader, start)
            return
        tensors = self.inner.tensors
        chunks = order.to(tensors[0].device).split(self.batch_size)
        for i in range(start, len(chunks)):
            batch = tuple(t[chunks[i]] for t in tensors)
            yield i, batch


class ShardedLoader(UserLoader):
    """A ``DataLoader`` whose sampler is a ``DistributedSampler``: ``set_epoch`` every epoch."""

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[int, Any]]:
        self.loader.sampler.set_epoch(epoch)
        yield from super().epoch(epoch, start)


def shard_training(batches: Batches, rank: int, world: int, seed: int, name: str) -> Batches:
    """This rank's training batches (every rank gets the same number of them)."""
    if isinstance(batches, TensorBatches):
        return ShardedBatches(batches, rank, world)
    loader = getattr(batches, "loader", None)
    if isinstance(loader, DataLoader):
        if isinstance(loader.sampler, DistributedSampler):
            return ShardedLoader(loader)
        dataset = _map_style(loader, name)
        sampler = DistributedSampler(
            dataset,
            num_replicas=world,
            rank=rank,
            shuffle=isinstance(loader.sampler, RandomSampler),
            seed=seed,
            drop_last=bool(loader.drop_last),
        )
        return ShardedLoader(_rebuilt(loader, dataset, sampler=sampler))
    raise _not_shardable(name)


def shard_eval(batches: Batches, rank: int, world: int, name: str) -> Batches:
    """This rank's evaluation batches: examples ``rank, rank + world, ...``, none repeated."""
    if isinstance(batches, DatasetBatches):
        part = Subset(batches.dataset, range(rank, batches.n_examples or 0, world))
        return DatasetBatches(part, batches.batch_size, shuffle=False, seed=0)
    if isinstance(batches, TensorBatches):
        tensors = tuple(t[rank::world] for t in batches.tensors)
        return TensorBatches(tensors, batches.batch_size, shuffle=False, seed=0)
    loader = getattr(batches, "loader", None)
    if isinstance(loader, DataLoader):
        if isinstance(loader.sampler, DistributedSampler):
            return UserLoader(loader)  # the user sharded it already
        dataset = _map_style(loader, name)
        part = Subset(dataset, range(rank, len(dataset), world))  # type: ignore[arg-type]
        return UserLoader(_rebuilt(loader, part, shuffle=False))
    raise _not_shardable(name)


def _map_style(loader: DataLoader, name: str) -> Dataset:
    dataset = loader.dataset
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise _not_shardable(name)
    return dataset


def _rebuilt(loader: DataLoader, dataset: Dataset, **sampling: Any) -> DataLoader:
    """``loader`` over ``dataset`` with new sampling, its batching and workers kept."""
    return DataLoader(
        dataset,
        batch_size=loader.batch_size,
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        **sampling,
    )


def _not_shardable(name: str) -> ValueError:
    return ValueError(
        f"{name}: under torchrun each process trains on its own shard, and babysit can split "
        "only (X, y) tensors or arrays, a map-style Dataset, or a DataLoader over one; this is "
        "an iterable of batches. Pass one of those, or a DataLoader with a "
        "torch.utils.data.DistributedSampler that shards it your way"
    )
