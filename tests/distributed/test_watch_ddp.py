"""``babysit.watch`` in a user's own DDP loop (2 gloo ranks through torchrun): the same one-line
``observe(loss)``, one verdict on every rank in the same step (docs/architecture.md,
"Distributed training").

One launch runs every scenario; the tests read what each rank wrote.
"""

from __future__ import annotations

import csv
import json
import textwrap

import pytest

from .harness import torchrun

SCRIPT = textwrap.dedent(
    """
    import datetime, gc, json, os, sys
    import torch, torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP
    import babysit as bs
    from babysit import distributed as bd

    # a short timeout: a rank left waiting in a gradient all-reduce fails the test quickly
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))
    r, out_dir = bd.rank(), sys.argv[1]
    result = {}


    def user_loop(name, *, bad_step, blow_up, settle, steps=8):
        torch.manual_seed(0)  # the same initial weights on every rank (DDP broadcasts anyway)
        model = DDP(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        g = torch.Generator().manual_seed(10 + r)  # each rank its own shard
        x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
        run = os.path.join(out_dir, f"{name}{r}")  # rank 1's must stay unwritten
        watcher = bs.watch(model, opt, run_dir=run)
        losses, stopped_at, codes_at_stop = [], None, None
        for step in range(steps):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss = blow_up(loss) if step == bad_step else loss
            losses.append(float(loss))
            watcher.observe(loss)
            if settle:  # a driver that acts on the verdict at once; else `diverged` waits
                watcher.settle()
            codes_now = [f.code for f in watcher.findings]
            if watcher.diverged:
                stopped_at, codes_at_stop = step, codes_now
                break
            loss.backward()
            opt.step()
        watcher.end_epoch()
        watcher.close()
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        result[name] = {
            "stopped_at": stopped_at,
            "codes_at_stop": codes_at_stop,
            "diverged": watcher.diverged,
            "findings": [f.to_dict() for f in watcher.findings],
            "losses": losses,
            "weights": weights.tolist(),
        }


    # a NaN on rank 1 only, at step 3
    user_loop("nan", bad_step=3, blow_up=lambda l: l * float("nan") if r == 1 else l, settle=True)
    # a 10x break-out on rank 0 only, at step 2
    user_loop("rise", bad_step=2, blow_up=lambda l: l * 10 if r == 0 else l, settle=False)

    # epoch metrics: counted over both ranks' examples; the metrics rank 0 passes are judged
    net = DDP(nn.Linear(2, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    w = bs.watch(net, opt, monitors=None)
    target = torch.zeros(4, dtype=torch.long)
    output = torch.tensor([[1.0, 0.0]] * 4) if r == 0 else torch.tensor([[0.0, 1.0]] * 4)
    w.observe(torch.tensor(1.0), output, target)  # rank 0: 4 of 4 right, rank 1: 0 of 4
    w.end_epoch(val_acc=0.25 if r == 0 else 0.75)
    w.close()
    result["epoch"] = w.history

    with open(os.path.join(out_dir, f"rank{r}.json"), "w") as f:
        json.dump(result, f)
    # DDP's reducers go before the group (torch aborts at exit otherwise, now and then)
    del net, w
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    """
)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("watch_ddp")
    script = out / "script.py"
    script.write_text(SCRIPT)
    torchrun(script, str(out), timeout=120)
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_a_nan_on_rank_1_stops_both_ranks_in_its_step(ranks):
    out, got = ranks
    for rank in got:
        assert rank["nan"]["stopped_at"] == 3 and rank["nan"]["diverged"]
        assert "NAN_LOSS" in rank["nan"]["codes_at_stop"]  # settle() judged it already
    assert got[0]["nan"]["findings"] == got[1]["nan"]["findings"]
    assert got[0]["nan"]["weights"] == got[1]["nan"]["weights"]  # in sync, all finite
    assert all(abs(v) < 1e6 for v in got[0]["nan"]["weights"])
    findings = json.loads((out / "nan0" / "findings.json").read_text())["findings"]
    nan = [f for f in findings if f["code"] == "NAN_LOSS"]
    assert len(nan) == 1 and nan[0]["step"] == 3
    assert nan[0]["evidence"]["rank"] == 1 and nan[0]["evidence"]["ranks"] == [1]
    assert "on rank 1 of 2" in nan[0]["message"]
    assert findings == got[0]["nan"]["findings"]
    assert not (out / "nan1").exists()  # rank 1 wrote nothing


def test_a_break_out_on_rank_0_stops_both_ranks_in_its_step(ranks):
    _, got = ranks
    for rank in got:
        assert rank["rise"]["stopped_at"] == 2
        high = [f for f in rank["rise"]["findings"] if f["code"] == "LR_TOO_HIGH"]
        assert len(high) == 1 and high[0]["evidence"]["rank"] == 0
        # judged against rank 0's own start
        assert high[0]["evidence"]["initial_loss"] == pytest.approx(got[0]["rise"]["losses"][0])
    assert got[0]["rise"]["findings"] == got[1]["rise"]["findings"]


def test_logged_loss_is_the_mean_over_ranks(ranks):
    out, got = ranks
    with open(out / "nan0" / "metrics.csv") as f:
        logged = [float(r["value"]) for r in csv.DictReader(f) if r["name"] == "loss"]
    both = zip(got[0]["nan"]["losses"][:3], got[1]["nan"]["losses"][:3], strict=True)
    assert logged[:3] == pytest.approx([(a + b) / 2 for a, b in both], rel=1e-12)
    assert len(logged) == 4  # the NaN step too (NaN on any rank: NaN)


def test_epoch_metrics_are_counted_over_both_ranks(ranks):
    _, got = ranks
    for rank in got:
        (row,) = rank["epoch"]
        assert row["train_acc"] == 0.5  # 4 of 8 examples over both ranks
        assert row["val_acc"] == 0.25  # rank 0's
