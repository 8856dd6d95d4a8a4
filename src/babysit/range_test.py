"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural
Networks", section 3.3), as fastai, PyTorch Lightning and torch-lr-finder run it. The sweep and
its result live here, below both users: :func:`babysit.lr_find` and ``diagnose``'s LR checks.

Train a copy of the model for ``steps`` mini-batches while the learning rate grows
exponentially from ``start_lr`` to ``end_lr``,

    lr_i = start_lr · (end_lr / start_lr) ^ (i / (steps - 1)),

and record the loss. At tiny rates the loss stays flat, then falls fastest, reaches a minimum
and blows up. A good constant learning rate lies on the falling part, below the minimum. The
test stops when the running loss exceeds 4× its best (fastai; :mod:`babysit.divergence` states
the rule) and at the first NaN/Inf.

Several rules read a learning rate off the curve (:data:`RULES`); they disagree on noisy curves,
so all are returned. The default, ``verified``, does not trust the curve alone: the sweep
measures stability over a few steps at a *growing* lr, and a run at a *constant* lr can break
down lower (or learn only higher) than the curve says, so short constant-lr probes check the
curve's pick and step away from it (:func:`_verify`); an unclear curve is swept once more with
more steps. The confidence flag: a flat curve (e.g. an already trained model, or a sweep that
never reached useful rates), a curve drowned in noise, one that diverged at once, a sweep over
fewer than ``MIN_EXAMPLES`` examples (it measures how fast the model memorizes them), or probes
that disagree with the curve give an answer that should not be trusted, and ``reason`` says
what to try. How far each rule lands from the best lr of a trained grid, on ten model families
and the home MLPs: ``benchmarks/lr_find.py`` (tables in ``docs/benchmarks.md``).

>>> import torch
>>> from torch import nn
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> X, y = torch.randn(512, 10), torch.randint(0, 3, (512,))
>>> model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
>>> result = range_test(model, X, y, lambda p, lr: torch.optim.Adam(p, lr),
...                     loss_fn=nn.CrossEntropyLoss())
>>> 1e-7 <= result.suggestion <= 10, sorted(result.suggestions)
(True, ['combined', 'minimum', 'steepest', 'valley', 'verified'])
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed
from .divergence import START_BATCHES, diverged
from .divergence import spread as divergence_spread
from .outputs import Forward, batch_size_of, run_batch, take
from .probes import grows_from_zero
from .thresholds import THRESHOLDS

__all__ = ["LR_FIND_FILE", "RULES", "LRFinderResult", "amp_dtype", "range_test"]

LR_FIND_FILE = "lr_find.json"
RULES = ("verified", "combined", "steepest", "minimum", "valley")
DEFAULT_RULE = "verified"  # the minimum rule's lr, checked by short constant-lr probes
CURVE_RULE = "minimum"  # what the probes start from (and the default with verify=False)
MAX_EXAMPLES = 4096  # examples drawn from the data; batches are sampled from them
EMA_BETA = 0.98  # running loss for the divergence test (fastai's AvgSmoothLoss)
DIVERGE_FACTOR = 4.0  # stop when the running loss exceeds 4x its best (fastai, Lightning)
BURN_IN = 0.1  # fraction of the first steps the rules ignore (fastai: num_it // 10)
MINIMUM_DIVISOR = 3.0  # the "minimum" rule: lr at the smoothed minimum / 3 (see _rules)
SMOOTH_SIGMA = 0.025  # Gaussian smoothing width, as a fraction of the steps (2.5 for 100)
MIN_SIGMA = 1.5  # ... and at least this many steps
FLAT_DROP = 0.05  # confident only if the smoothed loss falls by >= 5% of its top
NOISE_FACTOR = 2.5  # ... and by >= 2.5x the batch-to-batch noise
MIN_POINTS = 10  # points past the burn-in needed to read a curve at all
# Fewer examples than this and every step re-uses the same few: the curve shows how fast they
# are memorized, not a learning rate for the data set (a 1-example "data set" gave a confident
# suggestion before this rule). The lecture overfits ~20 examples on purpose; 32 is above that.
MIN_EXAMPLES = 32
# The verified suggestion (see _verify): short constant-lr runs from the initial weights.
PROBE_FRACTION = 0.5  # each probe trains steps * PROBE_FRACTION mini-batches (50 for 100)
MIN_PROBE_STEPS = 20
PROBE_STEP = 0.5  # decades between probed lrs
PROBE_UP, PROBE_DOWN = 2, 3  # at most this many PROBE_STEPs above / below the curve's pick
PROBE_WINDOW = 1 / 3  # a probe's score: its mean mini-batch loss over its last third
PROBE_Z = 2.0  # "better" means lower by more than 2 standard errors of the paired difference
CLIFF_MARGIN = 0.5  # rungs below the best probe when it sits above the curve's pick, under a cliff
CLIFF_FALL = 1 / 3  # a probe whose loss fell by less than this of the best probe's barely learned
LONG_FACTOR = 4  # the long check (see _long_check): probes of LONG_FACTOR x the probe's steps
LONG_STEP = 0.25  # decades between the long check's lrs
LONG_DOWN = 2  # at most this many LONG_STEPs below the probes' pick
LONG_MARGIN = 0.1  # ... each lower by more than this fraction of the higher one's fall
LONG_FLOOR = 0.01  # ... or by more than the lr ratio, and this fraction of the fall
EXTEND = 3  # an unclear first sweep is run again with EXTEND x the steps
RATIO_STEPS = 10  # the first steps whose update ratio fit's UpdateRatio monitor judges
SCALER_INIT_SCALE = 2.0**16  # the GradScaler's first scale under float16 autocast (torch's)

BLEW_UP = ("nan", "break-out", "diverged")  # a probe's ``why`` for a loss that blew up

OptimizerFactory = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]


