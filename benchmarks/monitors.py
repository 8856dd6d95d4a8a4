"""Evaluate the training monitors on a scenario matrix: healthy runs silent, broken runs caught.

    python benchmarks/monitors.py [--seeds 0] [--only NAME] [--set name=value ...] [--raw]

Every scenario trains a small model on MNIST-1D or digits (standardized, 10-20 epochs) with
``babysit.fit(..., monitors=default_monitors())`` (the same monitors as ``monitors="default"``,
kept so their state can be read) and a temporary ``run_dir``. The table gives, per scenario and
seed, the codes expected, the warning/error codes that fired (info findings in brackets), the
raw numbers the thresholds act on and a verdict:

- healthy: ``OK`` when no warning/error fired, ``OK*`` when only a tolerated code fired
  (MNIST-1D MLPs genuinely overfit: OVERFITTING is tolerated there), else ``FALSE ALARM``;
- broken: ``OK`` when each expected group (``A|B``: either) has a warning/error code, else
  ``MISSED``; extra warning codes are listed but do not change the verdict.

Raw numbers (what each rule computes, worst value over the points where the rule is judged):

- ``ur5max``: largest median-of-last-5 sampled update ratios (UPDATE_RATIO_HIGH: > high);
  ``ur10min``: smallest median-of-last-10 while lr >= 10% of its start (UPDATE_RATIO_LOW: < low);
- ``dev5``: largest relative distance of the first 5 of 50 loss-window means from the first one
  (LOSS_PLATEAU_AT_START needs dev5 <= plateau_flat), ``nflat``/``fall``: the plateau length in
  windows and the fall after it at the judgement with the largest fall;
- ``zz``: the largest oscillation() zigzag over the epoch-end judgements (LOSS_OSCILLATING:
  > loss_oscillation; ``-`` when the gate returned None);
- ``dec``: smallest relative decrease of the loss (LR_TOO_LOW: < loss_min_decrease and ratio gate);
- ``dead``/``sat``: largest per-sample dead / saturated fraction of any layer (sat: min of two
  consecutive samples, as the rule needs); ``gr``: min and max ||g_first||/||g_last||;
- ``gap2``: largest train-val accuracy gap held for two epochs (OVERFITTING: > overfit_gap);
  ``tr``/``va``: final train/val accuracy; ``rb``: rollbacks.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
from torch import nn

import babysit
from babysit.data import Standardize, load
from babysit.nn import convnet, init_model, mlp
from babysit.runs import read_metrics
from babysit.thresholds import THRESHOLDS, resolve
from babysit.train.monitors import (
    ActivationStats,
    LossCurve,
    LossGuard,
    UpdateRatio,
    default_monitors,
)
from babysit.train.monitors.loss import oscillation, plateau_then_drop, smooth

# ------------------------------------------------------------------------------------ data


@cache
def dataset(name: str, n_train: int | None = None) -> tuple[tuple, tuple]:
    """Standardized ``(X, y)`` train and val tensors (``n_train``: the first n examples)."""
    splits = load(name)
    x, y = splits.train.tensors
    xv, yv = splits.val.tensors
    if n_train is not None:
        x, y = x[:n_train], y[:n_train]
    scaler = Standardize().fit(x)
    return (scaler.transform(x), y), (scaler.transform(xv), yv)


def as_1d_image(data: tuple) -> tuple:
    x, y = data
    return x.reshape(len(x), 1, -1), y


class EvalEachEpoch(babysit.Callback):
    """The bug: something puts the model in eval mode at the start of every epoch."""

    def on_train_epoch_start(self, trainer: Any) -> None:
        trainer.model.eval()


# ------------------------------------------------------------------------------------ scenarios


@dataclass
class Scenario:
    name: str
    build: Callable[[], nn.Module]  # called after torch.manual_seed(seed)
    data: str = "mnist1d"
    n_train: int | None = None
    image: bool = False
    fit: dict = field(default_factory=dict)
    expect: tuple[frozenset[str], ...] = ()  # broken: one code of each group; () = healthy
    tolerated: frozenset[str] = frozenset()  # healthy: warning codes that are acceptable

    @property
    def healthy(self) -> bool:
        return not self.expect

    def recipe(self) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in self.fit.items() if k != "callbacks")
        extra = f", n_train={self.n_train}" if self.n_train else ""
        return f"{self.data}{extra}; {kw}"


def _fit(**kw: Any) -> dict:
    base = {"optimizer": "adam", "lr": 1e-3, "epochs": 15, "batch_size": 64}
    base.update(kw)
    return base


def _init(model: nn.Module, scheme: str, **kw: Any) -> nn.Module:
    return init_model(model, scheme, **kw)


OVERFIT_OK = frozenset({"OVERFITTING"})


def _g(*codes: str) -> frozenset[str]:
    return frozenset(codes)


SCENARIOS: list[Scenario] = [
    # ---------------------------------------------------------------- healthy: must be silent
    Scenario("H mlp relu he adam1e-3", lambda: mlp(40, [100, 100], 10), fit=_fit(),
             tolerated=OVERFIT_OK),
    Scenario("H mlp relu he momentum0.01", lambda: mlp(40, [100, 100], 10),
             fit=_fit(optimizer="momentum", lr=0.01), tolerated=OVERFIT_OK),
    Scenario("H mlp relu he momentum0.1", lambda: mlp(40, [100, 100], 10),
             fit=_fit(optimizer="momentum", lr=0.1), tolerated=OVERFIT_OK),
    Scenario("H mlp relu he nesterov0.05", lambda: mlp(40, [100, 100], 10),
             fit=_fit(optimizer="nesterov", lr=0.05), tolerated=OVERFIT_OK),
    Scenario("H mlp tanh xavier adam", lambda: mlp(40, [100, 100], 10, activation="tanh",
                                                   init="xavier"),
             fit=_fit(), tolerated=OVERFIT_OK),
    Scenario("H mlp tanh xavier momentum0.05",
             lambda: mlp(40, [100, 100], 10, activation="tanh", init="xavier"),
             fit=_fit(optimizer="momentum", lr=0.05), tolerated=OVERFIT_OK),
    Scenario("H mlp BN+dropout0.3 adam",
             lambda: mlp(40, [100, 100], 10, batchnorm=True, dropout=0.3), fit=_fit(),
             tolerated=OVERFIT_OK),
    Scenario("H mlp dropout0.5 momentum0.05",
             lambda: mlp(40, [256, 256], 10, dropout=0.5),
             fit=_fit(optimizer="momentum", lr=0.05), tolerated=OVERFIT_OK),
    Scenario("H mlp 4x relu he adam", lambda: mlp(40, [128, 128, 128, 128], 10), fit=_fit(),
             tolerated=OVERFIT_OK),
    Scenario("H convnet adam", lambda: convnet((1, 40), [16, 32], 10), image=True, fit=_fit()),
    Scenario("H convnet BN momentum0.05", lambda: convnet((1, 40), [16, 32], 10, batchnorm=True),
             image=True, fit=_fit(optimizer="momentum", lr=0.05)),
    Scenario("H digits mlp adam", lambda: mlp(64, [100, 100], 10), data="digits",
             fit=_fit(epochs=20)),
    Scenario("H digits mlp momentum0.1", lambda: mlp(64, [100, 100], 10), data="digits",
             fit=_fit(optimizer="momentum", lr=0.1, epochs=20)),
    Scenario("H mlp adam cosine", lambda: mlp(40, [100, 100], 10),
             fit=_fit(schedule="cosine"), tolerated=OVERFIT_OK),
    Scenario("H mlp momentum0.1 cosine", lambda: mlp(40, [100, 100], 10),
             fit=_fit(optimizer="momentum", lr=0.1, schedule="cosine"), tolerated=OVERFIT_OK),
    Scenario("H mlp pytorch-default adam", lambda: mlp(40, [100, 100], 10, init=None),
             fit=_fit(), tolerated=OVERFIT_OK),
    Scenario("H mlp pytorch-default momentum0.01", lambda: mlp(40, [100, 100], 10, init=None),
             fit=_fit(optimizer="momentum", lr=0.01), tolerated=OVERFIT_OK),
    Scenario("H mlp adamw wd1e-2", lambda: mlp(40, [100, 100], 10),
             fit=_fit(optimizer="adamw", weight_decay=1e-2), tolerated=OVERFIT_OK),
    # ---------------------------------------------------------------- broken: must be caught
    Scenario("B adam lr=1", lambda: mlp(40, [100, 100], 10), fit=_fit(lr=1.0, epochs=10),
             expect=(_g("LR_TOO_HIGH", "NAN_LOSS"),)),
    Scenario("B adam lr=10", lambda: mlp(40, [100, 100], 10), fit=_fit(lr=10.0, epochs=10),
             expect=(_g("LR_TOO_HIGH", "NAN_LOSS"),)),
    Scenario("B sgd lr=1e-5", lambda: mlp(40, [100, 100], 10),
             fit=_fit(optimizer="sgd", lr=1e-5, epochs=10),
             expect=(_g("LR_TOO_LOW", "UPDATE_RATIO_LOW"),)),
    Scenario("B adam lr=0.1", lambda: mlp(40, [100, 100], 10), fit=_fit(lr=0.1, epochs=10),
             expect=(_g("UPDATE_RATIO_HIGH", "LR_TOO_HIGH"),)),
    Scenario("B deep tanh normal std=1",
             lambda: _init(mlp(40, [100] * 8, 10, activation="tanh"), "normal", std=1.0),
             fit=_fit(epochs=10), expect=(_g("SATURATED_ACTIVATIONS"),)),
    Scenario("B relu he bias=-3",
             lambda: _init(mlp(40, [100, 100], 10), "he_normal", bias=-3.0),
             fit=_fit(epochs=10), expect=(_g("DEAD_RELU"),)),
    Scenario("B deep sigmoid normal std=0.01",
             lambda: _init(mlp(40, [100] * 8, 10, activation="sigmoid"), "normal", std=0.01),
             fit=_fit(optimizer="momentum", lr=0.1, epochs=10),
             expect=(_g("VANISHING_GRADIENTS", "LOSS_PLATEAU_AT_START"),)),
    Scenario("B deep relu normal std=0.05 momentum",
             lambda: _init(mlp(40, [100] * 6, 10), "normal", std=0.05),
             fit=_fit(optimizer="momentum", lr=0.1, epochs=15),
             expect=(_g("LOSS_PLATEAU_AT_START"),)),
    Scenario("B sgd lr=1 (oscillating)", lambda: mlp(40, [100, 100], 10),
             fit=_fit(optimizer="sgd", lr=1.0), expect=(_g("LOSS_OSCILLATING"),)),
    Scenario("B tiny mlp [4]", lambda: mlp(40, [4], 10), fit=_fit(),
             expect=(_g("UNDERFITTING"),)),
    Scenario("B linear", lambda: mlp(40, [], 10), fit=_fit(), expect=(_g("UNDERFITTING"),)),
    Scenario("B big mlp 500 examples", lambda: mlp(40, [512, 512], 10), n_train=500,
             fit=_fit(epochs=20), expect=(_g("OVERFITTING"),)),
    Scenario("B eval-mode callback dropout", lambda: mlp(40, [100, 100], 10, dropout=0.3),
             fit=_fit(epochs=5, callbacks=[EvalEachEpoch()]),
             expect=(_g("MODEL_IN_EVAL_MODE"),)),
]


# ------------------------------------------------------------------------------------ measuring


class Recorder(babysit.Callback):
    """Per step: the lr; per epoch end: how many losses LossCurve has judged by then."""

    def __init__(self, curve: LossCurve) -> None:
        self.curve = curve
        self.lrs: list[float] = []
        self.prefixes: list[int] = []

    def on_train_batch_end(self, trainer: Any, loss: float, batch_index: int) -> None:
        self.lrs.append(trainer.lr())

    def on_train_epoch_end(self, trainer: Any, metrics: dict) -> None:
        self.prefixes.append(len(self.curve.losses))


def plateau_raw(losses: list[float], flat: float) -> tuple[float, int, float]:
    """(dev5, n_flat, fall): the numbers plateau_then_drop compares (see the module doc)."""
    means = smooth(losses, 50)
    level = means[0]
    dev5 = max(abs(m - level) / abs(level) for m in means[1:5])
    n = 0
    while n < len(means) and abs(means[n] - level) <= flat * abs(level):
        n += 1
    after = means[n : n + 5]
    fall = (level - min(after)) / abs(level) if after else 0.0
    return dev5, n, fall


def rolling_medians(values: list[float], window: int) -> list[float]:
    return [
        statistics.median(values[i - window : i]) for i in range(window, len(values) + 1)
    ]


def measure(sc: Scenario, seed: int, overrides: dict[str, float]) -> dict[str, Any]:
    t = resolve(overrides)
    torch.manual_seed(seed)
    model = sc.build()
    train, val = dataset(sc.data, sc.n_train)
    if sc.image:
        train, val = as_1d_image(train), as_1d_image(val)
    monitors = default_monitors()
    guard = next(m for m in monitors if isinstance(m, LossGuard))
    curve = next(m for m in monitors if isinstance(m, LossCurve))
    ratio = next(m for m in monitors if isinstance(m, UpdateRatio))
    acts = next(m for m in monitors if isinstance(m, ActivationStats))
    kwargs = dict(sc.fit)
    recorder = Recorder(curve)
    kwargs["callbacks"] = [*kwargs.get("callbacks", []), recorder]
    weight_layers = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv1d)]
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        history = babysit.fit(
            model, train, val=val, monitors=monitors, progress=False, seed=seed,
            run_dir=run_dir, thresholds=overrides, **kwargs,
        )
        seconds = time.perf_counter() - start
        rows = read_metrics(run_dir) or []
    del guard, acts

    out: dict[str, Any] = {"seconds": seconds, "history": history}
    loud = sorted({f.code for f in history.findings if f.severity != "info"})
    info = sorted({f.code for f in history.findings if f.severity == "info"} - set(loud))
    out["fired"] = ", ".join(
        f"{f.code}({f.severity[0]})" for f in _unique(history.findings) if f.code in loud
    )
    out["loud"], out["info"] = loud, info

    # loss curve rules, at each epoch-end judgement (and the final one)
    losses_all = [x for x in curve.losses if math.isfinite(x)]
    prefixes = [p for p in recorder.prefixes if p >= curve.min_steps] or [len(curve.losses)]
    dev5 = math.inf
    best_fall = (0, 0.0)
    zz: float | None = None
    dec = math.inf
    for p in prefixes:
        losses = [x for x in curve.losses[:p] if math.isfinite(x)]
        if len(losses) < curve.min_steps:
            continue
        d, n, f = plateau_raw(losses, t["plateau_flat"])
        dev5 = min(dev5, d)
        if n >= 5 and f > best_fall[1]:
            best_fall = (n, f)
        swing = oscillation(losses)
        if swing is not None:
            zz = max(zz or 0.0, swing["zigzag"])
        k = max(len(losses) // 10, 5)
        s, e = statistics.fmean(losses[:k]), statistics.fmean(losses[-k:])
        dec = min(dec, (s - e) / max(abs(s), 1e-12))
    out["plateau_fn"] = plateau_then_drop(
        losses_all, flat=t["plateau_flat"], drop=t["plateau_drop"]
    ) if len(losses_all) >= 50 else None
    out["dev5"], out["nflat"], out["fall"], out["zz"], out["dec"] = (
        dev5, best_fall[0], best_fall[1], zz, dec
    )
    # a healthy curve's loss at the first epochs (to see plateaus)
    means = smooth(losses_all, 50) if losses_all else []
    out["curve"] = [round(m, 3) for m in means[:12]]

    # update ratio
    meds = ratio.medians
    r5 = rolling_medians(meds, 5)
    out["ur5max"] = max(r5) if r5 else None
    lr0 = recorder.lrs[0] if recorder.lrs else None
    low: list[float] = []
    for i in range(10, len(meds) + 1):
        step = min((i - 1) * ratio.every, len(recorder.lrs) - 1)
        if lr0 is None or recorder.lrs[step] >= 0.1 * lr0:
            low.append(statistics.median(meds[i - 10 : i]))
    out["ur10min"] = min(low) if low else None
    out["ur_median"] = statistics.median(meds) if meds else None

    # activations / gradients from metrics.csv
    series: dict[str, list[float]] = {}
    for r in rows:
        if r["split"] == "train":
            series.setdefault(r["name"], []).append(r["value"])
    dead = [max(v) for k, v in series.items() if k.startswith("dead_fraction/")]
    out["dead"] = max(dead) if dead else None
    sat = [
        max((min(a, b) for a, b in itertools.pairwise(v)), default=v[0] if v else 0.0)
        for k, v in series.items()
        if k.startswith("saturated_fraction/")
    ]
    out["sat"] = max(sat) if sat else None
    names = [n for n in weight_layers if f"grad_norm/{n}" in series]
    if len(names) >= 2:
        first, last = series[f"grad_norm/{names[0]}"], series[f"grad_norm/{names[-1]}"]
        ratios = [a / b for a, b in zip(first, last, strict=False) if b > 0]
        out["gr"] = (min(ratios), max(ratios)) if ratios else None
        out["gfirst_min"] = min(first) if first else None
    else:
        out["gr"], out["gfirst_min"] = None, None

    # generalization
    tr, va = history["train_acc"], history["val_acc"]
    gaps = [a - b for a, b in zip(tr, va, strict=True) if a is not None and b is not None]
    out["gap2"] = max((min(a, b) for a, b in itertools.pairwise(gaps)), default=None)
    out["tr"], out["va"] = (tr[-1] if tr else None), (va[-1] if va else None)
    out["rb"] = history.rollbacks
    out["stop"] = history.stop_reason
    out["lr_end"] = recorder.lrs[-1] if recorder.lrs else None

    # verdict
    if sc.healthy:
        extra = set(loud) - sc.tolerated
        out["verdict"] = "FALSE ALARM" if extra else ("OK*" if loud else "OK")
    else:
        caught = all(group & set(loud) for group in sc.expect)
        out["verdict"] = "OK" if caught else "MISSED"
    return out


def _unique(findings: list) -> list:
    seen, out = set(), []
    for f in findings:
        if (f.code, f.severity) not in seen:
            seen.add((f.code, f.severity))
            out.append(f)
    return out


def _f(x: Any, spec: str = ".2g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, spec)


def evidence(m: dict[str, Any]) -> str:
    parts = [
        f"tr/va {_f(m['tr'], '.2f')}/{_f(m['va'], '.2f')}",
        f"gap2 {_f(m['gap2'], '.2f')}",
        f"ur5max {_f(m['ur5max'])}",
        f"ur10min {_f(m['ur10min'])}",
        f"dev5 {_f(m['dev5'], '.3f')}",
    ]
    if m["nflat"]:
        parts.append(f"nflat {m['nflat']} fall {_f(m['fall'], '.2f')}")
    parts += [f"zz {_f(m['zz'], '.1f')}", f"dec {_f(m['dec'], '.2f')}"]
    if m["dead"] is not None:
        parts.append(f"dead {_f(m['dead'], '.2f')}")
    if m["sat"] is not None:
        parts.append(f"sat {_f(m['sat'], '.2f')}")
    if m["gr"] is not None:
        parts.append(f"gr {_f(m['gr'][0])}..{_f(m['gr'][1])} g1min {_f(m['gfirst_min'])}")
    if m["rb"]:
        parts.append(f"rb {m['rb']} lr_end {_f(m['lr_end'])}")
    if m["stop"]:
        parts.append(f"stop {m['stop']}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--only", action="append", default=[],
                        help="run scenarios whose name contains this (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="threshold override (repeatable)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--raw", action="store_true", help="also print each run's findings")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = {k: float(v) for k, v in (s.split("=", 1) for s in args.set)}
    resolve(overrides)
    chosen = [s for s in SCENARIOS if not args.only or any(o in s.name for o in args.only)]

    names = ("update_ratio_high", "update_ratio_low", "lr_low_ratio_gate", "loss_min_decrease",
             "plateau_flat", "plateau_drop", "loss_oscillation", "overfit_gap", "underfit_gap",
             "underfit_accuracy", "dead_relu_warning", "saturated_fraction",
             "gradient_vanishing_ratio", "gradient_vanishing_abs", "loss_explosion")
    t = resolve(overrides)
    print("thresholds: " + ", ".join(f"{n}={t[n]:g}" for n in names))
    if overrides:
        print("overridden: " + ", ".join(f"{k}={v:g}" for k, v in overrides.items()))
    print(f"torch {torch.__version__}, {args.threads} thread(s)\n")
    print("| scenario | seed | expected | fired (severity) [info] | key evidence | verdict | s |")
    print("|---|---|---|---|---|---|---|")
    bad = 0
    for sc in chosen:
        for seed in seeds:
            m = measure(sc, seed, overrides)
            expected = (
                "(silent" + (", tolerated " + "/".join(sorted(sc.tolerated)) if sc.tolerated
                             else "") + ")"
                if sc.healthy
                else " & ".join("|".join(sorted(g)) for g in sc.expect)
            )
            fired = m["fired"] or "-"
            if m["info"]:
                fired += " [" + ", ".join(m["info"]) + "]"
            bad += m["verdict"] in ("FALSE ALARM", "MISSED")
            print(f"| {sc.name} | {seed} | {expected} | {fired} | {evidence(m)} | "
                  f"{m['verdict']} | {m['seconds']:.1f} |", flush=True)
            if args.raw:
                for f in m["history"].findings:
                    ev = {k: v for k, v in f.evidence.items() if k not in ("grad_norms",)}
                    print(f"    {f.code} {f.severity} step={f.step} layer={f.layer} {ev}")
                print(f"    curve(50 windows, first 12): {m['curve']}")
    print(f"\n{bad} false alarm(s)/miss(es)")
    print("\nrecipes:")
    for sc in chosen:
        print(f"- {sc.name}: {sc.recipe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
