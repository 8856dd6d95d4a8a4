"""The ``babysit`` command line (typer): demo, initlab, diagnose, fix, train, search, explain; more
arrive with their issues.

Exit codes: 0 success, 1 a finding of severity error (diagnose, train) or one left at
warning/error after a repair (fix), 2 bad usage. A user
error (a bad flag, a --out that cannot be written, a model builder that raises) is one line
``babysit: ...`` on stderr and exit 2; ``babysit --debug COMMAND`` raises it instead, with its
traceback. Anything else is a bug in babysit and surfaces as one, traceback and all.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

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


_STATE = {"debug": False}


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of a usage error (any command).")
    ] = False,
) -> None:
    """babysit: pre-flight checks, monitors, search and reports for PyTorch training."""
    _STATE["debug"] = debug


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
        Path,
        typer.Option(
            help="Run directory for activations.json and initlab.png (an existing one is kept, "
            "renamed)."
        ),
    ] = Path("runs/initlab"),
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """The lecture's init experiment: per-layer activation statistics of a deep net at init.

    With no --activation/--init, runs the lecture's five settings: tanh + N(0, 0.01²),
    tanh + N(0, 1), tanh + Xavier, ReLU + Xavier, ReLU + He.
    """
    from . import initlab as lab
    from . import runs

    try:  # measure first: a setting it refuses (e.g. --std -1) leaves --out untouched
        settings = lab.settings_from_cli(activation or [], init or [], std=std)
        result = lab.run(
            settings,
            depth=depth,
            width=width,
            n_inputs=n_inputs,
            seed=seed,
            progress=progress and not as_json,
        )
        run_dir = _fresh_out(out)
    except ValueError as err:
        _usage_error(str(err))
    runs.write_json(run_dir, runs.ACTIVATIONS, result.to_dict())
    lab.plot(result, run_dir / "initlab.png")
    wrote = f"wrote {run_dir / runs.ACTIVATIONS} and {run_dir / 'initlab.png'}"
    if as_json:
        typer.echo(json.dumps({"schema": 1, **result.to_dict()}, indent=2))
        typer.echo(wrote, err=True)
        return
    lab.print_table(result)
    typer.echo(wrote)


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

    try:
        result = _on_target(
            run_diagnose,
            target,
            data,
            standardize=standardize,
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            checks=checks,
            ignore=ignore,
            budget=budget,
            seed=seed,
            out=out,
            as_json=as_json,
        )
    except (ValueError, TypeError, ImportError, OSError, AttributeError) as err:
        if debug:
            raise
        _usage_error(_describe(err))
    if as_json:
        typer.echo(result.to_json())
    else:
        from .console import print_diagnosis

        print_diagnosis(result)
    raise typer.Exit(0 if result.ok else 1)


def _on_target(
    run: Any,
    target: str,
    data: str | None,
    *,
    standardize: bool,
    optimizer: str,
    lr: float | None,
    weight_decay: float,
    checks: str,
    ignore: list[str] | None,
    budget: float | None,
    seed: int,
    out: Path | None,
    as_json: bool,
) -> Any:
    """``run`` (``diagnose`` or ``fix``: the same keyword arguments) on the set-up ``target``
    names, with the command line's options."""
    from .loading import load_target

    model, model_data = load_target(target, data, standardize=standardize)
    return run(
        model,
        model_data,
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        checks=checks if checks in ("default", "all") else checks.split(","),
        ignore=ignore or (),
        budget_s=budget,
        seed=seed,
        run_dir=out,
        progress=False if as_json else None,
    )


