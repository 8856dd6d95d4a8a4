"""``bs.lr_find`` under torchrun (issue 15 item 4): two gloo ranks, each training on its own
half of every step's batch, get the same suggestion (the curve is the loss averaged across
ranks, the stop decided together), the same as one process on the whole batch, and only rank
0 writes ``lr_find.json``. A NaN on one rank stops both ranks at the same step."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import babysit as bs

from .backends import BACKENDS
from .harness import torchrun

SCRIPT = """
import json, math, os, sys
import torch
from torch import nn
import babysit as bs
from babysit import distributed as bd

out_dir, backend = sys.argv[1], sys.argv[2]
rank = int(os.environ["RANK"])
# nccl: one GPU per process (lr_find picks the backend from the device)
device = f"cuda:{os.environ['LOCAL_RANK']}" if backend == "nccl" else "cpu"


def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 20, generator=gen)
    y = (x @ torch.randn(20, 4, generator=gen)).argmax(1)
    return x, y


def model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))


STEPS = 30
x, y = data()
# each rank builds its model from another seed: lr_find starts every rank from rank 0's
# weights; lr_find initialises the process group from torchrun's environment itself
run_dir = os.path.join(out_dir, f"run{rank}")
result = bs.lr_find(
    model(rank), (x, y), batch_size=32, steps=STEPS, run_dir=run_dir, device=device
)
assert not torch.distributed.is_initialized()  # the group lr_find created is gone again
if backend == "nccl":  # the suggestion only; the scenarios below are gloo's
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"result": result.to_dict()}, f)
    sys.exit(0)

# a NaN on rank 1 only, at its 22nd loss (the first validates the data): both ranks stop at
# the same step, with the 20 steps before it recorded
# (a group of our own, on a file store: re-creating the default group on torchrun's store
# right after lr_find destroyed its own can race between the ranks)
torch.distributed.init_process_group(
    "gloo", init_method="file://" + os.path.join(out_dir, "store"), rank=rank, world_size=2
)
calls = {"n": 0}

def loss_fn(out, target):
    calls["n"] += 1
    loss = nn.functional.cross_entropy(out, target)
    return loss * float("nan") if rank == 1 and calls["n"] == 22 else loss

nan = bs.lr_find(model(0), (x, y), batch_size=32, steps=STEPS, loss_fn=loss_fn, verify=False)
# a DDP-wrapped model (what a torchrun script holds) gives the plain model's curve
plain = bs.lr_find(model(0), (x, y), batch_size=32, steps=STEPS, verify=False)
wrapped = torch.nn.parallel.DistributedDataParallel(model(0))
ddp = bs.lr_find(wrapped, (x, y), batch_size=32, steps=STEPS, verify=False)
assert ddp.raw_losses == plain.raw_losses, (ddp.raw_losses[:5], plain.raw_losses[:5])
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump({"result": result.to_dict(), "nan": nan.to_dict()}, f)
bd.barrier()
torch.distributed.destroy_process_group()
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_rank_gets_the_same_suggestion_and_one_file_is_written(tmp_path, backend):
    script = tmp_path / "lr_find_ddp.py"
    script.write_text(textwrap.dedent(SCRIPT))
    torchrun(script, str(tmp_path), backend, timeout=120)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    first, second = got[0]["result"], got[1]["result"]
    assert first["world_size"] == second["world_size"] == 2
    assert first["suggestion"] is not None and math.isfinite(first["suggestion"])
    assert first["suggestion"] == second["suggestion"]
    assert first["raw_losses"] == second["raw_losses"] and first["probes"] == second["probes"]
    assert first["confident"] == second["confident"]
    # only rank 0 wrote lr_find.json
    written = json.loads((tmp_path / "run0" / "lr_find.json").read_text())
    assert written["suggestion"] == first["suggestion"] and written["world_size"] == 2
    assert not (tmp_path / "run1").exists()
    if backend == "nccl":  # on GPUs: the same suggestion on both ranks is the check
        return
    # a NaN on rank 1 only: both ranks stopped at the same step, neither alone
    a, b = got[0]["nan"], got[1]["nan"]
    assert a["stopped"] == b["stopped"] == "nan" and len(a["lrs"]) == len(b["lrs"]) == 20

    # Two ranks on 32 examples each are one process on the whole batch of 64 (the same
    # examples in the same order, gradients averaged): the same curve and suggestion.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 20, generator=gen)
    y = (x @ torch.randn(20, 4, generator=gen)).argmax(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    single = bs.lr_find(model, (x, y), batch_size=64, steps=30)
    n = int(0.8 * min(len(single.raw_losses), len(first["raw_losses"])))
    np.testing.assert_allclose(first["raw_losses"][:n], single.raw_losses[:n], rtol=1e-4)
    assert abs(math.log10(first["suggestion"] / single.suggestion)) <= 0.25
