"""Run a script under the real launcher, ``torch.distributed.run`` (torchrun), on CPU with gloo.

Every multi-process test goes through :func:`torchrun`, so all of them launch the same way users
do, with one thread per process (the suite runs on 2 cores) and a hard timeout: a test whose
ranks hang fails with the processes' output instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def torchrun(
    script: str | Path,
    *args: str,
    nproc: int = 2,
    timeout: float = 240,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc-per-node nproc script *args``.

    Returns the completed process (stdout and stderr captured as text). With ``check`` a non-zero
    exit is an AssertionError carrying both streams.
    """
    full_env = dict(os.environ)
    full_env.update(
        {
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(SRC), full_env.get("PYTHONPATH", "")]),
            "BABYSIT_STRICT_CHECKS": "1",
        }
    )
    full_env.update(env or {})
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        str(script),
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and done.returncode != 0:
        raise AssertionError(
            f"torchrun exited {done.returncode}\n--- stdout ---\n{done.stdout[-6000:]}"
            f"\n--- stderr ---\n{done.stderr[-6000:]}"
        )
    return done
