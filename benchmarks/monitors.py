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
import inspect
import itertools
import json
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
from babysit.train.monitors import LossCurve, UpdateRatio, default_monitors
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
    borderline: bool = False  # neither: reported, no verdict
    note: str = ""

    @property
    def healthy(self) -> bool:
        return not self.expect and not self.borderline

    def recipe(self) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in self.fit.items() if k != "callbacks")
        extra = f" (first {self.n_train} training examples)" if self.n_train else ""
        image = ", X reshaped to (N, 1, 40)" if self.image else ""
        return f"{self.note or '?'}; {self.data}{extra}{image}; fit({kw})"


def _fit(**kw: Any) -> dict:
    base = {"optimizer": "adam", "lr": 1e-3, "epochs": 15, "batch_size": 64}
    base.update(kw)
    return base


def _init(model: nn.Module, scheme: str, **kw: Any) -> nn.Module:
    return init_model(model, scheme, **kw)


def _g(*codes: str) -> frozenset[str]:
    return frozenset(codes)


OVERFIT_OK = _g("OVERFITTING")
MLP = "mlp(40, [100, 100], 10)"  # He init (mlp's default)


def H(name: str, build: Callable[[], nn.Module], note: str, **kw: Any) -> Scenario:  # noqa: N802
    kw.setdefault("tolerated", OVERFIT_OK if kw.get("data", "mnist1d") == "mnist1d" else _g())
    return Scenario(name, build, note=note, **kw)


def B(name: str, build: Callable[[], nn.Module], note: str, *expect: frozenset[str],  # noqa: N802
      **kw: Any) -> Scenario:
    return Scenario(name, build, note=note, expect=expect, **kw)


def X(name: str, build: Callable[[], nn.Module], note: str, **kw: Any) -> Scenario:  # noqa: N802
    return Scenario(name, build, note=note, borderline=True, **kw)


