"""The search's storage: Optuna RDB storages with heartbeats, and secrets kept out of sight.

Heartbeats. Every worker's running trial writes a heartbeat every ``heartbeat_s()`` seconds
(``BABYSIT_HEARTBEAT_S``, default 10); a trial whose heartbeat is older than the grace period
(``BABYSIT_HEARTBEAT_GRACE_S``, default 3 heartbeats) belongs to a dead worker and is failed
(:func:`fail_stale`), so a worker killed with SIGKILL leaves no trial RUNNING forever. Failed
trials do not count toward a stage's quota: another worker runs a new trial in its place.
Optuna marks heartbeats "experimental" (since 2.9); babysit relies on them on purpose, so the
``ExperimentalWarning`` of its own calls is silenced here rather than shown to every user.

Secrets. A storage URL may carry a password in three places: ``user:secret@host``, the same
URL-encoded (``p%40ss`` for ``p@ss``), and query parameters (``?password=secret``, ``passwd``,
``sslpassword``, …). :func:`mask_url` hides all three; :func:`scrub` removes every form of a
URL's secrets from any text, such as a driver's error message, which may quote the URL or its
password. Errors about the storage are raised as ``ConnectionError`` with scrubbed messages and
without the chained driver exception (whose message and arguments may hold the URL).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

__all__ = [
    "CONNECT_TIMEOUT_S",
    "fail_stale",
    "grace_s",
    "heartbeat_s",
    "mask_url",
    "open_storage",
    "scrub",
    "scrubbed_errors",
    "secrets",
]

CONNECT_TIMEOUT_S = 10  # a PostgreSQL server that does not answer is an error, not a hang
MASK = "***"
# Query parameters whose value is a secret (libpq's password/sslpassword, common spellings).
_SECRET_KEYS = ("password", "passwd", "pwd", "pass", "sslpassword", "secret", "token")
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@?#]*):(?P<secret>[^@/?#]*)@")
_QUERY = re.compile(
    r"(?P<head>[?&;](?:" + "|".join(_SECRET_KEYS) + r")=)(?P<secret>[^&;#]*)", re.IGNORECASE
)


def heartbeat_s() -> int:
    """Seconds between a running trial's heartbeats (``BABYSIT_HEARTBEAT_S``, default 10)."""
    return _positive_int("BABYSIT_HEARTBEAT_S", 10)


def grace_s() -> int:
    """Seconds without a heartbeat after which a running trial is failed
    (``BABYSIT_HEARTBEAT_GRACE_S``, default 3 heartbeats: one late write is not a death)."""
    return _positive_int("BABYSIT_HEARTBEAT_GRACE_S", 3 * heartbeat_s())


def _positive_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={text!r}: give a whole number of seconds >= 1")
    return value


def secrets(url: str) -> list[str]:
    """Every form in which ``url``'s secrets may be quoted: as written, decoded and re-encoded."""
    raw = [m.group("secret") for m in _USERINFO.finditer(url)]
    raw += [m.group("secret") for m in _QUERY.finditer(url)]
    forms: set[str] = set()
    for secret in raw:
        if secret:
            forms |= {secret, unquote(secret), unquote_plus(secret)}
            forms |= {quote(unquote(secret), safe=""), quote_plus(unquote(secret))}
    return sorted((f for f in forms if f), key=len, reverse=True)  # longest first


def mask_url(url: str) -> str:
    """``url`` with every secret replaced by ``***``: the userinfo password (plain or
    URL-encoded) and secret query parameters (``?password=…``).

    >>> mask_url("postgresql://u:p%40ss@db:5432/x?sslmode=require&password=p%40ss")
    'postgresql://u:***@db:5432/x?sslmode=require&password=***'
    """
    masked = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", url)
    return _QUERY.sub(lambda m: f"{m.group('head')}{MASK}", masked)


def scrub(text: str, url: str | None) -> str:
    """``text`` with ``url`` masked and every form of its secrets replaced by ``***``."""
    if not url:
        return text
    text = text.replace(url, mask_url(url))
    for secret in secrets(url):
        text = text.replace(secret, MASK)
    return text


