"""Evaluate the training monitors on a scenario matrix: healthy runs silent, broken runs caught.

    python benchmarks/monitors.py [--seeds 0,1,2] [--only NAME ...] [--set name=value ...]
                                  [--summary] [--raw] [--dump runs.json] [--threads 1]
                                  [--write-docs]

Every scenario trains a small model on MNIST-1D or digits (standardized, 3-40 epochs, batch 64,
each run 0-6 s on one CPU thread) with ``babysit.fit(..., monitors=default_monitors())`` (the
same monitors as ``monitors="default"``, kept so their state can be read), a temporary
``run_dir`` and the product's thresholds (``babysit.thresholds``; ``--set`` overrides them
through ``fit(thresholds=...)``, as a user would). Nothing here re-implements a rule: the
verdicts come from the findings ``fit`` returned, the evidence from the monitors' own state and
rule functions. The table gives, per scenario and seed, the codes expected, the warning/error
codes that fired (info-only codes in brackets), the evidence, and a verdict:

- healthy (``H``): ``OK`` when no warning/error fired, ``OK*`` when only a tolerated code fired
  (MNIST-1D MLPs genuinely overfit: OVERFITTING is tolerated there), else ``FALSE ALARM``;
- broken (``B``): ``OK`` when each expected group (``A or B``: either) has a warning/error code,
  else ``MISSED``; extra warning codes are listed but do not change the verdict;
- borderline (``X``): reported, no verdict.

Evidence, at the end of training (the monitors also judge at earlier epoch ends):

- ``tr/va``: last epoch's running train accuracy (dropout on) and val accuracy; ``eval-mode
  tr``: ``Generalization.eval_acc``, the train accuracy ``fit`` measured in eval mode, which
  UNDERFITTING reads; ``gap2``: largest train-val gap held for two epochs (OVERFITTING:
  > overfit_gap);
- ``ur peak 1st 10 steps``: ``UpdateRatio.early_peak`` (UPDATE_RATIO_HIGH: > update_ratio_high);
  ``last 10``: median of the last 10 sampled medians (UPDATE_RATIO_LOW: < update_ratio_low);
- ``flat``/``fall``: ``plateau_then_drop(LossCurve.losses, flat=plateau_flat, drop=0)``: the
  plateau's share of the run when it is long enough to count, and the fall after it
  (LOSS_PLATEAU_AT_START: fall >= plateau_drop);
- ``zz``/``rise``: ``oscillation(LossCurve.losses, min_rise=0)``: zigzag and rises over the start
  loss (LOSS_OSCILLATING: rise >= oscillation_rise and zz > loss_oscillation);
- ``dec``: ``LossCurve.decrease()`` (LR_TOO_LOW: < train_loss_min_decrease while the update
  ratio < lr_low_ratio_gate);
- ``dead``: the largest dead fraction DEAD_RELU reported (its sliding window of >= 256 examples;
  absent below dead_relu_info); ``sat``: largest saturated fraction of any layer held for two
  consecutive samples; ``gr``: min..max ||g_first|| / ||g_last||, ``g1min``: smallest
  ||g_first||;
- ``rb``: rollbacks, ``lr_end``: the lr of the last epoch, ``stop``: why training stopped early.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
from torch import nn

import babysit
from _common import add_write_docs_arg, emit
from babysit.data import Standardize, load
from babysit.nn import convnet, init_model, mlp
from babysit.runs import read_metrics
from babysit.thresholds import resolve
from babysit.train.monitors import Generalization, LossCurve, UpdateRatio, default_monitors
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


def H(name: str, build: Callable[[], nn.Module], note: str, **kw: Any) -> Scenario:
    kw.setdefault("tolerated", OVERFIT_OK if kw.get("data", "mnist1d") == "mnist1d" else _g())
    return Scenario(name, build, note=note, **kw)


def B(
    name: str,
    build: Callable[[], nn.Module],
    note: str,
    *expect: frozenset[str],
    **kw: Any,
) -> Scenario:
    return Scenario(name, build, note=note, expect=expect, **kw)


def X(name: str, build: Callable[[], nn.Module], note: str, **kw: Any) -> Scenario:
    return Scenario(name, build, note=note, borderline=True, **kw)


SCENARIOS: list[Scenario] = [
    # ---------------------------------------------------------------- healthy: must be silent
    H("H mlp relu he adam1e-3", lambda: mlp(40, [100, 100], 10), MLP, fit=_fit()),
    H(
        "H mlp relu he momentum0.01",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        fit=_fit(optimizer="momentum", lr=0.01),
    ),
    H(
        "H mlp relu he momentum0.1",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        fit=_fit(optimizer="momentum", lr=0.1),
    ),
    H(
        "H mlp relu he nesterov0.05",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        fit=_fit(optimizer="nesterov", lr=0.05),
    ),
    H("H mlp wide512 adam", lambda: mlp(40, [512, 512], 10), "mlp(40, [512, 512], 10)", fit=_fit()),
    H(
        "H mlp wide512 momentum0.05",
        lambda: mlp(40, [512, 512], 10),
        "mlp(40, [512, 512], 10)",
        fit=_fit(optimizer="momentum", lr=0.05),
    ),
    H(
        "H mlp tanh xavier adam",
        lambda: mlp(40, [100, 100], 10, activation="tanh", init="xavier"),
        "mlp(40, [100, 100], 10, activation='tanh', init='xavier')",
        fit=_fit(),
    ),
    H(
        "H mlp tanh xavier momentum0.05",
        lambda: mlp(40, [100, 100], 10, activation="tanh", init="xavier"),
        "mlp(40, [100, 100], 10, activation='tanh', init='xavier')",
        fit=_fit(optimizer="momentum", lr=0.05),
    ),
    H(
        "H mlp BN+dropout0.3 adam",
        lambda: mlp(40, [100, 100], 10, batchnorm=True, dropout=0.3),
        "mlp(40, [100, 100], 10, batchnorm=True, dropout=0.3)",
        fit=_fit(),
    ),
    H(
        "H mlp BN momentum0.1",
        lambda: mlp(40, [100, 100], 10, batchnorm=True),
        "mlp(40, [100, 100], 10, batchnorm=True)",
        fit=_fit(optimizer="momentum", lr=0.1),
    ),
    H(
        "H mlp dropout0.5 momentum0.05",
        lambda: mlp(40, [256, 256], 10, dropout=0.5),
        "mlp(40, [256, 256], 10, dropout=0.5)",
        fit=_fit(optimizer="momentum", lr=0.05),
    ),
    H(
        "H mlp 4x relu he adam",
        lambda: mlp(40, [128] * 4, 10),
        "mlp(40, [128] * 4, 10)",
        fit=_fit(),
    ),
    H(
        "H mlp 4x relu he momentum0.05",
        lambda: mlp(40, [128] * 4, 10),
        "mlp(40, [128] * 4, 10)",
        fit=_fit(optimizer="momentum", lr=0.05),
    ),
    H(
        "H convnet adam",
        lambda: convnet((1, 40), [16, 32], 10),
        "convnet((1, 40), [16, 32], 10)",
        image=True,
        fit=_fit(),
        tolerated=_g(),
    ),
    H(
        "H convnet BN momentum0.05",
        lambda: convnet((1, 40), [16, 32], 10, batchnorm=True),
        "convnet((1, 40), [16, 32], 10, batchnorm=True)",
        image=True,
        fit=_fit(optimizer="momentum", lr=0.05),
        tolerated=_g(),
    ),
    H(
        "H digits mlp adam",
        lambda: mlp(64, [100, 100], 10),
        "mlp(64, [100, 100], 10)",
        data="digits",
        fit=_fit(epochs=20),
    ),
    H(
        "H digits mlp momentum0.1",
        lambda: mlp(64, [100, 100], 10),
        "mlp(64, [100, 100], 10)",
        data="digits",
        fit=_fit(optimizer="momentum", lr=0.1, epochs=20),
    ),
    H(
        "H digits mlp BN+dropout0.3 sgd-m0.05",
        lambda: mlp(64, [100, 100], 10, batchnorm=True, dropout=0.3),
        "mlp(64, [100, 100], 10, batchnorm=True, dropout=0.3)",
        data="digits",
        fit=_fit(optimizer="momentum", lr=0.05, epochs=20),
    ),
    H("H mlp adam cosine", lambda: mlp(40, [100, 100], 10), MLP, fit=_fit(schedule="cosine")),
    H(
        "H mlp momentum0.1 cosine",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        fit=_fit(optimizer="momentum", lr=0.1, schedule="cosine"),
    ),
    H(
        "H mlp pytorch-default adam",
        lambda: mlp(40, [100, 100], 10, init=None),
        "mlp(40, [100, 100], 10, init=None)",
        fit=_fit(),
    ),
    H(
        "H mlp pytorch-default momentum0.01",
        lambda: mlp(40, [100, 100], 10, init=None),
        "mlp(40, [100, 100], 10, init=None)",
        fit=_fit(optimizer="momentum", lr=0.01),
    ),
    H(
        "H mlp adamw wd1e-2",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        fit=_fit(optimizer="adamw", weight_decay=1e-2),
    ),
    H(
        "H mlp narrow [16] momentum0.1",
        lambda: mlp(40, [16], 10),
        "mlp(40, [16], 10)",
        fit=_fit(optimizer="momentum", lr=0.1),
    ),
    H(
        "H digits mlp narrow [32] momentum0.1",
        lambda: mlp(64, [32], 10),
        "mlp(64, [32], 10)",
        data="digits",
        fit=_fit(optimizer="momentum", lr=0.1, epochs=20),
    ),
    H(
        "H digits wide512 momentum0.1 converged",
        lambda: mlp(64, [512, 512], 10),
        "mlp(64, [512, 512], 10), trained to 100% train acc",
        data="digits",
        fit=_fit(optimizer="momentum", lr=0.1, epochs=40),
    ),
    # ---------------------------------------------------------------- broken: must be caught
    B(
        "B adam lr=1",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        _g("LR_TOO_HIGH", "NAN_LOSS"),
        fit=_fit(lr=1.0, epochs=10),
    ),
    B(
        "B adam lr=10",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        _g("LR_TOO_HIGH", "NAN_LOSS"),
        fit=_fit(lr=10.0, epochs=10),
    ),
    B(
        "B sgd lr=1e-5",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        _g("LR_TOO_LOW", "UPDATE_RATIO_LOW"),
        fit=_fit(optimizer="sgd", lr=1e-5, epochs=10),
    ),
    B(
        "B sgd lr=1e-4",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        _g("LR_TOO_LOW", "UPDATE_RATIO_LOW"),
        fit=_fit(optimizer="sgd", lr=1e-4, epochs=10),
    ),
    B(
        "B adam lr=0.1",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        _g("UPDATE_RATIO_HIGH", "LR_TOO_HIGH"),
        fit=_fit(lr=0.1, epochs=10),
    ),
    B(
        "B sgd lr=1e20 (NaN)",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        _g("NAN_LOSS"),
        fit=_fit(optimizer="sgd", lr=1e20, epochs=3),
    ),
    B(
        "B momentum lr=0.5 (kills ReLUs)",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        _g("DEAD_RELU", "UPDATE_RATIO_HIGH", "LR_TOO_HIGH", "LOSS_OSCILLATING"),
        fit=_fit(optimizer="momentum", lr=0.5, epochs=10),
    ),
    B(
        "B deep tanh normal std=1",
        lambda: _init(mlp(40, [100] * 8, 10, activation="tanh"), "normal", std=1.0),
        "init_model(mlp(40, [100] * 8, 10, activation='tanh'), 'normal', std=1.0)",
        _g("SATURATED_ACTIVATIONS"),
        fit=_fit(epochs=10),
    ),
    B(
        "B relu he bias=-3",
        lambda: _init(mlp(40, [100, 100], 10), "he_normal", bias=-3.0),
        "init_model(mlp(40, [100, 100], 10), 'he_normal', bias=-3.0)",
        _g("DEAD_RELU"),
        fit=_fit(epochs=10),
    ),
    B(
        "B deep sigmoid normal std=0.01",
        lambda: _init(mlp(40, [100] * 8, 10, activation="sigmoid"), "normal", std=0.01),
        "init_model(mlp(40, [100] * 8, 10, activation='sigmoid'), 'normal', std=0.01)",
        _g("VANISHING_GRADIENTS", "LOSS_PLATEAU_AT_START"),
        fit=_fit(optimizer="momentum", lr=0.1, epochs=10),
    ),
    B(
        "B digits deep relu std=0.05 plateau",
        lambda: _init(mlp(64, [100] * 4, 10), "normal", std=0.05),
        "init_model(mlp(64, [100] * 4, 10), 'normal', std=0.05)",
        _g("LOSS_PLATEAU_AT_START"),
        data="digits",
        fit=_fit(optimizer="momentum", lr=0.05, epochs=20),
    ),
    B(
        "B mnist1d deep relu std=0.05 plateau",
        lambda: _init(mlp(40, [100] * 6, 10), "normal", std=0.05),
        "init_model(mlp(40, [100] * 6, 10), 'normal', std=0.05)",
        _g("LOSS_PLATEAU_AT_START"),
        fit=_fit(optimizer="momentum", lr=0.1, epochs=15),
    ),
    B(
        "B digits adam lr=0.03 (oscillating)",
        lambda: mlp(64, [100, 100], 10),
        "mlp(64, [100, 100], 10)",
        _g("LOSS_OSCILLATING"),
        data="digits",
        fit=_fit(lr=0.03, epochs=20),
    ),
    B(
        "B momentum lr=0.3 (stuck, swinging)",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        _g("LOSS_OSCILLATING", "UPDATE_RATIO_HIGH", "DEAD_RELU", "LR_TOO_HIGH"),
        fit=_fit(optimizer="momentum", lr=0.3),
    ),
    B(
        "B sgd lr=2 (oscillating)",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        _g("LOSS_OSCILLATING", "LR_TOO_HIGH", "UPDATE_RATIO_HIGH", "DEAD_RELU"),
        fit=_fit(optimizer="sgd", lr=2.0),
    ),
    B(
        "B tiny mlp [4]",
        lambda: mlp(40, [4], 10),
        "mlp(40, [4], 10)",
        _g("UNDERFITTING"),
        fit=_fit(),
    ),
    B("B linear", lambda: mlp(40, [], 10), "mlp(40, [], 10)", _g("UNDERFITTING"), fit=_fit()),
    B(
        "B big mlp 500 examples",
        lambda: mlp(40, [512, 512], 10),
        "mlp(40, [512, 512], 10)",
        _g("OVERFITTING"),
        n_train=500,
        fit=_fit(epochs=20),
    ),
    B(
        "B eval-mode callback dropout",
        lambda: mlp(40, [100, 100], 10, dropout=0.3),
        "mlp(40, [100, 100], 10, dropout=0.3) + callback: model.eval() at each epoch start",
        _g("MODEL_IN_EVAL_MODE"),
        fit=_fit(epochs=5, callbacks=[EvalEachEpoch()]),
    ),
    # ---------------------------------------------------------------- borderline: no verdict
    X("X sgd lr=1", lambda: mlp(40, [100, 100], 10), MLP, fit=_fit(optimizer="sgd", lr=1.0)),
    X(
        "X momentum lr=0.2",
        lambda: mlp(40, [100, 100], 10),
        MLP,
        fit=_fit(optimizer="momentum", lr=0.2),
    ),
    X("X adam lr=0.03", lambda: mlp(40, [100, 100], 10), MLP, fit=_fit(lr=0.03)),
    X(
        "X digits sgd lr=1",
        lambda: mlp(64, [100, 100], 10),
        "mlp(64, [100, 100], 10)",
        data="digits",
        fit=_fit(optimizer="sgd", lr=1.0, epochs=20),
    ),
]


# ------------------------------------------------------------------------------------ measuring


def run(sc: Scenario, seed: int, overrides: dict[str, float]) -> dict[str, Any]:
    """Train one scenario under the product's monitors; their findings and their own state."""
    torch.manual_seed(seed)
    model = sc.build()
    train, val = dataset(sc.data, sc.n_train)
    if sc.image:
        train, val = as_1d_image(train), as_1d_image(val)
    monitors = default_monitors()  # == monitors="default", kept to read their state
    curve = next(m for m in monitors if isinstance(m, LossCurve))
    ratio = next(m for m in monitors if isinstance(m, UpdateRatio))
    general = next(m for m in monitors if isinstance(m, Generalization))
    weight_layers = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv1d)]
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        history = babysit.fit(
            model,
            train,
            val=val,
            monitors=monitors,
            progress=False,
            seed=seed,
            run_dir=run_dir,
            thresholds=overrides,
            **sc.fit,
        )
        seconds = time.perf_counter() - start
        rows = read_metrics(run_dir) or []
    series: dict[str, list[float]] = {}
    for r in rows:
        if r["split"] == "train" and r["name"] != "loss":
            series.setdefault(r["name"], []).append(r["value"])
    lrs = [row["lr"] for row in history.epochs if row.get("lr") is not None]
    return {
        "scenario": sc.name,
        "seed": seed,
        "seconds": seconds,
        "findings": [
            {
                "code": f.code,
                "severity": f.severity,
                "step": f.step,
                "layer": f.layer,
                "evidence": {k: v for k, v in f.evidence.items() if k != "grad_norms"},
            }
            for f in history.findings
        ],
        "losses": list(curve.losses),
        "decrease": curve.decrease(),
        "early_peak": ratio.early_peak,
        "medians": list(ratio.medians),
        "eval_train_acc": general.eval_acc,
        "gaps": [(tr, va) for _, tr, va in general.gaps],
        "series": series,
        "weight_layers": [n for n in weight_layers if f"grad_norm/{n}" in series],
        "lr_end": lrs[-1] if lrs else None,
        "rollbacks": history.rollbacks,
        "stop": history.stop_reason,
    }


