"""Where the Lightning callback's time goes: µs per training step in each of its hooks.

``benchmarks/integrations.py`` times whole ``Trainer.fit`` runs with ÷ without the callback; on
a busy machine that ratio moves by more than the callback costs. This script measures the
callback itself, inside real fits of the same set-up (the MNIST-1D MLP, 32 steps an epoch,
default monitors, the default run directory in a temporary folder): every hook of
``BabysitCallback`` is wrapped in a clock read and its time summed per hook, then divided by
the steps trained. The clock is the thread's CPU time by default (``--clock cpu``: time another
process takes from this one is not counted, so a busy machine disturbs it less; each read costs
~1 µs, so the median of an empty interval is subtracted from every sample) or the wall clock
(``--clock wall``, ``perf_counter_ns``). Rounds rotate three fits: without a callback, with
an empty one, and with babysit's; the training loop's own time per step (``on_train_start`` to
``on_train_end``, read by a one-line timing callback present in all) gives the share babysit's
hooks add (``hooks ÷ step``) and the loop's paired ratios, in wall and in CPU time: with
babysit, and with Lightning's empty
``Callback`` (what any callback costs: Lightning calls every hook of every callback).

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
    """A ``BabysitCallback`` whose hooks record their duration (ns) per call.

    The timers are instance attributes, not a subclass: the callback then drops the ones it
    drops (``on_train_batch_start`` once started), as it does untimed, and Lightning skips them.
    """
    from babysit.integrations.lightning import BabysitCallback

    calls: dict[str, list[int]] = defaultdict(list)
    callback = BabysitCallback()

    def wrap(name: str):
        hook = getattr(BabysitCallback, name)

        def timed(*args):
            if profiler is not None:
                profiler.enable()
            start = clock()
            hook(callback, *args)
            calls[name].append(clock() - start - overhead)
            if profiler is not None:
                profiler.disable()
            if name == "on_train_start":  # it restores the class's hook: time that one too
                callback.on_train_batch_start = wrap("on_train_batch_start")

        return timed

    for name in HOOKS + ONCE:
        setattr(callback, name, wrap(name))
    return callback, calls


def loop_timer() -> tuple[object, dict[str, float]]:
    """A Lightning callback reading the training loop's wall and CPU time."""
    import lightning.pytorch as L

    span: dict[str, float] = {}

    class LoopTimer(L.Callback):
        def on_train_start(self, trainer, pl_module):
            span["wall"], span["cpu"] = time.perf_counter(), time.thread_time()

        def on_train_end(self, trainer, pl_module):
            span["wall"] = time.perf_counter() - span["wall"]
            span["cpu"] = time.thread_time() - span["cpu"]

    return LoopTimer(), span


VARIANTS = ("without", "empty", "babysit")  # no callback, Lightning's empty Callback, babysit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of fits (after a warm-up)")
    parser.add_argument("--epochs", type=int, default=20, help="x32 steps a fit")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu", help="see above")
    parser.add_argument("--profile", action="store_true", help="cProfile inside the hooks")
    parser.add_argument("--top", type=int, default=25, help="functions in the profile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import lightning.pytorch as L  # its import sets its loggers' levels: quiet after

    quiet()
    per_hook: dict[str, list[float]] = defaultdict(list)  # µs per step, one per round
    per_call: dict[str, list[float]] = defaultdict(list)  # median call (µs), one per round
    loop: dict[str, list[tuple[float, float]]] = defaultdict(list)  # (wall, cpu) µs per step
    profiler = cProfile.Profile() if args.profile else None
    clock = CLOCKS[args.clock]
    overhead = empty_interval(clock)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds + 1):  # round 0: warm-up, not counted
            shift = r % len(VARIANTS)  # each variant first, middle and last in turn
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                timer, span = loop_timer()
                callbacks = [timer]
                calls: dict[str, list[int]] = {}
                if variant == "babysit":
                    babysit, calls = timed_callback(profiler if r else None, clock, overhead)
                    callbacks.append(babysit)
                elif variant == "empty":
                    callbacks.append(L.Callback())
                steps = lightning_fit(args.epochs, Path(tmp) / f"{r}-{variant}", callbacks)
                if not r:
                    continue
                loop[variant].append((span["wall"] * 1e6 / steps, span["cpu"] * 1e6 / steps))
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
    print(f"{'all hooks':<26} {total:>15.1f}")
    base = [w for w, _ in loop["without"]]
    print(
        f"training step without a callback: {med(base):.0f} µs (median of rounds); "
        f"babysit's hooks ÷ step: {total / med(base):.3f}"
    )
    for variant in VARIANTS[1:]:
        for i, clock_name in enumerate(("wall", "cpu")):
            ratios = [v[i] / o[i] for v, o in zip(loop[variant], loop["without"], strict=True)]
            print(
                f"loop time with {variant} ÷ without ({clock_name}, paired): {med(ratios):.3f} "
                f"({min(ratios):.3f}-{max(ratios):.3f})"
            )
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
        print(out.getvalue())


if __name__ == "__main__":
    main()