@app.command()
def fix(
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
    lr: Annotated[
        float | None, typer.Option(help="Learning rate (default: the optimizer's default).")
    ] = None,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = 0.0,
    checks: Annotated[
        str, typer.Option(help="'default', 'all', or check names separated by commas.")
    ] = "default",
    ignore: Annotated[list[str] | None, typer.Option(help="Finding code to silence.")] = None,
    budget: Annotated[float | None, typer.Option(help="Time budget in seconds.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Run directory for fix.json.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Repair what diagnose finds, keeping only remedies that verify. Exit 0: nothing at
    warning/error remains; 1: something remains (printed with the change to make); 2: usage."""
    from .repair import fix as run_fix
    from .repair import format_repair

    try:
        result = _on_target(
            run_fix,
            target,
            data,
            standardize=standardize,
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            checks=checks,
            ignore=ignore,
            budget=budget,
            seed=seed,
            out=out,
            as_json=as_json,
        )
    except (ValueError, TypeError, ImportError, OSError, AttributeError) as err:
        _usage_error(_describe(err))
    if as_json:
        typer.echo(result.to_json())
    else:
        typer.echo(format_repair(result))
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def train(
    ctx: typer.Context,
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
    epochs: Annotated[
        int, typer.Option(min=1, help="Epochs (with --resume: continue to this many).")
    ] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 64,
    standardize: Annotated[bool, typer.Option(help="Standardize the features.")] = True,
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/train"),
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the run in OUT (checkpoints/last.pt) with the settings its "
            "config.json records; a flag that contradicts them is an error."
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Random seed (data split, model, shuffling).")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
    nproc_per_node: Annotated[
        int | None,
        typer.Option(
            "--nproc-per-node",
            help="Train with N processes on this machine (DDP): relaunches itself through "
            "torch.distributed.run, gloo on CPU, nccl on CUDA. --batch-size is per process. "
            "Multi-node: run 'torchrun --nnodes ... -m babysit.cli train ...' on each node.",
        ),
    ] = None,
) -> None:
    """Train a builder MLP on a bundled data set with the monitors on (babysit.fit).

    Exit 0 when training ends with no error finding, 1 with one (e.g. NaN loss), 2 on bad usage.
    """
    from .distributed import env_world_size
    from .train import CheckpointError

    worker = env_world_size() > 1  # one of torchrun's processes: rank 0 alone speaks
    speaks = not worker or os.environ.get("RANK", "0") == "0"

    values = {
        "data": data,
        "hidden": hidden,
        "activation": activation,
        "init": init,
        "batchnorm": batchnorm,
        "dropout": dropout,
        "standardize": standardize,
        "optimizer": optimizer,
        "lr": lr,
        "weight_decay": weight_decay,
        "schedule": schedule,
        "batch_size": batch_size,
        "seed": seed,
        "epochs": epochs,
    }
    given = {name for name in values if _given(ctx, name)}
    try:
        values["hidden"] = _widths(hidden)
        if resume:
            values = _resumed_settings(out, values, given)
        if nproc_per_node is not None and not worker and nproc_per_node != 1:
            flags = {name: ctx.params[name] for name in given}
            flags.update(out=out, device=device, resume=resume, quiet=quiet, json=as_json)
            raise typer.Exit(_launch(nproc_per_node, values, flags))
        quiet = quiet or as_json or not speaks
        history = _train(values, out=out, resume=resume, device=device, quiet=quiet)
    except (ValueError, TypeError, FileNotFoundError, CheckpointError) as err:
        if debug:
            raise
        if not speaks:
            raise typer.Exit(2) from None  # rank 0 says it, once
        _usage_error(str(err))
    if not speaks:
        raise typer.Exit(1 if not history.diagnosis.ok else 0)
    if as_json:
        typer.echo(json.dumps(history.to_dict(), indent=2))
    else:
        from .console import print_diagnosis

        final = ", ".join(f"{k} {v:.4g}" for k, v in history.final.items() if isinstance(v, float))
        typer.echo(f"final epoch: {final}")
        print_diagnosis(history.diagnosis)
        typer.echo(f"wrote {out}/ (metrics.csv, findings.json, checkpoints/)")
    raise typer.Exit(1 if not history.diagnosis.ok else 0)


# How `babysit train` built its model and data: recorded in config.json under "cli".
_BUILD_KEYS = ("data", "hidden", "activation", "init", "batchnorm", "dropout", "standardize")
# fit's settings the command passes on, as config.json records them (train/config.py).
_FIT_KEYS = ("optimizer", "lr", "weight_decay", "schedule", "batch_size", "seed")


def _train(values: Mapping[str, Any], *, out: Path, resume: bool, device: str, quiet: bool):
    """Build the model and the data as ``values`` say, and train (fit's loop, with the build
    recorded in ``config.json`` so that ``--resume`` can rebuild them)."""
    import torch

    from .data import Standardize, load
    from .distributed import process_group
    from .nn import mlp
    from .train.config import FitConfig
    from .train.loop import Trainer

    config = FitConfig(  # validated before the data is loaded
        **{k: values[k] for k in _FIT_KEYS},
        epochs=values["epochs"],
        device=device,
        progress=not quiet,
    )
    splits = load(values["data"], seed=config.seed)
    (x, y), (xv, yv) = splits.train.tensors, splits.val.tensors
    if values["standardize"]:
        scaler = Standardize().fit(x)
        x, xv = scaler.transform(x), scaler.transform(xv)
    x, xv = x.flatten(1), xv.flatten(1)
    torch.manual_seed(config.seed)
    model = mlp(
        x.shape[1],
        list(values["hidden"]),
        splits.num_classes,
        activation=values["activation"],
        init=values["init"],
        batchnorm=values["batchnorm"],
        dropout=values["dropout"],
    )
    build = {k: values[k] for k in _BUILD_KEYS}
    with process_group(config.device, who="fit"):  # under torchrun: DDP, like fit
        trainer = Trainer(
            model, (x, y), config, val=(xv, yv), run_dir=out, resume=resume, record={"cli": build}
        )
        return trainer.run()


def _launch(nproc: int, values: Mapping[str, Any], flags: Mapping[str, Any]) -> int:
    """``babysit train`` again in ``nproc`` processes, through ``torch.distributed.run`` (the
    launcher ``torchrun`` is): what can be refused is refused here first, in one line. Returns
    the exit code: the processes' own (rank 0 printed the result or the error), or 1 with one
    line naming the rank that failed when one crashed or was killed."""
    import logging

    from . import runs

    if nproc < 1:
        raise ValueError(
            f"--nproc-per-node must be at least 1 (the number of training processes on this "
            f"machine), got {nproc}"
        )
    device = str(flags["device"])
    if device.startswith("cuda"):
        import torch

        if torch.cuda.device_count() < nproc:
            raise ValueError(
                f"--nproc-per-node {nproc} with --device {device} needs {nproc} GPUs, and "
                f"{torch.cuda.device_count()} are visible; use at most that many, or --device cpu"
            )
    if flags["resume"]:
        recorded = runs.read_json(Path(flags["out"]), runs.CONFIG) or {}
        trained = recorded.get("world_size", 1)
        if trained != nproc:
            raise ValueError(
                f"--resume: the run in {flags['out']} was trained by {trained} process(es); each "
                "process's data shard and random state are in its checkpoint, so "
                f"--nproc-per-node {nproc} cannot continue it exactly. Pass --nproc-per-node "
                f"{trained}, or start a new run with another --out"
            )
    from .data import load

    n_train = len(load(values["data"], seed=values["seed"]).train)
    if nproc > n_train:
        raise ValueError(
            f"--nproc-per-node {nproc} is more processes than the {n_train} training examples of "
            f"{values['data']}: each process trains on its own shard; use at most {n_train}"
        )
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    for name in ("torch.distributed.run", "torch.distributed.elastic"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the processes speak for themselves
    argv = ["--standalone", f"--nproc-per-node={nproc}", "--module", "babysit.cli", "train"]
    try:
        run(parse_args([*argv, *_as_flags(flags)]))
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        if failure.exitcode in (1, 2):  # a finding of severity error, or a usage error: said
            return failure.exitcode
        how = (
            f"was killed by signal {failure.signal_name()}"
            if failure.exitcode < 0
            else f"exited with code {failure.exitcode}"
        )
        typer.echo(
            f"babysit: training process rank {rank} {how}; the others were stopped. Its output "
            f"is above; continue from the last checkpoint with --resume --nproc-per-node {nproc}",
            err=True,
        )
        return 1
    return 0


def _as_flags(flags: Mapping[str, Any]) -> list[str]:
    """Command-line flags that give ``train`` these parameter values again."""
    out: list[str] = []
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            if value:
                out.append(flag)
            elif name in ("batchnorm", "standardize"):
                out.append(f"--no-{name}")
        elif value is not None:
            out += [flag, str(value)]
    return out


def _resumed_settings(out: Path, values: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """The settings of the run in ``out`` (its ``config.json``), with the flags given on the
    command line checked against them: one that contradicts the record is a usage error naming
    the flag and the recorded value; ``--epochs`` is an override (continue to that count)."""
    from . import runs
    from .train.config import same_value

    last = out / runs.CHECKPOINTS / "last.pt"
    if not last.exists():
        raise ValueError(
            f"--resume: no run to continue in {out} ({last} does not exist); check --out, or "
            "drop --resume to start a new run"
        )
    try:
        recorded = runs.read_json(out, runs.CONFIG)
    except (OSError, ValueError) as err:
        raise ValueError(f"--resume: cannot read {out / runs.CONFIG} ({err})") from err
    if recorded is None or recorded.get("kind") != "fit":
        found = "no config.json" if recorded is None else f"a {recorded.get('kind')!r} run"
        raise ValueError(f"--resume: {out} holds {found}, not a run of babysit train; check --out")
    build = recorded.get("cli")
    if not isinstance(build, dict):
        typer.echo(
            f"babysit: note: {out / runs.CONFIG} does not record how the model and data were "
            "built (an older babysit): --data, --hidden, ... are taken from the flags; the "
            "checkpoint still checks the model's shapes",
            err=True,
        )
        build = {}
    record = {**{k: recorded[k] for k in _FIT_KEYS if k in recorded}, **build}
    record = {k: v for k, v in record.items() if k in values}
    bad = [
        _flag(name, values[name], record[name])
        for name in values
        if name in given and name in record and not same_value(values[name], record[name])
    ]
    if bad:
        which = "the flag" if len(bad) == 1 else "those flags"
        raise ValueError(
            f"--resume: {'; '.join(bad)}. Drop {which} to continue with the recorded values, "
            "or start a new run with another --out"
        )
    resumed = {**values, **record}
    planned = recorded.get("epochs")
    if "epochs" not in given and planned is not None:
        resumed["epochs"] = planned  # continue to the planned count
    elif recorded.get("schedule") is not None and planned not in (None, values["epochs"]):
        raise ValueError(
            f"--resume: --epochs {values['epochs']} cannot stretch the run's "
            f"{recorded['schedule']} schedule, planned for {planned} epochs; drop --epochs, or "
            "start a new run with another --out"
        )
    return resumed


def _flag(name: str, value: Any, recorded: Any) -> str:
    """``--lr 0.1 contradicts the run's recorded lr 0.01``."""
    if isinstance(value, bool):

        def spell(on: Any) -> str:
            return f"--{name}" if on else f"--no-{name}"

        return f"{spell(value)} contradicts the run, which was trained with {spell(recorded)}"

    def show(v: Any) -> str:
        return ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)

    return (
        f"--{name.replace('_', '-')} {show(value)} contradicts the run's recorded "
        f"{name} {show(recorded)}"
    )


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether ``name`` was set on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _widths(hidden: str) -> list[int]:
    """``--hidden 100,50`` -> ``[100, 50]``; anything else is a usage error saying so."""
    parts = [w.strip() for w in hidden.split(",") if w.strip()]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(
            f"--hidden takes positive layer widths separated by commas, e.g. 100,100; got "
            f"{hidden!r}"
        )
    return [int(p) for p in parts]


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
    command with --worker on each. Exit 0 when a best trial exists; 1 when none completed (every
    trial of a stage failed: the first one's error is printed); 2 for bad usage, including an
    --out or --study-name that holds a search with other settings.
    """
    from .tuning import SearchFailed
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
    except SearchFailed as err:
        if debug:
            raise
        typer.echo(f"babysit: {err} (trials.csv in {out}/)", err=True)
        raise typer.Exit(1) from None
    except (ValueError, TypeError, FileNotFoundError, ConnectionError) as err:
        if debug:
            raise
        _usage_error(" ".join(str(err).split()))
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
    from .demo import DemoError, run_demo

    try:
        run_demo(out, quick=quick, data=data)
    except DemoError as err:
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
    """Exit 2 with one line ``babysit: message`` on stderr. Called while handling an error,
    with the global ``--debug``, the error is raised instead (its traceback shown)."""
    if _STATE["debug"] and sys.exc_info()[1] is not None:
        raise  # the error the caller is handling
    typer.echo(f"babysit: {' '.join(message.split())}", err=True)
    raise typer.Exit(2)


def _describe(err: BaseException) -> str:
    """An error's message; an OS error about a file says which and what (no ``[Errno 2]``)."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"cannot write or read {err.filename} ({err.strerror})"
    return str(err)


def _fresh_out(out: Path) -> Path:
    """The run directory ``out``, created; an existing non-empty one is kept, renamed with a
    timestamp (as ``demo`` and ``fit`` do). Not writable: a ``ValueError`` that says so."""
    from . import runs

    try:
        if out.exists() and out.is_dir() and not any(out.iterdir()):
            return out
        return runs.fresh_run_dir(out)
    except OSError as err:
        raise ValueError(
            f"cannot create the run directory {out} ({err.strerror or err}); pass --out a "
            "directory you can write to"
        ) from err


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # torchrun's processes: python -m babysit.cli
    main()
