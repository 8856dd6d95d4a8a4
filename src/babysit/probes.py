"""Per-layer activation and gradient statistics, measured by hooks on any ``nn.Module``.

A :class:`Probe` is babysit's measuring instrument: ``diagnose`` takes one :meth:`Probe.snapshot`
before training, the training monitors read :meth:`Probe.latest` while it runs, and the HTML report
draws :meth:`Probe.history`. For each probed layer and each sampled step it records a
:class:`LayerStats`: mean, std, min, max, the fraction of exact zeros, dead ReLU units, saturated
tanh/sigmoid pre-activations, a histogram and, with ``backward=True``, gradient norms.

The call sequence in a training loop is ``forward -> loss.backward() -> probe.step()``::

    with Probe(model, backward=True) as probe:  # records steps 0, 100, 200, ...
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            probe.step()  # after backward and before the next zero_grad()

Cost. Hooks are registered only while a sampled step runs (``step % every == 0``): the other
steps run the model with no hook at all. On a sampled step the statistics are about ten torch ops
per layer on detached tensors, sub-sampled to ``max_examples`` x ``max_units``; besides one
sum/min/max fetch per layer, all numbers reach Python in one transfer, inside :meth:`Probe.step`.
On the small MNIST-1D MLP on CPU, where per-op overhead dominates, a recorded step costs about
two plain training steps (``benchmarks/probes.py``), hence the default ``every=100``: about 1-2%
overall, where ``every=10`` costs 15-25%. Larger layers make the relative cost smaller.

Memory. Nothing stored holds a tensor: records are plain floats and lists, ``keep`` per layer.

>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> stats = Probe(model).snapshot(torch.randn(300, 4))
>>> sorted(stats)
['0', '1', '2']
>>> stats["1"].kind, stats["1"].n_examples, 0.0 <= stats["1"].dead_fraction <= 1.0
('relu', 300, True)
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .nn.activations import WEIGHT_LAYERS, Maxout, activation_name

__all__ = [
    "DEAD_MIN_EXAMPLES",
    "HIST_BINS",
    "MAX_CALLS_PER_STEP",
    "SATURATION_THRESHOLDS",
    "SIGMOID_SATURATION",
    "TANH_SATURATION",
    "ZERO_RMS",
    "LayerRow",
    "LayerStats",
    "Probe",
    "grows_from_zero",
    "measure_layers",
]

# Saturation thresholds on the pre-activation z (docs/architecture.md, "Definitions").
# tanh'(z) = 1 - tanh²(z) is 0.0099 at |z| = 3.0, under 1% of its maximum 1. At |z| = 5.3
# sigmoid'(z) = 0.0049, 2% of its maximum 1/4; what the two thresholds share is that the output
# is within 0.5% of its asymptote (|tanh(3.0)| = 0.99505, sigmoid(5.3) = 0.99503).
# DeepDiagnosis (Wardat et al., ICSE'22) used |z| > 5 for both.
TANH_SATURATION = 3.0
SIGMOID_SATURATION = 5.3
SATURATION_THRESHOLDS = {"tanh": TANH_SATURATION, "sigmoid": SIGMOID_SATURATION}

# docs/architecture.md, "Definitions", dead ReLU unit: zero on every example of a probe batch
# of >= 256. On fewer examples a unit may be silent by chance; LayerStats.dead_judgeable tells
# callers. (AUTOTRAINER, Zhang et al., ICSE'21, flags dying ReLU from >= 70% zero gradients
# instead.)
# A weight tensor whose RMS is below this grows from zero (a LoRA adapter's B, a zero-initialised
# residual branch or head): its ‖ΔW‖/‖W‖ is infinite at the first step and ~1/k at step k
# whatever the learning rate, so it says nothing about a step's size (docs/architecture.md,
# "Definitions"). The update-ratio monitor and the range test's probes both leave it out.
ZERO_RMS = 1e-6


def grows_from_zero(weight: torch.Tensor) -> bool:
    """Whether ``weight`` is (numerically) zero now: its RMS is below :data:`ZERO_RMS`."""
    with torch.no_grad():
        return float(weight.detach().float().pow(2).mean().sqrt()) < ZERO_RMS


DEAD_MIN_EXAMPLES = 256

# A module called many times per step (an RNN cell, a shared activation) is recorded for its
# first calls only, so one sampled step costs a bounded amount of time and memory.
MAX_CALLS_PER_STEP = 8

_DEAD_TYPES = (nn.ReLU, nn.ReLU6)  # outputs exact zeros: a unit can die
_SATURATION_TYPES = {nn.Tanh: TANH_SATURATION, nn.Sigmoid: SIGMOID_SATURATION}
_EXTRA_ACTIVATIONS = (  # nonlinearities the babysit registry does not name
    nn.ReLU6,
    nn.Hardtanh,
    nn.Softplus,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.CELU,
    nn.RReLU,
    nn.LogSigmoid,
    nn.Softsign,
)
# Leaves that only reshape or add noise: their statistics repeat the layer before them.
_PASS_THROUGH = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd)
# Layers whose units sit on the last dimension; all others are channels-first (dim 1).
_UNITS_LAST = (
    nn.Linear,
    nn.Bilinear,
    Maxout,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.LayerNorm,
    nn.RNNBase,  # hidden units last; a time-first output is put examples-first before
)
_LAYER_SETS = ("all", "activations", "weights")


@dataclass
class LayerStats:
    """The statistics of one layer's output at one step: plain numbers, no tensors.

    Statistics cover the examples and units the probe kept (``n_examples`` x ``n_units``, all
    positions of a conv feature map); ``hist_counts`` sums to their number minus values outside
    a fixed ``hist_range``.
    """

    name: str  # module path ("3", "encoder.block1.act"); the k-th call in a step is "path#k"
    kind: str  # "relu", "tanh", "linear", "conv2d", "batchnorm", ...; else the class, lowercase
    step: int  # the probe's step counter when the forward ran
    n_examples: int  # examples measured (the batch, capped at max_examples)
    n_units: int  # features (last dim of Linear) or channels (dim 1), capped at max_units
    mean: float
    std: float  # unbiased, as torch.std
    min: float
    max: float
    zero_fraction: float  # exact zeros among all measured values
    nonfinite_fraction: float  # NaN or ±inf among all measured values
    dead_fraction: float | None  # ReLU only: units zero on every example (and position)
    dead_units: list[int] | None  # ReLU only: their indices
    saturated_fraction: float | None  # tanh/sigmoid only: pre-activations beyond the threshold
    hist_counts: list[int]
    hist_edges: list[float]  # len(hist_counts) + 1 bin edges
    grad_norm: float | None = None  # ‖∂loss/∂output‖ over the whole output (backward=True)
    param_grad_norms: dict[str, float] = field(default_factory=dict)  # {"weight": ‖grad‖, ...}
    call: int = 0  # which call of the module in its step (0 for the first)
    # The counts behind the fractions and the std, so that records of several processes can be
    # combined exactly (``babysit.train.monitors.across_ranks``): the values measured
    # (examples x units x positions) and those ``saturated_fraction`` is over (the same, except
    # for recurrent layers, whose hidden states count too).
    n_values: int = 0
    n_saturation_values: int = 0

    @property
    def dead_judgeable(self) -> bool:
        """Whether ``dead_fraction`` rests on enough examples (``DEAD_MIN_EXAMPLES``,
        docs/architecture.md, "Definitions")."""
        return self.dead_fraction is not None and self.n_examples >= DEAD_MIN_EXAMPLES

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerStats:
        """The inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class _Layer:
    """What the hooks need to know about one probed module."""

    name: str
    module: nn.Module
    kind: str
    units_last: bool  # units on the last dim (Linear) rather than dim 1 (conv channels)
    dead: bool  # report dead units (ReLU family)
    saturation: float | None  # threshold on the pre-activation (tanh/sigmoid)
    recurrent: bool = False  # RNN/LSTM/GRU: output sequence plus hidden states
    time_first: bool = False  # a recurrent layer without batch_first: (T, N, H) outputs


