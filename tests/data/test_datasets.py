"""Bundled data sets: shapes, dtypes, raw scale, splits that move with `seed` only, CIFAR-10."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from babysit.data import Splits, load
from babysit.data import datasets as ds


def test_digits_shapes_dtypes_and_raw_scale():
    splits = load("digits")
    assert isinstance(splits, Splits)
    x, y = splits.train.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape[1:] == (64,) and splits.example_shape == (64,)
    assert x.min() == 0 and x.max() == 16  # raw scale: preprocessing is the user's step
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797
    assert splits.num_classes == 10 and set(y.tolist()) == set(range(10))


def test_seed_moves_the_validation_split_but_never_the_test_split_or_data():
    a, b = load("digits", seed=0), load("digits", seed=1)
    torch.testing.assert_close(a.test.tensors[0], b.test.tensors[0])
    assert not torch.equal(a.val.tensors[0], b.val.tensors[0])

    def pooled(s):
        return sorted(map(tuple, torch.cat([s.train.tensors[0], s.val.tensors[0]]).tolist()))

    assert pooled(a) == pooled(b)


def test_same_seed_same_split():
    a, b = load("digits", seed=3), load("digits", seed=3)
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])


def test_val_fraction_sizes_and_validation():
    n_train = len(load("digits", val_fraction=0.0).train)
    assert len(load("digits", val_fraction=0.0).val) == 0
    assert len(load("digits", val_fraction=0.5).val) == round(0.5 * n_train)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\), got 1.0"):
        load("digits", val_fraction=1.0)


def test_splits_unpack_like_a_tuple():
    train, val, test = load("digits")
    assert len(train) > len(val) > 0 and len(test) > 0


def test_unknown_name_lists_known_data_sets():
    with pytest.raises(ValueError, match=r"unknown data set 'mnist'.*digits, mnist1d, cifar10"):
        load("mnist")


def test_mnist1d_generated_locally_without_touching_global_rngs(tmp_path, monkeypatch):
    monkeypatch.setenv("BABYSIT_CACHE", str(tmp_path))
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    splits = load("mnist1d")
    after = (random.random(), np.random.rand())
    assert before == after  # make_dataset reseeds the global RNGs: we restore them
    x, y = splits.train.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape[1:] == (40,)
    assert len(splits.train) + len(splits.val) == 4000 and len(splits.test) == 1000
    assert list(tmp_path.glob("mnist1d-v*.npz")), "the generated arrays are cached"
    assert not list(tmp_path.glob(".*")), "no temporary file is left behind"
    again = load("mnist1d")  # from the cache: identical
    torch.testing.assert_close(again.test.tensors[0], splits.test.tensors[0])


def test_cache_write_is_atomic_when_interrupted(tmp_path, monkeypatch):
    def boom(handle, **arrays):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ds.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        ds._atomic_save_npz(tmp_path / "x.npz", a=np.zeros(3))
    assert list(tmp_path.iterdir()) == []  # neither a partial file nor a temp file


def test_cifar10_binary_format_is_read_exactly(cifar_dir):
    root, written = cifar_dir
    splits = load(f"cifar10:{root}", val_fraction=0.0)
    x, y = splits.test.tensors
    labels, pixels = written["test_batch.bin"]
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    assert torch.equal(x, torch.from_numpy(pixels.astype(np.float32)))
    assert len(splits.train) == 30 and splits.classes[0] == "airplane"


def test_cifar10_missing_files_name_the_expected_layout(cifar_dir):
    root, _ = cifar_dir
    (root / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing in .*: data_batch_3.bin.*test_batch.bin"):
        load(f"cifar10:{root}")


def test_cifar10_needs_a_path():
    with pytest.raises(ValueError, match="cifar10 needs the folder"):
        load("cifar10")


def test_cifar10_truncated_file_is_a_clear_error(cifar_dir):
    root, _ = cifar_dir
    with open(root / "test_batch.bin", "ab") as handle:
        handle.write(b"\x00" * 10)
    with pytest.raises(ValueError, match="not a CIFAR-10 binary batch"):
        load(f"cifar10:{root}")
