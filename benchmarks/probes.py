"""Cost of babysit's probes: training-step time of the MNIST-1D MLP with and without them.

The model is the MNIST-1D MLP 40-100-100-10 (ReLU), batch 100, Adam lr 1e-3, on random N(0, 1)
inputs and random labels (the data does not change the cost). Variants, all in one process:

    plain                  the training loop alone
    probe default          Probe(model): every=100, forward statistics of all 5 layers
    probe every=50, =10    Probe(model, every=50), Probe(model, every=10)
    probe every=1          Probe(model, every=1): statistics on every step
    probe every=1, bw      Probe(model, every=1, backward=True): plus gradient norms
    naive hook             a forward hook on every layer computing mean, std, min, max, zero and
                           dead fractions and a histc histogram with .item() on every step

The machine may be shared, so variants are interleaved in rounds (the order rotates each round)
and each round times ``--steps`` steps of every variant. Columns 2-3: the mean step time of a
round, its median over rounds (min-max), and the ratio to the plain loop, the median over rounds
of (variant / plain in the same round). Columns 4-5 resist a busy machine: within a round, the
median time of a recorded step and of an unrecorded one, weighted by how often each occurs
(1/every), so that scheduler spikes drop out but the probe's cost stays in; then the median
over rounds, and of the per-round ratios to plain.

Run: ``python benchmarks/probes.py [--rounds 7] [--steps 400] [--threads 2] [--write-docs]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from _common import add_write_docs_arg, emit
from babysit.probes import Probe

IN, HIDDEN, OUT, BATCH, N = 40, 100, 10, 100, 4000


def make_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(IN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, OUT),
    )


def make_batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, IN, generator=gen)
    y = torch.randint(0, OUT, (N,), generator=gen)
    return list(zip(x.split(BATCH), y.split(BATCH), strict=True))


class Trainer:
    """One model, optimizer and (optional) instrument; ``run(steps)`` times ``steps`` steps."""

    def __init__(self, instrument: Callable[[nn.Module], object] | None) -> None:
        self.model = make_model()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.batches = make_batches()
        self.loss_fn = nn.CrossEntropyLoss()
        self.instrument = instrument(self.model) if instrument else None
        self.probe = self.instrument if isinstance(self.instrument, Probe) else None
        if self.probe is not None:
            self.probe.attach()
        self.i = 0

    def run(self, steps: int) -> tuple[list[float], list[bool]]:
        """Wall-clock seconds of each of ``steps`` steps, and whether the probe recorded it."""
        model, opt, loss_fn, batches, probe = (
            self.model,
            self.opt,
            self.loss_fn,
            self.batches,
            self.probe,
        )
        times, sampled = [], []
        for _ in range(steps):
            x, y = batches[self.i % len(batches)]
            self.i += 1
            sampled.append(probe is not None and probe.sampling)
            start = time.perf_counter()
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if probe is not None:
                probe.step()
            times.append(time.perf_counter() - start)
        return times, sampled


class NaiveHooks:
    """The issue's reference: a forward hook computing statistics with ``.item()`` every step."""

    def __init__(self, model: nn.Module, bins: int = 30) -> None:
        self.bins = bins
        self.last: dict[str, dict] = {}
        self.handles = [
            m.register_forward_hook(self._hook(name))
            for name, m in model.named_modules()
            if next(m.children(), None) is None
        ]

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            x = out.detach()
            self.last[name] = {
                "mean": x.mean().item(),
                "std": x.std().item(),
                "min": x.min().item(),
                "max": x.max().item(),
                "zero_fraction": (x == 0).float().mean().item(),
                "dead_fraction": (x == 0).all(dim=0).float().mean().item(),
                "hist": torch.histc(x, self.bins).tolist(),
            }

        return hook


VARIANTS: dict[str, Callable[[nn.Module], object] | None] = {
    "plain": None,
    "probe default (every=100)": lambda m: Probe(m),
    "probe every=50": lambda m: Probe(m, every=50),
    "probe every=10": lambda m: Probe(m, every=10),
    "probe every=1": lambda m: Probe(m, every=1),
    "probe every=1, backward": lambda m: Probe(m, every=1, backward=True),
    "naive hook, .item() every step": NaiveHooks,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=400, help="steps per variant per round")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    add_write_docs_arg(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    assert Probe(make_model()).every == 100, "update the label of the default variant"

    trainers = {name: Trainer(make) for name, make in VARIANTS.items()}
    for trainer in trainers.values():  # warm-up, not timed
        trainer.run(max(args.steps // 3, 50))
    means: dict[str, list[float]] = {name: [] for name in trainers}  # per round
    robust: dict[str, list[float]] = {name: [] for name in trainers}  # per round
    names = list(trainers)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times, recorded = trainers[name].run(args.steps)
            means[name].append(statistics.fmean(times))
            robust[name].append(_robust_step(times, recorded))

    out = [
        f"{args.rounds} rounds x {args.steps} steps; MLP 40-100-100-10 ReLU, batch {BATCH}, Adam",
        "",
        "| variant | µs/step: median of rounds (min–max) | ratio to plain (min–max) "
        "| robust µs/step | robust ratio (min–max) |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        ratios = _ratios(means[name], means["plain"])
        robust_ratios = _ratios(robust[name], robust["plain"])
        out.append(
            f"| {name} | {_us(statistics.median(means[name]))} "
            f"({_us(min(means[name]))}–{_us(max(means[name]))}) | {_spread(ratios)} | "
            f"{_us(statistics.median(robust[name]))} | {_spread(robust_ratios)} |"
        )
    plain = statistics.median(robust["plain"])
    added = {
        name: statistics.median(robust[name]) - plain
        for name in ("probe every=1", "probe every=1, backward")
    }
    default = statistics.median(_ratios(robust["probe default (every=100)"], robust["plain"]))
    out += [
        "",
        f"Probing every step adds {_us(added['probe every=1'])} µs per step (forward "
        f"statistics of 5 layers), {_us(added['probe every=1, backward'])} µs with "
        f"backward=True, to a plain step of {_us(plain)} µs (robust estimates). Target "
        f"<= 1.05x at the default sampling: {'met' if default <= 1.05 else 'not met'} "
        f"(robust ratio {default:.3f}x; single runs of this machine vary by several points).",
    ]
    emit(args, __file__, out)


def _ratios(times: list[float], plain: list[float]) -> list[float]:
    return [t / p for t, p in zip(times, plain, strict=True)]


def _spread(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.3f}× ({min(ratios):.3f}–{max(ratios):.3f})"


def _robust_step(times: list[float], sampled: list[bool]) -> float:
    """Mean step time as (every-1)/every unrecorded steps + 1/every recorded ones, each taken
    as a median over steps: the spikes of a busy machine drop out, the probe's cost stays."""
    recorded = [t for t, s in zip(times, sampled, strict=True) if s]
    other = [t for t, s in zip(times, sampled, strict=True) if not s]
    if not recorded or not other:
        return statistics.median(times)
    share = len(recorded) / len(times)
    return share * statistics.median(recorded) + (1 - share) * statistics.median(other)


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}"


if __name__ == "__main__":
    main()
