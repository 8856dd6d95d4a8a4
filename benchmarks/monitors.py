"""Evaluate the training monitors on a scenario matrix: healthy runs silent, broken runs caught.

    python benchmarks/monitors.py [--seeds 0,1,2] [--only NAME ...] [--set name=value ...]
                                  [--proposed] [--summary] [--raw] [--dump runs.json] [--threads 1]

Every scenario trains a small model on MNIST-1D or digits (standardized, 3-40 epochs, batch 64,
each run 0-6 s on one CPU thread) with ``babysit.fit(..., monitors=default_monitors())`` (the
same monitors as ``monitors="default"``, kept so their state can be read) and a temporary
``run_dir``. The table gives, per scenario and seed, the codes expected, the warning/error codes
that fired (info-only codes in brackets), the raw numbers the thresholds act on, and a verdict:

- healthy (``H``): ``OK`` when no warning/error fired, ``OK*`` when only a tolerated code fired
  (MNIST-1D MLPs genuinely overfit: OVERFITTING is tolerated there), else ``FALSE ALARM``;
- broken (``B``): ``OK`` when each expected group (``A or B``: either) has a warning/error code,
  else ``MISSED``; extra warning codes are listed but do not change the verdict;
- borderline (``X``): reported, no verdict.

Raw numbers (what each rule computes; the worst value over the points where it is judged):

- ``tr/va``: final running train accuracy (dropout on, as Generalization reads it) and val
  accuracy; ``eval-mode tr``: train accuracy of the first 1000 training examples in eval mode
  at the last epoch end (measured by a side callback, for the proposed UNDERFITTING rule);
  ``gap2``: largest train-val gap held for two epochs (OVERFITTING: > overfit_gap);
- ``ur5max``: largest median of the last 5 sampled update ratios (UPDATE_RATIO_HIGH: > high);
  ``peak 1st 10 steps``: largest per-step median ratio of the first 10 steps (proposed rule);
  ``ur10min``: smallest median of the last 10 while lr >= 10% of its start (UPDATE_RATIO_LOW);
- ``dev5``: smallest (over judgements) largest relative distance of windows 2-5 of the 50 loss
  window means from the first (LOSS_PLATEAU_AT_START needs <= plateau_flat for 5 windows);
  ``nflat``/``fall``: plateau length in windows and the fall after it, at the judgement with
  the largest fall among those with nflat >= 5 (fires when fall >= plateau_drop);
- ``zz``/``rise``/``tail``: oscillation() with no rise gate, at the judgement with the largest
  zigzag: zigzag, rises over the start loss (LOSS_OSCILLATING needs rise >= oscillation_rise and
  zz > loss_oscillation), mean of the last half over the start (no progress ~ 1);
- ``dec``: smallest relative loss decrease at a judgement (LR_TOO_LOW: < loss_min_decrease
  while the update ratio < lr_low_ratio_gate);
- ``dead``/``sat``: largest per-sample dead / saturated fraction of any layer (sat: the min of two
  consecutive samples, as the rule needs); ``gr``: min..max ||g_first|| / ||g_last||,
  ``g1min``: smallest ||g_first||;
- ``rb``: rollbacks, ``lr_end``: the lr at the end, ``stop``: why training stopped early.

``--proposed`` adds a column: which codes change, and the verdict, when the rules named in
``PROPOSED`` are re-evaluated on the same run's raw series (see :func:`proposed_codes`).
``--set`` overrides thresholds of the real monitors (passed to ``fit(thresholds=...)``).
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
from collections import Counter
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
from babysit.thresholds import resolve
from babysit.train.monitors import ActivationStats, LossCurve, UpdateRatio, default_monitors
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


class Recorder(babysit.Callback):
    """Side measurements that do not change training (for the proposed rules):

    per step the lr; per epoch end how many losses LossCurve holds, and the train accuracy in
    eval mode on the first 1000 training examples (the probe detached meanwhile); the weight
    update ratio of each of the first 10 steps; every dead-unit set ActivationStats measured.
    """

    def __init__(self, curve: LossCurve, acts: ActivationStats, train: tuple) -> None:
        self.curve, self.acts = curve, acts
        self.x, self.y = train[0][:1000], train[1][:1000]
        self.lrs: list[float] = []
        self.prefixes: list[int] = []
        self.eval_train_acc: list[float] = []
        self.first_ratios: list[float] = []
        self.dead_sets: list[tuple[int, str, list[int], int, int]] = []
        self._before: list[torch.Tensor] | None = None
        original = acts._dead_units

        def spy(trainer: Any, r: Any) -> None:
            self.dead_sets.append(
                (trainer.step, r.name, list(r.dead_units or []), r.n_examples, r.n_units)
            )
            original(trainer, r)

        acts._dead_units = spy  # type: ignore[method-assign]

    def _weights(self, trainer: Any) -> list[torch.Tensor]:
        return [p for p in trainer.model.parameters() if p.dim() >= 2]

    def on_train_batch_start(self, trainer: Any, batch_index: int) -> None:
        if len(self.first_ratios) < 10 and not self.lrs[10:]:
            self._before = [p.detach().clone() for p in self._weights(trainer)]

    def on_train_batch_end(self, trainer: Any, loss: float, batch_index: int) -> None:
        self.lrs.append(trainer.lr())
        if self._before is not None:
            after = self._weights(trainer)
            ratios = [
                float((a.detach() - b).norm() / b.norm())
                for a, b in zip(after, self._before, strict=True)
                if b.norm() > 0
            ]
            if ratios:
                self.first_ratios.append(statistics.median(ratios))
            self._before = None

    def on_train_epoch_end(self, trainer: Any, metrics: dict) -> None:
        self.prefixes.append(len(self.curve.losses))
        model = trainer.model
        was_training = model.training
        self.acts.on_validation_start(trainer)
        model.eval()
        try:
            with torch.no_grad():
                out = model(self.x.to(next(model.parameters()).device))
                acc = (out.argmax(1).cpu() == self.y).float().mean().item()
        finally:
            model.train(was_training)
            self.acts.on_validation_end(trainer)
        self.eval_train_acc.append(acc)


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
    acts = next(m for m in monitors if isinstance(m, ActivationStats))
    kwargs = dict(sc.fit)
    recorder = Recorder(curve, acts, train)
    kwargs["callbacks"] = [*kwargs.get("callbacks", []), recorder]
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
            **kwargs,
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
        "min_steps": curve.min_steps,
        "prefixes": list(recorder.prefixes),
        "lrs": list(recorder.lrs),
        "ratio_every": ratio.every,
        "medians": list(ratio.medians),
        "series": series,
        "weight_layers": [n for n in weight_layers if f"grad_norm/{n}" in series],
        "epochs": {k: history[k] for k in ("train_loss", "train_acc", "val_acc")},
        "eval_train_acc": list(recorder.eval_train_acc),
        "first_ratios": list(recorder.first_ratios),
        "dead_sets": list(recorder.dead_sets),
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
        if len(losses_all) >= 50
        else None
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
    out["tr_eval"] = r["eval_train_acc"][-1] if r["eval_train_acc"] else None
    out["ur_first"] = max(r["first_ratios"]) if r["first_ratios"] else None
    out["lr_end"] = lrs[-1] if lrs else None
    return out


# ------------------------------------------------------------------------------------ proposals

PROPOSED = {
    "plateau_flat": 0.03,  # was 0.05
    "plateau_min_windows": 8,  # was 5 (code constant): the plateau must last 16% of the run
    "plateau_drop": 0.15,  # was 0.3
    "underfit_gap": 0.04,  # was 0.02, on the train accuracy measured in eval mode
    "update_ratio_high": 0.15,  # was 0.3, on the peak of the first 10 steps (every step)
    "ur_low_max_decrease": 0.5,  # new gate: UPDATE_RATIO_LOW only while the loss fell < 50%
    "loss_min_decrease": 0.05,  # was 0.01; and LR_TOO_LOW not when the loss rose > 1%
    "dead_relu_warning": 0.3,  # was 0.7, on a sliding window of the latest >= 256 examples
}


def _plateau(losses: list[float], flat: float, drop: float, n_min: int) -> bool:
    means = smooth(losses, 50)
    if len(means) < 20:
        return False
    level, n = means[0], 0
    while n < len(means) and abs(means[n] - level) <= flat * abs(level):
        n += 1
    if n < n_min or n >= len(means) - 1:
        return False
    return (level - min(means[n : n + 5])) / abs(level) >= drop


def _dead_sliding(r: dict[str, Any]) -> bool:
    """DEAD_RELU warning with a sliding window: at every sample, intersect the dead sets of the
    latest samples that cover >= 256 examples (instead of disjoint blocks from step 0)."""
    by_layer: dict[str, list[tuple[set[int], int, int]]] = {}
    for _, name, units, n_ex, n_units in r["dead_sets"]:
        hist = by_layer.setdefault(name, [])
        hist.append((set(units), n_ex, n_units))
        seen, dead = 0, None
        for units_i, n_i, _ in reversed(hist):
            dead = units_i if dead is None else dead & units_i
            seen += n_i
            if seen >= 256:
                if len(dead) / max(n_units, 1) >= PROPOSED["dead_relu_warning"]:
                    return True
                break
    return False


def proposed_codes(r: dict[str, Any], t: dict[str, float]) -> set[str]:
    """The warning/error codes under PROPOSED: the rules that change are re-evaluated on the
    run's raw series, the others keep what fired."""
    p = PROPOSED
    changed = {
        "LOSS_PLATEAU_AT_START",
        "UNDERFITTING",
        "UPDATE_RATIO_HIGH",
        "UPDATE_RATIO_LOW",
        "LR_TOO_LOW",
        "DEAD_RELU",
    }
    codes = {f["code"] for f in r["findings"] if f["severity"] != "info"} - changed
    losses_all, lrs, meds, every = r["losses"], r["lrs"], r["medians"], r["ratio_every"]
    for end in [*r["prefixes"], len(losses_all)]:
        losses = [x for x in losses_all[:end] if math.isfinite(x)]
        if len(losses) < r["min_steps"]:
            continue
        if _plateau(losses, p["plateau_flat"], p["plateau_drop"], p["plateau_min_windows"]):
            codes.add("LOSS_PLATEAU_AT_START")
        k = max(len(losses) // 10, 5)
        s, e = statistics.fmean(losses[:k]), statistics.fmean(losses[-k:])
        dec = (s - e) / max(abs(s), 1e-12)
        step = min(end, len(lrs)) - 1
        annealed = bool(lrs) and lrs[step] < 0.1 * lrs[0]
        window = meds[: step // every + 1][-10:]
        ratio = statistics.median(window) if window else None
        if (
            -0.01 <= dec < p["loss_min_decrease"]
            and not annealed
            and (ratio is None or ratio < t["lr_low_ratio_gate"])
        ):
            codes.add("LR_TOO_LOW")
        if (
            len(window) == 10
            and ratio < t["update_ratio_low"]
            and not annealed
            and dec < p["ur_low_max_decrease"]
        ):
            codes.add("UPDATE_RATIO_LOW")
    if r["first_ratios"] and max(r["first_ratios"]) > p["update_ratio_high"]:
        codes.add("UPDATE_RATIO_HIGH")
    if _dead_sliding(r):
        codes.add("DEAD_RELU")
    tr, va = r["eval_train_acc"], r["epochs"]["val_acc"]
    if (
        tr
        and va
        and va[-1] is not None
        and not r["stop"]
        and abs(tr[-1] - va[-1]) < p["underfit_gap"]
        and tr[-1] < t["underfit_accuracy"]
    ):
        codes.add("UNDERFITTING")
    return codes


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
        f"ur5max {_f(m['ur5max'])} (peak 1st 10 steps {_f(m['ur_first'])})",
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


def _range(values: list[Any], spec: str = ".2g") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = format(min(values), spec), format(max(values), spec)
    return lo if lo == hi else f"{lo}..{hi}"


def _count(counter: Counter, n: int) -> str:
    return ", ".join(f"{k} {c}/{n}" if c < n else k for k, c in sorted(counter.items()))


def summary(records: list[tuple[Scenario, dict[str, Any], dict[str, Any], set[str]]]) -> None:
    """One row per scenario over its seeds: codes with how many seeds fired them, the key
    numbers as min..max, and the verdicts now and under PROPOSED."""
    print(
        "\n| scenario | expected | warning/error codes (seeds) [info] | key evidence "
        "(min..max over seeds) | verdict | under proposal |"
    )
    print("|---|---|---|---|---|---|")
    groups: dict[str, list] = {}
    for rec in records:
        groups.setdefault(rec[0].name, []).append(rec)
    for recs in groups.values():
        sc, n = recs[0][0], len(recs)
        loud, info = Counter(), Counter()
        for _, r, _, _ in recs:
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
        ms = [m for _, _, m, _ in recs]
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
        if want(
            "UPDATE_RATIO_HIGH",
            "UPDATE_RATIO_LOW",
            "LR_TOO_LOW",
            "LR_TOO_HIGH",
            "NAN_LOSS",
            "LOSS_OSCILLATING",
        ):
            ev.append(
                f"ur5max {_range([m['ur5max'] for m in ms])}, peak10 "
                f"{_range([m['ur_first'] for m in ms])}, ur10min "
                f"{_range([m['ur10min'] for m in ms])}"
            )
        if want("LOSS_PLATEAU_AT_START"):
            falls = [m["fall"] for m in ms if m["nflat"]]
            ev.append(
                f"dev5 {_range([m['dev5'] for m in ms], '.3f')}"
                + (
                    f", nflat {_range([m['nflat'] for m in ms if m['nflat']], 'd')} fall "
                    f"{_range(falls, '.2f')}"
                    if falls
                    else ""
                )
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
                for _, r, _, _ in recs
            ),
            n,
        )
        new = _count(Counter(judge(sc, c) for *_, c in recs), n)
        print(f"| {sc.name} | {_expected(sc)} | {fired} | {'; '.join(ev)} | {now} | {new} |")


def _expected(sc: Scenario) -> str:
    if sc.borderline:
        return "(borderline)"
    if sc.healthy:
        return (
            "(silent" + (", tol. " + "/".join(sorted(sc.tolerated)) if sc.tolerated else "") + ")"
        )
    return " and ".join(" or ".join(sorted(g)) for g in sc.expect)


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
        help="threshold override (repeatable)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--raw", action="store_true", help="also print each run's findings")
    parser.add_argument("--dump", metavar="FILE", help="write every run's raw series as JSON")
    parser.add_argument(
        "--summary", action="store_true", help="also print one row per scenario over its seeds"
    )
    parser.add_argument(
        "--proposed", action="store_true", help="add a column: the codes and verdict under PROPOSED"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = {k: float(v) for k, v in (s.split("=", 1) for s in args.set)}
    t = resolve(overrides)
    chosen = [s for s in SCENARIOS if not args.only or any(o in s.name for o in args.only)]

    names = [
        n
        for n in (
            "loss_explosion",
            "update_ratio_high",
            "update_ratio_low",
            "lr_low_ratio_gate",
            "loss_min_decrease",
            "plateau_flat",
            "plateau_drop",
            "loss_oscillation",
            "oscillation_rise",
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
        if n in t
    ]
    print("thresholds: " + ", ".join(f"{n}={t[n]:g}" for n in names))
    if overrides:
        print("overridden: " + ", ".join(f"{k}={v:g}" for k, v in overrides.items()))
    print(f"torch {torch.__version__}, {args.threads} thread(s)\n")
    head = "| scenario | seed | expected | fired (severity) [info] | key evidence | verdict | s |"
    if args.proposed:
        print("proposed: " + ", ".join(f"{k}={v:g}" for k, v in PROPOSED.items()) + "\n")
        head += " proposed: codes -> verdict |"
    print(head)
    print("|---" * head.count(" | ") + "|---|")
    bad, bad_new, dumped, records = 0, 0, [], []
    for sc in chosen:
        for seed in seeds:
            r = run(sc, seed, overrides)
            m = numbers(r, t)
            word, loud, info = verdict(sc, r["findings"])
            expected = _expected(sc)
            fired = _fired(r["findings"], loud) or "-"
            if info:
                fired += " [" + ", ".join(info) + "]"
            bad += word in ("FALSE ALARM", "MISSED")
            line = (
                f"| {sc.name} | {seed} | {expected} | {fired} | {evidence(m)} | "
                f"{word} | {r['seconds']:.1f} |"
            )
            new = proposed_codes(r, t)
            records.append((sc, {"findings": r["findings"]}, m, new))
            if args.proposed:
                word_new = judge(sc, new)
                bad_new += word_new in ("FALSE ALARM", "MISSED")
                changed = sorted(new ^ set(loud))
                diff = ", ".join(("+" if c in new else "-") + c for c in changed) or "same"
                line += f" {diff} -> {word_new} |"
            print(line, flush=True)
            if args.raw:
                for f in r["findings"]:
                    print(
                        f"    {f['code']} {f['severity']} step={f['step']} "
                        f"layer={f['layer']} {f['evidence']}"
                    )
                means = smooth([x for x in r["losses"] if math.isfinite(x)], 50)
                print(f"    loss, 50 window means: {[round(x, 3) for x in means]}")
            if args.dump:
                r.pop("history")
                dumped.append(
                    {
                        **r,
                        "healthy": sc.healthy,
                        "borderline": sc.borderline,
                        "verdict": word,
                        "numbers": m,
                    }
                )
    print(
        f"\n{bad} false alarm(s)/miss(es) with the current rules"
        + (f"; {bad_new} under the proposal" if args.proposed else "")
    )
    if args.summary:
        summary(records)
    print("\nrecipes (torch.manual_seed(seed) before building the model; fit(seed=seed)):")
    for sc in chosen:
        print(f"- {sc.name}: {sc.recipe()}")
    if args.dump:
        with open(args.dump, "w", encoding="utf-8") as handle:
            json.dump(dumped, handle, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
