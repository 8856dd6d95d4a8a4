"""Activation functions compared on MNIST-1D: how fast each one trains the same MLP.

The lecture quotes Krizhevsky et al. (2012, Fig. 1): a ReLU convnet reached 25% training error
on CIFAR-10 six times faster than the same net with tanh. Here the net is the MNIST-1D MLP
40-100-100-10 (standardized inputs, train+val = 4000 examples, batch 100 = 40 steps an epoch),
with sigmoid, tanh, ReLU, Leaky ReLU (slope 0.01), ELU (alpha 1) and Maxout (2 pieces), each
with its natural init: He (``he_normal``, gain sqrt(2), Leaky ReLU's own gain) for the ReLU
family, Xavier (``xavier_normal``, gain 1) for sigmoid, tanh and maxout. Biases 0.

Two experiments, SGD with momentum 0.9 in both:

A. **Same learning rate** (``--lr``, default 0.03) for every activation, ``--epochs`` epochs:
   epochs until the whole-training-set loss first reaches ``--threshold`` (default 1.0) and the
   training accuracy 75% (Krizhevsky's 25% training error), final train/test accuracy; median
   over the seeds.
B. **Learning rate tuned per activation**, as Krizhevsky did ("the learning rates for each
   network were chosen independently to make training as fast as possible"): the rate of
   ``--lr-grid`` that reaches the loss threshold in the fewest steps on a separate tuning seed
   (``--tune-seed``, not one of the reported seeds); then each reported seed runs at that rate
   until it reaches the threshold (logged every 10 steps, so to a quarter epoch).

Ratios are "epochs of sigmoid (or tanh) / epochs of this activation": > 1 means faster.

Run: ``python benchmarks/repro_activations.py [--seeds 3] [--quick]``
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from _common import (
    Result,
    add_common_args,
    header,
    load_data,
    md_table,
    mean_std,
    parse_seeds,
    pyplot,
    save_figure,
    seed_all,
    train,
)
from babysit.nn import mlp

ACTIVATIONS = {  # name -> init scheme
    "sigmoid": "xavier_normal",
    "tanh": "xavier_normal",
    "relu": "he_normal",
    "leaky_relu": "he_normal",
    "elu": "he_normal",
    "maxout": "xavier_normal",
}
STEPS_PER_EPOCH = 40  # 4000 examples / batch 100
ACC_TARGET = 0.75


def run(act: str, data, *, lr: float, seed: int, steps: int, log_every: int, stop=None) -> Result:
    seed_all(seed)
    model = mlp(40, [100, 100], 10, activation=act, init=ACTIVATIONS[act])
    return train(
        model,
        data,
        optimizer="sgd",
        lr=lr,
        momentum=0.9,
        steps=steps,
        log_every=log_every,
        seed=seed,
        stop_when=stop,
    )


def epochs(step: int | None) -> float:
    return math.nan if step is None else step / STEPS_PER_EPOCH


def median_epochs(values: list[float]) -> float:
    """Median over seeds; nan (not reached) counts as +inf, so most-not-reached gives nan."""
    ordered = sorted(math.inf if math.isnan(v) else v for v in values)
    med = statistics.median(ordered)
    return math.nan if math.isinf(med) else med


def fmt_epochs(value: float, digits: int = 0) -> str:
    return "not reached" if math.isnan(value) else f"{value:.{digits}f}"


def ratio(slow: float, fast: float, budget: float) -> str:
    """``slow / fast``; a lower bound ``budget / fast`` when ``slow`` never reached the target."""
    if math.isnan(fast):
        return "—"
    if math.isnan(slow):
        return f"> {budget / fast:.1f}× (never reached in {budget:g} epochs)"
    return f"{slow / fast:.2f}×"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, seeds="3")
    parser.add_argument("--lr", type=float, default=0.03, help="the common rate of part A")
    parser.add_argument("--epochs", type=int, default=200, help="epochs of part A")
    parser.add_argument("--threshold", type=float, default=1.0, help="training-loss target")
    parser.add_argument("--lr-grid", default="0.01,0.03,0.1,0.3,1", help="part B's rates")
    parser.add_argument("--tune-seed", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    n_epochs = 20 if args.quick else args.epochs
    steps = n_epochs * STEPS_PER_EPOCH
    grid = [float(x) for x in args.lr_grid.split(",")]
    start = time.perf_counter()
    data = load_data("mnist1d")

    # ---- A: same learning rate
    res_a = {
        (act, seed): run(act, data, lr=args.lr, seed=seed, steps=steps, log_every=STEPS_PER_EPOCH)
        for act in ACTIVATIONS
        for seed in seeds
    }
    time_a = time.perf_counter() - start

    # ---- B: learning rate tuned per activation, runs stop at the loss threshold
    def reached(r: Result) -> bool:
        return r.log_train_loss[-1] <= args.threshold

    tuning: dict[str, dict[float, float]] = {}
    for act in ACTIVATIONS:
        tuning[act] = {}
        for lr in grid:
            r = run(act, data, lr=lr, seed=args.tune_seed, steps=steps, log_every=10, stop=reached)
            tuning[act][lr] = epochs(r.first_step_below(args.threshold))
    best_lr = {}
    for act, by_lr in tuning.items():
        finite = {lr: e for lr, e in by_lr.items() if not math.isnan(e)}
        best_lr[act] = min(finite, key=finite.get) if finite else grid[0]
    res_b = {
        (act, seed): run(
            act, data, lr=best_lr[act], seed=seed, steps=steps, log_every=10, stop=reached
        )
        for act in ACTIVATIONS
        for seed in seeds
    }
    wall = time.perf_counter() - start

    # ---- tables
    print(header("Activation functions on the MNIST-1D MLP 40-100-100-10"))
    print(
        f"{data.note}. Init: He (he_normal) for relu, leaky_relu, elu; Xavier (xavier_normal, "
        f"gain 1) for sigmoid, tanh, maxout (2 pieces); biases 0. SGD momentum 0.9, batch 100 "
        f"({STEPS_PER_EPOCH} steps an epoch). Loss and accuracy on the whole training set "
        f"(eval mode). Seeds {seeds}; medians over seeds (a seed that never reaches a target "
        f"counts as infinitely slow).\n"
    )

    def summary_a(act: str) -> dict[str, float]:
        runs = [res_a[act, s] for s in seeds]
        return {
            "loss": median_epochs([epochs(r.first_step_below(args.threshold)) for r in runs]),
            "acc": median_epochs([epochs(r.first_step_acc_above(ACC_TARGET)) for r in runs]),
        }

    sa = {act: summary_a(act) for act in ACTIVATIONS}
    print(
        f"**A. Same learning rate {args.lr} for all, {n_epochs} epochs** "
        f"(epochs logged once an epoch)\n"
    )
    rows = []
    for act in ACTIVATIONS:
        runs = [res_a[act, s] for s in seeds]
        per_seed = ", ".join(fmt_epochs(epochs(r.first_step_below(args.threshold))) for r in runs)
        rows.append(
            [
                act,
                ACTIVATIONS[act],
                f"{fmt_epochs(sa[act]['loss'])} ({per_seed})",
                ratio(sa["sigmoid"]["loss"], sa[act]["loss"], n_epochs),
                ratio(sa["tanh"]["loss"], sa[act]["loss"], n_epochs),
                fmt_epochs(sa[act]["acc"]),
                ratio(sa["tanh"]["acc"], sa[act]["acc"], n_epochs),
                f"{statistics.median(r.log_train_loss[-1] for r in runs):.3f}",
                mean_std([r.train_acc for r in runs], scale=100) + "%",
                mean_std([r.test_acc for r in runs], scale=100) + "%",
            ]
        )
    print(
        md_table(
            [
                "activation",
                "init",
                f"epochs to loss ≤ {args.threshold} (per seed)",
                "speed-up vs sigmoid",
                "speed-up vs tanh",
                f"epochs to train acc ≥ {ACC_TARGET:.0%}",
                "speed-up vs tanh (acc)",
                "final train loss",
                "final train acc",
                "final test acc",
            ],
            rows,
        )
    )

    print(
        f"\n**B. Learning rate tuned per activation** (grid {grid}, tuned on seed "
        f"{args.tune_seed}; runs stop at loss ≤ {args.threshold}; logged every 10 steps)\n"
    )
    sb = {
        act: median_epochs([epochs(res_b[act, s].first_step_below(args.threshold)) for s in seeds])
        for act in ACTIVATIONS
    }
    rows = []
    for act in ACTIVATIONS:
        grid_text = ", ".join(f"{lr:g}: {fmt_epochs(e, 2)}" for lr, e in tuning[act].items())
        per_seed = ", ".join(
            fmt_epochs(epochs(res_b[act, s].first_step_below(args.threshold)), 2) for s in seeds
        )
        rows.append(
            [
                act,
                f"{best_lr[act]:g}",
                grid_text,
                f"{fmt_epochs(sb[act], 2)} ({per_seed})",
                ratio(sb["sigmoid"], sb[act], n_epochs),
                ratio(sb["tanh"], sb[act], n_epochs),
            ]
        )
    print(
        md_table(
            [
                "activation",
                "chosen lr",
                "tuning seed: epochs to threshold per lr",
                f"epochs to loss ≤ {args.threshold} (per seed)",
                "speed-up vs sigmoid",
                "speed-up vs tanh",
            ],
            rows,
        )
    )
    print(f"\nwall time {wall:.0f} s (part A {time_a:.0f} s)")

    if not args.no_plot:
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        colors = dict(zip(ACTIVATIONS, plt.get_cmap("tab10").colors, strict=False))
        for act in ACTIVATIONS:
            for i, seed in enumerate(seeds):
                r = res_a[act, seed]
                ep = [s / STEPS_PER_EPOCH for s in r.log_steps]
                label = act if i == 0 else None
                axes[0].plot(ep, r.log_train_loss, color=colors[act], lw=1, label=label)
                r = res_b[act, seed]
                ep = [s / STEPS_PER_EPOCH for s in r.log_steps]
                label = f"{act} (lr {best_lr[act]:g})" if i == 0 else None
                axes[1].plot(ep, r.log_train_loss, color=colors[act], lw=1, label=label)
        axes[0].set_title(f"A: same lr {args.lr}")
        axes[1].set_title("B: lr tuned per activation (stopped at the threshold)")
        for ax in axes:
            ax.axhline(args.threshold, color="gray", ls=":", lw=1)
            ax.set_xlabel("epoch")
            ax.set_ylabel("training-set loss")
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        fig.suptitle(f"MNIST-1D MLP 40-100-100-10, SGD momentum 0.9, seeds {seeds}")
        path = save_figure(fig, "repro_activations.png")
        print(f"figure: {path.relative_to(path.parents[2])}")


if __name__ == "__main__":
    main()
