"""The ``babysit`` command line (typer): demo, initlab, diagnose, train, search, explain; more
arrive with their issues.

Exit codes: 0 success, 1 a finding of severity error (diagnose, train), 2 bad usage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from . import __version__

app = typer.Typer(
    name="babysit",
    help="CS231n Lecture 6 as code: find out why your network is not learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"babysit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """babysit: pre-flight checks, monitors, search and reports for PyTorch training."""


@app.command()
def initlab(
    activation: Annotated[
        list[str] | None,
        typer.Option(help="Activation(s) to test; with --init, pairs up in order."),
    ] = None,
    init: Annotated[
        list[str] | None, typer.Option(help="Init scheme(s): normal, xavier, he, lsuv, ...")
    ] = None,
    std: Annotated[float | None, typer.Option(help="std for --init normal.")] = None,
    depth: Annotated[int, typer.Option(min=1, help="Number of hidden layers.")] = 10,
    width: Annotated[int, typer.Option(min=1, help="Units per layer.")] = 500,
    n_inputs: Annotated[int, typer.Option(min=2, help="Unit-Gaussian input examples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Run directory for activations.json and initlab.png.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """The lecture's init experiment: per-layer activation statistics of a deep net at init.

    With no --activation/--init, runs the lecture's five settings: tanh + N(0, 0.01²),
    tanh + N(0, 1), tanh + Xavier, ReLU + Xavier, ReLU + He.
    """
    from . import initlab as lab

    try:
        settings = lab.settings_from_cli(activation or [], init or [], std=std)
    except ValueError as err:
        _usage_error(str(err))
    result = lab.run(
        settings,
        depth=depth,
        width=width,
        n_inputs=n_inputs,
        seed=seed,
        progress=progress and not as_json,
        run_dir=out,
    )
    if as_json:
        typer.echo(json.dumps({"schema": 1, **result.to_dict()}, indent=2))
        return
    lab.print_table(result)
    if out is not None:
        typer.echo(f"wrote {out / 'activations.json'} and {out / 'initlab.png'}")


@app.command()
def diagnose(
    target: Annotated[
        str,
        typer.Argument(
            help="MODULE:FUNCTION (or path/to/file.py:FUNCTION) returning a model or (model, data)."
        ),
    ],
    data: Annotated[
        str | None, typer.Option(help="Bundled data set: digits, mnist1d, cifar10:PATH.")
    ] = None,
    standardize: Annotated[
        bool, typer.Option(help="Standardize --data features (fitted on its training split).")
    ] = False,
    optimizer: Annotated[str, typer.Option(help="sgd, momentum, nesterov, adam, ...")] = "adam",
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: range test).")] = None,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = 0.0,
    checks: Annotated[
        str, typer.Option(help="'default', 'all', or check names separated by commas.")
    ] = "default",
    ignore: Annotated[list[str] | None, typer.Option(help="Finding code to silence.")] = None,
    budget: Annotated[float | None, typer.Option(help="Time budget in seconds.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Run directory for findings.json.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Pre-flight checks of a model on data. Exit 0: no error finding; 1: an error; 2: usage."""
    from .checks import diagnose as run_diagnose
    from .loading import load_target

    try:
        model, model_data = load_target(target, data, standardize=standardize)
        selected = checks if checks in ("default", "all") else checks.split(",")
        result = run_diagnose(
            model,
            model_data,
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            checks=selected,
            ignore=ignore or (),
            budget_s=budget,
            seed=seed,
            run_dir=out,
        )
    except (ValueError, TypeError, ImportError, FileNotFoundError, AttributeError) as err:
        if debug:
            raise
        _usage_error(str(err))
    if as_json:
        typer.echo(result.to_json())
    else:
        from .console import print_diagnosis

        print_diagnosis(result)
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def train(
    data: Annotated[str, typer.Option(help="Bundled data set: mnist1d, digits, cifar10:PATH.")] = (
        "mnist1d"
    ),
    hidden: Annotated[str, typer.Option(help="Hidden layer widths, comma-separated.")] = "100,100",
    activation: Annotated[str, typer.Option(help="relu, tanh, leaky_relu, maxout, ...")] = "relu",
    init: Annotated[str, typer.Option(help="Init scheme: he, xavier, lsuv, normal, ...")] = "he",
    batchnorm: Annotated[bool, typer.Option(help="Batch norm before each activation.")] = False,
    dropout: Annotated[float, typer.Option(min=0.0, max=1.0, help="Dropout rate.")] = 0.0,
    optimizer: Annotated[str, typer.Option(help="sgd, momentum, nesterov, adam, ...")] = "adam",
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = 0.0,
    schedule: Annotated[str | None, typer.Option(help="cosine, step or onecycle.")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 64,
    standardize: Annotated[bool, typer.Option(help="Standardize the features.")] = True,
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/train"),
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoints/last.pt.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed (model, shuffling, dropout).")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Train a builder MLP on a bundled data set with the monitors on (babysit.fit).

    Exit 0 when training ends with no error finding, 1 with one (e.g. NaN loss), 2 on bad usage.
    """
    import torch

    from .data import Standardize, load
    from .nn import mlp
    from .train import fit

    try:
        widths = [int(w) for w in hidden.split(",") if w.strip()]
        splits = load(data, seed=seed)
        (x, y), (xv, yv) = splits.train.tensors, splits.val.tensors
        if standardize:
            scaler = Standardize().fit(x)
            x, xv = scaler.transform(x), scaler.transform(xv)
        x, xv = x.flatten(1), xv.flatten(1)
        torch.manual_seed(seed)
        model = mlp(
            x.shape[1],
            widths,
            splits.num_classes,
            activation=activation,
            init=init,
            batchnorm=batchnorm,
            dropout=dropout,
        )
        history = fit(
            model,
            (x, y),
            val=(xv, yv),
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            schedule=schedule,
            epochs=epochs,
            batch_size=batch_size,
            run_dir=out,
            resume=resume,
            progress=not (quiet or as_json),
            seed=seed,
            device=device,
        )
    except (ValueError, TypeError, FileNotFoundError) as err:
        if debug:
            raise
        _usage_error(str(err))
    if as_json:
        typer.echo(json.dumps(history.to_dict(), indent=2))
    else:
        from .console import print_diagnosis

        final = ", ".join(f"{k} {v:.4g}" for k, v in history.final.items() if isinstance(v, float))
        typer.echo(f"final epoch: {final}")
        print_diagnosis(history.diagnosis)
        typer.echo(f"wrote {out}/ (metrics.csv, findings.json, checkpoints/)")
    raise typer.Exit(1 if not history.diagnosis.ok else 0)


DEFAULT_SPACE = (
    '{"lr": ["loguniform", 1e-5, 1.0], "weight_decay": ["loguniform", 1e-6, 0.1], '
    '"hidden": ["choice", [50, 100, 200]]}'
)


@app.command()
def search(
    data: Annotated[str, typer.Option(help="Bundled data set: mnist1d, digits, cifar10:PATH.")] = (
        "mnist1d"
    ),
    space: Annotated[
        str,
        typer.Option(
            help='JSON: {"lr": ["loguniform", 1e-6, 0.1], "hidden": ["choice", [50, 100]], '
            '"dropout": ["uniform", 0, 0.5], "depth": ["intuniform", 1, 4], "optimizer": "adam"}'
        ),
    ] = DEFAULT_SPACE,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of the last stage.")] = 20,
    n_trials: Annotated[int, typer.Option(min=1, help="Trials over all stages.")] = 60,
    stages: Annotated[int, typer.Option(min=1, help="Coarse -> fine stages.")] = 2,
    sampler: Annotated[
        str, typer.Option(help="random+tpe (random coarse stage, TPE after), random or tpe.")
    ] = "random+tpe",
    pruner: Annotated[str, typer.Option(help="breakout+median, breakout, median, none.")] = (
        "breakout+median"
    ),
    storage: Annotated[
        str | None, typer.Option(help="Optuna storage URL (default: OUT/search.db).")
    ] = None,
    study_name: Annotated[str | None, typer.Option(help="Study name (shared by workers).")] = None,
    worker: Annotated[
        bool, typer.Option(help="Join the search on --storage (run the same command elsewhere).")
    ] = False,
    auto_extend: Annotated[bool, typer.Option(help="Extend ranges whose best is at an edge.")] = (
        False
    ),
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/search"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Coarse -> fine random search in log space with break-out pruning (babysit.search).

    Several machines share one search through --storage postgresql://...: start the same
    command with --worker on each. Exit 0 when a best trial exists, 1 when none completed.
    """
    from .tuning import search as run_search
    from .tuning.space import parse_space

    try:
        if worker and storage is None:
            raise ValueError("--worker joins a shared search: give its --storage URL")
        result = run_search(
            parse_space(json.loads(space)),
            data=data,
            epochs=epochs,
            n_trials=n_trials,
            stages=stages,
            sampler=sampler,
            pruner=pruner,
            storage=storage,
            study_name=study_name,
            auto_extend=auto_extend,
            seed=seed,
            run_dir=out,
            progress=not as_json,
        )
    except (ValueError, TypeError, FileNotFoundError, ConnectionError) as err:
        if debug:
            raise
        _usage_error(str(err))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "schema": 1,
                    "best": result.best,
                    "stages": result.stages,
                    "findings": [f.to_dict() for f in result.findings],
                    "trials": len(result.trials),
                },
                indent=2,
                default=str,
            )
        )
    else:
        from .console import print_diagnosis
        from .findings import Diagnosis

        for stage in result.stages:
            ranges = ", ".join(f"{k} {v}" for k, v in stage["ranges"].items())
            typer.echo(
                f"stage {stage['stage']}: {stage['trials']} trials x {stage['epochs']} "
                f"epochs over {ranges}"
            )
        if result.best is not None:
            typer.echo(f"best {result.best['value']:.4g} with {result.best['params']}")
        print_diagnosis(Diagnosis(result.findings))
        typer.echo(f"wrote {out}/ (trials.csv, search.json, findings.json)")
    raise typer.Exit(0 if result.best is not None else 1)


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="A run directory written by fit, diagnose, search, ...")
    ],
    title: Annotated[str | None, typer.Option(help="The page's title.")] = None,
) -> None:
    """Write RUN_DIR/report.html: findings, the lecture's plots for your run, one HTML file."""
    from .reporting import write_report
    from .reporting.collect import NoRunError

    try:
        path, problems = write_report(run_dir, title=title)
    except (FileNotFoundError, NoRunError) as err:
        _usage_error(str(err))
    for problem in problems:  # the page is written and says so too; never silently
        typer.echo(f"babysit: could not read {problem} (the report says so)", err=True)
    size = path.stat().st_size / 1024
    typer.echo(f"wrote {path} ({size:.0f} KiB, self-contained: open it in any browser)")


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option(help="Run directory (an existing one is kept, renamed).")
    ] = Path("runs/demo"),
    quick: Annotated[bool, typer.Option(help="A smaller, faster demo (about a minute).")] = False,
    data: Annotated[
        str,
        typer.Option(
            help="mnist1d, digits, or cifar10:PATH (the lecture's own set-up: a 2-layer net "
            "of 50 hidden units on CIFAR-10 from the binary files in PATH)."
        ),
    ] = "mnist1d",
) -> None:
    """Walk through the lecture on bundled data and write RUN_DIR/report.html."""
    from .demo import DemoDataError, run_demo

    try:
        run_demo(out, quick=quick, data=data)
    except DemoDataError as err:
        _usage_error(str(err))


@app.command()
def explain(
    code: Annotated[
        str | None,
        typer.Argument(help="A finding code, e.g. DEAD_RELU (any case); none lists them all."),
    ] = None,
) -> None:
    """What a finding code means, how babysit measures it, and what to do about it."""
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.markup import escape
    from rich.table import Table

    from .explain import page
    from .findings import CODES

    console = Console()
    if code is None:
        table = Table(title="babysit finding codes")
        table.add_column("code", no_wrap=True)
        table.add_column("severity")
        table.add_column("meaning")
        for name, (severity, meaning) in CODES.items():
            table.add_row(name, severity, escape(meaning))
        console.print(table)
        console.print("`babysit explain CODE` shows one code's page.")
        return
    try:
        text = page(code)
    except ValueError as err:
        _usage_error(str(err))
    console.print(Markdown(text))


def _usage_error(message: str) -> None:
    typer.echo(f"babysit: {message}", err=True)
    raise typer.Exit(2)


def main() -> None:
    """Console-script entry point."""
    app()
