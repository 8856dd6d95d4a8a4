"""Shared fixtures. One thread per test process: the suite runs under xdist on 2 cores."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

# Generated data (MNIST-1D) is cached once for all test processes, never in the user's home.
os.environ.setdefault("BABYSIT_CACHE", str(Path(tempfile.gettempdir()) / "babysit-test-cache"))

# A check that raises inside diagnose is reported as skipped for users; in tests it must fail.
os.environ["BABYSIT_STRICT_CHECKS"] = "1"

REQUIRE_SERVICES = os.environ.get("BABYSIT_REQUIRE_SERVICES") == "1"


def _missing_service(reason: str):
    """Skip locally; fail in CI, where .ci/run starts the services and sets the variable."""
    if REQUIRE_SERVICES:
        pytest.fail(f"BABYSIT_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a reachable PostgreSQL database (BABYSIT_POSTGRES_URL), as .ci/run creates it."""
    url = os.environ.get("BABYSIT_POSTGRES_URL")
    if not url:
        _missing_service("no PostgreSQL: set BABYSIT_POSTGRES_URL (.ci/run starts one)")
    try:
        import psycopg2

        psycopg2.connect(url, connect_timeout=5).close()
    except Exception as err:  # any failure to reach it is a missing service
        _missing_service(f"PostgreSQL at BABYSIT_POSTGRES_URL is not reachable: {err}")
    return url


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of Debian's Chromium (BABYSIT_CHROMIUM or `chromium` on PATH)."""
    path = os.environ.get("BABYSIT_CHROMIUM") or shutil.which("chromium")
    if not path or not Path(path).exists():
        _missing_service("no Chromium: install Debian's chromium (.ci/run does)")
    return path


@pytest.fixture
def seeded():
    """Seed torch's global generator for a test."""
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)


def write_cifar_batch(path, n, seed):
    """One CIFAR-10 binary batch file of ``n`` random examples: (labels, pixels) as written."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=(n, 1), dtype=np.uint8)
    pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    np.concatenate([labels, pixels], axis=1).tofile(path)
    return labels[:, 0], pixels.reshape(n, 3, 32, 32)


def make_cifar_dir(root: Path, n_train: int = 6, n_test: int = 4) -> dict:
    """The layout of cifar-10-binary.tar.gz under ``root``, with ``n_train`` random examples per
    training batch file; returns what each file holds."""
    root.mkdir(parents=True)
    written = {}
    for i in range(1, 6):
        name = f"data_batch_{i}.bin"
        written[name] = write_cifar_batch(root / name, n_train, i)
    written["test_batch.bin"] = write_cifar_batch(root / "test_batch.bin", n_test, 99)
    return written


@pytest.fixture
def cifar_dir(tmp_path):
    """A tiny CIFAR-10 binary folder (6 examples per training file): (path, contents)."""
    root = tmp_path / "cifar-10-batches-bin"
    return root, make_cifar_dir(root)


@pytest.fixture
def cifar_factory():
    """:func:`make_cifar_dir`, for tests that need other sizes."""
    return make_cifar_dir


@pytest.fixture(scope="session")
def friedman() -> tuple[torch.Tensor, torch.Tensor]:
    """benchmarks/lr_families.py's "friedman" regression: 2000 examples, 10 standard-normal
    features, standardized targets (a noisy mini-batch MSE at batch 32)."""
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(2000, 10, generator=gen)
    y = (
        torch.sin(math.pi * x[:, 0] * x[:, 1])
        + 2 * (x[:, 2] - 0.5) ** 2
        + x[:, 3]
        - 0.5 * x[:, 4]
        + 0.1 * torch.randn(2000, generator=gen)
    )
    return x, ((y - y.mean()) / y.std()).unsqueeze(1)