SCENARIOS: list[Scenario] = [
    # ---------------------------------------------------------------- healthy: must be silent
    H("H mlp relu he adam1e-3", lambda: mlp(40, [100, 100], 10), MLP, fit=_fit()),
    H("H mlp relu he momentum0.01", lambda: mlp(40, [100, 100], 10), MLP,
      fit=_fit(optimizer="momentum", lr=0.01)),
    H("H mlp relu he momentum0.1", lambda: mlp(40, [100, 100], 10), MLP,
      fit=_fit(optimizer="momentum", lr=0.1)),
    H("H mlp relu he nesterov0.05", lambda: mlp(40, [100, 100], 10), MLP,
      fit=_fit(optimizer="nesterov", lr=0.05)),
    H("H mlp wide512 adam", lambda: mlp(40, [512, 512], 10), "mlp(40, [512, 512], 10)",
      fit=_fit()),
    H("H mlp wide512 momentum0.05", lambda: mlp(40, [512, 512], 10), "mlp(40, [512, 512], 10)",
      fit=_fit(optimizer="momentum", lr=0.05)),
    H("H mlp tanh xavier adam",
      lambda: mlp(40, [100, 100], 10, activation="tanh", init="xavier"),
      "mlp(40, [100, 100], 10, activation='tanh', init='xavier')", fit=_fit()),
    H("H mlp tanh xavier momentum0.05",
      lambda: mlp(40, [100, 100], 10, activation="tanh", init="xavier"),
      "mlp(40, [100, 100], 10, activation='tanh', init='xavier')",
      fit=_fit(optimizer="momentum", lr=0.05)),
    H("H mlp BN+dropout0.3 adam", lambda: mlp(40, [100, 100], 10, batchnorm=True, dropout=0.3),
      "mlp(40, [100, 100], 10, batchnorm=True, dropout=0.3)", fit=_fit()),
    H("H mlp BN momentum0.1", lambda: mlp(40, [100, 100], 10, batchnorm=True),
      "mlp(40, [100, 100], 10, batchnorm=True)", fit=_fit(optimizer="momentum", lr=0.1)),
    H("H mlp dropout0.5 momentum0.05", lambda: mlp(40, [256, 256], 10, dropout=0.5),
      "mlp(40, [256, 256], 10, dropout=0.5)", fit=_fit(optimizer="momentum", lr=0.05)),
    H("H mlp 4x relu he adam", lambda: mlp(40, [128] * 4, 10), "mlp(40, [128] * 4, 10)",
      fit=_fit()),
    H("H mlp 4x relu he momentum0.05", lambda: mlp(40, [128] * 4, 10), "mlp(40, [128] * 4, 10)",
      fit=_fit(optimizer="momentum", lr=0.05)),
    H("H convnet adam", lambda: convnet((1, 40), [16, 32], 10), "convnet((1, 40), [16, 32], 10)",
      image=True, fit=_fit(), tolerated=_g()),
    H("H convnet BN momentum0.05", lambda: convnet((1, 40), [16, 32], 10, batchnorm=True),
      "convnet((1, 40), [16, 32], 10, batchnorm=True)", image=True,
      fit=_fit(optimizer="momentum", lr=0.05), tolerated=_g()),
    H("H digits mlp adam", lambda: mlp(64, [100, 100], 10), "mlp(64, [100, 100], 10)",
      data="digits", fit=_fit(epochs=20)),
    H("H digits mlp momentum0.1", lambda: mlp(64, [100, 100], 10), "mlp(64, [100, 100], 10)",
      data="digits", fit=_fit(optimizer="momentum", lr=0.1, epochs=20)),
    H("H digits mlp BN+dropout0.3 sgd-m0.05",
      lambda: mlp(64, [100, 100], 10, batchnorm=True, dropout=0.3),
      "mlp(64, [100, 100], 10, batchnorm=True, dropout=0.3)", data="digits",
      fit=_fit(optimizer="momentum", lr=0.05, epochs=20)),
    H("H mlp adam cosine", lambda: mlp(40, [100, 100], 10), MLP, fit=_fit(schedule="cosine")),
    H("H mlp momentum0.1 cosine", lambda: mlp(40, [100, 100], 10), MLP,
      fit=_fit(optimizer="momentum", lr=0.1, schedule="cosine")),
    H("H mlp pytorch-default adam", lambda: mlp(40, [100, 100], 10, init=None),
      "mlp(40, [100, 100], 10, init=None)", fit=_fit()),
    H("H mlp pytorch-default momentum0.01", lambda: mlp(40, [100, 100], 10, init=None),
      "mlp(40, [100, 100], 10, init=None)", fit=_fit(optimizer="momentum", lr=0.01)),
    H("H mlp adamw wd1e-2", lambda: mlp(40, [100, 100], 10), MLP,
      fit=_fit(optimizer="adamw", weight_decay=1e-2)),
    # ---------------------------------------------------------------- broken: must be caught
    B("B adam lr=1", lambda: mlp(40, [100, 100], 10), MLP, _g("LR_TOO_HIGH", "NAN_LOSS"),
      fit=_fit(lr=1.0, epochs=10)),
    B("B adam lr=10", lambda: mlp(40, [100, 100], 10), MLP, _g("LR_TOO_HIGH", "NAN_LOSS"),
      fit=_fit(lr=10.0, epochs=10)),
    B("B sgd lr=1e-5", lambda: mlp(40, [100, 100], 10), MLP, _g("LR_TOO_LOW", "UPDATE_RATIO_LOW"),
      fit=_fit(optimizer="sgd", lr=1e-5, epochs=10)),
    B("B sgd lr=1e-4", lambda: mlp(40, [100, 100], 10), MLP, _g("LR_TOO_LOW", "UPDATE_RATIO_LOW"),
      fit=_fit(optimizer="sgd", lr=1e-4, epochs=10)),
    B("B adam lr=0.1", lambda: mlp(40, [100, 100], 10), MLP,
      _g("UPDATE_RATIO_HIGH", "LR_TOO_HIGH"), fit=_fit(lr=0.1, epochs=10)),
    B("B momentum lr=0.5", lambda: mlp(40, [100, 100], 10), MLP,
      _g("UPDATE_RATIO_HIGH", "LR_TOO_HIGH", "LOSS_OSCILLATING"),
      fit=_fit(optimizer="momentum", lr=0.5, epochs=10)),
    B("B deep tanh normal std=1",
      lambda: _init(mlp(40, [100] * 8, 10, activation="tanh"), "normal", std=1.0),
      "init_model(mlp(40, [100] * 8, 10, activation='tanh'), 'normal', std=1.0)",
      _g("SATURATED_ACTIVATIONS"), fit=_fit(epochs=10)),
    B("B relu he bias=-3", lambda: _init(mlp(40, [100, 100], 10), "he_normal", bias=-3.0),
      "init_model(mlp(40, [100, 100], 10), 'he_normal', bias=-3.0)", _g("DEAD_RELU"),
      fit=_fit(epochs=10)),
    B("B deep sigmoid normal std=0.01",
      lambda: _init(mlp(40, [100] * 8, 10, activation="sigmoid"), "normal", std=0.01),
      "init_model(mlp(40, [100] * 8, 10, activation='sigmoid'), 'normal', std=0.01)",
      _g("VANISHING_GRADIENTS", "LOSS_PLATEAU_AT_START"),
      fit=_fit(optimizer="momentum", lr=0.1, epochs=10)),
    B("B digits deep relu std=0.05 plateau",
      lambda: _init(mlp(64, [100] * 4, 10), "normal", std=0.05),
      "init_model(mlp(64, [100] * 4, 10), 'normal', std=0.05)", _g("LOSS_PLATEAU_AT_START"),
      data="digits", fit=_fit(optimizer="momentum", lr=0.05, epochs=20)),
    B("B mnist1d deep relu std=0.05 plateau",
      lambda: _init(mlp(40, [100] * 6, 10), "normal", std=0.05),
      "init_model(mlp(40, [100] * 6, 10), 'normal', std=0.05)", _g("LOSS_PLATEAU_AT_START"),
      fit=_fit(optimizer="momentum", lr=0.1, epochs=15)),
    B("B momentum lr=0.3 (oscillating)", lambda: mlp(40, [100, 100], 10), MLP,
      _g("LOSS_OSCILLATING"), fit=_fit(optimizer="momentum", lr=0.3)),
    B("B sgd lr=2 (oscillating)", lambda: mlp(40, [100, 100], 10), MLP,
      _g("LOSS_OSCILLATING", "LR_TOO_HIGH"), fit=_fit(optimizer="sgd", lr=2.0)),
    B("B tiny mlp [4]", lambda: mlp(40, [4], 10), "mlp(40, [4], 10)", _g("UNDERFITTING"),
      fit=_fit()),
    B("B linear", lambda: mlp(40, [], 10), "mlp(40, [], 10)", _g("UNDERFITTING"), fit=_fit()),
    B("B big mlp 500 examples", lambda: mlp(40, [512, 512], 10), "mlp(40, [512, 512], 10)",
      _g("OVERFITTING"), n_train=500, fit=_fit(epochs=20)),
    B("B eval-mode callback dropout", lambda: mlp(40, [100, 100], 10, dropout=0.3),
      "mlp(40, [100, 100], 10, dropout=0.3) + callback: model.eval() at each epoch start",
      _g("MODEL_IN_EVAL_MODE"), fit=_fit(epochs=5, callbacks=[EvalEachEpoch()])),
    # ---------------------------------------------------------------- borderline: no verdict
    X("X sgd lr=1", lambda: mlp(40, [100, 100], 10), MLP, fit=_fit(optimizer="sgd", lr=1.0)),
    X("X momentum lr=0.2", lambda: mlp(40, [100, 100], 10), MLP,
      fit=_fit(optimizer="momentum", lr=0.2)),
    X("X adam lr=0.03", lambda: mlp(40, [100, 100], 10), MLP, fit=_fit(lr=0.03)),
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


def _kwargs(fn: Callable, **candidates: Any) -> dict[str, Any]:
    """The keyword arguments of ``candidates`` that ``fn`` accepts (the rules' signatures move)."""
    accepted = inspect.signature(fn).parameters
    return {k: v for k, v in candidates.items() if k in accepted and v is not None}


def run(sc: Scenario, seed: int, overrides: dict[str, float]) -> dict[str, Any]:
    """Train one scenario; the raw series the rules read, plus the history."""
    torch.manual_seed(seed)
    model = sc.build()
    train, val = dataset(sc.data, sc.n_train)
    if sc.image:
        train, val = as_1d_image(train), as_1d_image(val)
    monitors = default_monitors()  # == monitors="default", kept to read their state
    curve = next(m for m in monitors if isinstance(m, LossCurve))
    ratio = next(m for m in monitors if isinstance(m, UpdateRatio))
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
    series: dict[str, list[float]] = {}
    for r in rows:
        if r["split"] == "train" and r["name"] != "loss":
            series.setdefault(r["name"], []).append(r["value"])
    return {
        "scenario": sc.name,
        "seed": seed,
        "seconds": seconds,
        "history": history,
        "findings": [
            {"code": f.code, "severity": f.severity, "step": f.step, "layer": f.layer,
             "evidence": {k: v for k, v in f.evidence.items() if k != "grad_norms"}}
            for f in history.findings
        ],
        "losses": list(curve.losses),
        "min_steps": curve.min_steps,
        "prefixes": list(recorder.prefixes),
        "lrs": list(recorder.lrs),
        "ratio_every": ratio.every,
        "medians": list(ratio.medians),
        "series": series,
        "weight_layers": [n for n in weight_layers if f"grad_norm/{n}" in series],
        "epochs": {k: history[k] for k in ("train_loss", "train_acc", "val_acc")},
        "rollbacks": history.rollbacks,
        "stop": history.stop_reason,
    }


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
    return [statistics.median(values[i - window : i]) for i in range(window, len(values) + 1)]


def numbers(r: dict[str, Any], t: dict[str, float]) -> dict[str, Any]:
    """What each rule computes, worst case over the points where it is judged."""
    out: dict[str, Any] = {}
    losses_all = [x for x in r["losses"] if math.isfinite(x)]
    prefixes = [p for p in r["prefixes"] if p >= r["min_steps"]] or [len(r["losses"])]
    dev5, best, zz, rise, tail, dec = math.inf, (0, 0.0), None, None, None, math.inf
    for p in [*prefixes, len(r["losses"])]:
        losses = [x for x in r["losses"][:p] if math.isfinite(x)]
        if len(losses) < r["min_steps"]:
            continue
        d, n, f = plateau_raw(losses, t["plateau_flat"])
        dev5 = min(dev5, d)
        if n >= 5 and f > best[1]:
            best = (n, f)
        swing = oscillation(losses, **_kwargs(oscillation, min_rise=0.0))
        if swing is not None:
            start = swing.get("start_loss") or swing.get("level") or 1.0
            means = smooth(losses, swing["windows"] * 2)
            tail_mean = statistics.fmean(means[len(means) // 2 :]) / abs(means[0])
            if zz is None or swing["zigzag"] > zz:
                zz, rise, tail = swing["zigzag"], swing["rise_total"] / start, tail_mean
        k = max(len(losses) // 10, 5)
        s, e = statistics.fmean(losses[:k]), statistics.fmean(losses[-k:])
        dec = min(dec, (s - e) / max(abs(s), 1e-12))
    out["plateau_fn"] = (
        plateau_then_drop(losses_all, flat=t["plateau_flat"], drop=t["plateau_drop"])
        if len(losses_all) >= 50 else None
    )
    out.update(dev5=dev5, nflat=best[0], fall=best[1], zz=zz, rise=rise, tail=tail, dec=dec)

    meds, lrs = r["medians"], r["lrs"]
    r5 = rolling_medians(meds, 5)
    out["ur5max"] = max(r5) if r5 else None
    low = [
        statistics.median(meds[i - 10 : i])
        for i in range(10, len(meds) + 1)
        if not lrs or lrs[min((i - 1) * r["ratio_every"], len(lrs) - 1)] >= 0.1 * lrs[0]
    ]
    out["ur10min"] = min(low) if low else None

    series = r["series"]
    dead = [max(v) for k, v in series.items() if k.startswith("dead_fraction/")]
    out["dead"] = max(dead) if dead else None
    sat = [
        max((min(a, b) for a, b in itertools.pairwise(v)), default=v[0] if v else 0.0)
        for k, v in series.items()
        if k.startswith("saturated_fraction/")
    ]
    out["sat"] = max(sat) if sat else None
    names = r["weight_layers"]
    out["gr"] = out["g1min"] = None
    if len(names) >= 2:
        first, last = series[f"grad_norm/{names[0]}"], series[f"grad_norm/{names[-1]}"]
        ratios = [a / b for a, b in zip(first, last, strict=False) if b > 0]
        if ratios:
            out["gr"], out["g1min"] = (min(ratios), max(ratios)), min(first)

    tr, va = r["epochs"]["train_acc"], r["epochs"]["val_acc"]
    gaps = [a - b for a, b in zip(tr, va, strict=True) if a is not None and b is not None]
    out["gap2"] = max((min(a, b) for a, b in itertools.pairwise(gaps)), default=None)
    out["tr"], out["va"] = (tr[-1] if tr else None), (va[-1] if va else None)
    out["rb"], out["stop"] = r["rollbacks"], r["stop"]
    out["lr_end"] = lrs[-1] if lrs else None
    return out


def verdict(sc: Scenario, findings: list[dict]) -> tuple[str, list[str], list[str]]:
    loud = sorted({f["code"] for f in findings if f["severity"] != "info"})
    info = sorted({f["code"] for f in findings if f["severity"] == "info"} - set(loud))
    if sc.borderline:
        return "n/a", loud, info
    if sc.healthy:
        extra = set(loud) - sc.tolerated
        return ("FALSE ALARM" if extra else ("OK*" if loud else "OK")), loud, info
    caught = all(group & set(loud) for group in sc.expect)
    return ("OK" if caught else "MISSED"), loud, info


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
    parts.append(f"zz {_f(m['zz'], '.1f')}")
    if m["zz"] is not None:
        parts[-1] += f" rise {_f(m['rise'], '.2f')} tail {_f(m['tail'], '.2f')}"
    parts.append(f"dec {_f(m['dec'], '.2f')}")
    if m["dead"] is not None:
        parts.append(f"dead {_f(m['dead'], '.2f')}")
    if m["sat"] is not None:
        parts.append(f"sat {_f(m['sat'], '.2f')}")
    if m["gr"] is not None:
        parts.append(f"gr {_f(m['gr'][0])}..{_f(m['gr'][1])} g1min {_f(m['g1min'])}")
    if m["rb"]:
        parts.append(f"rb {m['rb']} lr_end {_f(m['lr_end'])}")
    if m["stop"]:
        parts.append(f"stop {m['stop']}")
    return "; ".join(parts)


def _fired(findings: list[dict], loud: list[str]) -> str:
    seen: list[str] = []
    for f in findings:
        label = f"{f['code']}({f['severity'][0]})"
        if f["code"] in loud and label not in seen:
            seen.append(label)
    return ", ".join(seen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--only", action="append", default=[],
                        help="run scenarios whose name contains this (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="threshold override (repeatable)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--raw", action="store_true", help="also print each run's findings")
    parser.add_argument("--dump", metavar="FILE", help="write every run's raw series as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = {k: float(v) for k, v in (s.split("=", 1) for s in args.set)}
    t = resolve(overrides)
    chosen = [s for s in SCENARIOS if not args.only or any(o in s.name for o in args.only)]

    names = [n for n in (
        "loss_explosion", "update_ratio_high", "update_ratio_low", "lr_low_ratio_gate",
        "loss_min_decrease", "plateau_flat", "plateau_drop", "loss_oscillation",
        "oscillation_rise", "overfit_gap", "underfit_gap", "underfit_accuracy",
        "dead_relu_warning", "dead_relu_info", "saturated_fraction", "gradient_vanishing_ratio",
        "gradient_vanishing_abs", "gradient_exploding_ratio") if n in t]
    print("thresholds: " + ", ".join(f"{n}={t[n]:g}" for n in names))
    if overrides:
        print("overridden: " + ", ".join(f"{k}={v:g}" for k, v in overrides.items()))
    print(f"torch {torch.__version__}, {args.threads} thread(s)\n")
    print("| scenario | seed | expected | fired (severity) [info] | key evidence | verdict | s |")
    print("|---|---|---|---|---|---|---|")
    bad, dumped = 0, []
    for sc in chosen:
        for seed in seeds:
            r = run(sc, seed, overrides)
            m = numbers(r, t)
            word, loud, info = verdict(sc, r["findings"])
            if sc.borderline:
                expected = "(borderline)"
            elif sc.healthy:
                expected = "(silent" + (", tol. " + "/".join(sorted(sc.tolerated))
                                        if sc.tolerated else "") + ")"
            else:
                expected = " & ".join("|".join(sorted(g)) for g in sc.expect)
            fired = _fired(r["findings"], loud) or "-"
            if info:
                fired += " [" + ", ".join(info) + "]"
            bad += word in ("FALSE ALARM", "MISSED")
            print(f"| {sc.name} | {seed} | {expected} | {fired} | {evidence(m)} | "
                  f"{word} | {r['seconds']:.1f} |", flush=True)
            if args.raw:
                for f in r["findings"]:
                    print(f"    {f['code']} {f['severity']} step={f['step']} "
                          f"layer={f['layer']} {f['evidence']}")
                means = smooth([x for x in r["losses"] if math.isfinite(x)], 50)
                print(f"    loss, 50 window means: {[round(x, 3) for x in means]}")
            if args.dump:
                r.pop("history")
                dumped.append({**r, "healthy": sc.healthy, "borderline": sc.borderline,
                               "verdict": word, "numbers": m})
    print(f"\n{bad} false alarm(s)/miss(es)")
    print("\nrecipes (torch.manual_seed(seed) before building the model; fit(seed=seed)):")
    for sc in chosen:
        print(f"- {sc.name}: {sc.recipe()}")
    if args.dump:
        with open(args.dump, "w", encoding="utf-8") as handle:
            json.dump(dumped, handle, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
