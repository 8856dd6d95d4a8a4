"""Bundled data sets, loaded as ``Splits(train, val, test)`` of ``TensorDataset``s.

Features are float32 at their raw scale (preprocessing is the user's step, as in the lecture);
labels are int64. The validation split is carved from the training split by ``seed``; the test
split never depends on it, and neither does the data itself.

- ``"digits"``: scikit-learn's bundled 8×8 handwritten digits, (N, 64), values 0..16.
- ``"mnist1d"``: MNIST-1D (Greydanus, 2020), (N, 40), generated locally by the ``mnist1d``
  package's ``make_dataset`` with its default arguments (4000 train / 1000 test), cached.
- ``"cifar10:/path/to/cifar-10-batches-bin"``: CIFAR-10's binary version, (N, 3, 32, 32),
  values 0..255.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["DATASETS", "Splits", "cache_dir", "load"]

DATASETS = ("digits", "mnist1d", "cifar10:<path>")

TEST_SPLIT_SEED = 20_200_731  # fixed: the test split of digits must not move with `seed`
DIGITS_TEST_FRACTION = 0.2
MNIST1D_CACHE_VERSION = 1  # bump when the generation arguments change

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_RECORD = 1 + 3 * 32 * 32  # one label byte, then 3072 pixel bytes (R, G, B planes)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


@dataclass(frozen=True)
class Splits:
    """Train, validation and test ``TensorDataset``s of one data set.

    Unpacks like a tuple: ``train, val, test = babysit.data.load("digits")``.
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    name: str = ""
    num_classes: int = 0
    classes: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[TensorDataset]:
        return iter((self.train, self.val, self.test))

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one input example, e.g. ``(40,)`` for MNIST-1D."""
        return tuple(self.train.tensors[0].shape[1:])

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(getattr(self, k))}" for k in ("train", "val", "test"))
        return (
            f"Splits({self.name!r}: {sizes}, example_shape={self.example_shape}, "
            f"num_classes={self.num_classes})"
        )


def load(name: str, *, seed: int = 0, val_fraction: float = 0.2) -> Splits:
    """Load a bundled data set as ``Splits(train, val, test)``.

    Args:
        name: ``"digits"``, ``"mnist1d"`` or ``"cifar10:<path to cifar-10-batches-bin>"``.
        seed: seeds the train/validation split only; the data and test split never change.
        val_fraction: fraction of the training examples moved to validation, in [0, 1).

    >>> train, val, test = load("digits")
    >>> train.tensors[0].shape, train.tensors[0].dtype, len(val), len(test)
    (torch.Size([1150, 64]), torch.float32, 288, 359)
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    key, _, arg = str(name).partition(":")
    loader = _LOADERS.get(key.strip().lower())
    if loader is None:
        raise ValueError(
            f"unknown data set {name!r}; known: {', '.join(DATASETS)} "
            "(e.g. 'cifar10:/data/cifar-10-batches-bin')"
        )
    (x_train, y_train), (x_test, y_test), classes = loader(arg)
    train, val = _split(x_train, y_train, val_fraction, seed)
    return Splits(
        train=train,
        val=val,
        test=_dataset(x_test, y_test),
        name=key,
        num_classes=len(classes),
        classes=classes,
    )


Arrays = tuple[np.ndarray, np.ndarray]


def _load_digits(arg: str) -> tuple[Arrays, Arrays, tuple[str, ...]]:
    _no_argument("digits", arg)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
    order = np.random.default_rng(TEST_SPLIT_SEED).permutation(len(y))
    n_test = round(DIGITS_TEST_FRACTION * len(y))
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test]), tuple(str(c) for c in range(10))


def _load_mnist1d(arg: str) -> tuple[Arrays, Arrays, tuple[str, ...]]:
    _no_argument("mnist1d", arg)
    path = cache_dir() / f"mnist1d-v{MNIST1D_CACHE_VERSION}.npz"
    if not path.exists():
        _atomic_save_npz(path, **_generate_mnist1d())
    with np.load(path) as arrays:
        x, y = arrays["x"], arrays["y"]
        x_test, y_test = arrays["x_test"], arrays["y_test"]
    return (x, y), (x_test, y_test), tuple(str(c) for c in range(10))


def _generate_mnist1d() -> dict[str, np.ndarray]:
    """Run ``mnist1d.data.make_dataset`` with its defaults, leaving the global RNGs as they were.

    ``make_dataset`` reseeds Python's and numpy's global generators (``set_seed(42)``), and
    ``mnist1d`` imports matplotlib, so it is imported here, lazily.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x": data["x"].astype(np.float32),
        "y": data["y"].astype(np.int64),
        "x_test": data["x_test"].astype(np.float32),
        "y_test": data["y_test"].astype(np.int64),
    }


def _load_cifar10(arg: str) -> tuple[Arrays, Arrays, tuple[str, ...]]:
    root = Path(arg.strip()).expanduser()
    if not arg.strip():
        raise ValueError(
            "cifar10 needs the folder of the binary version: "
            "'cifar10:/path/to/cifar-10-batches-bin'"
        )
    expected = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    missing = [f for f in expected if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 binary files missing in {root}: {', '.join(missing)}. Expected the "
            f"layout of cifar-10-binary.tar.gz, a folder holding {', '.join(expected)} (each "
            f"record: 1 label byte, then 3072 pixel bytes)."
        )
    train = [_read_cifar10_batch(root / f) for f in CIFAR10_TRAIN_FILES]
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return (x_train, y_train), _read_cifar10_batch(root / CIFAR10_TEST_FILE), CIFAR10_CLASSES


def _read_cifar10_batch(path: Path) -> Arrays:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % CIFAR10_RECORD:
        raise ValueError(
            f"{path} is not a CIFAR-10 binary batch: its size ({raw.size} bytes) is not a "
            f"positive multiple of the {CIFAR10_RECORD}-byte record"
        )
    records = raw.reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        raise ValueError(f"{path}: label {labels.max()} outside 0..9; is this CIFAR-100?")
    images = records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32)  # (N, C, H, W)
    return images, labels


_LOADERS: dict[str, Callable[[str], tuple[Arrays, Arrays, tuple[str, ...]]]] = {
    "digits": _load_digits,
    "mnist1d": _load_mnist1d,
    "cifar10": _load_cifar10,
}


def cache_dir() -> Path:
    """Where generated data is cached: ``$BABYSIT_CACHE``, else ``$XDG_CACHE_HOME/babysit``."""
    explicit = os.environ.get("BABYSIT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "babysit"


def _atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write ``path`` through a temporary file and a rename, so concurrent writers and readers
    only ever see a complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _split(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int):
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = round(val_fraction * len(y))
    val, train = order[:n_val], order[n_val:]
    return _dataset(x[train], y[train]), _dataset(x[val], y[val])


def _dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    return TensorDataset(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
    )


def _no_argument(name: str, arg: str) -> None:
    if arg:
        raise ValueError(f"data set {name!r} takes no argument, got {name}:{arg}")
