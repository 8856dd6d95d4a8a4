"""Reading what users pass as ``data``: minibatches for ``fit``, one probe batch for the others.

``data`` is ``(X, y)`` tensors or arrays, a ``Dataset``, a ``DataLoader`` or (for ``fit``) any
re-iterable of batches. :func:`make_batches` cuts it into minibatches in a reproducible order
(``fit``); :func:`probe_examples` draws up to ``n`` examples as one batch (``diagnose``,
``lr_find``), an ``(x, y)`` pair unless ``forward=`` says how to read it. Both convert arrays
with :func:`as_tensor` and name the entry point in their errors. What the examples and targets
must look like is checked in :mod:`babysit.inputs`.

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

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from .inputs import as_labels
from .outputs import FORWARD_HINT, Forward, batch_size_of, describe_batch, map_tensors, take

__all__ = [
    "Batches",
    "DatasetBatches",
    "TensorBatches",
    "UserLoader",
    "as_tensor",
    "make_batches",
    "preserved_rng",
    "probe_examples",
    "to_device",
]

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
    """The :class:`Batches` for ``data`` (``name`` is ``"data"`` or ``"val"``, for messages).

    Integer targets of in-memory data are widened to int64 (:func:`babysit.inputs.as_labels`):
    cross-entropy takes class indices only as int64, and int32/uint8 labels are common.
    """
    if isinstance(data, DataLoader):
        return UserLoader(data)
    if isinstance(data, TensorDataset):
        tensors = data.tensors
        if len(tensors) == 2:
            tensors = (tensors[0], as_labels(tensors[1]))
        return TensorBatches(_on(tensors, device), batch_size, shuffle=shuffle, seed=seed)
    if isinstance(data, Dataset):
        if not hasattr(data, "__len__"):
            raise TypeError(f"{name}: an IterableDataset needs a DataLoader; pass one instead")
        return DatasetBatches(data, batch_size, shuffle=shuffle, seed=seed)
    if isinstance(data, tuple | list) and len(data) == 2 and _array_like(data[0]):
        x, y = as_tensor(data[0], f"{name} X"), as_labels(as_tensor(data[1], f"{name} y"))
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


def probe_examples(
    data: Any, n: int, seed: int, *, entry: str, forward: Forward | None = None
) -> tuple[Any, int]:
    """Up to ``n`` examples of ``data`` as one batch, and the number of examples in ``data``.

    ``data``: ``(X, y)`` tensors or arrays (or ``X`` alone), a ``Dataset`` or a ``DataLoader``.
    From tensors and datasets the examples are drawn at random (seeded); from a loader, its
    first batches are taken in its own order and concatenated. ``entry`` (``"diagnose"``,
    ``"lr_find"``) names the caller in error messages. Integer targets of an ``(x, y)`` batch
    come back as int64. Without ``forward`` a batch must be ``(x, y)`` or ``x``: three or more
    items, or a dict, are a ``ValueError`` naming ``forward=`` (never silently read as
    ``(x, y)``). Torch's global RNG and the loader's generator are left as they were
    (:func:`preserved_rng`).
    """
    with preserved_rng(data):
        if isinstance(data, DataLoader):
            batch, size = _from_loader(data, n, entry)
        elif isinstance(data, Dataset):
            batch, size = _from_dataset(data, n, seed, entry)
        else:
            batch, size = _from_arrays(data, n, seed, entry, forward)
    if forward is None:
        batch = _pair(batch, entry)
    return map_tensors(batch, torch.Tensor.detach), size  # the checks' graphs start here


def _from_arrays(data: Any, n: int, seed: int, entry: str, forward: Forward | None):
    if isinstance(data, torch.Tensor | np.ndarray):
        data = (data,)
    if not isinstance(data, tuple | list) or not data:
        raise TypeError(
            f"data must be (X, y) tensors or arrays, a Dataset or a DataLoader, got "
            f"{type(data).__name__}"
        )
    if len(data) > 2 and forward is None:
        raise ValueError(
            f"{entry}: data has {len(data)} arrays; babysit reads (X, y) by default, and "
            f"would not guess which is the target: {FORWARD_HINT}"
        )
    tensors = [
        as_tensor(t, "X" if i == 0 else "y" if i == 1 else f"data[{i}]") for i, t in enumerate(data)
    ]
    if len({len(t) for t in tensors}) > 1:
        if len(tensors) == 2:
            raise ValueError(
                f"X and y differ in length: {len(tensors[0])} inputs but {len(tensors[1])} "
                "targets; pass one target per example"
            )
        raise ValueError(
            f"the arrays of data differ in length ({[len(t) for t in tensors]}); pass one row "
            "per example in each"
        )
    _non_empty(len(tensors[0]), entry)
    index = _sample(len(tensors[0]), n, seed)
    return tuple(t[index] for t in tensors), len(tensors[0])


def _pair(batch: Any, entry: str) -> Any:
    """An ``(x, y)`` or ``(x,)`` batch with int64 labels; anything else names ``forward=``."""
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, tuple | list) and 1 <= len(batch) <= 2:
        x = as_tensor(batch[0], "x")
        if len(batch) == 1:
            return (x,)
        return (x, as_labels(as_tensor(batch[1], "y")))
    raise ValueError(
        f"{entry}: the data gives {describe_batch(batch)}; babysit reads (x, y) batches by "
        f"default and never guesses which item is the target: {FORWARD_HINT}"
    )


@contextmanager
def preserved_rng(data: Any = None, device: Any = None) -> Iterator[None]:
    """Leave torch's global CPU and CUDA generators, Python's and NumPy's global RNGs, and a
    ``DataLoader``'s own generator (and its sampler's) as they were on entry.

    Drawing a probe batch from a shuffled ``DataLoader`` advances its generator (or torch's
    global one); ``diagnose`` and ``lr_find`` must not change what the user's next epoch sees.
    CUDA generators are saved when CUDA is already initialized or ``device`` is a CUDA device
    (saving them initializes CUDA, which a CPU-only run should not pay for).
    """
    generators = []
    if isinstance(data, DataLoader):
        for owner in (data, getattr(data, "sampler", None), getattr(data, "batch_sampler", None)):
            g = getattr(owner, "generator", None)
            if isinstance(g, torch.Generator) and all(g is not h for h, _ in generators):
                generators.append((g, g.get_state()))
        inner = getattr(getattr(data, "batch_sampler", None), "sampler", None)
        g = getattr(inner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h, _ in generators):
            generators.append((g, g.get_state()))
    py_state, np_state = random.getstate(), np.random.get_state()
    on_cuda = device is not None and torch.device(device).type == "cuda"
    cuda = torch.cuda.is_available() and (torch.cuda.is_initialized() or on_cuda)
    devices = list(range(torch.cuda.device_count())) if cuda else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        for g, state in generators:
            g.set_state(state)


def _from_dataset(data: Dataset, n: int, seed: int, entry: str) -> tuple[Any, int]:
    try:
        size = len(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"a Dataset passed to {entry} needs __len__; pass a DataLoader") from None
    _non_empty(size, entry)
    return default_collate([data[int(i)] for i in _sample(size, n, seed)]), size


def _from_loader(loader: DataLoader, n: int, entry: str) -> tuple[Any, int]:
    batches, count = [], 0
    for batch in loader:
        if isinstance(batch, np.ndarray):
            batch = as_tensor(batch, "x")
        batches.append(batch)
        count += batch_size_of(batch) or 0
        if count >= n:
            break
    _non_empty(count, entry)
    batch = take(_concat(batches), slice(0, n))
    try:
        size = len(loader.dataset)  # type: ignore[arg-type]
    except TypeError:
        size = count
    return batch, size


def _concat(batches: list[Any]) -> Any:
    """One batch from several of the same structure (tensors concatenated along dim 0)."""
    first = batches[0]
    if len(batches) == 1:
        return first
    if isinstance(first, torch.Tensor):
        return torch.cat(batches) if first.dim() else first
    if isinstance(first, Mapping):
        return type(first)({k: _concat([b[k] for b in batches]) for k in first})  # type: ignore[call-arg]
    if isinstance(first, tuple | list):
        return type(first)(_concat(list(items)) for items in zip(*batches, strict=True))
    if isinstance(first, np.ndarray):
        return torch.cat([as_tensor(b, "batch") for b in batches])
    return first


def _sample(size: int, n: int, seed: int) -> torch.Tensor:
    if size <= n:
        return torch.arange(size)
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n]


def _non_empty(size: int, entry: str) -> None:
    if size == 0:
        raise ValueError(f"data is empty: {entry} needs at least one example (ideally >= 256)")


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


def as_tensor(value: Any, name: str) -> torch.Tensor:
    """``value`` as a tensor: float64 arrays become float32 (torch's default dtype); a
    non-numeric array is a ``TypeError`` naming ``name``."""
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.dtype == np.float64:
        array = array.astype(np.float32)  # torch's default dtype; float64 models are rare
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got an array of dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array))


def _on(tensors: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device) for t in tensors)
