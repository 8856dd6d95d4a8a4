"""Healthy means silent, off the monitors' home ground: every family of ``lr_families`` trained
by ``babysit.fit`` with the default monitors at the best learning rate its trained grid found.

    python benchmarks/healthy_zoo.py [--seeds 0,1,2] [--set NAME=VALUE ...] [--families ...]
                                     [--write-docs]

The monitors' thresholds were chosen on the MLPs of ``benchmarks/monitors.py``; the ten
families (convnets with and without BatchNorm, a GRU, an LSTM, a transformer, a regression MLP,
tanh, BN + dropout and residual LayerNorm MLPs; SGD, momentum, Nesterov, Adam, AdamW; batches
16 to 256) were not looked at when they were chosen. Each family trains its own budget of
steps (``Family.steps``, rounded up to whole epochs) at the best grid lr of the plain loop
recorded in ``benchmarks/results/lr_grid.json`` at which that loop did not break out (fit's
LossGuard rolls back there by design; ``benchmarks/lr_find.py`` trains the grid and records
the flag; a family/seed missing from it is skipped and named), same model seed, batch size,
optimizer and loss, with the family's validation split. A set-up trained at its best lr is
healthy by construction, so every warning or error is a false alarm; OVERFITTING is listed but
tolerated (small data sets genuinely overfit). ``--set`` overrides thresholds as a user would
(``fit(thresholds=...)``), to compare a rule's settings on the same runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import babysit as bs
from _common import add_write_docs_arg, emit
from lr_families import FAMILIES, data

CACHE = Path(__file__).resolve().parent / "results" / "lr_grid.json"
TOLERATED = {"OVERFITTING"}


def best_lr(store: dict, fam, seed: int) -> float | None:
    """The best quarter-decade grid lr at which the plain loop did not break out (a mini-batch
    loss above 3x its start, where fit's LossGuard rolls back by design): fit's best lr."""
    prefix = f"family|{fam.name}|{fam.steps}|{seed}|"
    grid = [
        v
        for k, v in store.items()
        if k.startswith(prefix) and "shuffle" not in k and _on_grid(v["lr"])
    ]  # repeats of a training ("... | shuffle N", benchmarks/lr_find.py) are not the grid
    calm = [v for v in grid if not v.get("breaks_out_start", v.get("breaks_out_first", False))]
    return max(calm, key=lambda r: r["val"])["lr"] if calm else None


def _on_grid(lr: float) -> bool:
    """lr = 10 ** (k / 4) for an integer k (the grid; the cache also holds rules' picks)."""
    k = 4 * math.log10(lr)
    return abs(k - round(k)) < 1e-6


def run(fam, seed: int, lr: float, thresholds: dict) -> list[str]:
    split = data(fam.dataset)
    steps_per_epoch = len(split.x) // fam.batch + (len(split.x) % fam.batch > 0)
    history = bs.fit(
        fam.model(seed),
        (split.x, split.y),
        val=(split.xv, split.yv),
        optimizer=fam.optimizer,
        lr=lr,
        epochs=math.ceil(fam.steps / steps_per_epoch),
        batch_size=fam.batch,
        loss_fn=fam.loss_fn(),
        progress=False,
        seed=seed,
        thresholds=thresholds,
    )
    return sorted({f.code for f in history.findings if f.severity != "info"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--families", default="all")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    add_write_docs_arg(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    thresholds = {k: float(v) for k, v in (s.split("=", 1) for s in args.set)}
    store = json.loads(CACHE.read_text())
    names = list(FAMILIES) if args.families == "all" else args.families.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = [
        "| family | seed | lr | warnings/errors | verdict | s |",
        "|---|---|---|---|---|---|",
    ]
    alarms = runs = 0
    for name in names:
        fam = FAMILIES[name]
        for seed in seeds:
            lr = best_lr(store, fam, seed)
            if lr is None:
                lines.append(f"| {name} | {seed} | - | not in the grid cache: skipped | - | - |")
                print(lines[-1], file=sys.stderr, flush=True)
                continue
            t0 = time.perf_counter()
            codes = run(fam, seed, lr, thresholds)
            false = [c for c in codes if c not in TOLERATED]
            runs += 1
            alarms += bool(false)
            verdict = "FALSE ALARM" if false else ("OK*" if codes else "OK")
            lines.append(
                f"| {name} | {seed} | {lr:.2g} | {', '.join(codes) or '-'} | {verdict} | "
                f"{time.perf_counter() - t0:.1f} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    lines.append(f"\nhealthy runs silent: {runs - alarms}/{runs}")
    emit(args, __file__, lines)


if __name__ == "__main__":
    main()
