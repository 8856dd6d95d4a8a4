"""MNIST-1D baselines of Greydanus (2020): logistic regression ≈ 32%, MLP ≈ 68%, CNN ≈ 94% test.

Built with babysit's builders, trained as in the paper's reference code (``notebooks/train.py``
of greydanus/mnist1d: Adam, lr 1e-2, batch 100, no weight decay), for 6000 steps = 150 epochs of
the 4000 training examples (the current reference code runs 8000), except that this loop
shuffles every epoch and standardizes the inputs (MNIST-1D is already near zero mean and unit
variance, so this changes little):

* logistic regression: ``mlp(40, [], 10)``;
* MLP: ``mlp(40, [100, 100], 10)``, ReLU, He init (babysit's default) and, as in the paper's
  code, PyTorch's default init (``init=None``). The paper's ``MLPBase`` also adds a residual
  connection around its second hidden layer, which ``mlp`` cannot build;
* CNN: ``convnet((1, 40), [25, 25, 25], 10, kernel_size=3)``: 3 conv layers of 25 channels,
  stride 2, then a linear layer on 25 × 5 = 125 features, the paper's ``ConvBase`` (whose first
  kernel is 5 with padding 1: 40 → 19 → 10 → 5; babysit's blocks use one kernel size and
  'same' padding: 40 → 20 → 10 → 5); He init;
* a wider CNN, ``convnet((1, 40), [32, 64, 64], 10, kernel_size=3)``.

Training uses train+val of ``babysit.data.load("mnist1d")`` (the full 4000 examples, like the
paper); test is the 1000 test examples. The table reports the test accuracy at the end of
training (mean ± std over seeds) and, for reference, the best test accuracy seen at the
evaluations every 250 steps (chosen on the test set, so optimistic).

Run: ``python benchmarks/repro_mnist1d_baselines.py [--seeds 3] [--steps 6000] [--quick]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from _common import (
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
from babysit.nn import convnet, mlp


def as_sequence(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(1)  # (N, 40) -> (N, 1, 40)


# label -> (builder, input reshape, the paper's test accuracy)
MODELS: dict[str, tuple[Callable[[], nn.Module], Callable | None, str]] = {
    "logistic regression `mlp(40, [], 10)`": (lambda: mlp(40, [], 10), None, "32%"),
    "MLP `mlp(40, [100, 100], 10)`, He init": (lambda: mlp(40, [100, 100], 10), None, "68%"),
    "MLP `mlp(40, [100, 100], 10, init=None)`, PyTorch init": (
        lambda: mlp(40, [100, 100], 10, init=None),
        None,
        "68%",
    ),
    "CNN `convnet((1, 40), [25, 25, 25], 10, kernel_size=3)`": (
        lambda: convnet((1, 40), [25, 25, 25], 10, kernel_size=3),
        as_sequence,
        "94%",
    ),
    "wider CNN `convnet((1, 40), [32, 64, 64], 10, kernel_size=3)`": (
        lambda: convnet((1, 40), [32, 64, 64], 10, kernel_size=3),
        as_sequence,
        "94% (for the 25-channel CNN)",
    ),
}
EVAL_EVERY = 250


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, seeds="3")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    parser.add_argument("--steps", type=int, default=6000, help="Adam steps, batch 100")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    steps = 500 if args.quick else args.steps

    start = time.perf_counter()
    data = load_data("mnist1d")
    results = {}
    seconds, params = {}, {}
    for label, (build, reshape, _) in MODELS.items():
        t0 = time.perf_counter()
        for seed in seeds:
            seed_all(seed)
            model = build()
            results[label, seed] = train(
                model,
                data,
                optimizer="adam",
                lr=args.lr,
                steps=steps,
                log_every=EVAL_EVERY,
                seed=seed,
                reshape=reshape,
                log_test=True,
            )
        params[label] = sum(p.numel() for p in model.parameters())
        seconds[label] = time.perf_counter() - t0
    wall = time.perf_counter() - start

    print(header("MNIST-1D baselines (Greydanus, 2020)"))
    print(
        f"{data.note}. Adam lr {args.lr}, batch 100, {steps} steps "
        f"({steps * 100 // len(data.y_train)} epochs), no weight decay; seeds {seeds}.\n"
    )
    rows = []
    for label, (_, _, paper) in MODELS.items():
        runs = [results[label, s] for s in seeds]
        rows.append(
            [
                label,
                f"{params[label]:,}",
                paper,
                mean_std([r.test_acc for r in runs], scale=100) + "%",
                mean_std([max(r.log_test_acc) for r in runs], scale=100) + "%",
                mean_std([r.train_acc for r in runs], scale=100) + "%",
                f"{seconds[label] / len(seeds):.0f} s",
            ]
        )
    print(
        md_table(
            [
                "model",
                "parameters",
                "paper (test)",
                "test acc, end",
                f"best test acc (evals every {EVAL_EVERY} steps)",
                "train acc, end",
                "time / seed",
            ],
            rows,
        )
    )
    print("\nPer seed, final test accuracy:\n")
    for label in MODELS:
        accs = ", ".join(f"{100 * results[label, s].test_acc:.1f}%" for s in seeds)
        print(f"- {label}: {accs}")
    print(f"\nwall time {wall:.0f} s")

    if not args.no_plot:
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        colors = dict(zip(MODELS, plt.get_cmap("tab10").colors, strict=False))
        for label in MODELS:
            runs = [results[label, s] for s in seeds]
            steps_logged = runs[0].log_steps
            n = min(len(r.log_test_acc) for r in runs)
            test = [statistics.mean(r.log_test_acc[i] for r in runs) for i in range(n)]
            train_loss = [statistics.mean(r.log_train_loss[i] for r in runs) for i in range(n)]
            short = label.split(" `")[0] + (" (PyTorch init)" if "init=None" in label else "")
            axes[0].plot(steps_logged[:n], test, color=colors[label], label=short)
            axes[1].plot(steps_logged[:n], train_loss, color=colors[label], label=short)
        for paper, name in ((0.32, "logistic"), (0.68, "MLP"), (0.94, "CNN")):
            axes[0].axhline(paper, color="gray", ls=":", lw=1)
            axes[0].text(steps / 2, paper, f"paper {name}", va="bottom", fontsize=8)
        axes[0].set_ylabel("test accuracy (mean over seeds)")
        axes[1].set_ylabel("training-set loss (mean over seeds)")
        axes[1].set_yscale("log")
        for ax in axes:
            ax.set_xlabel("step")
            ax.legend(fontsize=8)
        fig.suptitle(f"MNIST-1D baselines with babysit builders, Adam lr {args.lr}, seeds {seeds}")
        path = save_figure(fig, "repro_mnist1d_baselines.png")
        print(f"figure: {path.relative_to(path.parents[2])}")


if __name__ == "__main__":
    main()