@dataclass
class LRFinderResult:
    """What :func:`lr_find` measured and suggests.

    Attributes:
        suggestion: the default rule's learning rate (``rule``); ``None`` only when not one
            finite loss was recorded. When not ``confident`` it is the best guess, to be
            looked at, not trusted.
        suggestions: every rule's learning rate, ``{rule: lr}`` (see :data:`RULES`).
        confident: ``True`` only when the evidence supports the pick: a clear descent on the
            curve and probes that agree (the pick is stable and beats the lr below it, and the
            lr above it is not better); otherwise ``False``, and ``reasons`` says why.
        reason: when not confident, one line: why, and what to try (more steps, a wider
            range, a smaller or larger batch); ``None`` when confident.
        probes: the constant-lr probes that verified the suggestion, ``{lr, steps, score,
            stable, why, losses, ...}`` each: the short probes, then the long check's (``steps``
            ``LONG_FACTOR`` x theirs); empty with ``verify=False``.
        extended: the first sweep was unclear and was run again with more steps (``steps``
            is then the longer sweep's).
        lrs: the learning rate of each recorded step.
        losses: the smoothed loss at each step (zero-phase Gaussian, the curve the rules read).
        raw_losses: the mini-batch loss at each step.
        stopped: ``"end_lr"`` (the sweep finished), ``"diverged"`` (running loss > 4× its
            best) or ``"nan"`` (a NaN/Inf loss, not recorded).
        accumulate: mini-batches of ``batch_size`` per optimizer step (gradient
            accumulation); ``steps`` counts optimizer steps.
        amp: the sweep and probes ran under autocast; ``amp_dtype`` says in which precision
            (``"float16"`` with a ``GradScaler`` on CUDA, ``"bfloat16"`` elsewhere, e.g. on
            CPU, where float16 autocast is not the supported mixed precision).
        skipped_steps: optimizer steps the ``GradScaler`` skipped in the sweep (gradients
            overflowed float16; the scaler lowers its scale and goes on: not a divergence).
        world_size: processes that ran the test together (torchrun): every rank trained on its
            own ``batch_size`` x ``accumulate`` examples per step, the curve is the loss
            averaged over ranks, and every rank holds this same result.
    """

    suggestion: float | None
    suggestions: dict[str, float]
    confident: bool
    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    rule: str = DEFAULT_RULE
    reasons: list[str] = field(default_factory=list)
    stopped: str = "end_lr"
    optimizer: str = "adam"
    start_lr: float = 1e-7
    end_lr: float = 10.0
    steps: int = 100
    batch_size: int = 64
    n_examples: int | None = None  # examples the sweep drew its batches from
    reason: str | None = None
    probes: list[dict[str, Any]] = field(default_factory=list)
    extended: bool = False
    accumulate: int = 1
    amp: bool = False
    amp_dtype: str | None = None
    skipped_steps: int = 0
    world_size: int = 1

    def __repr__(self) -> str:
        rules = ", ".join(f"{k}={v:.3g}" for k, v in self.suggestions.items())
        sugg = "None" if self.suggestion is None else f"{self.suggestion:.3g}"
        return (
            f"LRFinderResult(suggestion={sugg} ({self.rule}), confident={self.confident}, "
            f"{rules}, {len(self.lrs)} steps, stopped={self.stopped!r})"
        )

    def _repr_html_(self) -> str:
        """Jupyter: the range-test plot and the suggestion."""
        from html import escape

        from .plotting import data_uri

        confident = "confident" if self.confident else "not confident: " + "; ".join(self.reasons)
        sugg = "none" if self.suggestion is None else f"{self.suggestion:.3g}"
        img = f'<img src="{data_uri(self.plot(), dpi=80)}" alt="LR range test">' if self.lrs else ""
        return img + escape(f"suggested lr {sugg} ({self.rule} rule), {confident}")

    def to_dict(self) -> dict[str, Any]:
        """Plain types for ``lr_find.json`` (:func:`babysit.runs.write_json` adds the schema)."""
        return {
            "suggestion": self.suggestion,
            "rule": self.rule,
            "suggestions": dict(self.suggestions),
            "confident": self.confident,
            "reasons": list(self.reasons),
            "stopped": self.stopped,
            "optimizer": self.optimizer,
            "start_lr": self.start_lr,
            "end_lr": self.end_lr,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "n_examples": self.n_examples,
            "reason": self.reason,
            "probes": [dict(p) for p in self.probes],
            "extended": self.extended,
            "accumulate": self.accumulate,
            "amp": self.amp,
            "amp_dtype": self.amp_dtype,
            "skipped_steps": self.skipped_steps,
            "world_size": self.world_size,
            "lrs": list(self.lrs),
            "losses": list(self.losses),
            "raw_losses": list(self.raw_losses),
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> LRFinderResult:
        """The result :meth:`to_dict` wrote (keys it does not know, e.g. ``schema``, ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in document.items() if k in names})

    def plot(self, path: str | os.PathLike | None = None):
        """Loss against learning rate (log x), one marker per rule.

        Returns the matplotlib ``Figure``; with ``path``, also writes it there (format from
        the suffix, e.g. ``.png``). Uses the Agg canvas: no display, no global pyplot state.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 4.2), layout="tight")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(self.lrs, self.raw_losses, color="0.75", lw=0.8, label="mini-batch loss")
        ax.plot(self.lrs, self.losses, color="C0", lw=1.8, label="smoothed")
        for k, (rule, lr) in enumerate(self.suggestions.items()):
            chosen = rule == self.rule
            ax.axvline(lr, color=f"C{k + 1}", ls="-" if chosen else "--", lw=1.2 if chosen else 1)
            ax.plot(
                [lr],
                [_at(self.lrs, self.losses, lr)],
                "o",
                color=f"C{k + 1}",
                label=f"{rule}{'/3' if rule == 'minimum' else ''}: {lr:.2g}"
                + (" (suggestion)" if chosen else ""),
            )
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        _clip_y(ax, self.losses)
        title = f"LR range test ({self.optimizer})"
        if not self.confident:
            title += ": not confident — " + "; ".join(self.reasons)
        ax.set_title(title, fontsize=9, wrap=True)
        ax.legend(fontsize=8)
        if path is not None:
            fig.savefig(path, dpi=100)
        return fig


def range_test(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    make_opt: OptimizerFactory,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    batch_size: int = 64,
    seed: int = 0,
    optimizer: str = "adam",
    forward: Forward | None = None,
    verify: bool = True,
    accumulate: int = 1,
    amp: bool = False,
    progress: Callable[[str], None] | None = None,
) -> LRFinderResult:
    """The sweep itself, on ``model`` in place (pass a copy) and tensors already on its device.

    ``make_opt(params, lr)`` builds the optimizer. :func:`babysit.lr_find` and the ``diagnose``
    checks both call this, after :mod:`babysit.inputs` validated ``x`` and ``y``. With
    ``forward(model, batch) -> (output, target)``, ``x`` is the whole batch (any structure,
    sliced by :func:`babysit.outputs.take`) and ``y`` is unused.

    With ``verify`` (the default) the curve's pick is checked by short constant-lr probes
    (:func:`_verify`, then :func:`_long_check`) and a sweep whose curve is unclear is run once
    more with ``EXTEND`` x the steps; the cost is bounded: at most ``steps * (1 + EXTEND)``
    sweep steps, ``PROBE_UP + PROBE_DOWN + 1`` probes of ``steps * PROBE_FRACTION`` steps each
    and ``1 + LONG_DOWN`` long probes of ``LONG_FACTOR`` x that (100 + 300 + 6 x 50 + 3 x 200 =
    1300 optimizer steps at worst for the defaults, 650-850 on a clear curve).

    ``accumulate=k``: every optimizer step accumulates the gradients of ``k`` mini-batches of
    ``batch_size``, each loss scaled by ``1/k``, so a step is the step on one batch of
    ``k · batch_size`` (the same examples in the same order: the sweep draws batches of
    ``k · batch_size`` and splits them); ``steps`` counts optimizer steps. ``amp``: forwards
    under ``torch.autocast`` (:func:`amp_dtype`), with a ``torch.amp.GradScaler`` for float16;
    a step the scaler skips (overflowed gradients) is counted, not judged a divergence.
    ``progress(name)`` is called after every step's batch, with the name of the pass it
    belongs to (the sweep, a probe's lr and length).

    Under torchrun (a process group of several ranks, :mod:`babysit.distributed`), every rank
    trains on its own share of each step's batch (``batch_size`` x ``accumulate`` examples per
    rank), gradients are averaged across ranks before the step (as DDP does), the curve is the
    loss averaged across ranks (``all_reduce_mean``) and every stop is decided together
    (``any_rank``), so every rank reaches the same suggestion. The model's initial weights are
    taken from rank 0.

    The modes the user set are kept: a model in train mode trains with the modules the user
    put in eval mode (a frozen BatchNorm) left in eval, as ``fit`` does; a model wholly in
    eval mode trains in train mode.
    """
    check_args(start_lr, end_lr, steps, batch_size)
    check_accumulate_amp(accumulate, amp)
    params = [p for p in model.parameters() if p.requires_grad]
    device = next((p.device for p in params), torch.device("cpu"))
    setup = _Setup(
        x=x,
        y=y,
        make_opt=make_opt,
        loss_fn=loss_fn,
        batch_size=batch_size,
        forward=forward,
        accumulate=accumulate,
        amp_dtype=amp_dtype(device) if amp else None,
        eval_modules=_kept_eval(model),
        progress=progress,
    )
    _sync_from_rank0(model)
    initial = copy.deepcopy(model) if verify else None
    result = _read_sweep(model, setup, start_lr, end_lr, steps, seed, optimizer)
    if initial is None:
        result.rule = CURVE_RULE
        result.suggestion = result.suggestions.get(CURVE_RULE)
        _finish(result)
        return result
    if _unclear(result):
        longer = _read_sweep(
            copy.deepcopy(initial), setup, start_lr, end_lr, steps * EXTEND, seed, optimizer,
            extended=True,
        )  # fmt: skip
        if longer.suggestion is not None and len(longer.reasons) <= len(result.reasons):
            result = longer
    if result.suggestion is not None:
        probe_steps = max(MIN_PROBE_STEPS, int(steps * PROBE_FRACTION))
        _verify(result, initial, setup, seed, probe_steps)
    _finish(result)
    return result


