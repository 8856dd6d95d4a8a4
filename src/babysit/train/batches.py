"""Batches for ``fit``: what users pass as ``data``, cut into minibatches in a reproducible order.

In-memory tensors (``(X, y)``, arrays, a ``TensorDataset``) are batched by indexing with a
shuffled permutation: no ``DataLoader``, whose per-batch Python cost is 1.3-1.6x a small MLP's
whole training step on CPU. Other map-style datasets go through a ``DataLoader`` fed with the
same permutation; a user's own ``DataLoader`` (or any re-iterable of batches) is used as it is.

Order. Epoch ``e`` is shuffled by ``torch.Generator().manual_seed(seed * 1_000_003 + e)``: the
order depends only on the seed and the epoch, so a resumed run re-creates it and skips to its
batch without replaying anything. A user's ``DataLoader`` shuffles from torch's global
generator when its iterator is made; ``fit`` saves that generator's state at each epoch start so
a resume re-creates the same order (:class:`UserLoader`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = ["Batches", "make_batches", "to_device"]

_SEED_STRIDE = 1_000_003


class Batches:
    """Minibatches of one data source; :meth:`epoch` yields ``(batch_index, batch)``."""

    n_examples: int | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError


class TensorBatches(Batches):
    """``(X, y)`` tensors on the training device, batched by indexing."""

    def __init__(
        self, tensors: tuple[torch.Tensor, ...], batch_size: int, *, shuffle: bool, seed: int
    ) -> None:
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.n_examples = len(tensors[0])

    def __len__(self) -> int:
        return -(-self.n_examples // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n_examples)
        g = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + epoch)
        return torch.randperm(self.n_examples, generator=g)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[int, Any]]:
        order = self.order(epoch).to(self.tensors[0].device)
        chunks = order.split(self.batch_size)  # one op for the epoch's index slices
        if len(self.tensors) == 2:
            x, y = self.tensors
            for i in range(start, len(chunks)):
                yield i, (x[chunks[i]], y[chunks[i]])
            return
        for i in range(start, len(chunks)):
            yield i, tuple(t[chunks[i]] for t in self.tensors)


class DatasetBatches(TensorBatches):
    """A map-style ``Dataset``: the same permutation, loaded through a ``DataLoader``."""

    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.n_examples = len(dataset)  # type: ignore[arg-type]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[int, Any]]:
        order = self.order(epoch).tolist()
        chunks = [
            order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(start, len(self))
        ]
        loader = DataLoader(self.dataset, batch_sampler=chunks)
        yield from enumerate(loader, start)


class UserLoader(Batches):
    """A ``DataLoader`` or other re-iterable of batches, in its own order."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        try:
            self.n_examples = len(loader.dataset)
        except (AttributeError, TypeError):
            self.n_examples = None

    def __len__(self) -> int:
        try:
            return len(self.loader)
        except TypeError:
            return 0  # unknown

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[int, Any]]:
        for i, batch in enumerate(self.loader):
            if i >= start:
                yield i, batch


def make_batches(
    data: Any, batch_size: int, *, shuffle: bool, seed: int, device: torch.device, name: str
) -> Batches:
    """The :class:`Batches` for ``data`` (``name`` is ``"data"`` or ``"val"``, for messages)."""
    if isinstance(data, DataLoader):
        return UserLoader(data)
    if isinstance(data, TensorDataset):
        return TensorBatches(_on(data.tensors, device), batch_size, shuffle=shuffle, seed=seed)
    if isinstance(data, Dataset):
        if not hasattr(data, "__len__"):
            raise TypeError(f"{name}: an IterableDataset needs a DataLoader; pass one instead")
        return DatasetBatches(data, batch_size, shuffle=shuffle, seed=seed)
    if isinstance(data, tuple | list) and len(data) == 2 and _array_like(data[0]):
        x, y = _tensor(data[0], f"{name} X"), _tensor(data[1], f"{name} y")
        if len(x) != len(y):
            raise ValueError(
                f"{name}: X and y differ in length ({len(x)} inputs, {len(y)} targets); pass one "
                "target per example"
            )
        if len(x) == 0:
            raise ValueError(f"{name} is empty: fit needs at least one example")
        return TensorBatches(_on((x, y), device), batch_size, shuffle=shuffle, seed=seed)
    if iter(data) is data:
        raise TypeError(
            f"{name} is a one-shot iterator (e.g. a generator): fit iterates it once per epoch; "
            "pass a DataLoader, a Dataset or (X, y) tensors"
        )
    if hasattr(data, "__iter__"):
        return UserLoader(data)
    raise TypeError(
        f"{name} must be (X, y) tensors or arrays, a Dataset or a DataLoader, got "
        f"{type(data).__name__}"
    )


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a batch (tuples, lists, dicts nested) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True) if batch.device != device else batch
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def _array_like(value: Any) -> bool:
    return isinstance(value, torch.Tensor | np.ndarray)


def _tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got an array of dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array))


def _on(tensors: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device) for t in tensors)