@dataclass
class _Pending:
    """One record's tensors, measured in a hook; ``Probe.step`` turns them into numbers."""

    layer: _Layer
    name: str
    call: int
    n_examples: int
    n_units: int
    numel: int
    mean: float  # mean, min and max are fetched in the hook: the histogram and std need them
    low: float
    high: float
    spread: torch.Tensor  # 0-d: ‖x - mean‖, the root of the sum of squared deviations
    counts: list[torch.Tensor]  # 0-d integers: nonzero, then saturated if measured
    nonfinite: int
    hist: torch.Tensor | list[int]  # (bins,), or (bins + 1,) from a bincount
    bins: int
    edges: tuple[float, float]  # histogram range
    dead: torch.Tensor | None  # (k,) int64: indices of the dead units (ReLU family)
    grad_norm: torch.Tensor | None = None  # 0-d
    saturation_numel: int | None = None  # values the saturated count is over, if not numel
    param_grads: dict[str, torch.Tensor] = field(default_factory=dict)  # 0-d norms


class Probe:
    """Records per-layer statistics of ``model`` every ``every`` steps, through hooks.

    Args:
        model: any ``nn.Module``; layers are named by their path in ``model.named_modules()``.
        every: record on steps 0, every, 2·every, ... of the counter :meth:`step` advances. A
            recorded step costs about two training steps of a small MLP on CPU; ``every=1``
            records each step, e.g. while debugging.
        layers: which modules to probe. ``"all"``: every leaf module (a :class:`Maxout` counts as
            one), except pass-through ones (Dropout, Identity, Flatten); ``"activations"``:
            nonlinearities only; ``"weights"``: Linear/Conv/Maxout layers; a list of module
            paths (containers allowed); or a callable ``(path, module) -> bool``.
        backward: also record ‖∂loss/∂output‖ per layer and ‖grad‖ per parameter of each
            probed module (read in :meth:`step`, so call it after ``loss.backward()``).
        bins: histogram bins.
        hist_range: fixed ``(low, high)`` histogram range; ``None`` spans each tensor's min..max.
        max_units: measure at most the first ``max_units`` units (features or channels).
        max_examples: measure at most the first ``max_examples`` examples; ``None`` keeps all.
            Dead units need >= ``DEAD_MIN_EXAMPLES`` (256) examples to be judged.
        keep: records kept per layer (the oldest are dropped).

    Sequence. Call :meth:`step` once per training step, after ``loss.backward()``: it stores
    the step's records (with the parameter-gradient norms of the layers whose output received
    a gradient) and arms the hooks for the next sampled step. Statistics are over all measured
    values of a layer: examples x units x positions.

    Modules. Outputs are measured; a module returning a tuple, list or dict is measured on its
    first tensor. Units are the last dim for Linear-like layers and dim 1 (channels) for all others,
    including activations (so a ReLU on ``(N, T, D)`` sequences sees T as its units). A module
    called several times in a step is recorded per call: ``path``, then ``path#1``, ``path#2`` ...
    (at most ``MAX_CALLS_PER_STEP``). Forwards under ``torch.no_grad()`` or in eval mode are
    measured too; they simply produce no gradient statistics.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        >>> with Probe(model, every=2) as probe:
        ...     for _ in range(5):
        ...         _ = model(torch.randn(16, 4))
        ...         probe.step()
        >>> sorted({r.step for r in probe.records})
        [0, 2, 4]
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        every: int = 100,
        layers: str | Sequence[str] | Callable[[str, nn.Module], bool] = "all",
        backward: bool = False,
        bins: int = 30,
        hist_range: tuple[float, float] | None = None,
        max_units: int = 4096,
        max_examples: int | None = 1024,
        keep: int = 100,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Probe needs an nn.Module, got {type(model).__name__}")
        _check_positive_int("every", every)
        _check_positive_int("bins", bins)
        _check_positive_int("max_units", max_units)
        _check_positive_int("keep", keep)
        if max_examples is not None:
            _check_positive_int("max_examples", max_examples)
        if hist_range is not None and not (
            len(hist_range) == 2 and float(hist_range[0]) < float(hist_range[1])
        ):
            raise ValueError(f"hist_range must be (low, high) with low < high, got {hist_range!r}")
        self.model = model
        self.every = every
        self.backward = bool(backward)
        self.bins = bins
        self.hist_range = None if hist_range is None else tuple(map(float, hist_range))
        self.max_units = max_units
        self.max_examples = max_examples
        self.keep = keep
        self._layers = _select_layers(model, layers)
        self._hooks = [(layer.module, partial(self._on_forward, layer)) for layer in self._layers]
        self._step = 0
        self._attached = False
        self._handles: list[RemovableHandle] = []
        self._pending: list[_Pending] = []
        self._calls: dict[str, int] = {}
        self._history: dict[str, deque[LayerStats]] = {}
        self._warned: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Probe:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def attach(self) -> Probe:
        """Start probing: the current step records if it is a sampled one."""
        self._attached = True
        self._arm(self.sampling)
        return self

    def detach(self) -> None:
        """Stop probing: remove every hook and keep what was recorded."""
        self._flush()
        self._attached = False
        self._arm(False)

    @property
    def layer_names(self) -> list[str]:
        """Module paths of the probed layers, in registration order."""
        return [layer.name for layer in self._layers]

    @property
    def current_step(self) -> int:
        """The step counter: how many times :meth:`step` has been called."""
        return self._step

    def seek(self, step: int) -> None:
        """Set the step counter (a resumed training run continues its sampling schedule)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        self._flush()
        self._step = step
        if self._attached:
            self._arm(self.sampling)

    @property
    def sampling(self) -> bool:
        """Whether the current step is recorded (``current_step % every == 0``)."""
        return self._step % self.every == 0

    def step(self) -> None:
        """End the current training step: store its records, then advance the counter.

        Call it once per step, after ``loss.backward()`` (parameter gradients are read here)
        and before the next ``optimizer.zero_grad()``.
        """
        self._flush()
        self._step += 1
        if self._attached:
            self._arm(self.sampling)

    # -- results -----------------------------------------------------------------------------

    @property
    def records(self) -> list[LayerStats]:
        """All kept records, ordered by step, then by layer. A step's records are stored when
        :meth:`step` (or :meth:`detach`) ends it."""
        everything = [r for kept in self._history.values() for r in kept]
        return sorted(everything, key=lambda r: r.step)

    def latest(self) -> dict[str, LayerStats]:
        """Each layer's most recent record, by name."""
        return {name: kept[-1] for name, kept in self._history.items() if kept}

    def history(self) -> list[dict[str, Any]]:
        """All kept records as JSON-ready dicts (what ``activations.json`` stores)."""
        return [r.to_dict() for r in self.records]

    def clear(self) -> None:
        """Forget every stored record (the step counter keeps running)."""
        self._history.clear()

    def snapshot(
        self,
        *inputs: Any,
        loss_fn: Callable[[Any], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> dict[str, LayerStats]:
        """Measure one forward of ``model(*inputs, **kwargs)`` now, whatever the sampling.

        Without ``loss_fn`` the forward runs under ``torch.no_grad()``. With it, the scalar
        ``loss_fn(output)`` is differentiated by ``torch.autograd.grad`` with respect to the
        parameters and to (detached copies of) the floating-point inputs, which fills
        ``grad_norm`` of every layer and ``param_grad_norms`` without touching any
        ``param.grad``. The model's train/eval mode is left as it is. The records are returned,
        not stored in :attr:`records`; ``n_examples`` tells whether dead units can be judged.
        """
        if loss_fn is not None:
            inputs = tuple(_leaf(x) for x in inputs)
        saved = self._pending, self._calls, self.backward
        self._pending, self._calls, self.backward = [], {}, loss_fn is not None
        was_armed = bool(self._handles)
        self._arm(True)
        try:
            if loss_fn is None:
                with torch.no_grad():
                    self.model(*inputs, **kwargs)
            else:
                with torch.enable_grad():
                    loss = loss_fn(self.model(*inputs, **kwargs))
                    self._differentiate(loss, inputs)
            pending = self._pending
        finally:
            self._pending, self._calls, self.backward = saved
            self._arm(was_armed)
        return {stats.name: stats for stats in _finalize(pending, self._step)}

    def _differentiate(self, loss: torch.Tensor, inputs: tuple) -> None:
        """A snapshot's gradients: the output hooks see theirs, the parameters' norms go to the
        pending records; nothing is accumulated in ``.grad``."""
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar tensor, got {shape}")
        params = [p for p in self.model.parameters() if p.requires_grad]
        leaves = params + [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
        if not loss.requires_grad or not leaves:
            return
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        grad_of = {id(p): g for p, g in zip(params, grads, strict=False)}
        for rec in self._pending:
            if rec.call > 0:  # a module's parameters are reported once, on its first call
                continue
            for pname, p in rec.layer.module.named_parameters():
                if (g := grad_of.get(id(p))) is not None:
                    rec.param_grads[pname] = torch.linalg.vector_norm(g)

    # -- hooks ---------------------------------------------------------------------------------

    def _arm(self, on: bool) -> None:
        """Register the forward hooks (on) or remove them (off)."""
        if on and not self._handles:
            self._handles = [module.register_forward_hook(hook) for module, hook in self._hooks]
        elif not on:
            for handle in self._handles:
                handle.remove()
            self._handles = []

    def _on_forward(self, layer: _Layer, module: nn.Module, args: tuple, output: Any) -> None:
        call = self._calls.get(layer.name, 0)
        if call >= MAX_CALLS_PER_STEP:
            return
        self._calls[layer.name] = call + 1
        out = _first_tensor(output)
        if layer.recurrent:
            out, states = _recurrent_outputs(output)
        if out is None or out.dim() == 0 or out.numel() == 0 or out.is_complex():
            return
        pre = args[0] if args and isinstance(args[0], torch.Tensor) else None
        name = layer.name if call == 0 else f"{layer.name}#{call}"
        try:
            if layer.recurrent:
                rec = self._measure_recurrent(layer, name, call, out, states)
            else:
                rec = self._measure(layer, name, call, out, pre)
        except Exception as err:  # a probe must never break the training it watches
            if name not in self._warned:
                self._warned.add(name)
                warnings.warn(f"babysit probe skipped layer {name!r}: {err}", stacklevel=2)
            return
        self._pending.append(rec)
        if self.backward and out.requires_grad:
            out.register_hook(partial(_store_grad_norm, rec))

    def _measure_recurrent(
        self, layer: _Layer, name: str, call: int, out: torch.Tensor, states: list[torch.Tensor]
    ) -> _Pending:
        """A recurrent layer: the statistics of its output sequence (examples first), and the
        saturation of its outputs and hidden states together.

        The pre-activations live inside the fused kernel, so saturation is read from the
        values themselves (docs/architecture.md, "Definitions": the output within 0.5% of its
        asymptote): ``|h| > tanh(TANH_SATURATION)`` for the outputs and final hidden states
        ``h_n`` (for a tanh RNN exactly ``|z| > 3.0``; for LSTM and GRU a saturated ``h``
        implies a saturated cell tanh), and ``|c| > TANH_SATURATION`` for an LSTM's cell state
        ``c_n``, the pre-activation of its output tanh.
        """
        seq = out.transpose(0, 1) if layer.time_first and out.dim() == 3 else out
        rec = self._measure(layer, name, call, seq, None)
        bound = math.tanh(TANH_SATURATION)
        x = _units_view(seq.detach(), True, self.max_examples, self.max_units)
        saturated = torch.count_nonzero(x.abs() > bound)
        numel = x.numel()
        for i, state in enumerate(states):
            threshold = TANH_SATURATION if i == 1 else bound  # (h_n, c_n)
            saturated = saturated + torch.count_nonzero(state.detach().abs() > threshold)
            numel += state.numel()
        rec.counts.append(saturated)
        rec.saturation_numel = numel
        return rec

    def _measure(
        self, layer: _Layer, name: str, call: int, out: torch.Tensor, pre: torch.Tensor | None
    ) -> _Pending:
        """Tensor statistics of one output (and of its pre-activation for tanh/sigmoid).

        On a small tensor each op costs microseconds of overhead, more than its arithmetic, so
        the ops are few and cheap (about 10, 60 µs warm on a 100 x 100 CPU tensor). Sum, min
        and max reach Python here, the one device sync per layer: they give the histogram its
        range, and the std is then the exact two-pass ``‖x - mean‖ / sqrt(n - 1)``, half the
        cost of ``torch.std``. The histogram is a ``bincount`` of int32 bin indices, a third of
        the cost of ``torch.histc``. Both avoid ops that go multi-threaded on a few thousand
        values (``histc``, ``dot``): with every core busy, their threads wait milliseconds.
        """
        x = _units_view(out.detach(), layer.units_last, self.max_examples, self.max_units)
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()  # integers, booleans, and half types (which CPU ops may lack)
        flat = x.reshape(-1)  # a view unless x was cut or transposed: then one copy for all ops
        n = flat.numel()
        total, low, high = torch.stack([flat.sum(), *torch.aminmax(flat)]).tolist()
        mean = total / n  # sum then divide: torch.mean is 2x slower on CPU
        nonfinite = 0 if math.isfinite(low) and math.isfinite(high) else _count_nonfinite(flat)
        hist, edges = self._histogram(flat, low, high, nonfinite)
        counts = [torch.count_nonzero(flat)]
        saturated = layer.saturation is not None and pre is not None and pre.shape == out.shape
        if saturated:
            z = _units_view(pre.detach(), layer.units_last, self.max_examples, self.max_units)
            counts.append(torch.count_nonzero(z.abs() > layer.saturation))
        dead = None
        if layer.dead:  # ReLU outputs are >= 0: a unit is dead where its largest output is 0
            peak = x.amax(dim=0) if x.dim() == 2 else x.amax(dim=(0, 2))  # (units,)
            dead = torch.nonzero(peak == 0).view(-1)
        return _Pending(
            layer=layer,
            name=name,
            call=call,
            n_examples=x.shape[0],
            n_units=x.shape[1],
            numel=n,
            mean=mean,
            low=low,
            high=high,
            spread=torch.linalg.vector_norm(flat - mean),
            counts=counts,
            nonfinite=nonfinite,
            hist=hist,
            bins=self.bins,
            edges=edges,
            dead=dead,
        )

    def _histogram(
        self, x: torch.Tensor, low: float, high: float, nonfinite: int
    ) -> tuple[torch.Tensor | list[int], tuple[float, float]]:
        """Counts of the 1-d ``x`` in ``bins`` equal bins, and their range: the fixed
        ``hist_range``, else min..max of the finite values (``value ± 0.5`` when they are all
        equal, as ``torch.histogram`` does). A bincount may hold one extra bin for the maximum
        value: ``_record`` folds it into the last one."""
        if self.hist_range is not None:
            return torch.histc(x, self.bins, *self.hist_range).long(), self.hist_range
        if nonfinite:
            x = x[torch.isfinite(x)]
            if x.numel() == 0:
                return [0] * self.bins, (0.0, 1.0)
            low, high = (float(v) for v in torch.aminmax(x))
        if low == high:
            counts = [0] * self.bins
            counts[self.bins // 2] = x.numel()
            return counts, _widen(low, high)
        # bin = floor((x - low) * bins / (high - low)); no clamp, the maximum may land in `bins`
        index = x.sub(low).mul_(self.bins / (high - low)).int()
        return torch.bincount(index, minlength=self.bins), (low, high)

    def _flush(self) -> None:
        """Turn this step's pending tensors into stored records (one transfer per step)."""
        if not self._pending:
            self._calls.clear()
            return
        pending, self._pending = self._pending, []
        self._calls.clear()
        if self.backward:
            _attach_param_grads(pending)
        for stats in _finalize(pending, self._step):
            kept = self._history.get(stats.name)
            if kept is None:
                kept = self._history[stats.name] = deque(maxlen=self.keep)
            kept.append(stats)

    def __repr__(self) -> str:
        return (
            f"Probe({type(self.model).__name__}, layers={len(self._layers)}, every={self.every}, "
            f"backward={self.backward}, step={self._step}, attached={self._attached})"
        )


def _store_grad_norm(rec: _Pending, grad: torch.Tensor) -> None:
    """Tensor hook on a layer's output: keep ‖∂loss/∂output‖ (the last backward wins)."""
    rec.grad_norm = torch.linalg.vector_norm(grad.detach())


def _attach_param_grads(pending: list[_Pending]) -> None:
    """Norms of the parameter gradients of the layers whose output received a gradient."""
    for rec in pending:
        if rec.grad_norm is None or rec.call > 0:  # no backward this step, or already counted
            continue
        for pname, p in rec.layer.module.named_parameters():
            if p.grad is not None:
                rec.param_grads[pname] = torch.linalg.vector_norm(p.grad.detach())


def _finalize(pending: list[_Pending], step: int) -> list[LayerStats]:
    """Build the records, fetching all their tensors with two ``tolist`` calls."""
    floats: list[torch.Tensor] = []  # 0-d
    ints: list[torch.Tensor] = []  # 0-d
    int_vectors: list[torch.Tensor] = []
    for rec in pending:
        floats.append(rec.spread)
        if rec.grad_norm is not None:
            floats.append(rec.grad_norm)
        floats += rec.param_grads.values()
        ints += rec.counts
        if isinstance(rec.hist, torch.Tensor):
            int_vectors.append(rec.hist)
        if rec.dead is not None:
            int_vectors.append(rec.dead)
    float_values = iter(_fetch(floats, [])[0])
    int_values, int_vector_values = (iter(v) for v in _fetch(ints, int_vectors))
    return [_record(rec, step, float_values, int_values, int_vector_values) for rec in pending]


def _record(
    rec: _Pending,
    step: int,
    floats: Iterator[float],
    ints: Iterator[int],
    int_vectors: Iterator[list[int]],
) -> LayerStats:
    """One record from the fetched numbers, consumed in the order ``_finalize`` queued them."""
    spread = next(floats)
    grad_norm = next(floats) if rec.grad_norm is not None else None
    param_grads = {pname: next(floats) for pname in rec.param_grads}
    nonzero = next(ints)
    saturated = next(ints) if len(rec.counts) > 1 else None
    hist = next(int_vectors) if isinstance(rec.hist, torch.Tensor) else rec.hist
    if len(hist) > rec.bins:  # the bincount's extra bin holds the maximum: the last bin's
        hist = [*hist[: rec.bins - 1], sum(hist[rec.bins - 1 :])]
    dead_units = next(int_vectors) if rec.dead is not None else None
    return LayerStats(
        name=rec.name,
        kind=rec.layer.kind,
        step=step,
        n_examples=rec.n_examples,
        n_units=rec.n_units,
        mean=rec.mean,
        std=spread / math.sqrt(max(rec.numel - 1, 1)),  # unbiased, as torch.std
        min=rec.low,
        max=rec.high,
        zero_fraction=(rec.numel - nonzero) / rec.numel,
        nonfinite_fraction=rec.nonfinite / rec.numel,
        dead_fraction=None if dead_units is None else len(dead_units) / rec.n_units,
        dead_units=dead_units,
        saturated_fraction=(
            None if saturated is None else saturated / (rec.saturation_numel or rec.numel)
        ),
        hist_counts=hist,
        hist_edges=_edges(*rec.edges, rec.bins),
        grad_norm=grad_norm,
        param_grad_norms=param_grads,
        call=rec.call,
        n_values=rec.numel,
        n_saturation_values=0 if saturated is None else rec.saturation_numel or rec.numel,
    )


def _count_nonfinite(x: torch.Tensor) -> int:
    return x.numel() - int(torch.count_nonzero(torch.isfinite(x)))


def _fetch(scalars: list[torch.Tensor], vectors: list[torch.Tensor]) -> tuple[list, list[list]]:
    """The values of 0-d ``scalars`` and 1-d ``vectors`` of one dtype kind, with one ``tolist``
    (one device sync); each vector comes back as a list of its own."""
    if not scalars and not vectors:
        return [], []
    try:
        flat = torch.cat(([torch.stack(scalars)] if scalars else []) + vectors).tolist()
    except RuntimeError:  # a model spread over devices
        scalars, vectors = [t.cpu() for t in scalars], [t.cpu() for t in vectors]
        flat = torch.cat(([torch.stack(scalars)] if scalars else []) + vectors).tolist()
    start, out = len(scalars), []
    for v in vectors:
        out.append(flat[start : start + v.numel()])
        start += v.numel()
    return flat[: len(scalars)], out


def _units_view(
    x: torch.Tensor, units_last: bool, max_examples: int | None, max_units: int
) -> torch.Tensor:
    """``x`` as ``(examples, units)`` or ``(examples, units, positions)``, cut to the first
    ``max_examples`` examples and ``max_units`` units; a view, and ``x`` itself when it fits."""
    if max_examples is not None and x.shape[0] > max_examples:
        x = x[:max_examples]
    if x.dim() == 1:
        return x.unsqueeze(1)
    if units_last and x.dim() > 2:
        x = x.flatten(1, -2).transpose(1, 2)  # (N, D, T): the last dim holds the units
    elif x.dim() > 3:
        x = x.flatten(2)  # (N, C, H*W)
    return x[:, :max_units] if x.shape[1] > max_units else x


def _widen(low: float, high: float) -> tuple[float, float]:
    """torch.histogram's range for constant data: ``value ± 0.5``."""
    return (low - 0.5, high + 0.5) if low == high else (low, high)


def _edges(low: float, high: float, bins: int) -> list[float]:
    """``bins + 1`` equally spaced bin edges from ``low`` to ``high``."""
    width = (high - low) / bins
    return [low + width * i for i in range(bins)] + [high]


def _leaf(x: Any) -> Any:
    """A floating-point tensor input as a fresh leaf that requires grad; anything else as is."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.detach().requires_grad_(True)
    return x


def _recurrent_outputs(output: Any) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """An RNN/LSTM/GRU's ``(output, h_n)`` or ``(output, (h_n, c_n))``: the output sequence
    (a packed sequence's data: one row per token) and the final states."""
    if not isinstance(output, tuple) or len(output) != 2:
        return _first_tensor(output), []
    seq, hidden = output
    if isinstance(seq, nn.utils.rnn.PackedSequence):
        seq = seq.data
    states = list(hidden) if isinstance(hidden, tuple) else [hidden]
    tensors = [h for h in states if isinstance(h, torch.Tensor) and h.is_floating_point()]
    return (seq if isinstance(seq, torch.Tensor) else None), tensors


def _first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a module returned, or the first one of its tuple, list or dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


# -- which modules ---------------------------------------------------------------------------


def _select_layers(
    model: nn.Module, layers: str | Sequence[str] | Callable[[str, nn.Module], bool]
) -> list[_Layer]:
    named = dict(model.named_modules())
    if isinstance(layers, str):
        if layers not in _LAYER_SETS:
            raise ValueError(
                f"layers={layers!r} is not a layer set; use one of {', '.join(_LAYER_SETS)}, "
                "a list of module paths, or a callable (path, module) -> bool"
            )
        chosen = [(n, m) for n, m in named.items() if _in_set(layers, n, m, model)]
    elif callable(layers):
        chosen = [(n, m) for n, m in named.items() if layers(n, m)]
    else:
        wanted = list(layers)
        if not all(isinstance(n, str) for n in wanted):
            raise TypeError(f"layers must list module paths as strings, got {wanted!r}")
        unknown = [n for n in wanted if n not in named]
        if unknown:
            known = ", ".join(repr(n) for n in list(named)[:20])
            raise ValueError(f"no module at {unknown} in the model; known paths include {known}")
        chosen = [(n, named[n]) for n in named if n in wanted]
    return [_describe(name, module) for name, module in chosen]


def _in_set(which: str, name: str, module: nn.Module, model: nn.Module) -> bool:
    if _inside_maxout(name, model):
        return False
    if which == "activations":
        return _is_activation(module)
    if which == "weights":
        return isinstance(module, (*WEIGHT_LAYERS, Maxout))
    is_unit = isinstance(module, Maxout) or next(module.children(), None) is None
    return is_unit and not isinstance(module, _PASS_THROUGH)


def _inside_maxout(name: str, model: nn.Module) -> bool:
    """Whether ``name`` is a submodule of a Maxout, which is probed as one unit."""
    if not name:
        return False
    parts = name.split(".")
    return any(
        isinstance(model.get_submodule(".".join(parts[:i])), Maxout) for i in range(len(parts))
    )


def _is_activation(module: nn.Module) -> bool:
    return activation_name(module) is not None or isinstance(module, _EXTRA_ACTIVATIONS)


def _describe(name: str, module: nn.Module) -> _Layer:
    return _Layer(
        name=name,
        module=module,
        kind=_kind(module),
        units_last=isinstance(module, _UNITS_LAST),
        recurrent=_bounded_recurrent(module),
        time_first=isinstance(module, nn.RNNBase) and not module.batch_first,
        dead=isinstance(module, _DEAD_TYPES),
        saturation=_SATURATION_TYPES.get(type(module)),
    )


def _bounded_recurrent(module: nn.Module) -> bool:
    """LSTM, GRU and tanh RNNs, whose outputs are bounded by a tanh (a ReLU RNN is not)."""
    if isinstance(module, nn.RNN):
        return module.nonlinearity == "tanh"
    return isinstance(module, nn.LSTM | nn.GRU)


def _kind(module: nn.Module) -> str:
    if (act := activation_name(module)) is not None:
        return act
    if isinstance(module, nn.Linear):
        return "linear"
    for conv in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        if isinstance(module, conv):
            return conv.__name__.lower()
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "batchnorm"
    return type(module).__name__.lower()


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


# -- per-layer measurement at one point in time (init lab, activation snapshots) ---------

HIST_BINS = 40


@dataclass
class LayerRow:
    """One hidden layer's activations at init: statistics and the back-propagated gradient."""

    layer: int  # 1-based depth
    name: str  # module path of the activation
    mean: float
    std: float
    saturated_fraction: float | None  # tanh/sigmoid: |z| beyond SATURATION_THRESHOLDS
    dead_fraction: float | None  # ReLU: units zero on every example
    act_grad_norm: float | None  # ‖∂L/∂a‖ at this layer's output
    weight_grad_norm: float | None  # ‖∂L/∂W‖ of the layer's weights
    hist_counts: list[int]
    hist_edges: list[float]


def measure_layers(
    net: nn.Module, inputs: torch.Tensor, generator: torch.Generator, *, bins: int = HIST_BINS
) -> list[LayerRow]:
    """Each hidden activation layer of ``net`` on ``inputs``: statistics, histogram, gradients.

    The lecture's init experiment, as the init lab and the training's activation snapshots
    both draw it. The backward pass uses a random upstream gradient ``∂L/∂out ~ N(0, 1)`` drawn
    from ``generator`` (so norms compare across settings that share a seed); every layer's
    histogram shares one range, the span of all activations, so a collapse shows as a spike
    narrowing on 0. ``weight_grad_norm`` is the gradient norm of the weight layer feeding the
    activation. ``net`` runs as it is (train/eval mode untouched).
    """
    with torch.no_grad():
        out = net(inputs)
    upstream = torch.randn(out.shape, generator=generator).to(out.device)
    # One histogram range for every layer of a setting, as in the lecture's figure: a collapse
    # then shows as a spike narrowing on 0, not as the same bell curve on ever smaller axes.
    first = Probe(net, layers="activations", max_examples=None, max_units=1 << 20)
    spans = [(s.min, s.max) for s in first.snapshot(inputs).values()]
    low = min((lo for lo, _ in spans), default=-1.0)
    high = max((hi for _, hi in spans), default=1.0)
    probe = Probe(
        net,
        layers="all",
        max_examples=None,
        max_units=1 << 20,
        bins=bins,
        hist_range=(low, high) if low < high else None,
    )
    stats = probe.snapshot(inputs, loss_fn=lambda out: (out * upstream).sum())
    rows, last_weight = [], None
    for name, module in net.named_modules():
        if name in stats and activation_name(module) is None and name:
            last_weight = stats[name]
        if name not in stats or activation_name(module) is None:
            continue
        s = stats[name]
        weight_grad = last_weight.param_grad_norms.get("weight") if last_weight else None
        rows.append(
            LayerRow(
                layer=len(rows) + 1,
                name=name,
                mean=s.mean,
                std=s.std,
                saturated_fraction=s.saturated_fraction,
                dead_fraction=s.dead_fraction,
                act_grad_norm=s.grad_norm,
                weight_grad_norm=weight_grad,
                hist_counts=s.hist_counts,
                hist_edges=s.hist_edges,
            )
        )
    return rows
