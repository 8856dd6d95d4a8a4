"""Where the Lightning callback's time goes: µs per training step in each of its hooks.

``benchmarks/integrations.py`` times whole ``Trainer.fit`` runs with ÷ without the callback; on
a busy machine that ratio moves by more than the callback costs. This script measures the
callback itself, inside real fits of the same set-up (the MNIST-1D MLP, 32 steps an epoch,
default monitors, the default run directory in a temporary folder): every hook of
``BabysitCallback`` is wrapped in a clock read and its time summed per hook, then divided by
the steps trained. The clock is the thread's CPU time by default (``--clock cpu``: time another
process takes from this one is not counted, so a busy machine disturbs it less; each read costs
~1 µs, so the median of an empty interval is subtracted from every sample) or the wall clock
(``--clock wall``, ``perf_counter_ns``). Rounds alternate a fit without the callback and one
with it; the
training loop's own time per step (``on_train_start`` to ``on_train_end``, read by a one-line
timing callback present in both) gives the share babysit's hooks add (``hooks ÷ step``) and the
loop's paired ratio.

Columns: µs/step per hook as the median over rounds of (the hook's total time / steps) — the
mean per step, so sampled steps (update ratio, activation probes) count at their rate — and,
per call, the median call (what an unsampled step costs). ``--profile`` adds cProfile's
per-function table of the time spent inside the hooks (cProfile's own overhead inflates the
absolute numbers; the shares are what it is for).

Run: ``python benchmarks/integrations_hooks.py [--rounds 5] [--epochs 20] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from integrations import lightning_fit, quiet

HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_before_optimizer_step",
    "on_train_batch_end",
    "on_train_epoch_end",
)
ONCE = ("on_train_start", "on_fit_end")


CLOCKS = {"cpu": time.thread_time_ns, "wall": time.perf_counter_ns}


def empty_interval(clock) -> int:
    """The median of two consecutive clock reads apart (ns): what a timed hook adds."""
    gaps = []
    for _ in range(10_000):
        start = clock()
        gaps.append(clock() - start)
    return int(statistics.median(gaps))


def timed_callback(
    profiler: cProfile.Profile | None, clock, overhead: int
) -> tuple[object, dict[str, list[int]]]:
    """A ``BabysitCallback`` whose hooks record their duration (ns) per call."""
    from babysit.integrations.lightning import BabysitCallback

    calls: dict[str, list[int]] = defaultdict(list)

    def wrap(name: str):
        hook = getattr(BabysitCallback, name)

        def timed(self, *args):
            if profiler is not None:
                profiler.enable()
            start = clock()
            hook(self, *args)
            calls[name].append(clock() - start - overhead)
            if profiler is not None:
                profiler.disable()

        return timed

    cls = type("TimedBabysit", (BabysitCallback,), {n: wrap(n) for n in HOOKS + ONCE})
    return cls(), calls


def loop_timer() -> tuple[object, dict[str, float]]:
    """A Lightning callback reading the training loop's wall time."""
    import lightning.pytorch as L

    span: dict[str, float] = {}

    class LoopTimer(L.Callback):
        def on_train_start(self, trainer, pl_module):
            span["start"] = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            span["end"] = time.perf_counter()

    return LoopTimer(), span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="pairs of fits (after a warm-up)")
    parser.add_argument("--epochs", type=int, default=20, help="x32 steps a fit")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu", help="see above")
    parser.add_argument("--profile", action="store_true", help="cProfile inside the hooks")
    parser.add_argument("--top", type=int, default=25, help="functions in the profile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import lightning.pytorch  # noqa: F401  (its import sets its loggers' levels: quiet after)

    quiet()
    per_hook: dict[str, list[float]] = defaultdict(list)  # µs per step, one per round
    per_call: dict[str, list[float]] = defaultdict(list)  # median call (µs), one per round
    step_without: list[float] = []
    step_with: list[float] = []
    profiler = cProfile.Profile() if args.profile else None
    clock = CLOCKS[args.clock]
    overhead = empty_interval(clock)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds + 1):  # round 0: warm-up, not counted
            order = (False, True) if r % 2 == 0 else (True, False)
            for with_babysit in order:
                timer, span = loop_timer()
                callbacks = [timer]
                calls: dict[str, list[int]] = {}
                if with_babysit:
                    babysit, calls = timed_callback(profiler if r else None, clock, overhead)
                    callbacks.append(babysit)
                steps = lightning_fit(args.epochs, Path(tmp) / f"{r}-{with_babysit}", callbacks)
                step_us = (span["end"] - span["start"]) * 1e6 / steps
                if not r:
                    continue
                (step_with if with_babysit else step_without).append(step_us)
                for name, ns in calls.items():
                    per_hook[name].append(sum(ns) / 1e3 / steps)
                    per_call[name].append(statistics.median(ns) / 1e3)
    med = statistics.median
    print(
        f"{args.rounds} rounds of {steps} steps (+ a warm-up round); torch {torch.__version__}; "
        f"{args.clock} clock, {overhead} ns a read subtracted"
    )
    print(f"{'hook':<26} {'µs/step (mean)':>15} {'median call µs':>15}")
    total = 0.0
    for name in HOOKS + ONCE:
        if name in per_hook:
            every = med(per_hook[name])
            total += every
            print(f"{name:<26} {every:>15.1f} {med(per_call[name]):>15.1f}")
    loop = med(step_without)
    ratios = [w / o for w, o in zip(step_with, step_without, strict=True)]
    print(f"{'all hooks':<26} {total:>15.1f}")
    print(
        f"training step without babysit: {loop:.0f} µs (median of rounds); hooks ÷ step: "
        f"{total / loop:.3f}; loop time with ÷ without (paired): {med(ratios):.3f} "
        f"({min(ratios):.3f}-{max(ratios):.3f})"
    )
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
        print(out.getvalue())


if __name__ == "__main__":
    main()
