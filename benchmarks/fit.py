"""Speed of ``babysit.fit`` and ``babysit.watch`` against a plain PyTorch loop (steps/second).

Two models on MNIST-1D (``babysit.data.load("mnist1d")``, train + val = 4000 examples,
``Standardize``d), batch 100 (40 steps per epoch), Adam lr 1e-3, cross-entropy:

    mlp       babysit.nn.mlp(40, [100, 100], 10)
    convnet   babysit.nn.convnet((1, 40), [16, 32], 10) on the inputs reshaped to (N, 1, 40)

Variants, all in this process, each a fresh model (same seed) trained ``--epochs`` epochs:

    plain loop            in-memory tensors indexed with a per-epoch ``torch.randperm``;
                          zero_grad, forward, CrossEntropyLoss, backward, Adam step, and
                          ``total += loss.item()`` every step, as tutorials do (the baseline)
    fit, monitors=None    ``babysit.fit(model, (X, y), monitors=None, progress=False)``
    fit, default          ``babysit.fit(..., monitors="default", progress=False)``
    plain loop + watch    the plain loop with ``watcher = babysit.watch(model, opt)``,
                          ``watcher.observe(loss)`` before backward, ``watcher.close()`` after
    fit, progress=True    ``babysit.fit(..., monitors=None, progress=True)`` with rich drawing
                          to /dev/null as if to a terminal (``FORCE_COLOR=1``, stderr redirected)
    Lightning             ``lightning.Trainer(...).fit`` of a LightningModule wrapping the same
                          model, fed the same in-memory batches (no DataLoader); no logger,
                          checkpointing, progress bar or model summary. Skipped with a note when
                          ``lightning`` is not importable.

A run is timed from the optimizer's creation (inside ``fit`` / ``Trainer.fit``, with the Trainer's
construction) to the end of training, so set-up and end-of-epoch work count. Steps/s = steps /
seconds. Every step also appends ``perf_counter()`` to a list (in ``fit`` and Lightning through a
callback that runs after the monitors), for the best-block estimate below.

The machine may be shared, so variants are interleaved: each repeat runs every variant once, in
an order that rotates from repeat to repeat, after one untimed warm-up run of each. Columns:

- steps/s: median over repeats (min-max);
- ÷ plain loop, ÷ baseline: steps/s of the variant over that of the plain loop (or of the row's
  baseline) in the same repeat, then the median (min-max) over repeats; the target is judged on
  this median. An overhead target of <= 5 % is a steps/s ratio of >= 1/1.05 = 0.952;
- in CPU time: the same paired ratio with the process's CPU time (all threads) instead of wall
  clock: time spent waiting for a busy CPU drops out, extra threads (rich's refresh) count;
- best blocks: the fastest ``--block`` consecutive steps (aligned on step 0; 200 = 5 epochs, so a
  block holds the same share of sampled monitor steps and epoch ends) over all repeats, as
  steps/s and as a ratio to the baseline's fastest block. Load only ever slows a block down, so
  this is the estimate least disturbed by other processes; it leaves out per-run set-up.

``--progress-epochs`` adds a table of progress=True against progress=False for runs of several
lengths: the bar's cost per step grows with the number of epochs already run.

Run: ``python benchmarks/fit.py [--repeats 7] [--epochs 20] [--threads 1]``; Lightning needs an
environment that has it (e.g. a throwaway venv that sees this one's torch and babysit).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

import babysit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_write_docs_arg, emit, header, load_data, md_table

BATCH = 100
LR = 1e-3
OVERHEAD_5 = 1 / 1.05  # a <= 5 % time overhead as a steps/s ratio


# ------------------------------------------------------------------------------------ set-up


@dataclass
class Setup:
    """One model family: how to build it and its training tensors."""

    name: str
    build: Callable[[], nn.Module]
    x: torch.Tensor
    y: torch.Tensor


def make_setups(names: list[str]) -> list[Setup]:
    data = load_data("mnist1d", with_val=True)
    x, y = data.x_train, data.y_train
    builders = {
        "mlp": (lambda: babysit.nn.mlp(40, [100, 100], 10), x),
        "convnet": (lambda: babysit.nn.convnet((1, 40), [16, 32], 10), x.reshape(-1, 1, 40)),
    }
    unknown = [n for n in names if n not in builders]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}: choose from {', '.join(builders)}")
    return [Setup(n, builders[n][0], builders[n][1].contiguous(), y) for n in names]


def fresh_model(setup: Setup, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return setup.build()


# ------------------------------------------------------------------------------------ variants


@dataclass
class Timing:
    steps: int
    seconds: float  # wall clock
    cpu: float  # CPU time of the process (all its threads) over the same span
    stamps: list[float] = field(default_factory=list)  # perf_counter() after every step


class Clock:
    """Wall-clock and process CPU time since creation."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def timing(self, steps: int, stamps: list[float]) -> Timing:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        if len(stamps) != steps:
            raise RuntimeError(f"{len(stamps)} step stamps for {steps} steps")
        return Timing(steps, wall, cpu, stamps)


