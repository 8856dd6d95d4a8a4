"""Cost of ``babysit.watch`` in a user's own DDP loop: 2 processes (gloo, CPU), watch ÷ without.

The MNIST-1D MLP (``babysit.nn.mlp(40, [100, 100], 10)``), Adam lr 1e-3, cross-entropy, batch
100 per process (each rank its own half of the 4000 standardized training examples, indexed
with a per-epoch permutation from a generator seeded per rank), wrapped in
``DistributedDataParallel``. Variants, each a fresh model (same seed) trained ``--steps`` steps:

    DDP loop              zero_grad, forward, loss, backward (DDP's gradient all-reduce), step,
                          ``loss.item()`` every step, as tutorials do (the baseline)
    + watch(None)         ``babysit.watch(model, opt, monitors=None)`` and ``observe(loss)``:
                          only the loss shared across ranks (one all-reduce a step)
    + watch(default)      ``babysit.watch(model, opt)``: every default monitor

Variants are interleaved (each round runs all of them in a rotating order, after one untimed
warm-up round); both ranks run the same variant at the same time (a barrier between runs).
Columns: steps/s (rank 0's wall clock, median over rounds) and the paired ratio to the DDP
loop of the same round (median, min-max); the monitor budget is ≤ 1.05 (a steps/s ratio ≥
0.952).

Collectives: ``torch.distributed``'s Python collectives are counted while the default watcher
runs (DDP's own gradient all-reduce goes through its C++ reducer and is not counted), split
into plain steps and the steps ``ActivationStats`` samples, with their payload bytes; the
formula in the table is what ``babysit.train.session`` and ``babysit.train.monitors
.across_ranks`` send: every step one all-reduce of ``8·W`` bytes (every rank's loss, float64);
a sampled step two more: a 32-byte layout header and ``8·(7·A + U + 2·L)`` bytes (``A``
judged activation layers, ``U`` their ReLU units, ``L`` weight layers).

Run: ``python benchmarks/distributed_watch.py [--rounds 5] [--steps 400]`` (it launches itself
through ``torch.distributed.run`` with 2 processes, one thread each).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def launch(argv: list[str]) -> int:
    env = dict(os.environ, OMP_NUM_THREADS="1", BABYSIT_BENCH_WORKER="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    return subprocess.call([*cmd, __file__, *argv], env=env)


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    import babysit as bs
    from babysit import distributed as bd
    from babysit.data import Standardize, load

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    rank, world = bd.rank(), bd.world_size()
    splits = load("mnist1d", seed=0)
    x, y = (torch.cat(pair) for pair in zip(splits.train.tensors, splits.val.tensors, strict=True))
    x = Standardize().fit(x).transform(x).float()
    x, y = x[rank::world].contiguous(), y[rank::world].contiguous()
    loss_fn = nn.CrossEntropyLoss()

    counted: dict[str, list[int]] = {}  # "step" / "sampled" -> [collectives, bytes]
    phase = ["off"]

    def counting(fn):
        def wrapped(tensor, *a, **k):
            if phase[0] != "off":
                entry = counted.setdefault(phase[0], [0, 0])
                entry[0] += 1
                entry[1] += tensor.numel() * tensor.element_size()
            return fn(tensor, *a, **k)

        return wrapped

    dist.all_reduce = counting(dist.all_reduce)

    def run(variant: str, steps: int, count: bool = False) -> float:
        torch.manual_seed(0)
        model = DDP(bs.nn.mlp(40, [100, 100], 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        watcher = None
        if variant != "DDP loop":
            monitors = None if variant == "+ watch(None)" else "default"
            watcher = bs.watch(model, opt, monitors=monitors)
        sampled = set()
        if watcher is not None and count:
            for m in watcher.callbacks:
                if type(m).__name__ == "ActivationStats":
                    sampled = {s for s in range(steps) if s % m.every == 0}
        g = torch.Generator().manual_seed(rank)
        perm, at, total = torch.randperm(len(x), generator=g), 0, 0.0
        bd.barrier()
        start = time.perf_counter()
        for step in range(steps):
            if at + 100 > len(x):
                perm, at = torch.randperm(len(x), generator=g), 0
            index = perm[at : at + 100]
            at += 100
            if count:
                phase[0] = "sampled" if step in sampled else "step"
            opt.zero_grad()
            loss = loss_fn(model(x[index]), y[index])
            if watcher is not None:
                watcher.observe(loss)
            loss.backward()
            opt.step()
            total += loss.item()
        phase[0] = "off"
        seconds = time.perf_counter() - start
        if watcher is not None:
            watcher.close()
        bd.barrier()
        return steps / seconds

    variants = ["DDP loop", "+ watch(None)", "+ watch(default)"]
    for v in variants:  # warm-up
        run(v, 50)
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(args.rounds):
        order = variants[i % 3 :] + variants[: i % 3]
        for v in order:
            rates[v].append(run(v, args.steps))
    run("+ watch(default)", args.steps, count=True)

    if rank != 0:
        dist.destroy_process_group()
        return
    n_sampled = len([s for s in range(args.steps) if s % 100 == 0])
    print(f"2 processes (gloo, CPU, 1 thread each), {args.steps} steps x {args.rounds} rounds")
    print()
    print("| variant | steps/s (rank 0) | ÷ DDP loop, median (min-max) |")
    print("|---|---|---|")
    for v in variants:
        ratios = [a / b for a, b in zip(rates[v], rates["DDP loop"], strict=True)]
        print(
            f"| {v} | {statistics.median(rates[v]):.0f} | {statistics.median(ratios):.3f} "
            f"({min(ratios):.3f}-{max(ratios):.3f}) |"
        )
    plain = counted.get("step", [0, 0])
    sampled = counted.get("sampled", [0, 0])
    n_plain = args.steps - n_sampled
    print()
    print("| babysit collectives (watch, default) | per step | bytes per step |")
    print("|---|---|---|")
    print(f"| plain step | {plain[0] / n_plain:g} | {plain[1] / n_plain:g} (8·W, W = {world}) |")
    print(
        f"| step ActivationStats samples (1 in 100) | {sampled[0] / max(n_sampled, 1):g} | "
        f"{sampled[1] / max(n_sampled, 1):g} (8·W + 32 + 8·(7·A + U + 2·L); here A = 2, "
        "U = 200, L = 3) |"
    )
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=400, help="steps per variant per round")
    args = parser.parse_args()
    if os.environ.get("BABYSIT_BENCH_WORKER") == "1":
        worker(args)
    else:
        raise SystemExit(launch(sys.argv[1:]))


if __name__ == "__main__":
    main()
