"""``babysit.fit`` under torchrun (DDP, 2 gloo processes on CPU) against a plain DDP loop.

    python benchmarks/distributed.py [--nproc 2] [--epochs 10] [--repeats 7] [--write-docs]

Launches itself through ``torch.distributed.run`` (``--standalone``, one thread per process)
and, in the same process group, times in interleaved rounds:

    plain DDP loop       the MLP wrapped in DistributedDataParallel, each rank indexing its
                         strided shard of a per-epoch permutation (what a DistributedSampler
                         gives), Adam, ``loss.item()`` every step (the rank's own loss)
    fit(monitors=None)   ``babysit.fit`` on the same data: DDP, DistributedSampler shards, the
                         loss averaged over ranks every step (one 8-byte all-reduce), epoch
                         sums reduced, rank 0 keeping the history
    fit(default)         the same with ``monitors="default"``

Data: MNIST-1D (4000 examples: train + val, standardized), ``batch_size`` 100 per process
(global batch 200), ``babysit.nn.mlp(40, [100, 100], 10)``, no validation, no run directory.
Steps/s are rank 0's, between barriers; ratios are paired per round (the variant over its
baseline in the same round), then the median over the rounds. Target: fit with the default
monitors costs at most 5% over the plain DDP loop (a time ratio <= 1.05).

Then the collectives alone, on the same group: the one all-reduce ``fit`` adds per step (the
loss, 8 bytes) and the gradient all-reduce DDP itself runs (4 bytes per parameter), each
timed over many repetitions; their time over the plain loop's step time is their share of it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import add_write_docs_arg, emit, header, load_data, md_table

BATCH = 100
HIDDEN = [100, 100]
VARIANTS = ("plain DDP loop", "fit(monitors=None)", "fit(default monitors)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # set by the launch
    add_write_docs_arg(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    torch.set_num_threads(1)  # as each process (the header reports it)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += [f"--nproc-per-node={args.nproc}", __file__, "--worker", str(result)]
        cmd += ["--epochs", str(args.epochs), "--repeats", str(args.repeats)]
        subprocess.run(cmd, check=True, env=env)
        data = json.loads(result.read_text())
    emit(args, __file__, report(data, args))


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    import babysit as bs
    from babysit import distributed as bd
    from babysit.nn import mlp

    torch.set_num_threads(1)
    bd.init_from_env("cpu")
    rank, world = bd.rank(), bd.world_size()
    data = load_data("mnist1d")
    x, y = data.x_train, data.y_train
    steps_per_epoch = -(-len(x) // world // BATCH)

    def plain(seed: int) -> int:
        torch.manual_seed(seed)
        net = DistributedDataParallel(mlp(40, HIDDEN, 10))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        steps = 0
        for epoch in range(args.epochs):
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            mine = torch.randperm(len(x), generator=g)[rank::world]
            for idx in mine.split(BATCH):
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(x[idx]), y[idx])
                loss.item()
                loss.backward()
                opt.step()
                steps += 1
        return steps

    def fitted(seed: int, monitors: str | None) -> int:
        torch.manual_seed(seed)
        model = mlp(40, HIDDEN, 10)
        bs.fit(
            model,
            (x, y),
            epochs=args.epochs,
            batch_size=BATCH,
            monitors=monitors,
            progress=False,
            seed=seed,
        )
        return args.epochs * steps_per_epoch

    runs = {
        VARIANTS[0]: plain,
        VARIANTS[1]: lambda s: fitted(s, None),
        VARIANTS[2]: lambda s: fitted(s, "default"),
    }
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats + 1):  # round 0 warms up, not counted
        for name, fn in runs.items():
            bd.barrier()
            start = time.perf_counter()
            steps = fn(repeat)
            bd.barrier()
            if repeat:
                rates[name].append(steps / (time.perf_counter() - start))
    n_params = sum(p.numel() for p in mlp(40, HIDDEN, 10).parameters())
    loss_us = _time_collective(lambda: bd.all_reduce_mean(torch.zeros(1, dtype=torch.float64)))
    grads = torch.zeros(n_params)
    grad_us = _time_collective(lambda: bd.all_reduce_sum(grads), repeats=200)
    if rank == 0:
        out = {
            "world": world,
            "steps_per_epoch": steps_per_epoch,
            "rates": rates,
            "n_params": n_params,
            "loss_allreduce_us": loss_us,
            "grad_allreduce_us": grad_us,
        }
        Path(args.worker).write_text(json.dumps(out))
    gc.collect()  # fit's DDP wrappers (the loss carrier's hook on them) go before the group
    bd.barrier()
    torch.distributed.destroy_process_group()


def _time_collective(fn, repeats: int = 2000) -> float:
    """Median of 5 blocks, microseconds per call (rank 0's clock, after a barrier)."""
    from babysit import distributed as bd

    blocks = []
    for _ in range(5):
        bd.barrier()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        blocks.append((time.perf_counter() - start) / repeats * 1e6)
    return statistics.median(blocks)


def report(data: dict, args: argparse.Namespace) -> list[str]:
    rates = data["rates"]

    def paired(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(rates[a], rates[b], strict=True)]

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"

    def best(a: str, b: str) -> str:  # fastest round of each: the least disturbed by load
        return f"{max(rates[a]) / max(rates[b]):.3f}"

    rows = []
    for name in VARIANTS:
        row = [name, f"{statistics.median(rates[name]):.0f}", f"{max(rates[name]):.0f}"]
        first = name == VARIANTS[0]
        row.append("—" if first else spread(paired(VARIANTS[0], name)))
        row.append("—" if first else best(VARIANTS[0], name))
        row.append(spread(paired(VARIANTS[1], name)) if name == VARIANTS[2] else "—")
        rows.append(row)
    overhead = statistics.median(paired(VARIANTS[0], VARIANTS[2]))
    overhead_best = max(rates[VARIANTS[0]]) / max(rates[VARIANTS[2]])
    step_us = 1e6 / statistics.median(rates[VARIANTS[0]])
    fit_step_us = 1e6 / statistics.median(rates[VARIANTS[2]])
    loss_us, grad_us = data["loss_allreduce_us"], data["grad_allreduce_us"]
    n = data["n_params"]
    lines = [
        header(f"babysit.fit under torchrun: {data['world']} gloo processes on CPU"),
        f"{args.repeats} rounds × {args.epochs} epochs × {data['steps_per_epoch']} steps per "
        f"variant; batch {BATCH} per process; MLP 40-100-100-10 ({n:,} parameters).",
        "",
        md_table(
            [
                "variant",
                "steps/s (median)",
                "steps/s (best round)",
                "time ÷ plain DDP loop: paired median (min–max)",
                "time ÷ plain DDP loop: best rounds",
                "time ÷ fit(monitors=None): paired median",
            ],
            rows,
        ),
        "",
        f"Target fit(default monitors) ≤ 1.05× the plain DDP loop: paired median "
        f"**{'met' if overhead <= 1.05 else 'not met'}** ({overhead:.3f}×), best rounds "
        f"**{'met' if overhead_best <= 1.05 else 'not met'}** ({overhead_best:.3f}×).",
        "",
        md_table(
            ["collective", "per", "bytes", "µs per call (measured)", "share of the step"],
            [
                [
                    "a separate all-reduce of the loss (watch, or fit in a user's DDP wrapper; "
                    "fit's own wrapper carries it in DDP's gradient all-reduce instead)",
                    "step",
                    "8 W",
                    f"{loss_us:.1f}",
                    f"{loss_us / fit_step_us:.1%} of fit's step ({fit_step_us:.0f} µs), if paid",
                ],
                [
                    "gradient all-reduce (DDP's own)",
                    "step",
                    f"{4 * n:,}",
                    f"{grad_us:.1f}",
                    f"{grad_us / step_us:.1%} of the plain step ({step_us:.0f} µs)",
                ],
            ],
        ),
    ]
    return lines


if __name__ == "__main__":
    main()
