"""The services later features need are really there in CI (PostgreSQL, Chromium)."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.services


def test_postgres_answers_a_query(postgres_url):
    import psycopg2

    with psycopg2.connect(postgres_url, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT 41 + 1")
        assert cur.fetchone() == (42,)
    conn.close()


def test_chromium_renders_a_local_page(chromium_path, tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<html><body><p id='x'>babysit &lt;ok&gt;</p></body></html>")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    out = subprocess.run(
        [chromium_path, *flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "babysit &lt;ok&gt;" in out.stdout
