"""Evaluate diagnose on the catalogue and the model zoo: confusion tables and wall times.

    python benchmarks/diagnose.py [--threads 2] [--write-docs] [--zoo NAME,NAME]

Prints, for every broken and healthy set-up of ``babysit.checks.catalogue``, the codes expected,
the warning/error codes found, whether that is right, and the wall time of ``checks="all"``;
then the timing targets of issue 4: ``checks="all"`` on a ~1M-parameter MLP (target <= 10 s)
and the default set on the MNIST-1D MLP (target <= 2 s), cold (first call in a fresh process)
and warm (median of 5); then the cost of each slow-prone check alone (``checks=[name]``, warm,
median of 5), the regression guard that replaced the tests' wall-time assertions.

Then the model zoo (``babysit.checks.zoo``, issue 12): the same confusion table with the
default checks (what users run) and per-model times, a summary per family, the ResNet-20
against its target (default diagnose <= 10 s), and, for every healthy entry, whether ``fit``
(3 epochs) and ``watch`` in a plain loop stay silent, ``lr_find`` returns a suggestion and the
report renders. A cell says ``n/a`` with the missing argument when the API cannot run the
entry yet (e.g. no ``forward=`` in ``lr_find``), and ``raised`` with the error when it failed.
``--write-docs`` puts the tables into ``docs/benchmarks.md``; ``--zoo`` runs only the named zoo
entries and nothing else (a debugging aid; refused with ``--write-docs``).
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import babysit as bs
from _common import add_write_docs_arg, emit
from babysit.checks.catalogue import CASES, mnist1d_standardized
from babysit.checks.zoo import FAMILIES, ZOO, Setup
from babysit.optim import make_optimizer

COLD = """
import time, torch
torch.set_num_threads({threads})
t = time.perf_counter()
import babysit as bs
from babysit.checks.catalogue import mnist1d_standardized
x, y = mnist1d_standardized()
model = bs.nn.mlp(40, [100, 100], 10)
t = time.perf_counter()
bs.diagnose(model, (x, y), lr=1e-3)
print(time.perf_counter() - t)
"""


def confusion() -> list[tuple]:
    rows = []
    for name, case in CASES.items():
        model, data, kwargs = case.build()
        start = time.perf_counter()
        diagnosis = bs.diagnose(model, data, checks=case.checks, **kwargs)
        seconds = time.perf_counter() - start
        loud = sorted({f.code for f in diagnosis if f.severity != "info"})
        if case.healthy:
            right = not loud
            expected = "(silent)"
        else:
            right = all(alt & diagnosis.codes for alt in case.expect)
            expected = " & ".join("|".join(sorted(alt)) for alt in case.expect)
        rows.append((name, "healthy" if case.healthy else "broken", expected, loud, right, seconds))
    return rows


def timing(threads: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    x_big = torch.randn(1000, 784, generator=g)
    y_big = torch.randint(0, 10, (1000,), generator=g)
    big = bs.nn.mlp(784, [1024, 256], 10)
    params = sum(p.numel() for p in big.parameters())
    big_times = []
    for _ in range(3):
        start = time.perf_counter()
        bs.diagnose(big, (x_big, y_big), checks="all", lr=1e-3)
        big_times.append(time.perf_counter() - start)
    x, y = mnist1d_standardized()
    small = bs.nn.mlp(40, [100, 100], 10)
    warm, warm_none = [], []
    for _ in range(5):
        start = time.perf_counter()
        bs.diagnose(small, (x, y), lr=1e-3)
        warm.append(time.perf_counter() - start)
        start = time.perf_counter()
        bs.diagnose(small, (x, y))
        warm_none.append(time.perf_counter() - start)
    cold = float(
        subprocess.run(
            [sys.executable, "-c", COLD.format(threads=threads)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
    )
    return {
        "params": params,
        "all_1M_median_s": statistics.median(big_times),
        "default_small_warm_s": statistics.median(warm),
        "default_small_lr_none_warm_s": statistics.median(warm_none),
        "default_small_cold_s": cold,
    }


ONE_CHECK = ("overfit_small_sample", "gradient_flow", "gradient_check", "batch_independence")


def check_costs() -> dict[str, float]:
    """Median seconds (warm, 5 calls) of ``diagnose(checks=[name])`` on the MNIST-1D MLP."""
    x, y = mnist1d_standardized()
    model = bs.nn.mlp(40, [100, 100], 10)
    bs.diagnose(model, (x, y), checks=list(ONE_CHECK), lr=1e-3)  # warm-up
    costs = {}
    for name in ONE_CHECK:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            bs.diagnose(model, (x, y), checks=[name], lr=1e-3)
            times.append(time.perf_counter() - start)
        costs[name] = statistics.median(times)
    return costs


# ------------------------------------------------------------------------------------ the zoo

ZOO_EPOCHS = 3


def _missing(fn, setup: Setup) -> list[str]:
    """The arguments this set-up needs that ``fn`` does not take (yet)."""
    accepted = inspect.signature(fn).parameters
    return [k for k in ("forward", "task") if getattr(setup, k) is not None and k not in accepted]


def _in_use_kwargs(fn, setup: Setup) -> tuple[dict[str, Any] | None, str]:
    """Keyword arguments for ``fn`` (fit, lr_find) and a note. Without ``forward=`` the entry
    cannot run (None); without ``task=`` it runs with the loss taken as given, noted."""
    missing = _missing(fn, setup)
    kwargs = setup.kwargs()
    if "forward" in missing:
        return None, _na(missing, fn.__name__)
    note = ""
    if "task" in missing:
        kwargs.pop("task")
        note = " (no task=)"
    return kwargs, note


def _na(missing: list[str], fn: str) -> str:
    return f"n/a: {fn} has no " + ", ".join(f"{k}=" for k in missing)


def _raised(err: Exception) -> str:
    text = " ".join(str(err).split())
    return f"raised {type(err).__name__}: {text[:70]}" + ("…" if len(text) > 70 else "")


def _loud(findings) -> list[str]:
    return sorted({f.code for f in findings if f.severity != "info"})


def _verdict(findings) -> str:
    loud = _loud(findings)
    return "silent" if not loud else "LOUD: " + ", ".join(loud)


def _logits(output: Any) -> Any:
    """What a plain loop passes to the loss: a dict's "logits", a tuple's first item."""
    if isinstance(output, dict):
        return output["logits"]
    if isinstance(output, tuple | list):
        return output[0]
    return output


def _batches(data: Any, epoch: int, batch_size: int = 64):
    """A plain loop's minibatches: a loader as it is; tensors shuffled by a seeded permutation."""
    if isinstance(data, torch.utils.data.DataLoader):
        yield from data
        return
    x, y = data
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
    for i in range(0, len(x), batch_size):
        idx = order[i : i + batch_size]
        yield x[idx], y[idx]


