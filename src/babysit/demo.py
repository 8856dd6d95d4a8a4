"""``babysit demo``: the lecture, step by step, on bundled data, ending in ``report.html``.

1) look at the data and fit the preprocessing, 2) choose an architecture, 3) the init lab,
4) ``diagnose`` (a broken set-up and a healthy one), 5) the LR range test, 6) a coarse -> fine
random search, 7) training with monitors, 8) the HTML report of all of it. MNIST-1D by default,
``digits`` too; ``cifar10:PATH`` runs the lecture's own set-up (a 2-layer net of 50 hidden units
on CIFAR-10, mean image subtracted) on the binary files in PATH.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from . import runs

LECTURE_HIDDEN = [50]  # CS231n's CIFAR-10 example: a 2-layer net with 50 hidden units
DEMO_HIDDEN = [100, 100]


class DemoError(ValueError):
    """A demo that cannot start (its data or its run directory): nothing was written."""


class DemoDataError(DemoError):
    """The ``--data`` argument names no data set the demo can load."""


def run_demo(out: Path, *, quick: bool = False, data: str = "mnist1d") -> Path:
    """Run the demo into the run directory ``out`` (an existing one is renamed, never lost) and
    return it; ``out/report.html`` is the report. Raises :class:`DemoDataError` for a ``data``
    that cannot be loaded and :class:`DemoError` for an ``out`` that cannot be created, before
    anything is written."""
    from . import initlab
    from .data import Standardize, ZeroCenter, load
    from .nn import mlp

    console = Console()
    start = time.perf_counter()
    try:
        splits = load(data, seed=0)
    except (ValueError, FileNotFoundError) as err:
        raise DemoDataError(str(err)) from err
    torch.manual_seed(0)  # the demo's models are the same at every run
    try:
        run_dir = runs.fresh_run_dir(out)
    except OSError as err:
        raise DemoError(
            f"cannot create the run directory {out} ({err.strerror or err}); pass --out a "
            "directory you can write to"
        ) from err
    lecture = data.startswith("cifar10")
    runs.write_json(
        run_dir, runs.CONFIG, {"kind": "demo", "name": f"babysit demo: {data}", "quick": quick}
    )
    console.rule("[bold]babysit demo: CS231n Lecture 6 on your screen")

    console.print("[bold]1. Look at the data[/] (raw scale; preprocessing is fitted next)")
    x = splits.train.tensors[0].flatten(1)  # images become vectors for the MLP
    console.print(f"   {splits}")
    if lecture:  # images: subtract the mean image (AlexNet), one global scale for the init
        centre = ZeroCenter().fit(x)
        scale = float(centre.transform(x).std())

        def prepare(t: torch.Tensor) -> torch.Tensor:
            return centre.transform(t.flatten(1)) / scale

        console.print("   images: subtract the mean image, divide by one global std")
    else:  # features on their own scales: standardize each
        scaler = Standardize().fit(x)

        def prepare(t: torch.Tensor) -> torch.Tensor:
            return scaler.transform(t)

        console.print("   features: standardize each (zero mean, unit std), fitted on train")
    z = prepare(x)
    _print_data_table(console, x, z)
    runs.write_json(
        run_dir,
        "data_stats.json",
        {
            "dataset": data,
            "before": {"mean": x.mean(0).tolist(), "std": x.std(0).tolist()},
            "after": {"mean": z.mean(0).tolist(), "std": z.std(0).tolist()},
        },
    )

    console.print("\n[bold]2. Choose an architecture[/]")
    in_features, classes = x.shape[1], splits.num_classes
    hidden = LECTURE_HIDDEN if lecture else DEMO_HIDDEN
    model = mlp(in_features, hidden, classes)
    console.print(f"   {model}")

    console.print("\n[bold]3. Initialization: activation statistics per layer (init lab)[/]")
    width, depth = (200, 6) if quick else (500, 10)
    result = initlab.run(depth=depth, width=width, n_inputs=1000, seed=0, run_dir=run_dir)
    initlab.print_table(result, console=console)

    console.print("\n[bold]4. Babysit before training: babysit.diagnose[/]")
    data_z = (z, splits.train.tensors[1])
    from . import diagnose
    from .console import print_diagnosis
    from .findings import Diagnosis
    from .nn import init_model

    broken = init_model(mlp(in_features, hidden, classes, activation="tanh"), "normal", std=1.0)
    console.print("   a tanh net with N(0, 1) weights (the lecture's 'too big' init), SGD lr=1e-6:")
    print_diagnosis(diagnose(broken, data_z, optimizer="sgd", lr=1e-6), console=console)
    console.print("   the He-initialized ReLU net with Adam lr=1 (the lecture's 'cost: NaN'):")
    print_diagnosis(diagnose(model, data_z, lr=1.0, checks=["learning_rate"]), console=console)
    console.print("   the He-initialized ReLU net, Adam lr=1e-3:")
    diagnosis = diagnose(model, data_z, lr=1e-3, run_dir=run_dir)
    print_diagnosis(diagnosis, console=console)

    console.print("\n[bold]5. LR range test: babysit.lr_find[/]")
    from .tuning import lr_find

    found = lr_find(model, data_z, run_dir=run_dir)
    found.plot(run_dir / "lr_find.png")
    confidence = "confident" if found.confident else f"not confident: {found.reason}"
    console.print(
        f"   suggested lr ≈ {found.suggestion:.2g} ({confidence}); rules: "
        + ", ".join(f"{k} {v:.2g}" for k, v in found.suggestions.items() if v)
    )

    console.print(
        "\n[bold]6. Coarse -> fine search: babysit.search[/] (random in log space, then TPE "
        "inside the narrowed ranges)"
    )
    from .tuning import loguniform
    from .tuning import search as run_search

    val = splits.val.tensors
    data_val = (prepare(val[0]), val[1])
    low = found.suggestion / 30 if found.suggestion else 1e-4
    space = {"lr": loguniform(low, low * 1000), "weight_decay": loguniform(1e-6, 1e-1)}
    result = run_search(
        space,
        data=(data_z, data_val),
        epochs=4 if quick else 20,
        n_trials=9 if quick else 60,
        seed=0,
        run_dir=run_dir / "search",
    )
    for stage in result.stages:
        lr_range = stage["ranges"]["lr"]
        console.print(
            f"   stage {stage['stage']}: {stage['trials']} trials x {stage['epochs']} epochs, "
            f"lr in [{lr_range['low']:.2g}, {lr_range['high']:.2g}]"
        )
    best = result.best or {"params": {"lr": 1e-3, "weight_decay": 0.0}, "value": float("nan")}
    console.print(
        f"   best val acc {best['value']:.1%} at lr {best['params']['lr']:.2g}, weight decay "
        f"{best['params']['weight_decay']:.2g}"
    )
    if result.findings:
        print_diagnosis(Diagnosis(result.findings), console=console)

    console.print("\n[bold]7. Train with the babysitter: babysit.fit[/] (monitors on)")
    from .train import fit

    lr = best["params"]["lr"]
    history = fit(
        model,
        data_z,
        val=data_val,
        lr=lr,
        weight_decay=best["params"]["weight_decay"],
        epochs=5 if quick else 30,
        batch_size=100,
        run_dir=run_dir / "train",
        seed=0,
    )
    final = history.final
    console.print(
        f"   after {len(history)} epochs: train acc {final.get('train_acc', 0):.1%}, "
        f"val acc {final.get('val_acc', 0):.1%} (the search's best lr {lr:.2g}); the monitors "
        "found:"
    )
    print_diagnosis(history.diagnosis, console=console)

    console.print("\n[bold]8. The report: babysit.report[/]")
    from .reporting import report

    path = report(run_dir)
    console.print(
        f"   every step's figures and findings in one file ({path.stat().st_size / 1024:.0f} "
        "KiB, no network needed):"
    )
    console.print(f"   [bold]{path}[/]")
    console.print(f"wrote {run_dir}/ in {time.perf_counter() - start:.1f} s")
    return run_dir


def _print_data_table(console: Console, raw, standardized) -> None:
    table = Table(title="per-feature statistics over the training set", show_edge=False)
    table.add_column("")
    for column in ("mean of means", "spread of means", "mean std", "min", "max"):
        table.add_column(column, justify="right")
    for label, t in (("raw", raw), ("standardized", standardized)):
        means, stds = t.mean(0), t.std(0)
        table.add_row(
            label,
            *(f"{v:.3f}" for v in (means.mean(), means.std(), stds.mean(), t.min(), t.max())),
        )
    console.print(table)
