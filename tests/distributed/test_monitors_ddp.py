"""Monitors under DDP (2 gloo ranks through torchrun): statistics judged on the global batch,
decisions taken together (docs/architecture.md, "Distributed training").

One launch runs every scenario (a launch costs seconds); the tests read what each rank wrote.
"""

from __future__ import annotations

import csv
import json
import textwrap

import pytest

from .backends import BACKENDS
from .harness import torchrun

SCRIPT = textwrap.dedent(
    """
    import datetime, gc, json, math, os, sys
    import torch, torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP
    import babysit as bs
    from babysit import distributed as bd
    from babysit.train.monitors import ActivationStats, LossGuard
    from babysit.train.session import Session

    out_dir, backend = sys.argv[1], sys.argv[2]
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=30))
    r = bd.rank()
    # nccl: one GPU per process; the data and the models live there
    device = torch.device(f"cuda:{os.environ['LOCAL_RANK']}" if backend == "nccl" else "cpu")
    ids = [device.index] if backend == "nccl" else None
    if backend == "nccl":
        torch.cuda.set_device(device)
    torch.manual_seed(0)
    N = 128  # per rank: fewer than the 256 a dead verdict needs, 256 over both ranks


    def copy_of(column, units, scale=1.0, bias=0.0):
        lin = nn.Linear(4, units)
        with torch.no_grad():
            lin.weight.zero_()
            lin.weight[:, column] = scale
            lin.bias.fill_(bias)
        return lin


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin1, self.relu1 = copy_of(0, 8), nn.ReLU()  # z = x0
            self.lin2, self.relu2 = copy_of(0, 8, 0.0, -1.0), nn.ReLU()  # z = -1: dead
            self.lin3, self.tanh3 = copy_of(1, 10), nn.Tanh()  # z = x1
            self.lin4, self.tanh4 = copy_of(2, 8), nn.Tanh()  # z = x2
            self.head = nn.Linear(34, 2)

        def forward(self, x):
            parts = [
                self.relu1(self.lin1(x)),
                self.relu2(self.lin2(x)),
                self.tanh3(self.lin3(x)),
                self.tanh4(self.lin4(x)),
            ]
            return self.head(torch.cat(parts, 1))


    # rank 0: x0 < 0 (relu1 silent on this shard), x1 = 5 (tanh3 saturated), x2 = 5 on 120
    # rows (tanh4 94% saturated here); rank 1: x0 > 0, x1 = 5 on 32 rows (25%), x2 = 0.
    g = torch.Generator().manual_seed(r)
    x = torch.randn(N, 4, generator=g) * 0.1
    if r == 0:
        x[:, 0], x[:, 1], x[:120, 2] = -1.0, 5.0, 5.0
    else:
        x[:, 0], x[:32, 1], x[:, 2] = 1.0, 5.0, 0.0
    y = torch.randint(0, 2, (N,), generator=g)
    x, y = x.to(device), y.to(device)

    model = DDP(Net().to(device), device_ids=ids)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the statistics stay what they were
    run = os.path.join(out_dir, f"run{r}")  # rank 1's must stay unwritten
    watcher = bs.watch(model, opt, monitors=[ActivationStats(every=1)], run_dir=run)
    local = {}
    for step in range(3):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        watcher.observe(loss)
        loss.backward()
        opt.step()
        local = {n: float(p.grad.norm()) for n, p in model.module.named_parameters()
                 if n.endswith("weight")}
    watcher.close()
    result = {"findings": [f.to_dict() for f in watcher.findings], "grad_norms": local}

    # a layout that follows the data: a ReLU over (N, T, 6), whose units are T. Both ranks
    # have T = 4 at steps 0, 1 and 3; at step 2 rank 1 has T = 6
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.relu, self.head = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)

        def forward(self, s):
            return self.head(self.relu(self.lin(s)).mean(1))

    seq = DDP(Seq().to(device), device_ids=ids)
    opt = torch.optim.SGD(seq.parameters(), lr=0.01)
    t = torch.randint(0, 2, (300,), generator=g).to(device)
    layout_run = os.path.join(out_dir, f"layout{r}")
    with bs.watch(seq, opt, monitors=[ActivationStats(every=1)], run_dir=layout_run) as w2:
        for step in range(4):
            s = torch.randn(300, 6 if (step == 2 and r == 1) else 4, 4, generator=g).to(device)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(seq(s), t)
            w2.observe(loss)
            loss.backward()
            opt.step()
    result["layout"] = {"findings": [f.to_dict() for f in w2.findings], "steps": w2.step}

    # fit's side of the guard: a loop that can roll back, NaN on rank 1 only at step 2
    class Loop(Session):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.events = []

        def remember_good_state(self):
            self.events.append(("remember", self.step))

        def request_rollback(self, reason, lr_factor):
            self.events.append(("rollback", self.step))
            return True

    net = nn.Linear(2, 2)
    loop = Loop(net, torch.optim.SGD(net.parameters(), lr=0.1), callbacks=[LossGuard()])
    for step in range(5):
        loop.step = step
        loss = float("nan") if (r == 1 and step == 2) else 1.0 + r
        loop.call("on_loss", loss)
    result["loop"] = {
        "events": loop.events,
        "findings": [f.to_dict() for f in loop.findings],
        "lr": loop.optimizer.param_groups[0]["lr"],
    }
    with open(os.path.join(out_dir, f"rank{r}.json"), "w") as f:
        json.dump(result, f)
    # DDP's reducers go before the group (torch aborts at exit otherwise, now and then)
    del model, seq, watcher, w2
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    """
)


