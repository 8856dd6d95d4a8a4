"""``bs.fit`` under torchrun: 2 gloo ranks on CPU, launched by torch.distributed.run.

The worker (fit_worker.py) trains the MNIST-1D MLP and saves each rank's final weights and
history. What is equivalent to one process is described in docs/distributed.md and
babysit.train.sharding: 2 ranks x batch B see the same global batches as 1 process x 2B.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from babysit.nn import mlp

from .backends import NCCL
from .harness import SRC, torchrun

WORKER = Path(__file__).with_name("fit_worker.py")
N = 1024  # training examples: divisible by 2 ranks, 16 global batches of 64


def _run(
    tmp: Path, name: str, nproc: int, check: bool = True, **cfg
) -> subprocess.CompletedProcess:
    cfg = {"out": str(tmp / name), "n_train": N, **cfg}
    if nproc == 1:
        env = {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [sys.executable, str(WORKER), json.dumps(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        return done
    return torchrun(WORKER, json.dumps(cfg), nproc=nproc, timeout=120, check=check)


def _result(tmp: Path, name: str, rank: int = 0) -> dict:
    return torch.load(tmp / name / f"rank{rank}.pt", weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_ranks_match_one_process_with_the_global_batch(tmp_path):
    _run(tmp_path, "one", 1, batch_size=64)
    _run(tmp_path, "two", 2, batch_size=32, run_dir=str(tmp_path / "run"))
    one, r0, r1 = _result(tmp_path, "one"), _result(tmp_path, "two", 0), _result(tmp_path, "two", 1)
    for k in r0["state"]:  # DDP keeps the ranks' weights identical
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert _max_diff(one["state"], r0["state"]) < 1e-5
    for a, b in zip(one["history"], r0["history"], strict=True):
        assert a.keys() == b.keys()
        for key in ("train_loss", "val_loss", "val_acc", "train_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert r0["history"] == r1["history"]  # metrics averaged across ranks: one story
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["world_size"] == 2 and config["batch_size"] == 32  # per process
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    assert not r0["group_left"]  # fit destroyed the group it created


@pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="nccl needs two CUDA devices (one per process)"
)
def test_nccl_two_ranks_match_one_process_with_the_global_batch(tmp_path):
    """The same equivalence with nccl on CUDA, where a machine has two GPUs (float tolerance:
    cuBLAS may sum in another order than one process)."""
    _run(tmp_path, "one", 1, batch_size=64, device="cuda")
    _run(tmp_path, "two", 2, batch_size=32, device="cuda", run_dir=str(tmp_path / "run"))
    one, r0, r1 = _result(tmp_path, "one"), _result(tmp_path, "two", 0), _result(tmp_path, "two", 1)
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert _max_diff(one["state"], r0["state"]) < 1e-4
    assert json.loads((tmp_path / "run" / "config.json").read_text())["world_size"] == 2


@pytest.mark.parametrize(
    ("wrap", "backend"),
    [(True, "gloo"), (False, "gloo"), pytest.param(False, "nccl", marks=NCCL)],
    ids=["user_wrapper", "fit_wrapper", "fit_wrapper_nccl"],
)
def test_nan_on_rank_one_rolls_back_both_ranks_together(tmp_path, wrap, backend):
    """A model the user wrapped in DDP, in a group the user created (left to them): the loss
    is shared by an all-reduce of its own; fit's own wrapper carries it in DDP's gradient
    all-reduce (babysit.train.loss_carrier). Both must give the same verdict. With nccl (two
    CUDA devices only) fit makes the group and the wrapper on ``cuda:LOCAL_RANK``."""
    run = str(tmp_path / "run")
    device = "cuda" if backend == "nccl" else "cpu"
    _run(tmp_path, "nan", 2, batch_size=32, nan_at_step=5, run_dir=run, wrap=wrap, device=device)
    r0, r1 = _result(tmp_path, "nan", 0), _result(tmp_path, "nan", 1)
    if wrap:
        assert r0["group_left"] and r1["group_left"]
    assert r0["rollbacks"] == r1["rollbacks"] == 1
    for k in r0["state"]:
        assert torch.isfinite(r0["state"][k]).all(), k
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    findings = json.loads((tmp_path / "run" / "findings.json").read_text())["findings"]
    nan = [f for f in findings if f["code"] == "NAN_LOSS"]
    assert len(nan) == 1 and nan[0]["step"] == 5
    assert nan[0]["evidence"]["rank"] == 1 and nan[0]["evidence"]["world_size"] == 2


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """An uninterrupted 2-process run with mid-epoch checkpoints (shared by two tests)."""
    tmp = tmp_path_factory.mktemp("whole")
    _run(tmp, "whole", 2, run_dir=str(tmp / "run"), **KILL_CFG)
    return tmp


KILL_CFG = {"batch_size": 32, "every_steps": 5, "epochs": 2, "dropout": 0.2}  # RNG matters


@pytest.mark.slow  # three 2-process launches (whole, killed, resumed): ~15-45 s on 2 cores
def test_kill_minus_nine_mid_epoch_then_resume_equals_uninterrupted(tmp_path, whole):
    killed = _run(
        tmp_path,
        "killed",
        2,
        check=False,
        run_dir=str(tmp_path / "run"),
        kill_at_step=23,
        **KILL_CFG,
    )
    assert killed.returncode != 0
    assert not (tmp_path / "killed" / "rank0.pt").exists()
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"] == {"epoch": 1, "batch": 4, "step": 20}  # mid-epoch 1
    assert len(state["rank_rng"]) == 2 and len(state["rank_sums"]) == 2
    _run(tmp_path, "resumed", 2, run_dir=str(tmp_path / "run"), resume=True, **KILL_CFG)
    done, resumed = _result(whole, "whole"), _result(tmp_path, "resumed")
    for k in done["state"]:
        assert torch.equal(done["state"][k], resumed["state"][k]), k
    assert done["history"] == resumed["history"]
    metrics = (tmp_path / "run" / "metrics.csv").read_text()
    assert metrics == (whole / "run" / "metrics.csv").read_text()


def test_resume_with_another_world_size_is_refused_and_changes_nothing(tmp_path, whole):
    import babysit as bs

    run = tmp_path / "run"
    shutil.copytree(whole / "run", run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    torch.manual_seed(0)
    model = mlp(40, [64, 64], 10, dropout=KILL_CFG["dropout"])  # the worker's model
    x, y = torch.randn(N, 40), torch.randint(0, 10, (N,))
    with pytest.raises(ValueError, match=r"trained by 2 process\(es\) and this job has 1"):
        bs.fit(model, (x, y), epochs=2, batch_size=32, run_dir=run, resume=True, progress=False)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before


def test_more_processes_than_examples_is_one_clear_error(monkeypatch):
    """The check runs before DDP or any collective: shown here with a pretended world of 2."""
    import babysit as bs
    from babysit import distributed as bd

    monkeypatch.setattr(bd, "world_size", lambda: 2)
    model = torch.nn.Linear(4, 2)
    weight = model.weight.detach().clone()
    with pytest.raises(ValueError, match="2 processes but only 1 training examples"):
        bs.fit(model, (torch.randn(1, 4), torch.tensor([0])), progress=False)
    assert torch.equal(model.weight, weight)


def test_a_rank_that_stops_answering_ends_the_others_with_a_clear_error(tmp_path):
    done = _run(
        tmp_path, "hang", 2, check=False, batch_size=32, hang_at_step=3, hang_s=20, timeout_s=3
    )
    assert done.returncode != 0
    assert "waited" in done.stderr and "rank" in done.stderr
    assert not (tmp_path / "hang" / "rank0.pt").exists()


def test_a_process_group_on_nccl_with_a_cpu_device_names_gloo(monkeypatch):
    import babysit as bs
    from babysit import distributed as bd

    monkeypatch.setattr(bd.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(bd.dist, "get_backend", lambda *a: "nccl")
    model = torch.nn.Linear(4, 2)
    weight = model.weight.detach().clone()
    with pytest.raises(ValueError, match="backend='gloo'"):
        bs.fit(model, (torch.randn(8, 4), torch.randint(0, 2, (8,))), progress=False)
    assert torch.equal(model.weight, weight)


def test_the_overlapped_loss_sum_is_the_identity_in_one_process():
    from babysit import distributed as bd

    loss = torch.tensor([2.5], dtype=torch.float64)
    assert torch.equal(bd.all_reduce_sum_start(loss)(), loss)
