"""The gradient-flow rule's depth groups under DDP (2 gloo ranks through torchrun): the
monitor sees the groups on the module inside the DDP wrapper, every rank takes the same
verdict: silent on a healthy attention model with BERT's init, VANISHING_GRADIENTS on a deep
sigmoid net (docs/architecture.md, "Training monitors")."""

from __future__ import annotations

import json
import textwrap

from .distributed.harness import torchrun

SCRIPT = textwrap.dedent(
    """
    import datetime, gc, json, os, sys
    import torch, torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP
    import babysit as bs
    from babysit import distributed as bd
    from babysit.train.monitors import ActivationStats

    sys.path.insert(0, sys.argv[2])
    from test_gradient_flow import bert_like, tokens

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
    r, out_dir = bd.rank(), sys.argv[1]
    result = {}

    def run(name, model, x, y, lr):
        model = DDP(model)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        g = torch.Generator().manual_seed(r)  # each rank its own shard
        watcher = bs.watch(model, opt, monitors=[ActivationStats(every=1)])
        for _ in range(4):
            index = torch.randint(0, len(x), (32,), generator=g)
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            watcher.observe(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
        watcher.close()
        result[name] = sorted({f.code for f in watcher.findings})

    torch.manual_seed(0)
    run("attention", bert_like(), *tokens(128), lr=1e-3)
    torch.manual_seed(0)
    sigmoid = bs.nn.mlp(40, [100] * 19, 10, activation="sigmoid", init=None)
    x, y = torch.randn(256, 40), torch.randint(0, 10, (256,))
    run("sigmoid", sigmoid, x, y, lr=1e-4)
    with open(os.path.join(out_dir, f"rank{r}.json"), "w") as f:
        json.dump(result, f)
    gc.collect()  # the DDP wrappers' reducers go before the process group (as tests/distributed do)
    dist.barrier()
    dist.destroy_process_group()
    """
)


def test_depth_groups_under_ddp_one_verdict_on_every_rank(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    tests = str(__import__("pathlib").Path(__file__).parent)
    torchrun(script, str(tmp_path), tests)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert not {"VANISHING_GRADIENTS", "EXPLODING_GRADIENTS"} & set(ranks[0]["attention"])
    assert "VANISHING_GRADIENTS" in ranks[0]["sigmoid"]