def best_block(stamps: list[float], block: int) -> float:
    """The shortest time of ``block`` consecutive steps, blocks aligned on step 0."""
    spans = [stamps[k + block] - stamps[k] for k in range(0, len(stamps) - block, block)]
    return min(spans) if spans else math.inf


class Stamp(babysit.Callback):
    """Appends ``perf_counter()`` after every step of ``fit`` (it runs after the monitors)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_end(self, trainer, loss: float, batch_index: int) -> None:
        self.stamps.append(time.perf_counter())


def plain_loop(setup: Setup, epochs: int, seed: int, *, watch: bool = False) -> Timing:
    """The tutorial loop; with ``watch`` the one line ``watcher.observe(loss)`` is added."""
    model = fresh_model(setup, seed)
    x, y = setup.x, setup.y
    n = len(y)
    clock = Clock()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    watcher = babysit.watch(model, opt) if watch else None
    model.train()
    steps, stamps = 0, []
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, BATCH):
            idx = order[i : i + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            if watcher is not None:
                watcher.observe(loss)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
            stamps.append(time.perf_counter())
    if watcher is not None:
        watcher.close()
    timing = clock.timing(steps, stamps)
    if not math.isfinite(total):
        raise RuntimeError("the plain loop diverged")
    return timing


def run_fit(setup: Setup, epochs: int, seed: int, **kw) -> Timing:
    model = fresh_model(setup, seed)
    stamp = Stamp()
    clock = Clock()
    history = babysit.fit(
        model,
        (setup.x, setup.y),
        val=None,
        optimizer="adam",
        lr=LR,
        epochs=epochs,
        batch_size=BATCH,
        seed=seed,
        run_dir=None,
        callbacks=[stamp],
        **kw,
    )
    timing = clock.timing(epochs * math.ceil(len(setup.y) / BATCH), stamp.stamps)
    if len(history) != epochs or history.stop_reason is not None:
        raise RuntimeError(f"fit stopped after {len(history)} epochs: {history.stop_reason}")
    if epochs > 1:  # not the one-epoch warm-up (40 steps: too short to judge dead units)
        FINDINGS.update(f.code for f in history.findings)
    return timing


FINDINGS: set[str] = set()  # codes emitted by the default monitors on these healthy runs


@contextlib.contextmanager
def null_terminal() -> Iterator[None]:
    """rich believes stderr is a terminal (it draws and refreshes the bar) but it is /dev/null."""
    saved = os.environ.get("FORCE_COLOR")
    os.environ["FORCE_COLOR"] = "1"
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            yield
    finally:
        if saved is None:
            os.environ.pop("FORCE_COLOR", None)
        else:
            os.environ["FORCE_COLOR"] = saved


def run_fit_progress(setup: Setup, epochs: int, seed: int) -> Timing:
    with null_terminal():
        return run_fit(setup, epochs, seed, monitors=None, progress=True)


class InMemoryBatches:
    """The plain loop's batches as a re-iterable: a fresh ``randperm`` per epoch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> None:
        self.x, self.y = x, y
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.y) / BATCH)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.y), generator=self.gen)
        for i in range(0, len(self.y), BATCH):
            idx = order[i : i + BATCH]
            yield self.x[idx], self.y[idx]


