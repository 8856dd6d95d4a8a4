"""He et al. (2015), "Delving Deep into Rectifiers", Fig. 3: a 30-layer ReLU net with Xavier init
stalls, with He init it converges.

Set-up (scaled to a CPU): an MLP of ``--depth`` weight layers (default 30: 29 hidden ReLU layers
of ``--width`` units, then a linear output), biases 0, on MNIST-1D standardized (train+val,
4000 examples). Both inits use the same optimizer and learning rate, SGD with momentum 0.9 as in
the paper: ``xavier_normal`` (std = sqrt(2 / (fan_in + fan_out)), gain 1: the Glorot & Bengio
init the paper compares against) and ``he_normal`` (std = sqrt(2 / fan_in)); the output layer
gets the same scheme with a linear gain. The table gives the loss on the whole training set at
a few steps, and the final train/test accuracy, per seed.

Run: ``python benchmarks/repro_he_init.py [--seeds 3] [--steps 2000] [--quick]``
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from _common import (
    add_common_args,
    fmt_loss,
    header,
    load_data,
    md_table,
    mean_std,
    parse_seeds,
    pyplot,
    save_figure,
    seed_all,
    smooth,
    train,
)
from babysit.nn import mlp

INITS = {"Xavier (xavier_normal)": "xavier_normal", "He (he_normal)": "he_normal"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, seeds="3")
    parser.add_argument("--depth", type=int, default=30, help="weight layers (hidden + output)")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=2000, help="SGD steps, batch 100")
    parser.add_argument("--dataset", default="mnist1d", choices=["mnist1d", "digits"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    steps = 200 if args.quick else args.steps
    checkpoints = [s for s in (0, 100, 250, 500, 1000, 2000, 4000) if s <= steps]
    if steps not in checkpoints:
        checkpoints.append(steps)

    start = time.perf_counter()
    data = load_data(args.dataset)
    in_features = data.x_train.shape[1]
    hidden = [args.width] * (args.depth - 1)
    results = {}
    for label, scheme in INITS.items():
        for seed in seeds:
            seed_all(seed)
            model = mlp(in_features, hidden, 10, activation="relu", init=scheme)
            results[label, seed] = train(
                model,
                data,
                optimizer="sgd",
                lr=args.lr,
                momentum=0.9,
                steps=steps,
                log_every=50,
                seed=seed,
            )

    print(header(f"He init vs Xavier init, {args.depth}-layer ReLU MLP"))
    print(
        f"{data.note}. MLP {in_features}-{args.width}×{args.depth - 1}-10 ReLU, biases 0; SGD "
        f"momentum 0.9, lr {args.lr}, batch 100, {steps} steps; loss = cross-entropy on the "
        f"whole training set (eval mode); seeds {seeds}.\n"
    )
    headers = ["init", "seed", *[f"loss @ {s}" for s in checkpoints], "train acc", "test acc"]
    rows = []
    for (label, seed), r in results.items():
        rows.append(
            [
                label,
                seed,
                *[fmt_loss(r.loss_at(s)) for s in checkpoints],
                f"{100 * r.train_acc:.1f}%",
                f"{100 * r.test_acc:.1f}%",
            ]
        )
    for label in INITS:
        runs = [results[label, s] for s in seeds]
        rows.append(
            [
                f"**{label}**",
                "all: median loss, mean ± std acc",
                *[fmt_loss(statistics.median(r.loss_at(s) for r in runs)) for s in checkpoints],
                mean_std([r.train_acc for r in runs], scale=100) + "%",
                mean_std([r.test_acc for r in runs], scale=100) + "%",
            ]
        )
    print(md_table(headers, rows))
    print()
    for label in INITS:
        runs = [results[label, s] for s in seeds]
        below = [r.first_step_below(2.0) for r in runs]
        text = ", ".join("never" if b is None else str(b) for b in below)
        print(f"- {label}: first logged step with training loss ≤ 2.0, per seed: {text}")
    print(f"\nwall time {time.perf_counter() - start:.0f} s")

    if not args.no_plot:
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        colors = {"Xavier (xavier_normal)": "tab:red", "He (he_normal)": "tab:blue"}
        for (label, seed), r in results.items():
            kw = {"color": colors[label], "alpha": 0.8, "lw": 1}
            first = seed == seeds[0]
            axes[0].plot(r.log_steps, r.log_train_loss, label=label if first else None, **kw)
            axes[1].plot(smooth(r.step_losses, 20), label=label if first else None, **kw)
        axes[0].set_title("training-set loss (eval mode)")
        axes[1].set_title("minibatch loss (moving average of 20 steps)")
        for ax in axes:
            ax.set_xlabel("step")
            ax.set_ylabel("cross-entropy")
            ax.axhline(math.log(10), color="gray", ls=":", lw=1)
            ax.legend()
        fig.suptitle(
            f"{args.depth}-layer ReLU MLP (width {args.width}) on {args.dataset}, "
            f"SGD momentum 0.9, lr {args.lr}, seeds {seeds}"
        )
        path = save_figure(fig, "repro_he_init.png")
        print(f"figure: {path.relative_to(path.parents[2])}")


if __name__ == "__main__":
    main()
