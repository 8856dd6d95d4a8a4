"""Storage URLs: passwords never leak, in any form (plain, URL-encoded, ``?password=``), into
files, messages or re-raised driver errors — tested against the real PostgreSQL too."""

from __future__ import annotations

import math
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from typer.testing import CliRunner

import babysit as bs
from babysit import runs
from babysit.cli import app
from babysit.tuning import mask_url
from babysit.tuning.storage import scrub, scrubbed_errors

SECRET = "Wr0ng@Secret"
ENCODED = "Wr0ng%40Secret"


def _quadratic(params, trial):
    return -((math.log10(params["lr"]) + 3) ** 2)


def _no_secret(text: str) -> bool:
    return all(form not in text for form in (SECRET, ENCODED, "Wr0ng%2540Secret"))


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:p4ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        (f"postgresql://u:{ENCODED}@h/db", "postgresql://u:***@h/db"),
        (f"postgresql://u@h/db?password={ENCODED}", "postgresql://u@h/db?password=***"),
        (
            f"postgresql+psycopg2://u@h/db?sslmode=require&PASSWD={SECRET}&x=1",
            "postgresql+psycopg2://u@h/db?sslmode=require&PASSWD=***&x=1",
        ),
        ("postgresql://u:@h/db", "postgresql://u:***@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("postgresql://h/db", "postgresql://h/db"),
    ],
)
def test_mask_url_hides_every_form(url, masked):
    assert mask_url(url) == masked


def test_scrub_removes_the_decoded_and_encoded_password_from_any_text():
    url = f"postgresql://u:{ENCODED}@h/db"
    text = f'failed for "{SECRET}" via {url} ({ENCODED})'
    clean = scrub(text, url)
    assert _no_secret(clean) and "postgresql://u:***@h/db" in clean


def test_driver_errors_are_reraised_scrubbed_without_their_chain():
    from sqlalchemy.exc import OperationalError

    url = f"postgresql://u@h/db?password={ENCODED}"
    with pytest.raises(ConnectionError) as caught, scrubbed_errors(url):
        raise OperationalError(f"connect to {url}", {"pw": SECRET}, Exception(SECRET))
    assert _no_secret(str(caught.value)) and "password=***" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(ConnectionError) as wrapped, scrubbed_errors(url):  # Optuna's re-raise
        try:
            raise OperationalError(f"connect to {url}", None, Exception(SECRET))
        except OperationalError as inner:
            raise RuntimeError("An exception is raised during the commit.") from inner
    assert _no_secret(str(wrapped.value)) and "password=***" in str(wrapped.value)
    with pytest.raises(KeyError) as other, scrubbed_errors(url):  # unrelated: passes as it is
        raise KeyError("lr")
    assert other.value.args == ("lr",)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://nobody:{ENCODED}@127.0.0.1:1/none",
        f"postgresql://nobody@127.0.0.1:1/none?password={ENCODED}",
    ],
)
def test_unreachable_storage_error_hides_the_password(url):
    with pytest.raises(ConnectionError, match="cannot open the search storage") as caught:
        bs.search({"lr": bs.loguniform(1e-4, 1e-1)}, _quadratic, storage=url, n_trials=2)
    assert _no_secret(str(caught.value)) and "***" in str(caught.value)


def _with_password(url: str, password: str | None, query: str = "") -> str:
    """``url`` (postgresql://user:pw@host/db) with another password, or none, and a query."""
    parts = urlsplit(url)
    user = parts.username or ""
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    netloc = f"{user}:{password}@{host}" if password is not None else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@pytest.mark.services
def test_postgresql_wrong_password_is_a_clear_error_without_it(postgres_url, tmp_path):
    for url in (
        _with_password(postgres_url, ENCODED),
        _with_password(postgres_url, None, f"password={ENCODED}"),
    ):
        with pytest.raises(ConnectionError) as caught:
            bs.search(
                {"lr": bs.loguniform(1e-4, 1e-1)},
                _quadratic,
                storage=url,
                n_trials=2,
                stages=1,
                run_dir=tmp_path / "s",
            )
        assert "password authentication failed" in str(caught.value)
        assert _no_secret(str(caught.value))
        assert not (tmp_path / "s" / "search.json").exists()


@pytest.mark.services
def test_postgresql_password_as_a_query_parameter_is_masked_everywhere(postgres_url, tmp_path):
    password = urlsplit(postgres_url).password
    assert password, "BABYSIT_POSTGRES_URL must carry a password for this test"
    url = _with_password(postgres_url, None, f"password={password}")
    name = f"wp-A-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "s"
    result = CliRunner().invoke(
        app,
        [
            "search",
            "--data",
            "digits",
            "--space",
            '{"lr": ["loguniform", 1e-3, 0.1], "hidden": 16}',
            "--epochs",
            "1",
            "--n-trials",
            "2",
            "--stages",
            "1",
            "--storage",
            url,
            "--study-name",
            name,
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"password={password}" not in result.output
    for file in ("search.json", "config.json"):
        stored = runs.read_json(out, file)["storage"]
        assert stored.endswith("?password=***") and f"={password}" not in stored
    for path in out.rglob("*.json"):
        assert f"password={password}" not in path.read_text()