def lightning_runner() -> tuple[Callable[[Setup, int, int], Timing] | None, str]:
    """A runner for Lightning's Trainer, or None and why not."""
    try:
        import lightning as L
    except ImportError as err:
        return None, f"lightning is not importable here ({err})"
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)

    class Classifier(L.LightningModule):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net
            self.loss_fn = nn.CrossEntropyLoss()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return self.loss_fn(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=LR)

    class Stamps(L.Callback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.stamps.append(time.perf_counter())

    def run(setup: Setup, epochs: int, seed: int) -> Timing:
        module = Classifier(fresh_model(setup, seed))
        stamps = Stamps()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clock = Clock()
            trainer = L.Trainer(
                accelerator="cpu",
                devices=1,
                max_epochs=epochs,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                callbacks=[stamps],
            )
            trainer.fit(module, train_dataloaders=InMemoryBatches(setup.x, setup.y, seed))
            timing = clock.timing(trainer.global_step, stamps.stamps)
        expected = epochs * math.ceil(len(setup.y) / BATCH)
        if timing.steps != expected:
            raise RuntimeError(f"Lightning ran {timing.steps} steps, expected {expected}")
        return timing

    return run, f"lightning {L.__version__}"


# ------------------------------------------------------------------------------------ table


@dataclass
class Row:
    """A table row: a variant and what it is compared with."""

    label: str
    variant: str
    baseline: str = "plain loop"  # label of the row it is compared with
    target: float | None = None  # minimum steps/s ratio to the baseline


ROWS = [
    Row("plain loop", "plain", baseline=""),
    Row("fit, monitors=None", "fit_none", target=0.95),
    Row("fit, monitors='default'", "fit_default", baseline="fit, monitors=None", target=OVERHEAD_5),
    Row("plain loop + watch", "watch", target=OVERHEAD_5),
    Row("fit, monitors=None, progress=True", "fit_progress", baseline="fit, monitors=None"),
    Row("Lightning Trainer.fit", "lightning"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each variant")
    parser.add_argument("--epochs", type=int, default=20, help="epochs (x40 steps) per run")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--models", default="mlp,convnet", help="comma list: mlp, convnet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--block", type=int, default=200, help="steps per block of the best-block estimate"
    )
    parser.add_argument("--no-progress", action="store_true", help="skip the progress-bar run")
    parser.add_argument("--no-lightning", action="store_true", help="skip Lightning")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 repeats x 5 epochs")
    parser.add_argument(
        "--progress-epochs",
        default="5,25,100",
        help="also time progress=True against progress=False on runs of these lengths (epochs, "
        "comma list, first model only; '' skips it)",
    )
    parser.add_argument("--progress-repeats", type=int, default=2, help="pairs per length")
    add_write_docs_arg(parser)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.epochs, args.block = 2, 5, 100
        args.progress_epochs = "2,6" if args.progress_epochs else ""
    if args.no_progress:
        args.progress_epochs = ""
    torch.set_num_threads(args.threads)
    setups = make_setups([m.strip() for m in args.models.split(",") if m.strip()])

    runners: dict[str, Callable[[Setup, int, int], Timing]] = {
        "plain": plain_loop,
        "fit_none": lambda s, e, seed: run_fit(s, e, seed, monitors=None, progress=False),
        "fit_default": lambda s, e, seed: run_fit(s, e, seed, monitors="default", progress=False),
        "watch": lambda s, e, seed: plain_loop(s, e, seed, watch=True),
    }
    notes = []
    if not args.no_progress:
        runners["fit_progress"] = run_fit_progress
    lightning, why = (None, "skipped (--no-lightning)") if args.no_lightning else lightning_runner()
    if lightning is not None:
        runners["lightning"] = lightning
    notes.append(f"Lightning: {why}.")
    rows = [r for r in ROWS if r.variant in runners]

    load_before = os.getloadavg()
    started = time.perf_counter()
    timings: dict[tuple[str, str], list[Timing]] = {}
    names = list(runners)
    for setup in setups:
        for name in names:  # warm-up: first optimizer, first fit, imports; not timed
            runners[name](setup, 1, args.seed)
        for r in range(args.repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                timing = runners[name](setup, args.epochs, args.seed)
                timings.setdefault((setup.name, name), []).append(timing)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    if (threads_now := torch.get_num_threads()) != args.threads:
        notes.append(f"torch.get_num_threads() changed to {threads_now} during the run!")

    def rates(model: str, row: Row, kind: str = "wall") -> list[float]:
        runs = timings[(model, row.variant)]
        if kind == "wall":
            return [t.steps / t.seconds for t in runs]
        if kind == "cpu":
            return [t.steps / t.cpu for t in runs]
        best = min(best_block(t.stamps, args.block) for t in runs)  # "block"
        return [args.block / best if math.isfinite(best) else math.nan]

    by_label = {r.label: r for r in rows}
    table = []
    for setup in setups:
        plain = rates(setup.name, by_label["plain loop"])
        for row in rows:
            mine = rates(setup.name, row)
            line = [
                setup.name,
                row.label,
                f"{statistics.median(mine):.0f} ({min(mine):.0f}–{max(mine):.0f})",
                _spread(_ratios(mine, plain)),
                _num(rates(setup.name, row, "block")[0], 0),
                row.baseline or "—",
            ]
            if not row.baseline:
                table.append(line + [""] * 5)
                continue
            base = by_label[row.baseline]
            ratios = _ratios(mine, rates(setup.name, base))
            cpu = _ratios(rates(setup.name, row, "cpu"), rates(setup.name, base, "cpu"))
            block = _ratios(rates(setup.name, row, "block"), rates(setup.name, base, "block"))
            line += [_spread(ratios), _spread(cpu), _num(block[0], 3)]
            if row.target is None:
                line += ["", ""]
            else:
                met = statistics.median(ratios) >= row.target
                line += [f"≥ {row.target:.3f}", "yes" if met else "**no**"]
            table.append(line)

    out = [header("Training loop: babysit.fit and babysit.watch vs a plain PyTorch loop")]
    out.append(
        f"{args.repeats} repeats x {args.epochs} epochs x {math.ceil(4000 / BATCH)} steps per "
        f"variant, interleaved; batch {BATCH}, Adam lr {LR:g}; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; {elapsed:.0f} s in all.\n"
    )
    out.append(
        md_table(
            [
                "model",
                "variant",
                "steps/s: median (min–max)",
                "÷ plain loop: paired median (min–max)",
                f"steps/s: best {args.block}-step block",
                "baseline",
                "÷ baseline: paired median (min–max)",
                "÷ baseline in CPU time: paired median (min–max)",
                "÷ baseline: best blocks",
                "target (paired median)",
                "met",
            ],
            table,
        )
    )
    if "fit_default" in runners:
        found = ", ".join(sorted(FINDINGS)) or "none"
        notes.append(f"Findings of the default monitors on these healthy runs: {found}.")
    out.append("")
    out += [f"- {note}" for note in notes]
    if args.progress_epochs:
        out += progress_scaling(setups[0], [int(e) for e in args.progress_epochs.split(",")], args)
    emit(args, __file__, out)


def progress_scaling(setup: Setup, epoch_counts: list[int], args: argparse.Namespace) -> list[str]:
    """fit(progress=True) / fit(progress=False) for runs of different lengths."""
    rows = []
    for epochs in epoch_counts:
        ratios, quiet, bar = [], [], []
        for _ in range(args.progress_repeats):
            a = run_fit(setup, epochs, args.seed, monitors=None, progress=False)
            b = run_fit_progress(setup, epochs, args.seed)
            quiet.append(a.steps / a.seconds)
            bar.append(b.steps / b.seconds)
            ratios.append(bar[-1] / quiet[-1])
        rows.append(
            [
                str(epochs),
                str(epochs * math.ceil(len(setup.y) / BATCH)),
                f"{statistics.median(quiet):.0f}",
                f"{statistics.median(bar):.0f}",
                _spread(ratios),
            ]
        )
    return [
        f"\n{setup.name}, monitors=None, progress=True vs False, {args.progress_repeats} pairs "
        "per length:\n",
        md_table(
            [
                "epochs",
                "steps",
                "steps/s, progress=False",
                "steps/s, progress=True",
                "ratio: median (min–max)",
            ],
            rows,
        ),
    ]


def _num(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "—"


def _ratios(mine: list[float], base: list[float]) -> list[float]:
    return [a / b for a, b in zip(mine, base, strict=True)]


def _spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f})"


if __name__ == "__main__":
    main()
