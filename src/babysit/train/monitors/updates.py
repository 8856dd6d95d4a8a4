"""The update/weight ratio, measured from the optimizer's real step (lecture: ~1e-3).

On every ``every``-th step the optimizer's step pre-hook copies the parameters and its post-hook
takes ``‖W_after − W_before‖ / ‖W_before‖`` per parameter tensor with ``torch._foreach`` ops,
so the ratio is the one the optimizer applied, whatever it is (Adam, momentum, weight decay,
a clipped gradient). The other steps cost nothing. Steps that an AMP ``GradScaler`` skips never
call ``optimizer.step()``, so they are not measured either.

Measured and judged on weight tensors (``dim >= 2``; biases start at 0), as the median over
tensors of each sampled step. The first ``EARLY_STEPS`` (10) steps are all sampled:

- ``UPDATE_RATIO_HIGH``: the peak over those first steps above ``update_ratio_high``.
  Later samples cannot tell: once a too-large step has blown the weights up, ratios to the
  blown-up weights shrink again, so only the start of training shows the size of a step.
  Tensors that start the run at (numerically) zero — a LoRA adapter's ``B``, a zero-initialised
  residual branch or output layer (RMS below ``ZERO_RMS``) — are left out of this rule: growing
  from zero, ``‖ΔW‖/‖W‖`` is infinite at the first step and about ``1/k`` at step ``k`` (Adam
  moves each weight by ~lr per step), whatever the learning rate, so it says nothing about the
  step's size. They are logged and count for ``UPDATE_RATIO_LOW`` as any other tensor.
- ``UPDATE_RATIO_LOW``: the median of the last 10 samples below ``update_ratio_low`` while the
  learning rate is still >= 10% of its start (an annealed schedule is meant to end with small
  updates) and the loss has fallen by less than half: a converged net's updates are small too,
  as small as those of a far too low learning rate, and only the loss's decrease tells the two
  apart. At the end of training, 3 samples suffice.

The thresholds and what they were calibrated on are in ``babysit.thresholds``; the scenarios
that check them are ``benchmarks/monitors.py`` (its tables: ``docs/benchmarks.md``).

Under DDP the weights are in sync (every rank applies the same all-reduced gradient), so every
rank measures the same ratios from its own copy: no collective, and the same findings on every
rank.

Cost: a sampled step clones the weights and takes two ``_foreach_norm`` s; sampling every 50th
step (after the first 10) keeps that a small share of training (``benchmarks/fit.py`` measures
the default monitors' overhead).
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

import torch

from ...probes import ZERO_RMS, grows_from_zero
from ._base import Monitor, finding

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["ZERO_RMS", "UpdateRatio"]

EARLY_STEPS = 10  # sampled every step: UPDATE_RATIO_HIGH reads their peak
_LOW_WINDOW = 10
_MIN_SAMPLES = 3  # what the end of a short run is judged on
_CONVERGED = 0.5  # loss decrease beyond which small updates mean convergence, not a low lr


class UpdateRatio(Monitor):
    """Per-tensor update/weight ratios every ``every`` optimizer steps."""

    def __init__(self, *, every: int = 50) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.every = every
        self.medians: list[float] = []
        self.early_peak: float | None = None
        self.lr_at_start: float | None = None
        self._handles: list[Any] = []
        self._before: list[torch.Tensor] | None = None
        self._norms: list[torch.Tensor] = []
        self._params: list[tuple[str, torch.Tensor]] = []
        self._from_zero: list[bool] = []
        self._trainer: Session | None = None  # the run whose optimizer's hooks call _pre/_post

    def on_fit_start(self, trainer: Session) -> None:
        if self.lr_at_start is None:
            self.lr_at_start = trainer.lr()
        self._params = [
            (n, p)
            for n, p in trainer.measured_model.named_parameters()
            if p.requires_grad and p.dim() >= 2
        ]
        # which tensors grow from zero (module docstring), once per run
        self._from_zero = [grows_from_zero(p) for _, p in self._params]
        opt = trainer.optimizer
        self._trainer = trainer
        # bound methods, not closures: the hooks run every step, a closure is one more frame
        self._handles = [
            opt.register_step_pre_hook(self._pre),
            opt.register_step_post_hook(self._post),
        ]

    def on_fit_end(self, trainer: Session) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._trainer = None
        self._rules(trainer, final=True)

    def _pre(self, *_: Any) -> None:
        """The optimizer's step pre-hook. Runs on every optimizer step: the cheap test comes
        first, the no_grad context (a few microseconds to enter) only on sampled steps."""
        step = self._trainer.step  # type: ignore[union-attr]
        if (step < EARLY_STEPS or step % self.every == 0) and self._params:
            with torch.no_grad():
                self._before = [p.detach().clone() for _, p in self._params]
                self._norms = torch._foreach_norm(self._before)

    def _post(self, *_: Any) -> None:
        """The optimizer's step post-hook: the sampled step's ratios."""
        if self._before is None:
            return
        trainer = self._trainer
        assert trainer is not None
        with torch.no_grad():
            torch._foreach_sub_(self._before, [p.detach() for _, p in self._params])  # Wb - Wa
            ratios = torch.stack(torch._foreach_norm(self._before)) / torch.stack(self._norms)
        self._before = None
        self._record(trainer, ratios.tolist())  # one transfer per sampled step

    def _record(self, trainer: Session, ratios: list[float]) -> None:
        """Log the step's ratios and apply the rules; all-zero tensors (0/0) are skipped."""
        judged, sized = [], []
        from_zero = self._from_zero or [False] * len(ratios)
        for (name, _), value, zero in zip(self._params, ratios, from_zero, strict=True):
            if math.isfinite(value):
                trainer.log(f"update_ratio/{name}", value)
                judged.append(value)
                if not zero:
                    sized.append(value)
        if judged:
            median = statistics.median(judged)
            self.medians.append(median)
            if trainer.step < EARLY_STEPS and sized:
                self.early_peak = max(self.early_peak or 0.0, statistics.median(sized))
            trainer.stats["update_ratio"] = statistics.median(self.medians[-_LOW_WINDOW:])
        self._rules(trainer)

    def _rules(self, trainer: Session, *, final: bool = False) -> None:
        t = trainer.thresholds
        if self.early_peak is not None and self.early_peak > t["update_ratio_high"]:
            trainer.emit(
                finding(
                    "UPDATE_RATIO_HIGH",
                    f"a step changed the weights by {self.early_peak:.2g} of their norm in the "
                    f"first {EARLY_STEPS} steps (median over weight tensors; lecture: ~1e-3)",
                    f"lower the learning rate (now {trainer.lr():.3g}) by 10-100x",
                    {"peak_ratio": self.early_peak, "lr": trainer.lr()},
                )
            )
        annealed = self.lr_at_start is not None and trainer.lr() < 0.1 * self.lr_at_start
        decrease = trainer.stats.get("loss_decrease")
        converged = decrease is not None and decrease >= _CONVERGED
        low_window = _LOW_WINDOW if not final else _MIN_SAMPLES
        if len(self.medians) < low_window or annealed or converged or decrease is None:
            return
        recent = statistics.median(self.medians[-_LOW_WINDOW:])
        if recent < t["update_ratio_low"]:
            trainer.emit(
                finding(
                    "UPDATE_RATIO_LOW",
                    f"each step changes the weights by only {recent:.2g} of their norm "
                    f"(median of the last {min(len(self.medians), _LOW_WINDOW)} samples; "
                    "lecture: ~1e-3)",
                    f"raise the learning rate (now {trainer.lr():.3g}) by 10-100x",
                    {"ratio": recent, "lr": trainer.lr(), "loss_decrease": decrease},
                )
            )

    def state_dict(self) -> dict[str, Any]:
        return {
            "every": self.every,
            "medians": list(self.medians),
            "early_peak": self.early_peak,
            "lr_at_start": self.lr_at_start,
        }