@dataclass(frozen=True)
class _Setup:
    """What every training pass of one range test shares: the data, the loss, the optimizer
    factory and how one optimizer step is taken (accumulation, autocast, kept eval modes)."""

    x: Any
    y: Any
    make_opt: OptimizerFactory
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batch_size: int = 64
    forward: Forward | None = None
    accumulate: int = 1
    amp_dtype: str | None = None
    eval_modules: frozenset[str] = frozenset()
    # called with the pass's name after every optimizer step's batch (lr_find's progress line)
    progress: Callable[[str], None] | None = None

    @property
    def batch(self) -> Any:
        return (self.x, self.y) if self.forward is None else self.x

    @property
    def n(self) -> int:
        return batch_size_of(self.batch) or 0


def amp_dtype(device: torch.device | str) -> str:
    """The autocast precision ``amp=True`` uses on ``device``: ``"float16"`` (with a
    ``GradScaler``) on CUDA, the usual mixed precision there; ``"bfloat16"`` elsewhere (CPU),
    where float16 autocast is not the supported mixed precision (Lightning refuses
    ``"16-mixed"`` on CPU for the same reason); bfloat16 keeps float32's exponent range, so it
    needs no loss scaling.

    Raises:
        ValueError: autocast is not available on ``device``'s type.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return "float16"
    if not torch.amp.is_autocast_available(kind):
        raise ValueError(
            f"amp=True needs autocast, which torch does not offer on device {kind!r}: "
            "pass amp=False, or run on CUDA or CPU"
        )
    return "bfloat16"


def _kept_eval(model: nn.Module) -> frozenset[str]:
    """Names of the modules the user put in eval mode under a model in train mode (a frozen
    BatchNorm); a model wholly in eval mode keeps none (it is trained as usual), as ``fit``."""
    if not model.training:
        return frozenset()
    return frozenset(name for name, m in model.named_modules() if not m.training)


def _train_mode(model: nn.Module, setup: _Setup) -> None:
    """``model.train()``, then the modules of ``setup.eval_modules`` back in eval mode."""
    model.train()
    if setup.eval_modules:
        for name, module in model.named_modules():
            if name in setup.eval_modules:
                module.eval()


@torch.no_grad()
def _sync_from_rank0(model: nn.Module) -> None:
    """Under torchrun, every rank starts from rank 0's weights and buffers (as DDP does at
    construction): each tensor is summed over ranks with every other rank's copy zeroed."""
    if not distributed.is_distributed():
        return
    keep = distributed.is_main()
    for tensor in [*model.parameters(), *model.buffers()]:
        if not (tensor.is_floating_point() or tensor.dtype in (torch.int64, torch.int32)):
            continue
        tensor.copy_(distributed.all_reduce_sum(tensor if keep else torch.zeros_like(tensor)))


class _Trainer:
    """One training pass (the sweep or a probe): ``loss(index)`` runs this rank's share of a
    step's batch forward and backward, ``step()`` takes the optimizer step.

    A step's batch ``index`` (``k · W · batch_size`` examples for ``accumulate=k`` on ``W``
    ranks) is split into ``k · W`` equal micro-batches; rank ``r`` takes the ``r``-th run of
    ``k``. Each micro-batch's loss is scaled by ``1/k`` before ``backward`` (scaled again by the
    ``GradScaler`` under float16 autocast), so the accumulated gradient is the gradient of the
    mean loss over this rank's share; the gradients are then averaged across ranks. The loss
    returned is the mean over this rank's micro-batches, averaged across ranks: every rank gets
    the same value, and so takes the same decisions.
    """

    def __init__(self, model: nn.Module, setup: _Setup, lr: float, name: str) -> None:
        self.model, self.setup, self.name = model, setup, name
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
        self.opt = setup.make_opt(self.params, lr)
        device = self.params[0].device
        self.device_type = device.type
        dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(setup.amp_dtype or "")
        self.dtype = dtype
        self.scaler = (
            torch.amp.GradScaler(device.type, init_scale=SCALER_INIT_SCALE)
            if setup.amp_dtype == "float16"
            else None
        )
        self.batch, self.n = setup.batch, setup.n
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.skipped = 0
        _train_mode(model, setup)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def loss(self, index: torch.Tensor) -> float:
        """Forward and backward over this rank's micro-batches of ``index``; the mean loss
        across ranks (NaN on every rank when any rank met a non-finite loss)."""
        k = self.setup.accumulate
        parts = index.tensor_split(k * self.world)[self.rank * k : (self.rank + 1) * k]
        self.opt.zero_grad(set_to_none=True)
        total, finite = 0.0, True
        for part in parts:
            with self._autocast():
                output, target, _ = run_batch(
                    self.model, take(self.batch, part, self.n), self.setup.forward
                )
                loss = self.setup.loss_fn(output, target)
            value = float(loss.detach())
            if not math.isfinite(value):
                finite = False
                break
            total += value / k
            scaled = loss / k
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        if self.setup.progress is not None:
            self.setup.progress(self.name)
        if distributed.any_rank(not finite):
            return math.nan
        if self.world > 1:
            total = float(distributed.all_reduce_mean(torch.tensor([total], dtype=torch.float64)))
        return total

    def step(self) -> None:
        """The optimizer step on the accumulated (and, across ranks, averaged) gradients; a
        step the ``GradScaler`` skips is counted in ``skipped``."""
        if self.world > 1:
            _average_gradients(self.params)
        if self.scaler is None:
            self.opt.step()
            return
        scale = self.scaler.get_scale()
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.scaler.get_scale() < scale:
            self.skipped += 1


