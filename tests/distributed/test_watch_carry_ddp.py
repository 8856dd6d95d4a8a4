"""``babysit.watch(ddp_model, optimizer, carry_loss=True)``: every rank's loss carried in DDP's
own gradient all-reduce (babysit.train.loss_carrier on the user's wrapper), 2 gloo ranks
through torchrun (docs/architecture.md, "Distributed training").

One launch runs every scenario (each with a fresh DDP wrapper); the tests read what each rank
wrote. The loss all-reduces babysit makes of its own are counted per step by wrapping
``babysit.distributed.all_reduce_sum`` / ``all_reduce_sum_start`` (the carrier's ride inside
DDP's hook and are not counted): 0 in the fast order (observe before backward), 1 otherwise.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

import babysit as bs

from .harness import torchrun

SCRIPT = textwrap.dedent(
    """
    import contextlib, datetime, gc, json, os, sys
    import torch, torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    import babysit as bs
    from babysit import distributed as bd

    # a short timeout: a rank left waiting in a collective fails the test quickly
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))
    r, out_dir = bd.rank(), sys.argv[1]
    result = {}

    shares = [0]  # babysit's loss all-reduces of its own (the activation stats' too, step 0)
    for name in ("all_reduce_sum", "all_reduce_sum_start"):
        def counted(t, _fn=getattr(bd, name)):
            shares[0] += 1
            return _fn(t)
        setattr(bd, name, counted)


    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


    def data():
        g = torch.Generator().manual_seed(10 + r)  # each rank its own shard
        return torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)


    def user_loop(name, order, *, bad_step, blow_up, steps=6, micro=1):
        model = DDP(net())
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        x, y = data()
        run = os.path.join(out_dir, f"{name}{r}")
        watcher = bs.watch(model, opt, run_dir=run, carry_loss=True)
        losses, stopped_at, per_step = [], None, []
        for step in range(steps):
            before = shares[0]
            opt.zero_grad()
            for m in range(micro):  # gradient accumulation: all but the last under no_sync
                sync = m == micro - 1
                with contextlib.nullcontext() if sync else model.no_sync():
                    loss = nn.functional.cross_entropy(model(x), y)
                    loss = blow_up(loss) if (step, m) == bad_step else loss
                    losses.append(float(loss))
                    mine = order if isinstance(order, str) else order[r]
                    if mine == "after":
                        loss.backward()
                    watcher.observe(loss)
                    if mine == "early":  # the verdict read before backward
                        watcher.settle()
                    if mine != "after":
                        loss.backward()
            if watcher.diverged:
                stopped_at = step
                break
            opt.step()
            per_step.append(shares[0] - before)
        watcher.close()
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        result[name] = {
            "stopped_at": stopped_at,
            "findings": [f.to_dict() for f in watcher.findings],
            "losses": losses,
            "weights": weights.tolist(),
            "per_step": per_step,
        }


    nan_1 = lambda l: l * float("nan") if r == 1 else l
    rise_0 = lambda l: l * 10 if r == 0 else l
    user_loop("fast", "before", bad_step=(3, 0), blow_up=nan_1)
    user_loop("after", "after", bad_step=(3, 0), blow_up=nan_1)
    user_loop("early", "early", bad_step=(3, 0), blow_up=nan_1)
    user_loop("mixed", ["before", "after"], bad_step=(2, 0), blow_up=rise_0)
    user_loop("no_sync", "before", bad_step=(2, 0), blow_up=nan_1, micro=2)

    # the gradients under the carrier are DDP's default, and the carried losses every rank's
    carried, plain = DDP(net()), DDP(net())
    opt_c = torch.optim.SGD(carried.parameters(), lr=0.05)
    opt_p = torch.optim.SGD(plain.parameters(), lr=0.05)
    watcher = bs.watch(carried, opt_c, monitors=None, carry_loss=True)
    x, y = data()
    equal, seen, mine = [], [], []
    for step in range(4):
        before = shares[0]
        opt_c.zero_grad()
        opt_p.zero_grad()
        loss = nn.functional.cross_entropy(carried(x), y)
        watcher.observe(loss)
        loss.backward()
        watcher.settle()
        nn.functional.cross_entropy(plain(x), y).backward()
        equal.append(all(torch.equal(a.grad, b.grad)
                         for a, b in zip(carried.parameters(), plain.parameters())))
        seen.append(list(watcher.rank_losses))
        mine.append(float(loss))
        opt_c.step()
        opt_p.step()
        assert shares[0] == before, "the fast order made a loss all-reduce of its own"
    watcher.close()
    result["grads"] = {"equal": equal, "rank_losses": seen, "mine": mine}

    # bad inputs: each refused with what to do, and nothing on the model or optimizer changed
    def refused(make):
        try:
            make()
        except Exception as err:  # recorded, the test checks type and message
            return {"type": type(err).__name__, "message": str(err)}
        return None

    def hooks(opt):
        return len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks)

    bad = {}
    plain_net = net()
    opt = torch.optim.SGD(plain_net.parameters(), lr=0.05)
    bad["not_ddp"] = refused(lambda: bs.watch(plain_net, opt, carry_loss=True))
    bad["not_ddp_hooks"] = hooks(opt)
    bad["not_bool"] = refused(lambda: bs.watch(DDP(net()), opt, carry_loss="yes"))

    hooked = DDP(net())
    hooked.register_comm_hook(dist.group.WORLD, allreduce_hook)  # the user's own hook
    opt = torch.optim.SGD(hooked.parameters(), lr=0.05)
    bad["hooked"] = refused(lambda: bs.watch(hooked, opt, carry_loss=True))
    bad["hooked_hooks"] = [hooks(opt), len(hooked._comm_hooks)]
    x, y = data()
    nn.functional.cross_entropy(hooked(x), y).backward()  # the user's hook still reduces
    g = hooked.module[0].weight.grad.clone()
    dist.all_reduce(g)
    bad["hooked_grads_in_sync"] = torch.allclose(g / 2, hooked.module[0].weight.grad)
    w = bs.watch(hooked, opt)  # without carry_loss the same wrapper is watched as before
    w.close()

    half = DDP(net().half())
    opt = torch.optim.SGD(half.parameters(), lr=0.05)
    bad["half"] = refused(lambda: bs.watch(half, opt, carry_loss=True))
    half.register_comm_hook(dist.group.WORLD, allreduce_hook)  # still free for the user's hook
    bad["half_hooks"] = hooks(opt)

    own = DDP(net(), process_group=dist.new_group([0, 1]))
    opt = torch.optim.SGD(own.parameters(), lr=0.05)
    bad["own_group"] = refused(lambda: bs.watch(own, opt, carry_loss=True))

    shared = DDP(net())
    opt = torch.optim.SGD(shared.parameters(), lr=0.05)
    first = bs.watch(shared, opt, monitors=None, carry_loss=True)
    bad["second_open"] = refused(lambda: bs.watch(shared, opt, monitors=None, carry_loss=True))
    first.close()
    again = bs.watch(shared, opt, monitors=None, carry_loss=True)  # reuses the hook in place
    before = shares[0]
    opt.zero_grad()
    loss = nn.functional.cross_entropy(shared(x), y)
    again.observe(loss)
    loss.backward()
    opt.step()
    again.close()
    bad["reused_shares"] = shares[0] - before
    bad["reused_losses"] = list(again.rank_losses)
    bad["user_hook_after"] = refused(lambda: shared.register_comm_hook(None, allreduce_hook))
    result["bad"] = bad

    with open(os.path.join(out_dir, f"rank{r}.json"), "w") as f:
        json.dump(result, f)
    # DDP's reducers go before the group (torch aborts at exit otherwise, now and then)
    del carried, plain, hooked, half, own, shared, watcher, first, again, w
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    """
)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("watch_carry")
    script = out / "script.py"
    script.write_text(SCRIPT)
    torchrun(script, str(out), timeout=120)
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def _nan_on_rank_1_stops_both_at_step_3(out, got, name):
    for rank in got:
        assert rank[name]["stopped_at"] == 3
        assert all(abs(v) < 1e6 for v in rank[name]["weights"])  # no update from the NaN step
    assert got[0][name]["findings"] == got[1][name]["findings"]
    assert got[0][name]["weights"] == got[1][name]["weights"]
    findings = json.loads((out / f"{name}0" / "findings.json").read_text())["findings"]
    nan = [f for f in findings if f["code"] == "NAN_LOSS"]
    assert len(nan) == 1 and nan[0]["step"] == 3
    assert nan[0]["evidence"]["rank"] == 1 and nan[0]["evidence"]["ranks"] == [1]
    assert "on rank 1 of 2" in nan[0]["message"]
    assert not (out / f"{name}1").exists()  # rank 1 wrote nothing
    config = json.loads((out / f"{name}0" / "config.json").read_text())
    assert config["carry_loss"] is True


def test_fast_order_a_nan_on_rank_1_stops_both_ranks_with_no_loss_all_reduce(ranks):
    out, got = ranks
    _nan_on_rank_1_stops_both_at_step_3(out, got, "fast")
    for rank in got:  # step 0 holds the activation stats' sample; steps 1-2 nothing of babysit's
        assert rank["fast"]["per_step"][1:] == [0, 0]


def test_observe_after_backward_falls_back_on_every_rank_and_stays_correct(ranks):
    out, got = ranks
    _nan_on_rank_1_stops_both_at_step_3(out, got, "after")
    for rank in got:
        assert rank["after"]["per_step"][1:] == [1, 1]  # the separate all-reduce, every step
    # the same run as the fast order: same losses, same weights at the stop
    assert got[0]["after"]["losses"] == got[0]["fast"]["losses"]
    assert got[0]["after"]["weights"] == got[0]["fast"]["weights"]


def test_verdict_read_before_backward_falls_back_and_stays_correct(ranks):
    out, got = ranks
    _nan_on_rank_1_stops_both_at_step_3(out, got, "early")
    for rank in got:
        assert rank["early"]["per_step"][1:] == [1, 1]


def test_ranks_in_different_orders_agree_through_the_missing_count(ranks):
    """Rank 0 observes before backward, rank 1 after: the carried count says rank 1's loss is
    missing, so both fall back in the same step; a 10x break-out on rank 0 stops both."""
    _, got = ranks
    for rank in got:
        assert rank["mixed"]["stopped_at"] == 2
        assert rank["mixed"]["per_step"][1:] == [1]
        high = [f for f in rank["mixed"]["findings"] if f["code"] == "LR_TOO_HIGH"]
        assert len(high) == 1 and high[0]["evidence"]["rank"] == 0
    assert got[0]["mixed"]["findings"] == got[1]["mixed"]["findings"]
    assert got[0]["mixed"]["weights"] == got[1]["mixed"]["weights"]


def test_a_nan_in_a_no_sync_micro_batch_stops_both_ranks(ranks):
    """Under ``no_sync()`` no bucket leaves: that micro-batch's loss is shared by the next
    observe with an all-reduce of its own, on every rank."""
    _, got = ranks
    for rank in got:
        assert rank["no_sync"]["stopped_at"] == 2
        assert rank["no_sync"]["per_step"][1:] == [1]  # micro-batch 0's share; 1 rides along
    assert got[0]["no_sync"]["weights"] == got[1]["no_sync"]["weights"]
    nan = [f for f in got[0]["no_sync"]["findings"] if f["code"] == "NAN_LOSS"]
    assert len(nan) == 1 and nan[0]["evidence"]["rank"] == 1


def test_gradients_under_the_carrier_are_ddps_default_and_every_loss_arrives(ranks):
    _, got = ranks
    for rank in got:
        assert rank["grads"]["equal"] == [True] * 4
        for seen, a, b in zip(
            rank["grads"]["rank_losses"],
            got[0]["grads"]["mine"],
            got[1]["grads"]["mine"],
            strict=True,
        ):
            assert seen == pytest.approx([a, b], rel=1e-6)  # carried in the float32 bucket


def test_a_model_that_is_not_ddp_is_refused_with_what_to_do(ranks):
    _, got = ranks
    for rank in got:
        bad = rank["bad"]["not_ddp"]
        assert bad["type"] == "ValueError"
        assert "Sequential, not a DistributedDataParallel" in bad["message"]
        assert "pass the DistributedDataParallel wrapper" in bad["message"]
        assert "leave carry_loss off" in bad["message"]
        assert rank["bad"]["not_ddp_hooks"] == 0  # the optimizer was left unhooked
        assert rank["bad"]["not_bool"]["type"] == "TypeError"


def test_a_wrapper_with_a_hook_of_its_own_is_refused_and_left_as_it_was(ranks):
    _, got = ranks
    for rank in got:
        bad = rank["bad"]["hooked"]
        assert bad["type"] == "RuntimeError"
        assert "already has a communication hook" in bad["message"]
        assert "leave carry_loss off" in bad["message"]
        assert rank["bad"]["hooked_hooks"] == [0, 1]  # only the user's hook, no step hooks
        assert rank["bad"]["hooked_grads_in_sync"]


def test_float16_parameters_are_refused_and_the_wrapper_stays_free(ranks):
    _, got = ranks
    for rank in got:
        bad = rank["bad"]["half"]
        assert bad["type"] == "ValueError"
        assert "float16" in bad["message"] and "keep the parameters float32" in bad["message"]
        assert rank["bad"]["half_hooks"] == 0


def test_a_wrapper_on_a_process_group_of_its_own_is_refused(ranks):
    _, got = ranks
    for rank in got:
        bad = rank["bad"]["own_group"]
        assert bad["type"] == "ValueError" and "process group of its own" in bad["message"]


def test_one_carrier_per_wrapper_reused_after_close(ranks):
    _, got = ranks
    for rank in got:
        bad = rank["bad"]
        assert bad["second_open"]["type"] == "RuntimeError"
        assert "another open watcher" in bad["second_open"]["message"]
        assert bad["reused_shares"] == 0 and len(bad["reused_losses"]) == 2
        assert bad["user_hook_after"] is not None  # as documented: DDP takes one hook


def test_carry_loss_in_one_process_is_accepted_and_does_nothing():
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with bs.watch(model, opt, carry_loss=True) as watcher:
        loss = model(torch.randn(4, 3)).pow(2).mean()
        watcher.observe(loss)
        loss.backward()
        opt.step()
    assert watcher.rank_losses == (pytest.approx(float(loss.detach())),)
    assert not hasattr(model, "_babysit_loss_carrier")
    with pytest.raises(TypeError, match="carry_loss must be True or False"):
        bs.watch(model, opt, carry_loss=1)