def diagnose_entry(name: str) -> dict[str, Any]:
    """One zoo entry through diagnose (default checks): the row of the confusion table."""
    entry = ZOO[name]
    setup = entry.build()
    row: dict[str, Any] = {"name": name, "family": entry.family, "healthy": entry.healthy}
    row["params"] = sum(p.numel() for p in setup.model.parameters())
    if entry.healthy:
        row["expected"] = "(silent)"
    else:
        row["expected"] = " & ".join("\\|".join(sorted(alt)) for alt in entry.expect)
    missing = _missing(bs.diagnose, setup)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        if missing:
            raise TypeError(_na(missing, "diagnose"))
        diagnosis = bs.diagnose(setup.model, setup.data, **setup.kwargs())
    except Exception as err:
        diagnosis = None
        row.update(found=_raised(err), right=False)
    row["seconds"] = time.perf_counter() - start
    row["cpu"] = time.process_time() - cpu
    if diagnosis is None:
        return row
    loud = _loud(diagnosis)
    row["found"] = ", ".join(loud) or "-"
    if "CHECKS_SKIPPED" in diagnosis.codes and "CHECKS_SKIPPED" not in loud:
        row["found"] += " (+CHECKS_SKIPPED info)"
    row["right"] = entry.wrong(diagnosis) is None
    return row


def fit_entry(name: str, run_dir: Path | None, lr: float | None = None) -> str:
    """``fit`` for ``ZOO_EPOCHS`` epochs at the entry's learning rate (or ``lr``)."""
    setup = ZOO[name].build()
    kwargs, note = _in_use_kwargs(bs.fit, setup)
    if kwargs is None:
        return note
    if lr is not None:
        kwargs["lr"] = lr
    if kwargs["lr"] is None:
        kwargs.pop("lr")
    try:
        history = bs.fit(
            setup.model,
            setup.data,
            epochs=ZOO_EPOCHS,
            batch_size=64,
            progress=False,
            run_dir=run_dir,
            seed=0,
            **kwargs,
        )
    except Exception as err:
        return _raised(err) + note
    return _verdict(history.findings) + note