@pytest.fixture(scope="module", params=BACKENDS)
def ranks(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("monitors_ddp")
    script = out / "script.py"
    script.write_text(SCRIPT)
    torchrun(script, str(out), request.param, timeout=120)
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def _by_code(findings, code):
    return {f["layer"]: f for f in findings if f["code"] == code}


def test_dead_relu_is_judged_on_the_global_batch(ranks):
    _, got = ranks
    for rank in got:
        dead = _by_code(rank["findings"], "DEAD_RELU")
        # relu1 is silent on rank 0's shard but alive on rank 1's: not dead
        assert "relu1" not in dead
        # relu2 is dead on both: judged on 2 x 128 examples, which neither rank has alone
        assert set(dead) == {"relu2"}
        evidence = dead["relu2"]["evidence"]
        assert evidence["n_examples"] == 256 and evidence["dead_units"] == 8
        assert evidence["dead_fraction"] == 1.0 and evidence["world_size"] == 2
        assert dead["relu2"]["step"] == 0  # the first sample already covers 256 examples


def test_saturation_is_judged_on_the_global_batch(ranks):
    _, got = ranks
    for rank in got:
        saturated = _by_code(rank["findings"], "SATURATED_ACTIVATIONS")
        # tanh3: 100% on rank 0, 25% on rank 1 -> 62.5% of the global batch
        # tanh4: 94% on rank 0, 0% on rank 1 -> 47%: not saturated
        assert set(saturated) == {"tanh3"}
        assert saturated["tanh3"]["evidence"]["saturated_fraction"] == pytest.approx(0.625)


def test_every_rank_holds_rank_0s_findings_and_only_rank_0_writes(ranks):
    out, got = ranks
    assert got[0]["findings"] == got[1]["findings"]
    assert got[0]["layout"]["findings"] == got[1]["layout"]["findings"]
    assert got[0]["loop"] == got[1]["loop"]
    on_disk = json.loads((out / "run0" / "findings.json").read_text())["findings"]
    assert on_disk == got[0]["findings"]
    assert not (out / "run1").exists()
    config = json.loads((out / "run0" / "config.json").read_text())
    assert config["model"] == "Net" and config["world_size"] == 2


def test_logged_statistics_are_global(ranks):
    out, got = ranks
    with open(out / "run0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["step"] == "0"]
    value = {r["name"]: float(r["value"]) for r in rows}
    assert value["dead_fraction/relu1"] == 0.0  # 1.0 on rank 0's shard alone
    assert value["dead_fraction/relu2"] == 1.0
    assert value["saturated_fraction/tanh4"] == pytest.approx(120 * 8 / (256 * 8))
    # DDP has averaged .grad on every rank: the logged norm is that gradient's, not x sqrt(2)
    for name in ("lin1", "head"):
        assert value[f"grad_norm/{name}"] == pytest.approx(got[0]["grad_norms"][f"{name}.weight"])
        assert got[0]["grad_norms"][f"{name}.weight"] == got[1]["grad_norms"][f"{name}.weight"]


def test_layouts_that_differ_across_ranks_are_said_not_judged(ranks):
    out, got = ranks
    for rank in got:
        layout = rank["layout"]
        assert layout["steps"] == 4  # no hang, no crash: training went on
        codes = [f["code"] for f in layout["findings"]]
        assert codes == ["CHECKS_SKIPPED"]
        skipped = layout["findings"][0]
        assert skipped["severity"] == "info" and skipped["step"] == 2
        assert "activation_stats" in skipped["evidence"]["skipped"]
    with open(out / "layout0" / "metrics.csv") as f:
        judged = {int(r["step"]) for r in csv.DictReader(f) if r["name"] == "dead_fraction/relu"}
    assert judged == {0, 1, 3}  # the step whose layouts differ is the only one not judged


def test_a_nan_on_one_rank_rolls_every_rank_back_in_its_step(ranks):
    _, got = ranks
    for rank in got:
        loop = rank["loop"]
        assert [e for e in loop["events"] if e[0] == "rollback"] == [["rollback", 2]]
        nan = [f for f in loop["findings"] if f["code"] == "NAN_LOSS"]
        assert len(nan) == 1 and nan[0]["step"] == 2
        assert nan[0]["evidence"]["rank"] == 1 and nan[0]["evidence"]["world_size"] == 2
        # each rank is judged against its own start: rank 1's loss 2.0 is not 2x rank 0's 1.0
        assert not [f for f in loop["findings"] if f["code"] == "LR_TOO_HIGH"]
