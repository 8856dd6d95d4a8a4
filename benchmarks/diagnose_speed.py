"""How long the default ``diagnose`` takes on real CNNs and on the lecture's MLP (issue 12 item 9).

    python benchmarks/diagnose_speed.py [--threads 2] [--models resnet20,resnet18,mnist1d_mlp]
                                        [--write-docs]

For each model: wall and CPU seconds of ``babysit.diagnose(model, (x, y))`` (the default set,
lr=None, as users run it first), the seconds of every check (the registry's functions are
wrapped with timers), and which checks the time target (``checks.DEFAULT_TIME_S``) sized down
or skipped. Targets: ResNet-20 (0.27M parameters, BatchNorm, 3×32×32) <= 10 s on 2 cores, a
ResNet-18-sized model (11M, 3×32×32) <= 30 s, the MNIST-1D MLP <= 2 s. The machine's load is
printed: the numbers are only as good as the CPU that was free.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

import _common
import babysit
from babysit.checks import _base, list_checks
from babysit.checks.zoo import BasicBlock, ResNet, images, mlp, mnist1d

# Measured by hand before the time target (commit b7d06aa, the per-check timer of this script,
# 1 torch thread, load ~3): kept here because the old code cannot be rerun by this script.
BEFORE = [
    "Before the time target (commit b7d06aa, 1 thread, load ~3): MNIST-1D MLP 1.5 s; ResNet-20 "
    "130.9 s wall / 130.3 CPU s, of which find_lr 72.3 s (the verified range test, ~350 "
    "mini-batches of 64) and learning_rate 51.2 s (41 full-batch steps on 256 images); at 2 "
    "threads under load ~5 the same ResNet-20 took 423 s wall. With 2 threads on this shared "
    "2-core machine even a tiny pass is slow (the MLP's forward+backward on 512 examples: "
    "0.18 s at 2 threads vs 0.0014 s at 1, thread contention), so the time target then also "
    "skips the MLP's range test, whose real cost is as high.",
    "",
    "Before the activation snapshot and the initial loss shared the probe forward (commit "
    "ef73bd9, 1 thread, load ~1.7): ResNet-20 5.2 s; ResNet-18 36.6 s, of which forward_runs "
    "17.5 s, activation_scale 9.5 s (its own forward, and statistics of every module: 5 s), "
    "initial_loss 4.4 s (its own forward), gradient_check 2.6 s.",
]

TARGETS = {"resnet20": 10.0, "resnet18": 30.0, "mnist1d_mlp": 2.0}


class ResNet18(nn.Module):
    """The CIFAR ResNet-18 (4 stages of 2 basic blocks, widths 64-512, 11.2M parameters)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()
        )
        layers, cin = [], 64
        for stage, w in enumerate((64, 128, 256, 512)):
            for b in range(2):
                layers.append(BasicBlock(cin, w, 2 if stage > 0 and b == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def build(name: str):
    torch.manual_seed(0)
    if name == "resnet20":
        return ResNet(), images()
    if name == "resnet18":
        return ResNet18(), images()
    x, y = mnist1d()
    return mlp(x.shape[1], [100, 100], 10), (x, y)


TIMES: dict[str, float] = {}


def timed_checks() -> dict[str, float]:
    """Wrap every registered check (once) with a wall-clock timer; returns the emptied dict
    they fill."""
    times = TIMES
    times.clear()
    if getattr(timed_checks, "done", False):
        return times
    timed_checks.done = True
    for name, spec in list_checks().items():

        def run(ctx, _f=spec.run, _n=name):
            start = time.perf_counter()
            try:
                return _f(ctx)
            finally:
                times[_n] = time.perf_counter() - start

        _base.REGISTRY[name] = _base.CheckSpec(
            spec.name, run, spec.codes, spec.slow, spec.family, spec.needs_labels
        )
    return times


def measure(name: str) -> dict:
    times = timed_checks()
    model, data = build(name)
    params = sum(p.numel() for p in model.parameters())
    start, cpu = time.perf_counter(), time.process_time()
    diagnosis = babysit.diagnose(model, data, progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    skipped = {}
    for f in diagnosis:
        if f.code == "CHECKS_SKIPPED":
            skipped = f.evidence.get("skipped", {})
    loud = sorted({f.code for f in diagnosis if f.severity in ("warning", "error")})
    return {
        "name": name,
        "params": params,
        "wall": wall,
        "cpu": cpu,
        "times": dict(times),
        "skipped": skipped,
        "loud": loud,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="mnist1d_mlp,resnet20,resnet18")
    _common.add_write_docs_arg(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(name) for name in args.models.split(",")]
    lines = [
        f"Default `diagnose` (lr=None), {args.threads} torch threads, load at start "
        f"{os.getloadavg()[0]:.1f} (1-min average) on {os.cpu_count()} cores.",
        "",
        "| model | parameters | wall s | CPU s | target s | warnings/errors | skipped (time) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        budget = [k for k, why in r["skipped"].items() if "time budget" in why]
        lines.append(
            f"| {r['name']} | {r['params'] / 1e6:.2f}M | {r['wall']:.1f} | {r['cpu']:.1f} | "
            f"{TARGETS[r['name']]:g} | {', '.join(r['loud']) or '—'} | {', '.join(budget) or '—'} |"
        )
    lines += ["", "Seconds per check (wall; checks under 0.05 s left out):", ""]
    lines += ["| model | " + " | ".join(["check", "s"]) + " |", "|---|---|---|"]
    for r in rows:
        for check, s in sorted(r["times"].items(), key=lambda kv: -kv[1]):
            if s >= 0.05:
                lines.append(f"| {r['name']} | {check} | {s:.2f} |")
    lines += ["", *BEFORE]
    _common.emit(args, __file__, lines)


if __name__ == "__main__":
    main()