def numbers(r: dict[str, Any], t: dict[str, float]) -> dict[str, Any]:
    """The numbers the rules act on, read from the monitors' own state at the end of training
    and computed with the monitors' own functions (see the module docstring)."""
    out: dict[str, Any] = {}
    losses = r["losses"]
    # plateau_then_drop with drop=0 returns the plateau whenever it is long enough to count;
    # the rule then needs its fall >= plateau_drop.
    plateau = plateau_then_drop(losses, flat=t["plateau_flat"], drop=0.0) if losses else None
    out["flat"] = plateau["flat_fraction"] if plateau else None
    out["fall"] = plateau["drop"] if plateau else None
    swing = oscillation(losses, min_rise=0.0) if losses else None
    out["zz"] = swing["zigzag"] if swing else None
    out["rise"] = swing["rise_total"] / swing["start_loss"] if swing else None
    out["dec"] = r["decrease"]
    out["ur_first"] = r["early_peak"]
    meds = r["medians"]
    out["ur_last"] = statistics.median(meds[-10:]) if meds else None
    dead = [
        f["evidence"]["dead_fraction"]
        for f in r["findings"]
        if f["code"] == "DEAD_RELU" and "dead_fraction" in f["evidence"]
    ]
    out["dead"] = max(dead) if dead else None  # None: below dead_relu_info everywhere
    series = r["series"]
    sat = [  # SATURATED_ACTIVATIONS needs two consecutive samples over the limit
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
    gaps = [tr - va for tr, va in r["gaps"]]
    out["gap2"] = max((min(a, b) for a, b in itertools.pairwise(gaps)), default=None)
    out["tr"], out["va"] = r["gaps"][-1] if r["gaps"] else (None, None)
    out["tr_eval"] = r["eval_train_acc"]
    out["rb"], out["stop"], out["lr_end"] = r["rollbacks"], r["stop"], r["lr_end"]
    return out


def verdict(sc: Scenario, findings: list[dict]) -> tuple[str, list[str], list[str]]:
    loud = sorted({f["code"] for f in findings if f["severity"] != "info"})
    info = sorted({f["code"] for f in findings if f["severity"] == "info"} - set(loud))
    return judge(sc, loud), loud, info


def judge(sc: Scenario, loud: list[str] | set[str]) -> str:
    if sc.borderline:
        return "n/a"
    if sc.healthy:
        extra = set(loud) - sc.tolerated
        return "FALSE ALARM" if extra else ("OK*" if loud else "OK")
    caught = all(group & set(loud) for group in sc.expect)
    return "OK" if caught else "MISSED"


def _f(x: Any, spec: str = ".2g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, spec)


def evidence(m: dict[str, Any]) -> str:
    parts = [
        f"tr/va {_f(m['tr'], '.2f')}/{_f(m['va'], '.2f')} (eval-mode tr {_f(m['tr_eval'], '.2f')})",
        f"gap2 {_f(m['gap2'], '.2f')}",
        f"ur peak 1st 10 steps {_f(m['ur_first'])}, last 10 {_f(m['ur_last'])}",
    ]
    if m["flat"] is not None:
        parts.append(f"flat {_f(m['flat'], '.2f')} fall {_f(m['fall'], '.2f')}")
    parts.append(f"zz {_f(m['zz'], '.1f')}")
    if m["zz"] is not None:
        parts[-1] += f" rise {_f(m['rise'], '.2f')}"
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


def _range(values: list[Any], spec: str = ".2g") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = format(min(values), spec), format(max(values), spec)
    return lo if lo == hi else f"{lo}..{hi}"


def _count(counter: Counter, n: int) -> str:
    return ", ".join(f"{k} {c}/{n}" if c < n else k for k, c in sorted(counter.items()))


def summary(records: list[tuple[Scenario, dict[str, Any], dict[str, Any]]]) -> list[str]:
    """One row per scenario over its seeds: codes with how many seeds fired them, the key
    numbers as min..max, and the verdicts."""
    out = [
        "",
        "| scenario | expected | warning/error codes (seeds) [info] | key evidence "
        "(min..max over seeds) | verdict |",
        "|---|---|---|---|---|",
    ]
    groups: dict[str, list] = {}
    for rec in records:
        groups.setdefault(rec[0].name, []).append(rec)
    for recs in groups.values():
        sc, n = recs[0][0], len(recs)
        loud, info = Counter(), Counter()
        for _, r, _ in recs:
            hot = {f["code"] for f in r["findings"] if f["severity"] != "info"}
            loud.update(
                {
                    f"{f['code']}({f['severity'][0]})"
                    for f in r["findings"]
                    if f["severity"] != "info"
                }
            )
            info.update({f["code"] for f in r["findings"] if f["severity"] == "info"} - hot)
        fired = _count(loud, n) or "-"
        if info:
            fired += f" [{_count(info, n)}]"
        ms = [m for _, _, m in recs]
        codes = set().union(*sc.expect) if sc.expect else set()

        def want(*c: str, sc: Scenario = sc, codes: set[str] = codes) -> bool:
            return sc.healthy or bool(codes & set(c))

        ev = [
            f"tr/va {_range([m['tr'] for m in ms], '.2f')}/{_range([m['va'] for m in ms], '.2f')}"
        ]
        if want("OVERFITTING", "UNDERFITTING"):
            ev.append(
                f"eval-mode tr {_range([m['tr_eval'] for m in ms], '.2f')}, "
                f"gap2 {_range([m['gap2'] for m in ms], '.2f')}"
            )
        if want("UPDATE_RATIO_HIGH", "UPDATE_RATIO_LOW", "LR_TOO_LOW", "LR_TOO_HIGH", "NAN_LOSS"):
            ev.append(
                f"ur peak10 {_range([m['ur_first'] for m in ms])}, last10 "
                f"{_range([m['ur_last'] for m in ms])}"
            )
        if want("LOSS_PLATEAU_AT_START") and any(m["flat"] is not None for m in ms):
            ev.append(
                f"flat {_range([m['flat'] for m in ms], '.2f')} fall "
                f"{_range([m['fall'] for m in ms], '.2f')}"
            )
        if want("LOSS_OSCILLATING"):
            ev.append(
                f"zz {_range([m['zz'] for m in ms], '.1f')} rise "
                f"{_range([m['rise'] for m in ms], '.2f')}"
            )
        if want("LR_TOO_LOW", "UPDATE_RATIO_LOW"):
            ev.append(f"dec {_range([m['dec'] for m in ms], '.2f')}")
        if want("DEAD_RELU") and any(m["dead"] is not None for m in ms):
            ev.append(f"dead {_range([m['dead'] for m in ms], '.2f')}")
        if want("SATURATED_ACTIVATIONS") and any(m["sat"] is not None for m in ms):
            ev.append(f"sat {_range([m['sat'] for m in ms], '.2f')}")
        if want("VANISHING_GRADIENTS", "EXPLODING_GRADIENTS") and any(m["gr"] for m in ms):
            ev.append(
                f"gr min {_range([m['gr'][0] for m in ms if m['gr']])}, max "
                f"{_range([m['gr'][1] for m in ms if m['gr']])}"
            )
        if any(m["rb"] for m in ms):
            ev.append(
                f"rb {_range([m['rb'] for m in ms], 'd')}, lr_end "
                f"{_range([m['lr_end'] for m in ms])}"
            )
        stops = sorted({m["stop"] for m in ms if m["stop"]})
        if stops:
            ev.append("stop " + "/".join(stops))
        now = _count(
            Counter(
                judge(sc, {f["code"] for f in r["findings"] if f["severity"] != "info"})
                for _, r, _ in recs
            ),
            n,
        )
        out.append(f"| {sc.name} | {_expected(sc)} | {fired} | {'; '.join(ev)} | {now} |")
    return out


def _expected(sc: Scenario) -> str:
    if sc.borderline:
        return "(borderline)"
    if sc.healthy:
        return (
            "(silent" + (", tol. " + "/".join(sorted(sc.tolerated)) if sc.tolerated else "") + ")"
        )
    return " and ".join(" or ".join(sorted(g)) for g in sc.expect)


THRESHOLD_NAMES = (
    "loss_explosion",
    "update_ratio_high",
    "update_ratio_low",
    "lr_low_ratio_gate",
    "train_loss_min_decrease",
    "plateau_flat",
    "plateau_drop",
    "loss_oscillation",
    "oscillation_rise",
    "oscillation_noise",
    "overfit_gap",
    "underfit_gap",
    "underfit_accuracy",
    "dead_relu_warning",
    "dead_relu_info",
    "saturated_fraction",
    "gradient_vanishing_ratio",
    "gradient_vanishing_abs",
    "gradient_exploding_ratio",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="run scenarios whose name contains this (repeatable)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="threshold override (repeatable; babysit.thresholds names)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--raw", action="store_true", help="also print each run's findings")
    parser.add_argument("--dump", metavar="FILE", help="write every run's raw series as JSON")
    parser.add_argument(
        "--summary", action="store_true", help="also print one row per scenario over its seeds"
    )
    add_write_docs_arg(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = {k: float(v) for k, v in (s.split("=", 1) for s in args.set)}
    t = resolve(overrides)  # the product's thresholds; an unknown name is refused here
    chosen = [s for s in SCENARIOS if not args.only or any(o in s.name for o in args.only)]

    out = [
        "thresholds (babysit.thresholds): "
        + ", ".join(f"{n}={t[n]:g}" for n in THRESHOLD_NAMES if n in t),
    ]
    if overrides:
        out.append("overridden: " + ", ".join(f"{k}={v:g}" for k, v in overrides.items()))
    head = "| scenario | seed | expected | fired (severity) [info] | key evidence | verdict | s |"
    out += ["", head, "|---" * head.count(" | ") + "|---|"]
    bad, dumped, records = 0, [], []
    for sc in chosen:
        for seed in seeds:
            r = run(sc, seed, overrides)
            m = numbers(r, t)
            word, loud, info = verdict(sc, r["findings"])
            fired = _fired(r["findings"], loud) or "-"
            if info:
                fired += " [" + ", ".join(info) + "]"
            bad += word in ("FALSE ALARM", "MISSED")
            line = (
                f"| {sc.name} | {seed} | {_expected(sc)} | {fired} | {evidence(m)} | "
                f"{word} | {r['seconds']:.1f} |"
            )
            records.append((sc, {"findings": r["findings"]}, m))
            out.append(line)
            print(line, file=sys.stderr, flush=True)  # progress; the tables follow at the end
            if args.raw:
                for f in r["findings"]:
                    out.append(
                        f"    {f['code']} {f['severity']} step={f['step']} "
                        f"layer={f['layer']} {f['evidence']}"
                    )
                means = smooth([x for x in r["losses"] if math.isfinite(x)], 50)
                out.append(f"    loss, 50 window means: {[round(x, 3) for x in means]}")
            if args.dump:
                dumped.append(
                    {
                        **r,
                        "healthy": sc.healthy,
                        "borderline": sc.borderline,
                        "verdict": word,
                        "numbers": m,
                    }
                )
    healthy = [rec for rec in records if rec[0].healthy]
    broken = [rec for rec in records if rec[0].expect]
    out += [
        "",
        f"{bad} false alarm(s)/miss(es): healthy runs silent "
        f"{sum(judge(sc, _loud(r)) != 'FALSE ALARM' for sc, r, _ in healthy)}/{len(healthy)}, "
        f"broken runs caught {sum(judge(sc, _loud(r)) == 'OK' for sc, r, _ in broken)}"
        f"/{len(broken)}.",
    ]
    if args.summary:
        out += summary(records)
    out += ["", "Recipes (torch.manual_seed(seed) before building the model; fit(seed=seed)):", ""]
    out += [f"- {sc.name}: {sc.recipe()}" for sc in chosen]
    emit(args, __file__, out)
    if args.dump:
        with open(args.dump, "w", encoding="utf-8") as handle:
            json.dump(dumped, handle, default=str)
    return 0


def _loud(r: dict[str, Any]) -> set[str]:
    return {f["code"] for f in r["findings"] if f["severity"] != "info"}


if __name__ == "__main__":
    sys.exit(main())