@contextlib.contextmanager
def scrubbed_errors(url: str | None) -> Iterator[None]:
    """Re-raise storage errors as ``ConnectionError`` with ``url``'s secrets scrubbed, and any
    other error that quotes a secret with it scrubbed, without the chained original.

    A storage error is one from SQLAlchemy, a database driver or Optuna's storage layer, or
    one raised ``from`` such an error (Optuna re-raises driver errors as its own).
    """
    try:
        yield
    except Exception as err:
        if not url or not isinstance(url, str):
            raise
        chain = _chain(err)
        cause = next((e for e in _chain(err, implicit=False) if _is_storage_error(e)), None)
        if cause is not None:
            text = scrub(f"{cause}", url).strip()
            first = text.splitlines()[0] if text else type(cause).__name__
            raise ConnectionError(f"the search storage {mask_url(url)} failed: {first}") from None
        if any(secret in f"{e}" for e in chain for secret in secrets(url)):
            cls = type(err) if _rebuildable(err) else RuntimeError
            raise cls(scrub(f"{err}", url)) from None
        raise


def _chain(err: BaseException | None, implicit: bool = True) -> list[BaseException]:
    """``err`` and the exceptions it was raised from (and, with ``implicit``, during),
    outermost first."""
    out: list[BaseException] = []
    while err is not None and err not in out:
        out.append(err)
        err = err.__cause__ or (err.__context__ if implicit else None)
    return out


def _is_storage_error(err: BaseException) -> bool:
    module = type(err).__module__ or ""
    if type(err).__name__ == "StorageInternalError":  # optuna.exceptions
        return True
    return module.split(".")[0] in ("sqlalchemy", "psycopg2", "psycopg", "sqlite3")


def _rebuildable(err: BaseException) -> bool:
    try:
        type(err)("x")
    except Exception:
        return False
    return True


def open_storage(url: Any) -> Any:
    """An Optuna storage for ``url`` (None: in memory), with heartbeats and a connect timeout.

    Errors name the URL with its secrets masked, and never hang: PostgreSQL connections time
    out after ``CONNECT_TIMEOUT_S`` seconds.
    """
    import optuna

    if url is None:
        return None
    if not isinstance(url, str):
        return url  # an Optuna storage object
    engine_kwargs: dict[str, Any] = {}
    target = url
    if url.startswith(("postgresql", "postgres")):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        target = _postgres_driver(url)
    interval, grace = heartbeat_s(), grace_s()
    try:
        with quiet_experimental():
            return optuna.storages.RDBStorage(
                target,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=interval,
                grace_period=grace,
            )
    except Exception as err:
        lines = scrub(str(err), url).strip().splitlines() or [type(err).__name__]
        raise ConnectionError(
            f"cannot open the search storage {mask_url(url)}: {lines[0]}"
        ) from None


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Silence Optuna's ``ExperimentalWarning`` for babysit's deliberate use of heartbeats."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def fail_stale(study: Any) -> None:
    """Fail the running trials of ``study`` whose heartbeat is older than the grace period."""
    import optuna

    with quiet_experimental():
        optuna.storages.fail_stale_trials(study)


def wait_for_running(
    study: Any,
    say: Callable[[str], None] | None,
    timeout: float | None = None,
) -> None:
    """Wait until no trial of ``study`` is running, failing stale ones as their grace expires.

    The running trials are other workers' (they finish) or dead workers' (failed once their
    heartbeat is older than the grace period). ``say`` is told once what is waited for and why.
    On a storage with heartbeats every wait ends (a live worker finishes its trial, a dead
    one's is failed), so ``timeout=None`` waits as long as that takes; without heartbeats a
    dead worker's trial would run forever, so give a ``timeout`` (seconds).
    """
    import optuna

    running = (optuna.trial.TrialState.RUNNING,)
    fail_stale(study)
    trials = study.get_trials(deepcopy=False, states=running)
    if not trials:
        return
    grace = grace_s()
    if say is not None:
        numbers = ", ".join(str(t.number) for t in trials[:5]) + (", …" if len(trials) > 5 else "")
        say(
            f"{study.study_name}: waiting for {len(trials)} running trial(s) ({numbers}) before "
            f"going on: another worker is finishing them, or a worker died mid-trial and its "
            f"trial is failed once its heartbeat is {grace} s old"
        )
    deadline = None if timeout is None else time.monotonic() + timeout
    while study.get_trials(deepcopy=False, states=running):
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(
                f"study {study.study_name!r} still has running trials after {timeout:g} s, and "
                "its storage has no heartbeats to tell a dead worker's trial from a live one: "
                "open it with babysit.tuning.open_storage(url), or finish those trials"
            )
        time.sleep(0.5)
        fail_stale(study)


def _postgres_driver(url: str) -> str:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; use psycopg2 when only it is here."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if "+" in scheme or importlib.util.find_spec("psycopg") is not None:
        return url
    if importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2{sep}{rest}"
    return url
