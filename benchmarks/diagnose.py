"""Evaluate diagnose on the catalogue: confusion table and wall time per set-up.

    python benchmarks/diagnose.py [--threads 2] [--write-docs]

Prints, for every broken and healthy set-up of ``babysit.checks.catalogue``, the codes expected,
the warning/error codes found, whether that is right, and the wall time of ``checks="all"``;
then the timing targets of issue 4: ``checks="all"`` on a ~1M-parameter MLP (target <= 10 s)
and the default set on the MNIST-1D MLP (target <= 2 s), cold (first call in a fresh process)
and warm (median of 5); then the cost of each slow-prone check alone (``checks=[name]``, warm,
median of 5), the regression guard that replaced the tests' wall-time assertions.
``--write-docs`` puts the tables into ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

import babysit as bs
from _common import add_write_docs_arg, emit
from babysit.checks.catalogue import CASES, mnist1d_standardized

COLD = """
import time, torch
torch.set_num_threads({threads})
t = time.perf_counter()
import babysit as bs
from babysit.checks.catalogue import mnist1d_standardized
x, y = mnist1d_standardized()
model = bs.nn.mlp(40, [100, 100], 10)
t = time.perf_counter()
bs.diagnose(model, (x, y), lr=1e-3)
print(time.perf_counter() - t)
"""


def confusion() -> list[tuple]:
    rows = []
    for name, case in CASES.items():
        model, data, kwargs = case.build()
        start = time.perf_counter()
        diagnosis = bs.diagnose(model, data, checks=case.checks, **kwargs)
        seconds = time.perf_counter() - start
        loud = sorted({f.code for f in diagnosis if f.severity != "info"})
        if case.healthy:
            right = not loud
            expected = "(silent)"
        else:
            right = all(alt & diagnosis.codes for alt in case.expect)
            expected = " & ".join("|".join(sorted(alt)) for alt in case.expect)
        rows.append((name, "healthy" if case.healthy else "broken", expected, loud, right, seconds))
    return rows


def timing(threads: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    x_big = torch.randn(1000, 784, generator=g)
    y_big = torch.randint(0, 10, (1000,), generator=g)
    big = bs.nn.mlp(784, [1024, 256], 10)
    params = sum(p.numel() for p in big.parameters())
    big_times = []
    for _ in range(3):
        start = time.perf_counter()
        bs.diagnose(big, (x_big, y_big), checks="all", lr=1e-3)
        big_times.append(time.perf_counter() - start)
    x, y = mnist1d_standardized()
    small = bs.nn.mlp(40, [100, 100], 10)
    warm, warm_none = [], []
    for _ in range(5):
        start = time.perf_counter()
        bs.diagnose(small, (x, y), lr=1e-3)
        warm.append(time.perf_counter() - start)
        start = time.perf_counter()
        bs.diagnose(small, (x, y))
        warm_none.append(time.perf_counter() - start)
    cold = float(
        subprocess.run(
            [sys.executable, "-c", COLD.format(threads=threads)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
    )
    return {
        "params": params,
        "all_1M_median_s": statistics.median(big_times),
        "default_small_warm_s": statistics.median(warm),
        "default_small_lr_none_warm_s": statistics.median(warm_none),
        "default_small_cold_s": cold,
    }


ONE_CHECK = ("overfit_small_sample", "gradient_flow", "gradient_check", "batch_independence")


def check_costs() -> dict[str, float]:
    """Median seconds (warm, 5 calls) of ``diagnose(checks=[name])`` on the MNIST-1D MLP."""
    x, y = mnist1d_standardized()
    model = bs.nn.mlp(40, [100, 100], 10)
    bs.diagnose(model, (x, y), checks=list(ONE_CHECK), lr=1e-3)  # warm-up
    costs = {}
    for name in ONE_CHECK:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            bs.diagnose(model, (x, y), checks=[name], lr=1e-3)
            times.append(time.perf_counter() - start)
        costs[name] = statistics.median(times)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    add_write_docs_arg(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = confusion()
    out = [
        "| set-up | kind | expected | warnings/errors found | right | s (checks=all) |",
        "|---|---|---|---|---|---|",
    ]
    for name, kind, expected, loud, right, seconds in rows:
        found, verdict = ", ".join(loud) or "-", "yes" if right else "NO"
        out.append(f"| {name} | {kind} | {expected} | {found} | {verdict} | {seconds:.2f} |")
    broken = [r for r in rows if r[1] == "broken"]
    healthy = [r for r in rows if r[1] == "healthy"]
    out += [
        "",
        f"broken found: {sum(r[4] for r in broken)}/{len(broken)}; "
        f"healthy silent: {sum(r[4] for r in healthy)}/{len(healthy)}",
        "",
    ]
    t = timing(args.threads)
    out += [
        "| timing | measured | target |",
        "|---|---|---|",
        f"| checks='all', {t['params'] / 1e6:.2f}M-param MLP, 1000 examples (median of 3) | "
        f"{t['all_1M_median_s']:.2f} s | <= 10 s |",
        f"| default set, MNIST-1D MLP, lr=1e-3, warm (median of 5) | "
        f"{t['default_small_warm_s']:.2f} s | <= 2 s |",
        f"| default set, MNIST-1D MLP, lr=None (adds the range test), warm | "
        f"{t['default_small_lr_none_warm_s']:.2f} s | <= 2 s |",
        f"| default set, MNIST-1D MLP, lr=1e-3, cold (first call in a process) | "
        f"{t['default_small_cold_s']:.2f} s | <= 2 s |",
        "",
        "| one check alone, MNIST-1D MLP 40-100-100-10, warm (median of 5) | s |",
        "|---|---|",
    ]
    out += [f"| `{name}` | {seconds:.3f} |" for name, seconds in check_costs().items()]
    emit(args, __file__, out)


if __name__ == "__main__":
    main()
