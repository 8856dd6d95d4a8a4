"""Shared fixtures. One thread per test process: the suite runs under xdist on 2 cores."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

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
