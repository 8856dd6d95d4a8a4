"""Several worker processes on one storage (SQLite file, and PostgreSQL as CI starts it): the
stages are shared, a worker killed with SIGKILL loses no completed trial, and its running trial
is failed by the heartbeat and replaced; a search restarted after a kill says what it waits for
and leaves no trial RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import optuna
import pytest

_WORKER = textwrap.dedent(
    """
    import math, os, sys, time
    import babysit as bs

    def slow(params, trial):
        if os.environ.get("SLOW_WORKER") == "1":
            print("TRIAL", trial.number, flush=True)
            time.sleep(60)  # killed in here
        time.sleep(0.05)
        return -((math.log10(params["lr"]) + 3) ** 2)

    bs.search({"lr": bs.loguniform(1e-6, 1.0)}, slow, storage=sys.argv[1],
              study_name=sys.argv[2], n_trials=12, stages=2, seed=int(sys.argv[3]))
    print("DONE", flush=True)
    """
)


def _run_workers(tmp_path, url: str) -> str:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    name = f"w-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "BABYSIT_HEARTBEAT_S": "1"}
    doomed = subprocess.Popen(
        [sys.executable, str(script), url, name, "99"],
        env={**env, "SLOW_WORKER": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert doomed.stdout.readline().startswith("TRIAL")  # mid-trial
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), url, name, str(i)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    time.sleep(1.0)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    for w in workers:
        out, _ = w.communicate(timeout=240)
        assert w.returncode == 0 and "DONE" in out
    return name


def _check(url: str, name: str) -> None:
    from babysit.tuning import open_storage

    states = optuna.trial.TrialState
    storage = open_storage(url)
    stage1 = optuna.load_study(study_name=f"{name}-stage1", storage=storage)
    stage2 = optuna.load_study(study_name=f"{name}-stage2", storage=storage)
    done1 = [t for t in stage1.trials if t.state in (states.COMPLETE, states.PRUNED)]
    done2 = [t for t in stage2.trials if t.state in (states.COMPLETE, states.PRUNED)]
    assert len(done1) >= 8 and len(done2) >= 4  # the quota, whoever ran them
    assert not [t for t in stage1.trials if t.state == states.RUNNING]
    failed = [t for t in stage1.trials if t.state == states.FAIL]
    assert len(failed) == 1  # the killed worker's trial, failed by its stale heartbeat
    space = stage2.user_attrs["space"]["lr"]
    assert 1e-6 <= space["low"] < space["high"] <= 1.0  # one narrowed range, set once


def test_workers_share_a_sqlite_search_and_survive_a_kill(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    _check(url, _run_workers(tmp_path, url))


def test_workers_share_a_postgresql_search_and_survive_a_kill(tmp_path, postgres_url):
    _check(postgres_url, _run_workers(tmp_path, postgres_url))


@pytest.mark.parametrize("bad", ["sqlite:////nonexistent/dir/x.db"])
def test_unusable_storage_path(bad):
    import babysit as bs

    with pytest.raises(ConnectionError, match="cannot open the search storage"):
        bs.search({"lr": bs.loguniform(1e-4, 1e-1)}, lambda p, t: 0.0, storage=bad)


_RESTART = textwrap.dedent(
    """
    import math, os, sys, time
    import babysit as bs

    def objective(params, trial):
        if os.environ.get("DIE_IN_STAGE2") == "1" and trial.study.study_name.endswith("stage2"):
            print("TRIAL", trial.number, flush=True)
            time.sleep(60)  # killed in here
        return -((math.log10(params["lr"]) + 3) ** 2)

    bs.search({"lr": bs.loguniform(1e-6, 1.0)}, objective, run_dir=sys.argv[1],
              n_trials=6, stages=2, epochs=4)
    print("DONE", flush=True)
    """
)


def test_a_search_restarted_after_a_kill_in_stage_2_says_why_it_waits_and_ends_clean(tmp_path):
    """A worker killed mid-trial in the last stage: the restarted search runs the stage's
    missing trials, then says (once, on stderr) that it waits for the dead trial's heartbeat to
    go stale, shows no Optuna ExperimentalWarning, and ends with that trial FAIL, none RUNNING.
    The grace (2 heartbeats of 2 s) outlasts the restart, so the wait is real."""
    script = tmp_path / "restart.py"
    script.write_text(_RESTART)
    run = tmp_path / "s"
    env = {**os.environ, "BABYSIT_HEARTBEAT_S": "2", "BABYSIT_HEARTBEAT_GRACE_S": "6"}
    doomed = subprocess.Popen(
        [sys.executable, str(script), str(run)],
        env={**env, "DIE_IN_STAGE2": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    killed = int(doomed.stdout.readline().split()[1])  # mid-trial in stage 2
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    again = subprocess.run(
        [sys.executable, str(script), str(run)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "DONE" in again.stdout, again.stderr
    waits = [line for line in again.stderr.splitlines() if "waiting for" in line]
    assert len(waits) == 1 and "heartbeat" in waits[0] and f"({killed})" in waits[0]
    assert "ExperimentalWarning" not in again.stderr
    rows = (run / "trials.csv").read_text().splitlines()[1:]
    states = {(r.split(",")[0], r.split(",")[1]): r.split(",")[2] for r in rows}
    assert "RUNNING" not in states.values()
    assert states[("2", str(killed))] == "FAIL"
    assert list(states.values()).count("COMPLETE") == 6  # the quota, the dead trial replaced