@torch.no_grad()
def _average_gradients(params: list[nn.Parameter]) -> None:
    """Each parameter's gradient averaged across ranks, in one flat ``all_reduce_mean`` (as
    DDP's bucketed all-reduce). A parameter that got no gradient on any rank keeps none (Adam
    must not step it); one that got a gradient on some ranks counts zeros for the others."""
    flat = [
        (
            p.grad.reshape(-1).float()
            if p.grad is not None
            else torch.zeros(p.numel(), device=p.device)
        )
        for p in params
    ]
    has = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], device=params[0].device)
    reduced = distributed.all_reduce_mean(torch.cat([*flat, has]))
    offset = 0
    for i, p in enumerate(params):
        chunk = reduced[offset : offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
        if float(reduced[-len(params) + i]) > 0:
            p.grad = chunk.clone()
        else:
            p.grad = None


def _read_sweep(
    model: nn.Module,
    setup: _Setup,
    start_lr: float,
    end_lr: float,
    steps: int,
    seed: int,
    optimizer: str,
    *,
    extended: bool = False,
) -> LRFinderResult:
    """One sweep and the rules read off its curve (``suggestion``: the curve's pick)."""
    lrs, raw, stopped, skipped = _sweep(model, setup, start_lr, end_lr, steps, seed)
    result = LRFinderResult(
        suggestion=None,
        suggestions={},
        confident=False,
        lrs=lrs,
        losses=_smooth(raw, max(MIN_SIGMA, SMOOTH_SIGMA * steps)),
        raw_losses=raw,
        stopped=stopped,
        optimizer=optimizer,
        start_lr=start_lr,
        end_lr=end_lr,
        steps=steps,
        batch_size=setup.batch_size,
        n_examples=setup.n,
        extended=extended,
        accumulate=setup.accumulate,
        amp=setup.amp_dtype is not None,
        amp_dtype=setup.amp_dtype,
        skipped_steps=skipped,
        world_size=distributed.world_size(),
    )
    _suggest(result)
    return result


def _finish(result: LRFinderResult) -> None:
    result.confident = result.suggestion is not None and not result.reasons
    result.reason = None if result.confident else "; ".join(result.reasons)


def _verify(result: LRFinderResult, initial: nn.Module, setup: _Setup, seed: int, n: int) -> None:
    """Check the curve's pick with short constant-lr probes; set ``suggestion`` to the result.

    Why: the range test measures stability over a few steps at a *growing* lr, and a run at a
    *constant* lr can break down lower than the curve's minimum suggests (measured: convnets
    without normalization at small batches, ``benchmarks/lr_find.py``); and a model that learns
    only after many steps at a high enough lr is read too low. A probe trains a fresh copy of
    the initial model for ``n`` mini-batches (``steps * PROBE_FRACTION``) at one constant lr, on the
    same batches for every probe; its score is the mean mini-batch loss over its last third.
    Probes sit on a ladder ``c · 10^(PROBE_STEP · j)`` around the curve's pick ``c``:

    - step up while the probe above is stable and *better* (lower by more than ``PROBE_Z``
      standard errors of the paired, step-by-step difference: the same batches make the
      comparison paired, which cancels most of the batch-to-batch noise), at most ``PROBE_UP``;
    - otherwise step down while the probe at the pick is unstable (NaN, a loss above 3x its
      first, where fit's guard rolls back, a running loss above 4x its best, or no fall) or
      not better than the one below, at most ``PROBE_DOWN``;
    - a pick under a cliff (the probe one rung above blew up after its first ``RATIO_STEPS``
      steps, or barely learned: its loss fell by less than ``CLIFF_FALL`` of the pick's fall;
      or, for a pick above the curve's, the sweep blew up and the probe above trained worse)
      moves ``CLIFF_MARGIN`` rungs down, to a probed lr.

    Confident only when the pick is stable, beats the probe below it, and the probes did not
    have to move above the curve's pick (a short probe cannot see a breakdown that a long run
    meets there); every other outcome says why and what to try. A stable pick is then checked
    over a longer run (:func:`_long_check`), which may move it down.
    """
    c = result.suggestion
    assert c is not None
    probes: dict[int, dict[str, Any]] = {}
    measured = _start_loss(initial, setup, c, seed, min(START_BATCHES, n))  # (mean, spread)
    start = measured[0]

    def at(j: int) -> dict[str, Any]:
        if j not in probes:
            lr = c * 10 ** (PROBE_STEP * j)
            probes[j] = _probe(initial, setup, lr, n, seed, measured)
        return probes[j]

    def inside(j: int) -> bool:  # probes stay within the swept range
        lr = c * 10 ** (PROBE_STEP * j)
        return result.start_lr * (1 - 1e-9) <= lr <= result.end_lr * (1 + 1e-9)

    j, higher = 0, False
    if inside(1) and at(0)["stable"] and at(1)["stable"] and _better(at(1), at(0)):
        j = 1
        while j < PROBE_UP and inside(j + 1) and _better(at(j + 1), at(j)):
            j += 1
    else:
        while (
            j > -PROBE_DOWN
            and inside(j - 1)
            and (not at(j)["stable"] or not _better(at(j), at(j - 1)))
        ):
            j -= 1
    pick = best = at(j)
    # A cliff one rung above the pick: the probe there blew up (NaN, divergence), or, for a
    # pick the probes moved above the curve's, the sweep blew up and the probe above trained
    # worse. A long run at a constant lr breaks down lower than a short one, so the pick
    # steps back CLIFF_MARGIN rungs, to a probed lr. Measured (benchmarks/lr_find.py): a GRU
    # whose best 50-step probe sat at 0.069, 0.1 decade above its best full-run lr, lost 12
    # points there (100- and 200-step probes still ranked 0.069 first); a convnet with
    # Nesterov at batch 16 (seed 2) was confidently picked at 0.067, where 360 steps lose 19
    # points, one rung under a probe that diverged. Without a blow-up (a tanh MLP and a 1-D
    # convnet whose probes moved up; every pick under a stable probe) the pick was right, and
    # stepping back cost up to 5 points: there it stays.
    #
    # Not after a blow-up in the first RATIO_STEPS steps (NaN or a break-out at the start: the
    # first steps are the same in a short and a long run, and the pick's own probe went through
    # them stable). Measured: a 1-D convnet (AdamW) and a plain-SGD regression MLP whose probe
    # one rung up broke out at step 1-2 lost 2-10 points more with the margin than without
    # (against the best lr fit trains at), while the blow-ups the margin is for came late
    # (the Nesterov convnet's at step 35; designed on seeds 0-2, benchmarks/lr_find.py).
    above = probes.get(j + 1)
    at_start = (
        above is not None
        and above["why"] in BLEW_UP
        and above.get("failed_at") is not None
        and above["failed_at"] < RATIO_STEPS
    )
    # A probe one rung up that barely learned (its loss fell by less than CLIFF_FALL of the
    # best probe's, or not at all) is a cliff too, whether or not the sweep blew up: a loss
    # that saturates (a GRU's gates, cross-entropy near chance) can stay bounded to end_lr.
    # Measured on seeds 0-7 (benchmarks/lr_find.py): probes one rung above the best fell by
    # 0.41-1.0 of its fall where the pick was right, and by 0.05-0.26 above the picks that
    # lost 22-28 points (the Nesterov convnet and the GRU, seed 7: sweeps that ran to end_lr).
    barely = (
        above is not None
        and math.isfinite(above["score"])
        and above["why"] in (None, "no fall")
        and start - above["score"] < CLIFF_FALL * (start - best["score"])
    )
    cliff = (
        above is not None
        and not at_start
        and (
            above["why"] in BLEW_UP
            or barely
            or (j > 0 and result.stopped in ("diverged", "nan") and not _better(above, best))
        )
    )
    if (
        CLIFF_MARGIN
        and cliff
        and best["stable"]
        and inside(j - CLIFF_MARGIN)
        and at(j - CLIFF_MARGIN)["stable"]
    ):
        pick = at(j - CLIFF_MARGIN)
    result.suggestion = pick["lr"]
    result.suggestions = {DEFAULT_RULE: pick["lr"], **result.suggestions}
    result.probes = [probes[k] for k in sorted(probes)]
    if pick is not best:
        assert above is not None
        what = (
            "blew up"
            if above["why"] in BLEW_UP
            else "barely learned"
            if barely
            else "trained worse"
        )
        above_text = f"lr={above['lr']:.2g} {what}"
        result.reasons.append(
            f"the probes trained best at lr={best['lr']:.2g} (the curve's pick: {c:.2g}), but "
            f"one rung above it {above_text} in {n} steps: the pick stays "
            f"{CLIFF_MARGIN * PROBE_STEP:g} decade below, at lr={pick['lr']:.2g}, since a long "
            f"run breaks down lower than a short one; compare {pick['lr']:.2g} and "
            f"{best['lr']:.2g} by training"
        )
    elif not pick["stable"]:
        result.reasons.append(
            f"every probe down to lr={pick['lr']:.2g} was unstable ({n} steps at a constant "
            f"lr; there: {pick['why']}): lower start_lr, fix the model or data first (see "
            "diagnose), or try a smaller lr by hand"
        )
    elif j - 1 in probes and not _better(pick, probes[j - 1]):
        result.reasons.append(
            f"the probes at lr={pick['lr']:.2g} and below train about equally well over {n} "
            f"steps: the curve gives no clear optimum; raise {_steps_text(result)} or "
            f"batch_size (={result.batch_size}) for a clearer test, or compare lrs near "
            f"{pick['lr']:.2g} by training"
        )
    elif j == -PROBE_DOWN:
        result.reasons.append(
            f"the probes stepped down {PROBE_DOWN * PROBE_STEP:g} decades from the curve's "
            f"pick to lr={pick['lr']:.2g}, which still trains better than nothing but was not "
            f"compared with a lower lr: the curve misleads here; raise {_steps_text(result)} "
            f"or try lrs below {pick['lr']:.2g} by training"
        )
    elif j - 1 not in probes:
        result.reasons.append(
            f"the pick lr={pick['lr']:.2g} sits at the bottom of the swept range, with no lower "
            f"lr to compare it with: lower start_lr (={result.start_lr:g})"
        )
    elif j > 0:
        # Measured (benchmarks/lr_find.py): every probe that moved above the curve's pick
        # was right on average, but the one large miss was such a move (a GRU whose 50-step
        # probe at 0.069 trained best, and whose full run there lost 12 points): a short run
        # at a constant lr does not see the instability a long one meets near the cliff.
        result.reasons.append(
            f"the probes trained better above the curve's pick ({c:.2g}), up to "
            f"lr={pick['lr']:.2g}: short runs cannot rule out that a long one breaks down "
            f"there; compare {c:.2g} and {pick['lr']:.2g} by training, or raise steps "
            "for a longer sweep"
        )
        # said only if the long check does not move the pick down (which answers it)
        higher = j == PROBE_UP
    if at_start and pick["stable"]:
        assert above is not None
        result.reasons.append(
            f"one rung above the pick, lr={above['lr']:.2g} blew up in its first "
            f"{above['failed_at'] + 1} steps ({above['why']}): the pick trained stable "
            f"{PROBE_STEP:g} decade below it, but a long run may break out there too; compare "
            f"{pick['lr']:.2g} with {pick['lr'] * 10**-PROBE_STEP:.2g} by training"
        )
    confirmed = False  # the long run kept the pick, and it trained stable
    if pick["stable"]:
        confirmed = _long_check(result, initial, setup, seed, n, measured, pick["lr"])
    if higher and confirmed:
        result.reasons.append(
            f"the probes kept training better up to lr={pick['lr']:.2g}: the best lr may "
            f"lie higher; raise steps for a longer sweep, or end_lr (={result.end_lr:g})"
        )


def _long_check(
    result: LRFinderResult,
    initial: nn.Module,
    setup: _Setup,
    seed: int,
    n: int,
    measured: tuple[float, float],
    lr: float,
) -> bool:
    """The short probes' pick ``lr`` against a quarter decade below it over ``LONG_FACTOR`` x
    their ``n`` steps (200 for the default 100-step sweep); step down while the lower lr trains
    clearly better (:func:`_clearly_better`: paired on the same batches, and by more than
    ``LONG_MARGIN`` of the fall), at most ``LONG_DOWN`` times.

    Why: a short run at a constant lr cannot see the breakdown a long one meets there.
    Measured (``benchmarks/lr_find.py``): a GRU (Adam) whose 50- and 100-step probes both ranked
    0.081 best and 0.045 second had, after 200 steps, 1.20 against 0.61 (the training loss),
    and a 400-step training there lost 8 points of validation accuracy that 0.045 did not;
    the breakdown came between steps 100 and 200. Chosen on seeds 0-3 of the ten families
    (40 runs): the paired test alone moved 6 picks down; in five (LSTM, transformer, convnets)
    the lower lr was better by 0.7-3 % of the fall (noise floor, see :func:`_clearly_better`)
    and moving changed the loss by -0.8 to +3.8 points; ``LONG_MARGIN`` keeps those and moves
    the GRU's.

    After such a move, the pick keeps a margin: one more ``LONG_STEP`` down, to the lr the
    check already trained below it, when that one was stable (not confident, with the reason).
    Why: the same as the short probes' cliff margin (:func:`_verify`), one horizon further: the
    lr that trained clearly better over 200 steps sits a quarter decade under one that broke
    down there, and a longer run breaks down lower. Measured on the GRU (Adam; the only
    family runs of 60 where the check moved a pick, seeds 3 and 4; each lr trained in 4
    example orders, 400 steps): without the margin 85.5 and 68.8 points (mean validation
    accuracy; at 0.071 two orders in four broke down), with it 84.2 and 86.3. (Seed 3's pick
    is now moved by the short probes' cliff margin instead, a probe above it barely learned.)

    Moves the suggestion, adds the long probes (``steps`` = ``LONG_FACTOR * n``) to
    ``result.probes``, and says why when it cannot settle (the pick blew up over the long
    run and so did every lr below it tried, or the lrs kept training better down to the last).
    Returns whether the long run confirmed the pick: it stays, and trained stable.
    """
    steps = LONG_FACTOR * n
    start = measured[0]  # the start's mean loss and spread (_start_loss)
    floor = result.start_lr * (1 - 1e-9)
    longs = [_probe(initial, setup, lr, steps, seed, measured)]
    while len(longs) <= LONG_DOWN:
        lower = longs[-1]["lr"] * 10**-LONG_STEP
        if lower < floor:
            break
        longs.append(_probe(initial, setup, lower, steps, seed, measured))
        if not _clearly_better(longs[-1], longs[-2], start):
            break
    # the last probe run either lost to the one above it (which is the pick) or is the last
    # one tried; a lost comparison leaves the pick one step up
    k = len(longs) - 1
    if k > 0 and not _clearly_better(longs[k], longs[k - 1], start):
        k -= 1
    moved = k  # LONG_STEPs the long run's own comparison moved the pick down
    if 0 < k < len(longs) - 1 and longs[k + 1]["stable"]:
        k += 1  # a margin under the long run's breakdown (see the docstring)
    chosen = longs[k]
    result.probes.extend(longs)
    if chosen["lr"] != lr:
        result.suggestion = chosen["lr"]
        result.suggestions[DEFAULT_RULE] = chosen["lr"]
        if result.reasons:  # they name the short probes' pick: say where it went
            result.reasons.append(
                f"over {steps} steps lr={longs[moved]['lr']:.2g} trained clearly better than "
                f"the short probes' pick {lr:.2g}: the suggestion moved "
                f"{'there' if k == moved else 'below it'}"
            )
    if k > moved:
        result.reasons.append(
            f"over {steps} steps lr={longs[moved - 1]['lr']:.2g} trained clearly worse "
            f"than lr={longs[moved]['lr']:.2g}, which a longer run may also break down at: "
            f"the pick keeps {LONG_STEP:g} decade of margin, at lr={chosen['lr']:.2g}; compare "
            f"{chosen['lr']:.2g} and {longs[moved]['lr']:.2g} by training"
        )
    if not chosen["stable"]:
        result.reasons.append(
            f"over {steps} steps at a constant lr, the pick lr={lr:.2g} was unstable "
            f"({chosen['why']}){', and so was the lr below it' if len(longs) > 1 else ''}: a "
            f"long run may break down there; lower start_lr, or compare lower lrs by training"
        )
    elif moved == LONG_DOWN and moved == len(longs) - 1:
        result.reasons.append(
            f"over {steps} steps the lrs kept training better below the probes' pick "
            f"({lr:.2g}), down to lr={chosen['lr']:.2g}: a long run may need a lower lr still; "
            f"compare lrs below {chosen['lr']:.2g} by training"
        )
    return k == 0 and chosen["stable"]


def _clearly_better(a: dict[str, Any], b: dict[str, Any], start: float) -> bool:
    """:func:`_better` (``a`` the lower lr, ``b`` the one above), and by more than the noise
    floor explains: by more than ``LONG_MARGIN`` of ``b``'s fall from the ``start``, or ``b``'s
    loss above ``10**LONG_STEP`` (the ratio of the two lrs) times ``a``'s positive one and by
    more than ``LONG_FLOOR`` of the fall (two losses near zero, a memorized training set, differ
    by large ratios that do not matter); any stable ``a`` against an unstable ``b``.

    Over a long run at a constant lr, a lower lr ends a little lower once both reach the
    mini-batch noise's floor (SGD's noise ball: the excess loss above the optimum grows with
    the lr, at most in proportion to it, Mandt et al. 2017): a difference significant by the
    paired test but not a breakdown. So a loss more than the lr ratio above the lower one's is
    more than the noise ball explains, however small against the fall. Measured
    (benchmarks/lr_find.py, seeds 0-5 of ten families): where the lower lr of the long check
    trained better by the paired test, the noise floor's cases differed by 0.7-3 % of the fall
    and by ratios 1.21-1.64 (moving down changed their loss by -0.8 to +3.8 points); the
    breakdowns by 54 % and ratio 1.98 (a GRU), 16 % and 1.31 (a GRU), and 8.5 % and 3.29 (a
    convnet with Nesterov at batch 16, seed 7, confidently picked at 0.081 where 360 steps
    lose 22 points: the ratio test was added for it)."""
    if not _better(a, b):
        return False
    if not b["stable"] or b["score"] - a["score"] > LONG_MARGIN * (start - b["score"]):
        return True
    worse = b["score"] - a["score"] > LONG_FLOOR * (start - b["score"])  # not a memorized ~0
    return worse and a["score"] > 0 and b["score"] > 10**LONG_STEP * a["score"]


def _start_loss(
    initial: nn.Module, setup: _Setup, lr: float, seed: int, k: int
) -> tuple[float, float]:
    """The probes' start: the mean loss of the initial weights over the first ``k`` batches
    every probe draws (the same generator, seed and dropout masks as :func:`_probe`), forward
    and backward on a throw-away copy with no step, and the standard deviation of those
    losses: the "original cost" and its spread ``fit``'s LossGuard measures the same way
    (docs/architecture.md, "The divergence rule"). NaN when one is not finite (every probe
    then fails at its first step)."""
    trainer = _Trainer(copy.deepcopy(initial), setup, lr, "the start's loss")  # no step
    batches = _batches(setup.n, _global_batch(setup), seed + 1)
    device = trainer.params[0].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        losses = [trainer.loss(next(batches)) for _ in range(max(1, k))]
    return math.fsum(losses) / len(losses), divergence_spread(losses)


def _probe(
    initial: nn.Module,
    setup: _Setup,
    lr: float,
    steps: int,
    seed: int,
    measured: tuple[float, float],
) -> dict[str, Any]:
    """``steps`` optimizer steps at constant ``lr`` on a fresh copy of ``initial``.

    Every probe draws the same batches and the same dropout masks (its own generator, seeded
    with ``seed``; the caller's RNG state is put back). Unstable (``why``): a NaN/Inf loss
    (``"nan"``); a mini-batch loss that breaks out above ``loss_explosion`` (3) times the
    ``start`` (``"break-out"``: :func:`babysit.divergence.diverged` against the mean loss of
    the initial weights over the first batches and their spread (``measured``,
    :func:`_start_loss`), every step, exactly as
    ``fit``'s LossGuard judges, which would roll back and divide the lr by 10 there); a score
    that has diverged from the best running loss (EMA, β = 0.9) by the factor 4 of the sweep
    (``"diverged"``); a score not below the start (``"no fall"``);
    or a step that ``fit``'s UPDATE_RATIO_HIGH monitor would call too large (``"update
    ratio"``: the peak over the first ``RATIO_STEPS`` steps of the median over weight tensors
    of ``‖ΔW‖ / ‖W‖`` above ``update_ratio_high``, the monitor's own measurement);
    ``failed_at`` is the step of a NaN or a break-out. So ``fit``
    neither warns nor rolls back at the lr babysit suggested. (Until 2026-12-07 a spike that
    recovered was allowed: a regression MLP with plain SGD spikes to 5-25x its first loss in
    its first steps at the lrs a plain loop trains best at, and lr_find suggested such lrs,
    where ``fit`` then reported LR_TOO_HIGH and rolled back: ``benchmarks/lr_find.py``.)
    """
    start, spread = measured
    model = copy.deepcopy(initial)
    trainer = _Trainer(model, setup, lr, f"{steps} steps at lr={lr:.2g}")
    # the monitor's own tensors: weights that do not grow from zero (probes.grows_from_zero)
    weights = [p for p in trainer.params if p.dim() >= 2 and not grows_from_zero(p)]
    peak = 0.0
    batches = _batches(setup.n, _global_batch(setup), seed + 1)
    device = trainer.params[0].device
    devices = [device] if device.type == "cuda" else []
    losses: list[float] = []
    stable, beta, avg, best = True, 0.9, 0.0, math.inf
    why: str | None = None
    explosion = THRESHOLDS["loss_explosion"][0]  # fit's LossGuard factor
    failed_at: int | None = None  # the step of a NaN or a break-out
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for i in range(steps):
            value = trainer.loss(next(batches))
            if not math.isfinite(value):
                stable, why, failed_at = False, "nan", i
                break
            if diverged(value, start, explosion, spread=spread):
                stable, why, failed_at = False, "break-out", i
                losses.append(value)
                break
            losses.append(value)
            avg = beta * avg + (1 - beta) * value
            running = avg / (1 - beta ** (i + 1))
            best = min(best, running)
            if i < RATIO_STEPS and weights:
                peak = max(peak, _step_ratio(trainer.step, weights))
            else:
                trainer.step()
    tail = losses[-max(1, int(len(losses) * PROBE_WINDOW)) :] if losses else []
    score = float(np.mean(tail)) if stable and tail else math.inf
    if stable and diverged(score, best, DIVERGE_FACTOR):
        stable, why, score = False, "diverged", math.inf
    if stable and not score < start:
        stable, why = False, "no fall"
    if stable and peak > THRESHOLDS["update_ratio_high"][0]:
        stable, why = False, "update ratio"
    return {
        "lr": lr,
        "steps": steps,
        "score": score,
        "stable": stable,
        "why": why,
        "failed_at": failed_at,
        "ratio": peak,
        "losses": losses,
    }


@torch.no_grad()
def _weights_before(weights: list[torch.Tensor]) -> list[torch.Tensor]:
    return [w.detach().clone() for w in weights]


def _step_ratio(step: Callable[[], None], weights: list[nn.Parameter]) -> float:
    """``step()``, returning the median over ``weights`` of ``‖ΔW‖ / ‖W‖`` (0/0 skipped)."""
    before = _weights_before(weights)
    step()
    with torch.no_grad():
        ratios = [float((w - b).norm() / b.norm()) for w, b in zip(weights, before, strict=True)]
    finite = [r for r in ratios if math.isfinite(r)]
    return float(np.median(finite)) if finite else 0.0


def _better(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Probe ``a`` trained better than ``b``: stable, and its last-third losses lower than
    ``b``'s by more than ``PROBE_Z`` standard errors of their step-by-step difference (the same
    batches: paired). An unstable ``b`` loses to any stable ``a``."""
    if not a["stable"]:
        return False
    if not b["stable"]:
        return True
    k = max(1, int(min(len(a["losses"]), len(b["losses"])) * PROBE_WINDOW))
    d = np.asarray(a["losses"][-k:]) - np.asarray(b["losses"][-k:])
    se = float(np.std(d)) / math.sqrt(len(d))
    return float(np.mean(d)) < -PROBE_Z * se


def check_args(start_lr: float, end_lr: float, steps: int, batch_size: int) -> None:
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if start_lr >= end_lr:
        raise ValueError(
            f"start_lr must be below end_lr, got start_lr={start_lr:g} >= end_lr={end_lr:g}; "
            "the sweep grows the learning rate (e.g. start_lr=1e-7, end_lr=10)"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 5:
        raise ValueError(f"steps must be an integer >= 5 (100 is usual), got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def check_accumulate_amp(accumulate: int, amp: bool) -> None:
    """``accumulate`` a positive integer, ``amp`` a bool; each error names the fix."""
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ValueError(
            f"accumulate must be a positive integer (the mini-batches whose gradients add up "
            f"to one optimizer step; 1 = no accumulation), got {accumulate!r}"
        )
    if not isinstance(amp, bool):
        raise ValueError(f"amp must be True (autocast + GradScaler) or False, got {amp!r}")


def _global_batch(setup: _Setup) -> int:
    """Examples per optimizer step over all ranks: ``batch_size · accumulate · world_size``,
    at most the examples there are, and a multiple of ``accumulate · world_size`` (every
    micro-batch the same size, so scaling each loss by ``1/k`` gives the mean)."""
    parts = setup.accumulate * distributed.world_size()
    if setup.n < parts:
        raise ValueError(
            f"lr_find needs at least accumulate x processes = {parts} examples, got "
            f"{setup.n}: lower accumulate or pass more data"
        )
    size = min(setup.batch_size * parts, setup.n)
    return size - size % parts


def _sweep(
    model: nn.Module,
    setup: _Setup,
    start_lr: float,
    end_lr: float,
    steps: int,
    seed: int,
) -> tuple[list[float], list[float], str, int]:
    """Train with an exponentially growing lr; returns (lrs, losses, why it stopped, steps the
    GradScaler skipped).

    The running loss is fastai's bias-corrected EMA, ``a_i = β a_{i-1} + (1-β) L_i``,
    ``Â_i = a_i / (1 - β^(i+1))``, β = 0.98; the sweep stops once ``Â_i`` diverges from
    ``min_j Â_j`` with factor 4 (:func:`babysit.divergence.diverged`: ``Â_i > 4 min_j Â_j`` for a
    best loss of 0.1 or more) after the burn-in, or at the first non-finite loss, which is not
    recorded. ``L_i`` is the loss of optimizer step ``i`` (:class:`_Trainer`: the mean over its
    accumulated mini-batches and over ranks, so every rank stops at the same step).
    """
    if setup.n == 0:
        raise ValueError("data is empty: lr_find needs examples (ideally >= 1000)")
    trainer = _Trainer(model, setup, start_lr, f"the sweep ({steps} steps)")
    gamma = (end_lr / start_lr) ** (1.0 / (steps - 1))
    burn_in = _burn_in(steps)
    batches = _batches(setup.n, _global_batch(setup), seed)
    lrs: list[float] = []
    losses: list[float] = []
    avg, best = 0.0, math.inf
    for i in range(steps):
        lr = start_lr * gamma**i
        for group in trainer.opt.param_groups:
            group["lr"] = lr
        value = trainer.loss(next(batches))
        if not math.isfinite(value):
            return lrs, losses, "nan", trainer.skipped
        lrs.append(lr)
        losses.append(value)
        avg = EMA_BETA * avg + (1 - EMA_BETA) * value
        running = avg / (1 - EMA_BETA ** (i + 1))
        if i > burn_in and diverged(running, best, DIVERGE_FACTOR):
            return lrs, losses, "diverged", trainer.skipped
        best = min(best, running)
        trainer.step()
    return lrs, losses, "end_lr", trainer.skipped


def _batches(n: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Index batches: a fresh seeded permutation per pass over the ``n`` examples (the same
    permutation whatever the batch size, so ``accumulate=k`` on ``b`` sees the examples that
    batches of ``k · b`` see, in the same order)."""
    gen = torch.Generator().manual_seed(seed)
    size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - size + 1, size):
            yield order[start : start + size]


