"""What every pre-flight check shares: the context it reads and the registry.

:func:`finding` (re-exported here for the checks) lives in :mod:`babysit.findings`, where the
training monitors build their findings too.

A check is a small function ``check(ctx) -> list[Finding]``, registered with :func:`check`
under a name and the codes it can emit. It reads :class:`Context` and must not change the
user's model: ``ctx.model`` is already a deep copy, and :meth:`Context.fresh_model` gives
another for checks that train.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..findings import CODES, Finding, finding
from ..outputs import Forward, batch_size_of, read_output, run_batch, take
from ..tasks import Task

__all__ = ["REGISTRY", "CannotCheck", "CheckSpec", "Context", "Probed", "check", "finding"]

OptimizerFactory = Callable[[Iterable[nn.Parameter], float, float], torch.optim.Optimizer]


class CannotCheck(Exception):
    """Raised by a check (directly, or through :class:`Context`) that cannot judge this set-up:
    the forward pass, the loss or the output could not be read, or the task leaves the check
    nothing to judge. ``diagnose`` lists the check in ``CHECKS_SKIPPED`` with ``reason``, which
    names the argument that would let it run; a *warning* unless ``warning=False`` (a check the
    user knowingly made inapplicable, e.g. ``task="custom"``: info)."""

    def __init__(self, reason: str, *, warning: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.warning = warning


@dataclass
class Probed:
    """One forward of the probe batch through ``ctx.model`` (no gradients), or its failure."""

    output: torch.Tensor | None = None
    target: Any = None
    source: str = "output"  # where the output tensor was read (babysit.outputs.read_output)
    error: BaseException | None = None
    layer: str | None = None  # the leaf module that ran last before the error
    loss: float | None = None
    loss_error: BaseException | None = None


@dataclass
class Context:
    """Everything a check may read. Tensors live on ``device``.

    Checks read the probe batch through :meth:`run` and :meth:`loss` (they honour the user's
    ``forward=`` and read tuple/dict/``ModelOutput`` outputs); :meth:`probe` and
    :meth:`output_width` are computed on first use, so a check selected alone by name finds
    what it needs without relying on another check having run.
    """

    model: nn.Module  # a deep copy of the user's model, in the user's train/eval mode
    x: torch.Tensor | None  # the inputs of an (x, y) probe batch; None with forward=
    y: Any  # its targets (None for unsupervised data); with forward=, what forward returned
    data: Any  # what the user passed, for checks on the loader itself
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    classification: bool  # cross-entropy style loss on integer class labels
    num_classes: int | None
    optimizer: OptimizerFactory  # (params, lr, weight_decay) -> optimizer
    optimizer_name: str
    lr: float | None
    weight_decay: float
    thresholds: Mapping[str, float]
    seed: int
    device: torch.device
    n_examples: int  # examples in the whole data set, when known
    batch_size: int
    cache: dict[str, Any] = field(default_factory=dict)  # measurements shared between checks
    _original: nn.Module | None = None
    task: Task = field(default_factory=lambda: Task("classification"))  # babysit.tasks
    batch: Any = None  # the probe batch as the data gives it ((x, y) or (x,) by default)
    forward_fn: Forward | None = None  # the user's forward(model, batch) -> (output, target)
    time_target_s: float | None = None  # the default set's time target (None: no budgeting)

    def __post_init__(self) -> None:
        if self.batch is None and self.x is not None:
            self.batch = (self.x,) if self.y is None else (self.x, self.y)

    def fresh_model(self) -> nn.Module:
        """Another deep copy of the user's model, untouched by earlier checks."""
        source = self._original if self._original is not None else self.model
        return copy.deepcopy(source).to(self.device)

    @property
    def n(self) -> int:
        """Examples in the probe batch."""
        return batch_size_of(self.batch) or 0

    def take(self, n: int) -> Any:
        """The first ``n`` examples of the probe batch (every tensor of it sliced)."""
        return take(self.batch, slice(0, n))

    def run(self, model: nn.Module | None = None, batch: Any = None) -> tuple[torch.Tensor, Any]:
        """``(output tensor, target)`` of ``batch`` (default: the probe batch) through
        ``model`` (default: ``ctx.model``), by the user's ``forward`` or ``(x, y)``."""
        output, target, _ = run_batch(
            self.model if model is None else model,
            self.batch if batch is None else batch,
            self.forward_fn,
        )
        return output, target

    def loss(self, model: nn.Module | None = None, batch: Any = None) -> torch.Tensor:
        """``loss_fn(*run(model, batch))``."""
        return self.loss_fn(*self.run(model, batch))

    def forward(self, model: nn.Module | None = None, x: torch.Tensor | None = None):
        """The output tensor of ``model(x)``, or of the probe batch when ``x`` is None."""
        if x is not None:
            return read_output((self.model if model is None else model)(x))[0]
        return self.run(model)[0]

    def probe(self) -> Probed:
        """One forward of the probe batch through ``ctx.model`` under ``no_grad`` and the loss
        on it, cached. Failures are kept (with the leaf module that ran last), not raised."""
        if "probed" in self.cache:
            return self.cache["probed"]
        probed = Probed()
        entered: list[str] = []
        names = {module: name for name, module in self.model.named_modules()}
        hooks = [
            module.register_forward_pre_hook(lambda m, _a: entered.append(names[m]))
            for module in names
            if not list(module.children())
        ]
        try:
            with torch.no_grad():
                probed.output, probed.target, probed.source = run_batch(
                    self.model, self.batch, self.forward_fn
                )
        except Exception as err:  # any error in the user's model or forward is the finding
            probed.error = err
            probed.layer = entered[-1] if entered else None
        finally:
            for hook in hooks:
                hook.remove()
        if probed.error is None and probed.target is not None:
            try:
                with torch.no_grad():
                    value = self.loss_fn(probed.output, probed.target)
                if not isinstance(value, torch.Tensor) or value.numel() != 1:
                    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                    raise ValueError(
                        f"loss_fn returned {shape}, not a scalar: use reduction='mean'"
                    )
                probed.loss = float(value)
            except Exception as err:  # reported as LOSS_FAILED
                probed.loss_error = err
        self.cache["probed"] = probed
        return probed

    def output(self) -> torch.Tensor:
        """The probe batch's output tensor (no gradients); :class:`CannotCheck` when the
        forward pass failed."""
        probed = self.probe()
        if probed.error is not None:
            raise CannotCheck(
                f"the model failed on the data (FORWARD_FAILED: {type(probed.error).__name__})"
            )
        return probed.output  # type: ignore[return-value]

    def require_loss(self) -> float:
        """The loss on the probe batch; :class:`CannotCheck` when it could not be computed."""
        probed = self.probe()
        self.output()
        if probed.target is None:
            raise CannotCheck("the data has no targets: pass (X, y), or forward= returning them")
        if probed.loss_error is not None:
            raise CannotCheck("the loss cannot be computed on the output (LOSS_FAILED)")
        return probed.loss  # type: ignore[return-value]

    def seconds_per_example(self) -> float | None:
        """One forward+backward's seconds per example of the probe batch, as the execution
        check measured it (``None`` before it ran or when it could not)."""
        pass_s = self.cache.get("pass_s")
        return None if pass_s is None or not self.n else pass_s / self.n

    def affordable(self, check: str, steps: float, want: int, least: int, share: float) -> int:
        """How many examples a check that runs ``steps`` forward+backward passes may use.

        The default set aims at ``time_target_s`` seconds whatever the model's size: a training
        check gets ``share`` of it, and its batch shrinks so that ``steps * examples *
        seconds_per_example`` fits (a pass costs about linearly in the examples; small batches
        run a little slower per example, so this errs towards skipping). Returns ``want``
        when there is no target (``checks="all"``, a check named by hand) or the cost is
        unknown. Below ``least`` examples the check would judge something else, so it is
        not run: :class:`CannotCheck` (info) with the estimate and how to run it anyway.
        """
        per_example = self.seconds_per_example()
        if self.time_target_s is None or per_example is None or per_example <= 0:
            return want
        allowed = int(share * self.time_target_s / (steps * per_example))
        if allowed >= least:
            return max(least, min(want, allowed))
        estimate = steps * least * per_example
        raise CannotCheck(
            f"over the time budget: {check} needs about {estimate:.0f} s here ({steps:g} "
            f"passes of {least} examples at {per_example * 1e3:.2g} ms per example), over its "
            f"{share * self.time_target_s:.1f} s share of the default set's "
            f"{self.time_target_s:g} s; run it with checks=[{check!r}] or checks='all'",
            warning=False,
        )

    def output_width(self) -> int | None:
        """``num_classes`` if given, else the output's size along dim 1 (classes)."""
        if self.num_classes:
            return self.num_classes
        out = self.output()
        return int(out.shape[1]) if out.dim() >= 2 else None


Check = Callable[[Context], list[Finding]]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    run: Check
    codes: tuple[str, ...]
    slow: bool  # only in checks="all"
    family: str
    needs_labels: bool


REGISTRY: dict[str, CheckSpec] = {}


def check(
    name: str, *, codes: Iterable[str], slow: bool = False, needs_labels: bool = False
) -> Callable[[Check], Check]:
    """Register ``func`` as the check ``name`` emitting ``codes``."""

    def register(func: Check) -> Check:
        codes_ = tuple(codes)
        unknown = [c for c in codes_ if c not in CODES]
        if unknown:
            raise ValueError(f"check {name!r} declares unknown codes {unknown}")
        family = func.__module__.rsplit(".", 1)[-1]
        REGISTRY[name] = CheckSpec(name, func, codes_, slow, family, needs_labels)
        return func

    return register
