"""Ioffe & Szegedy (2015): batch normalization makes hard-to-train deep nets trainable.

The paper trained a sigmoid Inception with batch norm, which without it never got off the
ground ("never achieves better than 1/1000 accuracy"), and argued that BN makes training far less
sensitive to the initial scale of the weights. Scaled to a CPU, three deep MLPs of width 100 on
MNIST-1D standardized (train+val, 4000 examples), each trained with and without
``batchnorm=True`` (``Linear -> BatchNorm1d -> activation``), same init, same SGD (momentum
0.9) and the same learning rate:

* a 10-layer sigmoid MLP, Xavier init (``xavier_normal``, gain 1);
* a 20-layer sigmoid MLP, Xavier init;
* a 10-layer ReLU MLP with the lecture's "small random numbers" (``normal``, std 0.01).

Biases 0; batch-norm layers start at PyTorch's defaults (scale 1, shift 0). The training-set
loss is measured in eval mode, so BN uses its running statistics (at step 0 these are 0 and 1
and the BN net computes what the plain net does).

Run: ``python benchmarks/repro_batchnorm.py [--seeds 3] [--steps 2000] [--lr 0.01] [--quick]``
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
from babysit.nn import init_model, mlp

# label -> (activation, depth in weight layers, init scheme, its keywords)
SETTINGS = {
    "sigmoid, 10 layers, Xavier": ("sigmoid", 10, "xavier_normal", {}),
    "sigmoid, 20 layers, Xavier": ("sigmoid", 20, "xavier_normal", {}),
    "ReLU, 10 layers, N(0, 0.01²)": ("relu", 10, "normal", {"std": 0.01}),
}


def build(setting: str, batchnorm: bool, width: int) -> torch.nn.Module:
    act, depth, scheme, kw = SETTINGS[setting]
    model = mlp(40, [width] * (depth - 1), 10, activation=act, init=None, batchnorm=batchnorm)
    return init_model(model, scheme, **kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, seeds="3")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=2000, help="SGD steps, batch 100")
    parser.add_argument("--width", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    steps = 200 if args.quick else args.steps
    checkpoints = [s for s in (0, 100, 250, 500, 1000, 2000, 4000) if s <= steps]
    if steps not in checkpoints:
        checkpoints.append(steps)

    start = time.perf_counter()
    data = load_data("mnist1d")
    results = {}
    for setting in SETTINGS:
        for bn in (False, True):
            for seed in seeds:
                seed_all(seed)
                results[setting, bn, seed] = train(
                    build(setting, bn, args.width),
                    data,
                    optimizer="sgd",
                    lr=args.lr,
                    momentum=0.9,
                    steps=steps,
                    log_every=50,
                    seed=seed,
                )
    wall = time.perf_counter() - start

    print(header("Batch norm on deep sigmoid / badly initialized MLPs"))
    print(
        f"{data.note}. MLPs of width {args.width}; SGD momentum 0.9, lr {args.lr} for every "
        f"net, batch 100, {steps} steps. Loss = cross-entropy on the whole training set (eval "
        f"mode), median over seeds {seeds}; accuracy mean ± std. ln 10 = 2.303 is chance.\n"
    )
    headers = [
        "net",
        "batch norm",
        *[f"loss @ {s}" for s in checkpoints],
        "train acc",
        "test acc",
    ]
    rows = []
    for setting in SETTINGS:
        for bn in (False, True):
            runs = [results[setting, bn, s] for s in seeds]
            rows.append(
                [
                    setting,
                    "yes" if bn else "no",
                    *[fmt_loss(statistics.median(r.loss_at(s) for r in runs)) for s in checkpoints],
                    mean_std([r.train_acc for r in runs], scale=100) + "%",
                    mean_std([r.test_acc for r in runs], scale=100) + "%",
                ]
            )
    print(md_table(headers, rows))
    print("\nPer seed, final training-set loss:\n")
    for setting in SETTINGS:
        for bn in (False, True):
            losses = ", ".join(fmt_loss(results[setting, bn, s].log_train_loss[-1]) for s in seeds)
            print(f"- {setting}, batch norm {'yes' if bn else 'no'}: {losses}")
    print(f"\nwall time {wall:.0f} s")

    if not args.no_plot:
        plt = pyplot()
        fig, axes = plt.subplots(1, len(SETTINGS), figsize=(5 * len(SETTINGS), 4), sharey=True)
        for ax, setting in zip(axes, SETTINGS, strict=True):
            for bn, color in ((False, "tab:red"), (True, "tab:blue")):
                for i, seed in enumerate(seeds):
                    r = results[setting, bn, seed]
                    label = ("with BN" if bn else "without BN") if i == 0 else None
                    ax.plot(smooth(r.step_losses, 20), color=color, lw=1, alpha=0.8, label=label)
            ax.axhline(math.log(10), color="gray", ls=":", lw=1)
            ax.set_title(setting)
            ax.set_xlabel("step")
            ax.legend()
        axes[0].set_ylabel("minibatch loss (moving average of 20 steps)")
        fig.suptitle(f"Batch norm, MNIST-1D, SGD momentum 0.9, lr {args.lr} for all, seeds {seeds}")
        path = save_figure(fig, "repro_batchnorm.png")
        print(f"figure: {path.relative_to(path.parents[2])}")


if __name__ == "__main__":
    main()