def _burn_in(steps: int) -> int:
    return max(2, int(BURN_IN * steps))


def _smooth(values: list[float], sigma: float) -> list[float]:
    """Zero-phase Gaussian smoothing (no lag, unlike the running EMA), edges renormalized."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 3 or sigma <= 0:
        return v.tolist()
    radius = int(3 * sigma)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    total = np.convolve(v, kernel, mode="same") if len(v) >= len(kernel) else None
    if total is None:  # shorter than the kernel: direct weighted averages
        idx = np.arange(len(v))
        w = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / sigma) ** 2)
        return (w @ v / w.sum(1)).tolist()
    weight = np.convolve(np.ones_like(v), kernel, mode="same")
    return (total / weight).tolist()


def _suggest(result: LRFinderResult) -> None:
    """Fill ``suggestions``, ``suggestion`` and ``confident`` from the smoothed curve."""
    lrs, s = np.asarray(result.lrs), np.asarray(result.losses)
    if len(s) == 0:
        result.reasons.append(
            f"the loss was NaN/Inf from the first step at lr={result.start_lr:g}: check the "
            "data and the model's output before tuning the learning rate"
        )
        return
    lo = min(_burn_in(result.steps), len(s) - 1)
    result.suggestions = _rules(lrs, s, lo)
    result.suggestion = result.suggestions[CURVE_RULE]
    result.reasons += _doubts(result, lo)


def _rules(lrs: np.ndarray, s: np.ndarray, lo: int) -> dict[str, float]:
    """Each rule's learning rate, read on the smoothed curve ``s`` past the burn-in ``lo``.

    - ``steepest`` (Smith 2017, torch-lr-finder, Lightning): the most negative slope
      ``dL/d log10(lr)``, looked for only between the burn-in and the minimum, where
      early spikes and the divergent tail cannot fool it.
    - ``minimum`` (the default): the lr of the lowest loss divided by 3. fastai divides by 10
      because its exponentially smoothed curve (beta 0.98) lags behind the raw losses, so its
      minimum sits later (at a higher lr) than the minimum of babysit's lag-free Gaussian
      smoothing; /10 on babysit's curve would land well below fastai's own rule, so the divisor
      is smaller here. How far each rule lands from the best trained lr is measured by
      ``benchmarks/lr_find.py`` (its tables: ``docs/benchmarks.md``).
    - ``valley`` (fastai's default since 2.4): the longest decreasing run of the curve,
      then the point halfway along it (fastai takes ``start + ⌊len/3⌋ + ⌊len/6⌋``).
    - ``combined``: the geometric mean of ``steepest`` and ``minimum``.
    """
    i_min = lo + int(np.argmin(s[lo:]))
    steepest = float(lrs[_steepest(lrs, s, lo, i_min)])
    minimum = float(lrs[i_min] / MINIMUM_DIVISOR)
    return {
        "combined": math.sqrt(steepest * minimum),
        "steepest": steepest,
        "minimum": minimum,
        "valley": float(lrs[_valley(s, lo)]),
    }


def _valley(s: np.ndarray, lo: int) -> int:
    """fastai's valley: longest strictly decreasing subsequence ending at each point, O(n²)."""
    n = len(s)
    length = np.ones(n, dtype=int)
    for i in range(lo + 1, n):
        before = s[lo:i] > s[i]
        if before.any():
            length[i] = 1 + int(length[lo:i][before].max())
    end = int(np.argmax(length))
    start = max(lo, end - int(length[end]) + 1)
    third = (end - start) / 3
    return start + int(third) + int(third / 2)


def _steepest(lrs: np.ndarray, s: np.ndarray, lo: int, i_min: int) -> int:
    if i_min - lo < 2:
        return i_min
    window = slice(lo, i_min + 1)
    slope = np.gradient(s[window], np.log10(lrs[window]))
    return lo + int(np.argmin(slope))


def _doubts(result: LRFinderResult, lo: int) -> list[str]:
    """Why the curve should not be trusted; empty when it should.

    With ``top`` the highest smoothed loss between the burn-in and the minimum, the fall is
    ``top - min``; the noise is the spread of the mini-batch losses around the smoothed curve.
    A fall under 5% of ``top`` is flat; a fall under 2.5× the noise cannot be told from noise
    (measured: healthy curves 3.1-15×, plain SGD the lowest; an already trained model 1.3-1.4×,
    a sweep over useless rates 1.5×, batches of 4 examples 1.4×).
    """
    s, raw = np.asarray(result.losses), np.asarray(result.raw_losses)
    n = len(s)
    if n - lo < MIN_POINTS:
        return [
            f"the loss {'became NaN' if result.stopped == 'nan' else 'diverged'} after {n} "
            f"steps (lr={result.lrs[-1]:.2g}): lower start_lr, or fix the model/data first"
        ]
    i_min = lo + int(np.argmin(s[lo:]))
    top = float(s[lo : i_min + 1].max())
    fall = top - float(s[i_min])
    noise = float(np.std(raw[lo : i_min + 1] - s[lo : i_min + 1]))
    reasons = []
    if fall < FLAT_DROP * abs(top):
        reasons.append(
            f"the curve is flat (the smoothed loss falls by {fall / max(abs(top), 1e-12):.1%} "
            f"of {top:.3g}): the model may not learn at all (see diagnose), be trained "
            f"already, or the sweep never reached useful rates (raise end_lr={result.end_lr:g})"
        )
    elif fall < NOISE_FACTOR * noise:
        reasons.append(
            f"the fall of the loss ({fall:.3g}) is within its batch-to-batch noise "
            f"({noise:.3g}): the model may be trained already, or the sweep is too short or "
            f"noisy (raise end_lr, batch_size (={result.batch_size}) or {_steps_text(result)})"
        )
    if result.n_examples is not None and result.n_examples < MIN_EXAMPLES:
        reasons.append(
            f"the sweep drew its batches from only {result.n_examples} example(s): the curve "
            f"shows how fast the model memorizes them; pass at least {MIN_EXAMPLES} (ideally "
            ">= 1000)"
        )
    if result.stopped == "end_lr" and i_min >= n - max(2, n // 20):
        reasons.append(f"the loss was still falling at end_lr={result.end_lr:g}: raise end_lr")
    return reasons


def _steps_text(result: LRFinderResult) -> str:
    """``steps`` as the user passed it: an extended sweep ran ``EXTEND`` x their steps, and
    quoting the longer sweep's count as theirs would send them to the value they passed."""
    if result.extended:
        return (
            f"steps (={result.steps // EXTEND}; the sweep was already run again with "
            f"{result.steps})"
        )
    return f"steps (={result.steps})"


def _unclear(result: LRFinderResult) -> bool:
    """The curve says too little to read a pick off it, and a longer sweep may say more: it
    is flat, its fall is within the noise, or it diverged before ``MIN_POINTS`` points (the
    model needs more steps per decade to start learning; small batches are noisier)."""
    s, raw = np.asarray(result.losses), np.asarray(result.raw_losses)
    lo = min(_burn_in(result.steps), max(len(s) - 1, 0))
    if len(s) - lo < MIN_POINTS:
        return result.stopped != "nan" or len(s) > 0
    i_min = lo + int(np.argmin(s[lo:]))
    top = float(s[lo : i_min + 1].max())
    fall = top - float(s[i_min])
    noise = float(np.std(raw[lo : i_min + 1] - s[lo : i_min + 1]))
    return fall < FLAT_DROP * abs(top) or fall < NOISE_FACTOR * noise


def _at(lrs: list[float], losses: list[float], lr: float) -> float:
    """The smoothed loss at ``lr`` (nearest recorded step on the log scale)."""
    if not lrs:
        return float("nan")
    return losses[int(np.argmin(np.abs(np.log(np.asarray(lrs)) - math.log(lr))))]


def _clip_y(ax: Any, losses: list[float]) -> None:
    """Keep the divergent tail from squashing the interesting part of the curve."""
    if len(losses) < 2:
        return
    low, start = min(losses), losses[0]
    span = max(start - low, 1e-3 * max(abs(start), 1e-12))
    ax.set_ylim(low - 0.1 * span, start + 0.5 * span)
