"""What ``fit``'s progress output costs per epoch when stderr is not a terminal (a log file, CI).

Set-up: scikit-learn's digits (``babysit.data.load("digits")``, 1150 training and 288
validation examples, ``Standardize``d), ``babysit.nn.mlp(64, [32], 10)``, Adam lr 1e-2, batch 64
(18 steps per epoch), default monitors, no run directory, ``--epochs`` epochs per run. stderr
(where the progress goes) is redirected to ``/dev/null`` opened as a file: not a terminal.

Variants, in this process, each a fresh model under the same seed:

    progress=False   fit(..., progress=False): nothing is printed
    progress=True    fit(..., progress=True): in a non-terminal, plain epoch lines

The machine may be shared, so the two variants are paired: each repeat runs both, in an order
that alternates, after one untimed warm-up of each. Columns: wall milliseconds per epoch (a run's
wall time over its epochs), the process's CPU time (every thread: rich's refresh thread
counts) per epoch, and the time spent inside the progress callback's hooks per epoch (each hook
wrapped in a timer: the cost the loop's thread pays, free of the noise of a shared machine).
Cells: median over repeats (min to max); "difference" pairs the two variants within a repeat.
The target (issue 13) is progress hooks <= 1 % of a progress=False epoch.

    python benchmarks/progress.py [--epochs 60] [--repeats 7]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time

import torch

import babysit as bs
from _common import add_write_docs_arg, emit
from babysit.data import Standardize, load


def _data():
    splits = load("digits")
    x, y = splits.train.tensors
    xv, yv = splits.val.tensors
    scaler = Standardize().fit(x)
    return (scaler.transform(x), y), (scaler.transform(xv), yv)


HOOKS = ("on_fit_start", "on_train_epoch_start", "on_train_batch_end", "on_train_epoch_end")
HOOKS += ("on_fit_end",)
_IN_HOOKS = [0.0]  # seconds spent inside the progress callback's hooks


def _timed(method):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            _IN_HOOKS[0] += time.perf_counter() - start

    return wrapper


def _instrument() -> None:
    """Time every hook of the progress callback (the time it adds to the loop's thread)."""
    from babysit.train.progress import ProgressBar

    for name in HOOKS:
        if name in vars(ProgressBar):
            setattr(ProgressBar, name, _timed(vars(ProgressBar)[name]))


def _run(data, val, *, progress: bool, epochs: int) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (every thread) and seconds in the progress hooks, per epoch,
    of one fit with stderr going to a non-terminal."""
    torch.manual_seed(0)
    model = bs.nn.mlp(64, [32], 10)
    _IN_HOOKS[0] = 0.0
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        start, cpu = time.perf_counter(), time.process_time()
        bs.fit(model, data, val=val, epochs=epochs, lr=1e-2, progress=progress)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall / epochs, cpu / epochs, _IN_HOOKS[0] / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=7)
    add_write_docs_arg(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    _instrument()
    data, val = _data()
    for progress in (False, True):  # warm-up: imports, allocator, rich
        _run(data, val, progress=progress, epochs=2)
    runs: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    for repeat in range(args.repeats):
        for progress in (False, True) if repeat % 2 == 0 else (True, False):
            runs[progress].append(_run(data, val, progress=progress, epochs=args.epochs))

    def column(progress: bool, i: int) -> list[float]:
        return [r[i] for r in runs[progress]]

    def paired(i: int) -> list[float]:
        return [b - a for a, b in zip(column(False, i), column(True, i), strict=True)]

    def cell(values: list[float], scale: float, fmt: str) -> str:
        med = statistics.median(values) * scale
        return f"{med:{fmt}} ({min(values) * scale:{fmt}} to {max(values) * scale:{fmt}})"

    epoch = statistics.median(column(False, 0))
    hooks = column(True, 2)
    cpu_epoch = statistics.median(column(False, 1))
    lines = [
        f"digits, mlp(64, [32], 10), batch 64, {args.epochs} epochs x {args.repeats} repeats; "
        f"stderr -> /dev/null (not a terminal); torch {torch.__version__}, 1 thread, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "",
        "| ms per epoch | progress=False | progress=True | difference (paired) |",
        "|---|---|---|---|",
        f"| wall | {cell(column(False, 0), 1e3, '.2f')} | {cell(column(True, 0), 1e3, '.2f')} "
        f"| {cell(paired(0), 1e3, '.3f')} |",
        f"| CPU, all threads | {cell(column(False, 1), 1e3, '.2f')} | "
        f"{cell(column(True, 1), 1e3, '.2f')} | {cell(paired(1), 1e3, '.3f')} |",
        f"| inside the progress hooks | | {cell(hooks, 1e3, '.3f')} | |",
        "",
        f"progress hooks: {statistics.median(hooks) / epoch:.2%} of a {epoch * 1e3:.1f} ms wall "
        f"epoch, {statistics.median(hooks) / cpu_epoch:.2%} of its {cpu_epoch * 1e3:.1f} ms of CPU "
        "(medians; target <= 1 %)",
    ]
    emit(args, __file__, lines)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
