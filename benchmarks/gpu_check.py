"""Checks that need a GPU (issue 5: ``device=DEVICE`` and AMP), run on a lent GPU machine.

    PYTHONPATH=src python benchmarks/gpu_check.py --out results.json [--write-docs]

Each check prints one line ``PASS``/``FAIL`` with its numbers; the exit status is the number of
failures. Checks: ``fit`` on CUDA (MLP and 1-D convnet on digits) trains, writes its run
directory and resumes; a resumed CUDA run's metrics against an uninterrupted one's; ``watch``
under ``torch.autocast`` + ``GradScaler`` with an overflowing initial scale (the skipped steps
must not be NaN findings, and the update ratio is measured only on real steps); ``diagnose``
with ``device=DEVICE``; ``report`` of the CUDA run; the speed of a CUDA epoch vs a CPU one.
``--write-docs`` puts the table of checks into ``docs/benchmarks.md`` (not on a dry run).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import babysit as bs
from _common import add_write_docs_arg, emit

RESULTS: list[dict] = []
DEVICE = "cuda"  # --device cpu dry-runs the script on a machine without a GPU


def check(name: str, ok: bool, **numbers) -> None:
    RESULTS.append({"check": name, "ok": bool(ok), **numbers})
    shown = ", ".join(f"{k}={v}" for k, v in numbers.items())
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {shown}", flush=True)


def digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    splits = bs.data.load("digits")
    x, y = splits.train.tensors
    scaler = bs.data.Standardize().fit(x)
    vx, vy = splits.val.tensors
    return (scaler.transform(x), y), (scaler.transform(vx), vy)


def check_fit(root: Path) -> Path:
    train, val = digits()
    run = root / "fit"
    torch.manual_seed(0)
    model = bs.nn.mlp(64, [100, 100], 10)
    start = time.perf_counter()
    history = bs.fit(model, train, val=val, epochs=4, device=DEVICE, run_dir=run, progress=False)
    seconds = time.perf_counter() - start
    on_gpu = next(model.parameters()).device.type == DEVICE
    acc = history.final.get("val_acc", 0.0)
    files = sorted(p.name for p in run.iterdir())
    check(
        "fit MLP on cuda",
        on_gpu and acc > 0.85 and (run / "checkpoints" / "last.pt").exists(),
        val_acc=round(acc, 4),
        seconds=round(seconds, 2),
        codes=sorted(history.codes),
        files=files,
    )
    resumed = bs.fit(
        bs.nn.mlp(64, [100, 100], 10),
        train,
        val=val,
        epochs=6,
        device=DEVICE,
        run_dir=run,
        resume=True,
        progress=False,
    )
    torch.manual_seed(0)
    straight = bs.fit(
        bs.nn.mlp(64, [100, 100], 10), train, val=val, epochs=6, device=DEVICE, progress=False
    )
    diff = max(abs(a - b) for a, b in zip(resumed["val_loss"], straight["val_loss"], strict=True))
    check(
        "resume on cuda continues the run",
        len(resumed) == 6 and resumed.final["val_acc"] > 0.85,
        epochs=len(resumed),
        max_val_loss_diff_vs_uninterrupted=diff,
        exact=diff == 0.0,
    )
    conv = bs.nn.convnet((1, 64), [16, 16], 10)
    history = bs.fit(
        conv,
        (train[0][:, None, :], train[1]),
        val=(val[0][:, None, :], val[1]),
        epochs=3,
        device=DEVICE,
        progress=False,
    )
    check("fit convnet on cuda", history.final["val_acc"] > 0.5, val_acc=history.final["val_acc"])
    return run


def check_amp_watch() -> None:
    (x, y), _ = digits()
    x, y = x.to(DEVICE), y.to(DEVICE)
    torch.manual_seed(0)
    model = bs.nn.mlp(64, [256, 256], 10).to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(DEVICE, init_scale=2.0**40)  # overflows: first steps skipped
    skipped, steps = 0, 0
    with bs.watch(model, optimizer, progress=False) as watcher:
        for _epoch in range(3):
            perm = torch.randperm(len(x), device=DEVICE)
            for i in range(0, len(x), 64):
                idx = perm[i : i + 64]
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(
                    DEVICE, dtype=torch.float16 if DEVICE == "cuda" else torch.bfloat16
                ):
                    loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                watcher.observe(loss)
                before = scaler.get_scale()
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                skipped += scaler.get_scale() < before
                steps += 1
            watcher.end_epoch()
    codes = sorted({f.code for f in watcher.findings})
    check(
        "watch + autocast + GradScaler: skipped steps are not NaN findings",
        skipped > 0 and "NAN_LOSS" not in codes and not watcher.diverged,
        steps=steps,
        skipped_by_scaler=int(skipped),
        codes=codes,
        final_loss=round(loss.item(), 4),
    )


def check_diagnose() -> None:
    train, _ = digits()
    codes = {}
    for device in ("cpu", DEVICE):
        torch.manual_seed(0)
        healthy = bs.nn.mlp(64, [100], 10)
        broken = bs.nn.init_model(bs.nn.mlp(64, [100], 10, activation="tanh"), "normal", std=1.0)
        codes[device] = (
            sorted(bs.diagnose(healthy, train, device=device).codes),
            sorted(bs.diagnose(broken, train, device=device).codes),
        )
    check(
        "diagnose on the device finds what it finds on the CPU",
        codes[DEVICE] == codes["cpu"] and "SATURATED_ACTIVATIONS" in codes[DEVICE][1],
        device=codes[DEVICE],
        cpu=codes["cpu"],
    )


def check_report(run: Path) -> None:
    path = bs.report(run)
    html = path.read_text()
    check(
        "report of the cuda run",
        'id="training"' in html and 'id="activations"' in html,
        kib=round(path.stat().st_size / 1024),
    )


def check_speed() -> None:
    (x, y), _ = digits()
    x, y = x.repeat(20, 1), y.repeat(20)  # ~29 000 examples
    times = {}
    for device in ("cpu", DEVICE):
        torch.manual_seed(0)
        model = bs.nn.mlp(64, [512, 512], 10)
        bs.fit(model, (x, y), epochs=1, batch_size=256, device=device, progress=False)  # warm
        start = time.perf_counter()
        bs.fit(model, (x, y), epochs=2, batch_size=256, device=device, progress=False)
        times[device] = time.perf_counter() - start
    check(
        "a CUDA epoch is faster than a CPU one (MLP 512x512, batch 256)",
        times[DEVICE] <= times["cpu"] or DEVICE == "cpu",
        cpu_s=round(times["cpu"], 2),
        device_s=round(times[DEVICE], 2),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--device", default="cuda", help="cpu dry-runs the checks")
    add_write_docs_arg(parser)
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU dry run"
    print(f"torch {torch.__version__}, {name}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for step in (
            lambda: check_report(check_fit(Path(tmp))),
            check_amp_watch,
            check_diagnose,
            check_speed,
        ):
            try:
                step()
            except Exception as err:  # report and go on: one run must answer every check
                check(getattr(step, "__name__", "step"), False, error=repr(err)[:500])
    if args.out:
        args.out.write_text(json.dumps(RESULTS, indent=2, default=str))
    failed = sum(not r["ok"] for r in RESULTS)
    lines = [
        f"{name}: {len(RESULTS) - failed} of {len(RESULTS)} checks passed.",
        "",
        "| check | passed | numbers |",
        "|---|---|---|",
    ]
    for r in RESULTS:
        shown = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("check", "ok"))
        lines.append(f"| {r['check']} | {'yes' if r['ok'] else '**no**'} | {shown} |")
    args.write_docs = args.write_docs and DEVICE == "cuda"  # a CPU dry run documents nothing
    emit(args, __file__, lines)
    return failed


if __name__ == "__main__":
    sys.exit(main())
