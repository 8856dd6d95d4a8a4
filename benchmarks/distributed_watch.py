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
    + watch(default, carry_loss)
                          ``babysit.watch(model, opt, carry_loss=True)``: the same, with every
                          rank's loss carried in DDP's own gradient all-reduce (a comm hook on
                          the wrapper, ``babysit.train.loss_carrier``): no all-reduce of its own

Variants are interleaved (each round runs all of them in a rotating order, after one untimed
warm-up round); both ranks run the same variant at the same time (a barrier between runs).
Columns: steps/s (rank 0's wall clock, median over rounds) and the paired ratio to the DDP
loop of the same round (median, min-max); the monitor budget is ≤ 1.05 (a steps/s ratio ≥
0.952). In CPU time: the same paired ratio on rank 0's process CPU time (all its threads),
from which the time spent waiting for a descheduled peer on a busy machine drops out. Best
blocks: the fastest 100 consecutive steps (aligned on step 0, so each holds one
step ActivationStats samples) over all rounds, and its ratio to the DDP loop's fastest block:
load only ever slows a block down, so on a shared machine this is the estimate least disturbed
by other processes. Last, the latency of the one collective every step adds (an all-reduce of
``W`` float64s, alone, 1000 times: median and fastest), next to the DDP loop's step time.

Collectives: ``torch.distributed``'s float64 all-reduces (babysit's; the gradients are float32,
and under ``carry_loss`` DDP's gradient buckets pass through the hook's ``dist.all_reduce``, so
they are left out by their dtype) are counted while each watcher runs, split
into plain steps and the steps ``ActivationStats`` samples, with their payload bytes; the
formula in the table is what ``babysit.train.session`` and ``babysit.train.monitors
.across_ranks`` send: every step one all-reduce of ``8·W`` bytes (every rank's loss, float64,
started in ``observe`` and waited for at the optimizer step, so it overlaps the backward); a
sampled step one more, blocking, of ``8·(7·A + U + 2·L + 1)`` bytes (``A`` judged activation
layers, ``U`` their ReLU units, ``L`` weight layers, a layout flag), and the first sampled
step a 32-byte layout header before it. With ``carry_loss`` the per-step all-reduce is gone
(``4·(W + 1)`` bytes ride in DDP's first float32 bucket instead).

Run: ``python benchmarks/distributed_watch.py [--rounds 5] [--steps 400]`` (it launches itself
through ``torch.distributed.run`` with 2 processes, one thread each).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY = "+ watch(default, carry_loss)"


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

    # (variant, "step" / "sampled") -> [collectives, bytes]
    counted: dict[tuple[str, str], list[int]] = {}
    phase: list = ["off"]

    def counting(fn):
        def wrapped(tensor, *a, **k):
            if phase[0] != "off" and tensor.dtype == torch.float64:
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
            carry = variant == CARRY
            watcher = bs.watch(model, opt, monitors=monitors, carry_loss=carry)
        sampled = set()
        if watcher is not None and count:
            for m in watcher.callbacks:
                if type(m).__name__ == "ActivationStats":
                    sampled = {s for s in range(steps) if s % m.every == 0}
        g = torch.Generator().manual_seed(rank)
        perm, at, total = torch.randperm(len(x), generator=g), 0, 0.0
        bd.barrier()
        start, cpu = time.perf_counter(), time.process_time()
        stamps = [start]
        for step in range(steps):
            if at + 100 > len(x):
                perm, at = torch.randperm(len(x), generator=g), 0
            index = perm[at : at + 100]
            at += 100
            if count:
                phase[0] = (variant, "sampled" if step in sampled else "step")
            opt.zero_grad()
            loss = loss_fn(model(x[index]), y[index])
            if watcher is not None:
                watcher.observe(loss)
            loss.backward()
            opt.step()
            total += loss.item()
            stamps.append(time.perf_counter())
        phase[0] = "off"
        seconds = time.perf_counter() - start
        cpu_rates.setdefault(variant, []).append(steps / (time.process_time() - cpu))
        if watcher is not None:
            watcher.close()
        bd.barrier()
        blocks[variant] = max(
            [blocks.get(variant, 0.0)]
            + [100 / (stamps[i + 100] - stamps[i]) for i in range(0, steps - 99, 100)]
        )
        return steps / seconds

    blocks: dict[str, float] = {}
    cpu_rates: dict[str, list[float]] = {}
    variants = ["DDP loop", "+ watch(None)", "+ watch(default)", CARRY]
    for v in variants:  # warm-up
        run(v, 100)
    blocks.clear()
    cpu_rates.clear()
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(args.rounds):
        k = i % len(variants)
        order = variants[k:] + variants[:k]
        for v in order:
            rates[v].append(run(v, args.steps))
    counted_cpu = {k: list(v) for k, v in cpu_rates.items()}
    for v in ("+ watch(default)", CARRY):
        run(v, args.steps, count=True)
    cpu_rates.clear()
    cpu_rates.update(counted_cpu)
    latencies = []
    slots = torch.zeros(world, dtype=torch.float64)
    bd.barrier()
    for _ in range(1000):
        t0 = time.perf_counter()
        bd.all_reduce_sum(slots).tolist()
        latencies.append(time.perf_counter() - t0)

    # DDP's reducers (and the carrier's hook on them) go before the group: torch aborts at
    # exit otherwise
    gc.collect()
    bd.barrier()
    if rank != 0:
        dist.destroy_process_group()
        return
    n_sampled = len([s for s in range(args.steps) if s % 100 == 0])
    print(f"2 processes (gloo, CPU, 1 thread each), {args.steps} steps x {args.rounds} rounds")
    print()
    print(f"load average at the end: {' / '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print()
    print(
        "| variant | steps/s (rank 0) | ÷ DDP loop, median (min-max) | in CPU time | "
        "best block | ÷ DDP |"
    )
    print("|---|---|---|---|---|---|")
    for v in variants:
        ratios = [a / b for a, b in zip(rates[v], rates["DDP loop"], strict=True)]
        cpu = [a / b for a, b in zip(cpu_rates[v], cpu_rates["DDP loop"], strict=True)]
        print(
            f"| {v} | {statistics.median(rates[v]):.0f} | {statistics.median(ratios):.3f} "
            f"({min(ratios):.3f}-{max(ratios):.3f}) | {statistics.median(cpu):.3f} | "
            f"{blocks[v]:.0f} | {blocks[v] / blocks['DDP loop']:.3f} |"
        )
    step_us = 1e6 / blocks["DDP loop"]
    print()
    print(
        f"one loss all-reduce ({8 * world} B): median {statistics.median(latencies) * 1e6:.0f} µs, "
        f"fastest {min(latencies) * 1e6:.0f} µs; the DDP loop's fastest step block: "
        f"{step_us:.0f} µs a step"
    )
    n_plain = args.steps - n_sampled
    print()
    print("| babysit collectives of their own | per step | bytes per step |")
    print("|---|---|---|")
    for v, loss_bytes in (("+ watch(default)", f"8·W, W = {world}"), (CARRY, "0")):
        plain = counted.get((v, "step"), [0, 0])
        sampled = counted.get((v, "sampled"), [0, 0])
        per_step = f"{plain[0] / n_plain:g} | {plain[1] / n_plain:g} ({loss_bytes})"
        print(f"| {v}: plain step | {per_step} |")
        print(
            f"| {v}: step ActivationStats samples (1 in 100; {n_sampled} here) | "
            f"{sampled[0] / max(n_sampled, 1):.3g} | {sampled[1] / max(n_sampled, 1):.4g} "
            f"({loss_bytes} + 8·(7·A + U + 2·L + 1), plus 32 at the first; "
            "here A = 2, U = 200, L = 3) |"
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