def watch_entry(name: str) -> str:
    """The user's own loop with ``watcher.observe(loss)`` (and output/target where accepted)."""
    setup = ZOO[name].build()
    model = setup.model
    try:
        opt = make_optimizer(setup.optimizer, model.parameters(), setup.lr, setup.weight_decay)
        watcher = bs.watch(model, opt)
        rich = {"output", "target"} <= set(inspect.signature(watcher.observe).parameters)
        model.train()
        for epoch in range(ZOO_EPOCHS):
            for batch in _batches(setup.data, epoch):
                output, target = setup.compute(model, batch)
                loss = setup.loss(_logits(output), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if rich:
                    watcher.observe(loss, output=output, target=target)
                else:
                    watcher.observe(loss)
                opt.step()
            watcher.end_epoch()
        watcher.close()
    except Exception as err:
        return _raised(err)
    return _verdict(watcher.findings)


def lr_find_entry(name: str) -> tuple[str, float | None]:
    """The cell, and the suggested learning rate (None when there is none)."""
    setup = ZOO[name].build()
    kwargs, note = _in_use_kwargs(bs.lr_find, setup)
    if kwargs is None:
        return note, None
    kwargs.pop("lr")
    try:
        result = bs.lr_find(setup.model, setup.data, batch_size=64, **kwargs)
    except Exception as err:
        return _raised(err) + note, None
    if result.suggestion is None:
        return "no suggestion" + note, None
    cell = f"{result.suggestion:.1e}" + ("" if result.confident else " (not confident)")
    return cell + note, result.suggestion


def report_entry(run_dir: Path) -> str:
    if not (run_dir / "config.json").exists():
        return "n/a: fit wrote no run"
    try:
        path = bs.report(run_dir)
    except Exception as err:
        return _raised(err)
    size = path.stat().st_size if path.exists() else 0
    return f"renders ({size / 1e3:.0f} kB)" if size else "empty"


def resnet_timing() -> tuple[int, float, float]:
    """Default diagnose of ResNet-20 (0.27M) on 3×32×32, warm (its zoo row ran before):
    (parameters, wall seconds, CPU seconds of this process)."""
    setup = ZOO["resnet20_bn"].build()
    start, cpu = time.perf_counter(), time.process_time()
    bs.diagnose(setup.model, setup.data, **setup.kwargs())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return sum(p.numel() for p in setup.model.parameters()), wall, cpu


def zoo_section(names: list[str]) -> list[str]:
    x, y = mnist1d_standardized()
    bs.diagnose(bs.nn.mlp(40, [100, 100], 10), (x, y), lr=1e-3)  # warm-up: no cold start below
    rows = []
    for name in names:
        rows.append(diagnose_entry(name))
        print(f"zoo: {name}: {rows[-1]['found']} ({rows[-1]['seconds']:.1f} s)", file=sys.stderr)
    out = [
        "",
        "#### The model zoo (`babysit/checks/zoo.py`, issue 12): default checks",
        "",
        "| entry | family | kind | params | expected | warnings/errors found | right | s | CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kind = "healthy" if r["healthy"] else "broken"
        out.append(
            f"| {r['name']} | {r['family']} | {kind} | {r['params']:,} | {r['expected']} | "
            f"{r['found']} | {'yes' if r['right'] else 'NO'} | {r['seconds']:.2f} | "
            f"{r['cpu']:.2f} |"
        )
    healthy = [r for r in rows if r["healthy"]]
    broken = [r for r in rows if not r["healthy"]]
    out += [
        "",
        f"zoo: healthy silent {sum(r['right'] for r in healthy)}/{len(healthy)}; "
        f"broken found {sum(r['right'] for r in broken)}/{len(broken)}",
        "",
        "| family | healthy silent | broken found |",
        "|---|---|---|",
    ]
    for family in FAMILIES:
        h = [r for r in healthy if r["family"] == family]
        b = [r for r in broken if r["family"] == family]
        if h or b:
            out.append(
                f"| {family} | {sum(r['right'] for r in h)}/{len(h)} | "
                f"{sum(r['right'] for r in b)}/{len(b)} |"
            )
    if "resnet20_bn" in names:
        params, wall, cpu = resnet_timing()
        out += [
            "",
            "| timing (default checks, warm, one call) | wall | CPU of the process | target |",
            "|---|---|---|---|",
            f"| ResNet-20, {params / 1e6:.2f}M params, 256 images 3×32×32 | {wall:.1f} s | "
            f"{cpu:.1f} s | <= 10 s |",
        ]
    out += [
        "",
        "CPU s is the process's CPU time (`time.process_time`): with one torch thread it "
        "is far less sensitive than the wall time to other processes on the machine (it still "
        "grows somewhat under load: shared caches and cores).",
    ]
    out += [
        "",
        f"Healthy entries in use: `fit` ({ZOO_EPOCHS} epochs, default monitors, the entry's "
        f"lr), `watch` in a plain loop ({ZOO_EPOCHS} epochs), `lr_find` (100 steps, its "
        "suggestion), `fit` again at that suggestion (issue 12: no UPDATE_RATIO_HIGH at the "
        "suggested lr), the report of the first fit's run directory.",
        "",
        "| entry | fit | watch (plain loop) | lr_find | fit at the suggestion | report |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="babysit-zoo-") as tmp:
        for name in names:
            if not ZOO[name].healthy:
                continue
            run_dir = Path(tmp) / name
            fitted = fit_entry(name, run_dir)
            watched = watch_entry(name)
            found, suggestion = lr_find_entry(name)
            at_suggestion = "n/a" if suggestion is None else fit_entry(name, None, suggestion)
            cells = [fitted, watched, found, at_suggestion, report_entry(run_dir)]
            print(f"zoo in use: {name}: {cells}", file=sys.stderr)
            out.append(f"| {name} | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return out


def catalogue_section(args) -> list[str]:
    rows = confusion()
    out = [
        "| set-up | kind | expected | warnings/errors found | right | s (checks=all) |",
        "|---|---|---|---|---|---|",
    ]
    for name, kind, expected, loud, right, seconds in rows:
        found, verdict = ", ".join(loud) or "-", "yes" if right else "NO"
        out.append(f"| {name} | {kind} | {expected} | {found} | {verdict} | {seconds:.2f} |")
    broken = [r for r in rows if r[1] == "broken"]
    healthy = [r for r in rows if r[1] == "healthy"]
    out += [
        "",
        f"broken found: {sum(r[4] for r in broken)}/{len(broken)}; "
        f"healthy silent: {sum(r[4] for r in healthy)}/{len(healthy)}",
        "",
    ]
    t = timing(args.threads)
    out += [
        "| timing | measured | target |",
        "|---|---|---|",
        f"| checks='all', {t['params'] / 1e6:.2f}M-param MLP, 1000 examples (median of 3) | "
        f"{t['all_1M_median_s']:.2f} s | <= 10 s |",
        f"| default set, MNIST-1D MLP, lr=1e-3, warm (median of 5) | "
        f"{t['default_small_warm_s']:.2f} s | <= 2 s |",
        f"| default set, MNIST-1D MLP, lr=None (adds the range test), warm | "
        f"{t['default_small_lr_none_warm_s']:.2f} s | <= 2 s |",
        f"| default set, MNIST-1D MLP, lr=1e-3, cold (first call in a process) | "
        f"{t['default_small_cold_s']:.2f} s | <= 2 s |",
        "",
        "| one check alone, MNIST-1D MLP 40-100-100-10, warm (median of 5) | s |",
        "|---|---|",
    ]
    out += [f"| `{name}` | {seconds:.3f} |" for name, seconds in check_costs().items()]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--zoo", default="", help="only these zoo entries (comma list)")
    add_write_docs_arg(parser)
    args = parser.parse_args()
    if args.zoo and args.write_docs:
        parser.error("--zoo runs part of the benchmark: it cannot --write-docs")
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.zoo.split(",") if n.strip()] or list(ZOO)
    unknown = sorted(set(names) - set(ZOO))
    if unknown:
        parser.error(f"unknown zoo entries {unknown}; known: {', '.join(ZOO)}")
    out = [] if args.zoo else catalogue_section(args)
    out += zoo_section(names)
    emit(args, __file__, out)


if __name__ == "__main__":
    main()
