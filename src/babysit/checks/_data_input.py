"""Turn what users pass as ``data`` into one probe batch ``(x, y)`` of tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

__all__ = ["probe_batch"]


def probe_batch(data: Any, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Up to ``n`` examples of ``data`` as ``(x, y, n_examples_in_data)``.

    ``data``: ``(X, y)`` tensors or arrays (or ``X`` alone), a ``Dataset`` or a ``DataLoader``
    yielding ``(x, y)``. From tensors and datasets the examples are drawn at random (seeded);
    from a loader, its first batches are taken in its own order.
    """
    if isinstance(data, DataLoader):
        return _from_loader(data, n)
    if isinstance(data, Dataset):
        return _from_dataset(data, n, seed)
    if isinstance(data, torch.Tensor | np.ndarray):
        data = (data,)
    if isinstance(data, tuple | list) and 1 <= len(data) <= 2:
        x = _tensor(data[0], "X")
        y = _tensor(data[1], "y") if len(data) == 2 else None
        if y is not None and len(y) != len(x):
            raise ValueError(
                f"X and y differ in length: {len(x)} inputs but {len(y)} targets; "
                "pass one target per example"
            )
        _non_empty(len(x))
        index = _sample(len(x), n, seed)
        return x[index], None if y is None else y[index], len(x)
    raise TypeError(
        f"data must be (X, y) tensors or arrays, a Dataset or a DataLoader, got "
        f"{type(data).__name__}"
    )


def _from_dataset(data: Dataset, n: int, seed: int):
    try:
        size = len(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError("a Dataset passed to diagnose needs __len__; pass a DataLoader") from None
    _non_empty(size)
    return (*_split(default_collate([data[int(i)] for i in _sample(size, n, seed)])), size)


def _from_loader(loader: DataLoader, n: int):
    batches, count = [], 0
    for batch in loader:
        x, y = _split(batch)
        batches.append((x, y))
        count += len(x)
        if count >= n:
            break
    _non_empty(count)
    x = torch.cat([b[0] for b in batches])[:n]
    y = None if batches[0][1] is None else torch.cat([b[1] for b in batches])[:n]
    try:
        size = len(loader.dataset)  # type: ignore[arg-type]
    except TypeError:
        size = count
    return x, y, size


def _split(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, tuple | list) and len(batch) >= 1:
        x = _tensor(batch[0], "x")
        return x, _tensor(batch[1], "y") if len(batch) > 1 else None
    raise TypeError(
        f"batches must be tensors or (x, y) pairs, got {type(batch).__name__}; for other "
        "batches, train with babysit.fit(..., forward=lambda model, batch: (output, target))"
    )


def _tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.dtype == np.float64:
        array = array.astype(np.float32)  # torch's default dtype; float64 models are rare
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got an array of dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array))


def _sample(size: int, n: int, seed: int) -> torch.Tensor:
    if size <= n:
        return torch.arange(size)
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n]


def _non_empty(size: int) -> None:
    if size == 0:
        raise ValueError("data is empty: diagnose needs at least one example (ideally >= 256)")
