"""The update/weight ratio, measured from the optimizer's real step (lecture: ~1e-3).

On every ``every``-th step the optimizer's step pre-hook copies the parameters and its post-hook
takes ``‖W_after − W_before‖ / ‖W_before‖`` per parameter tensor with ``torch._foreach`` ops,
so the ratio is the one the optimizer applied, whatever it is (Adam, momentum, weight decay,
a clipped gradient). The other steps cost nothing. Steps that an AMP ``GradScaler`` skips never
call ``optimizer.step()``, so they are not measured either.

Measured and judged on weight tensors (``dim >= 2``; biases start at 0), as the median over
tensors of each sampled step: ``UPDATE_RATIO_HIGH`` when the median of the last 5 samples is
above ``update_ratio_high``, ``UPDATE_RATIO_LOW`` when the median of the last 10 samples is
below ``update_ratio_low`` while the learning rate is still at >= 10% of its start (an annealed
schedule is meant to end with small updates). At the end of training, 3 samples suffice.

Cost: a sampled step clones the weights and takes two ``_foreach_norm`` s, ~0.1-0.2 ms on the
MNIST-1D MLP; every 20th step keeps it near 1% of training.
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

import torch

from ._base import Monitor, finding

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["UpdateRatio"]

_HIGH_WINDOW = 5
_LOW_WINDOW = 10
_MIN_SAMPLES = 3  # what the end of a short run is judged on


class UpdateRatio(Monitor):
    """Per-tensor update/weight ratios every ``every`` optimizer steps."""

    def __init__(self, *, every: int = 20) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.every = every
        self.medians: list[float] = []
        self.lr_at_start: float | None = None
        self._handles: list[Any] = []
        self._before: list[torch.Tensor] | None = None
        self._norms: list[torch.Tensor] = []
        self._params: list[tuple[str, torch.Tensor]] = []

    def on_fit_start(self, trainer: Session) -> None:
        if self.lr_at_start is None:
            self.lr_at_start = trainer.lr()
        self._params = [
            (n, p) for n, p in trainer.model.named_parameters() if p.requires_grad and p.dim() >= 2
        ]
        opt = trainer.optimizer
        self._handles = [
            opt.register_step_pre_hook(lambda *_: self._pre(trainer)),
            opt.register_step_post_hook(lambda *_: self._post(trainer)),
        ]

    def on_fit_end(self, trainer: Session) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._rules(trainer, final=True)

    @torch.no_grad()
    def _pre(self, trainer: Session) -> None:
        if trainer.step % self.every == 0 and self._params:
            self._before = [p.detach().clone() for _, p in self._params]
            self._norms = torch._foreach_norm(self._before)

    @torch.no_grad()
    def _post(self, trainer: Session) -> None:
        if self._before is None:
            return
        torch._foreach_sub_(self._before, [p.detach() for _, p in self._params])  # W_b - W_a
        ratios = torch.stack(torch._foreach_norm(self._before)) / torch.stack(self._norms)
        self._before = None
        self._record(trainer, ratios.tolist())  # one transfer per sampled step

    def _record(self, trainer: Session, ratios: list[float]) -> None:
        """Log the step's ratios and apply the rules; all-zero tensors (0/0) are skipped."""
        judged = []
        for (name, _), value in zip(self._params, ratios, strict=True):
            if math.isfinite(value):
                trainer.log(f"update_ratio/{name}", value)
                judged.append(value)
        if judged:
            self.medians.append(statistics.median(judged))
            trainer.stats["update_ratio"] = statistics.median(self.medians[-_LOW_WINDOW:])
        self._rules(trainer)

    def _rules(self, trainer: Session, *, final: bool = False) -> None:
        """HIGH on the last 5 samples, LOW on the last 10; at the end of training on the last
        ``_MIN_SAMPLES`` or more, so short runs are judged too."""
        t = trainer.thresholds
        high_window = _HIGH_WINDOW if not final else max(_MIN_SAMPLES, 1)
        if len(self.medians) >= high_window:
            recent = statistics.median(self.medians[-_HIGH_WINDOW:])
            if recent > t["update_ratio_high"]:
                trainer.emit(
                    finding(
                        "UPDATE_RATIO_HIGH",
                        f"each step changes the weights by {recent:.2g} of their norm (median "
                        f"of the last {min(len(self.medians), _HIGH_WINDOW)} samples; lecture: "
                        "~1e-3)",
                        f"lower the learning rate (now {trainer.lr():.3g}) by 10-100x",
                        {"ratio": recent, "lr": trainer.lr(), "recent": self.medians[-5:]},
                    )
                )
        annealed = self.lr_at_start is not None and trainer.lr() < 0.1 * self.lr_at_start
        low_window = _LOW_WINDOW if not final else _MIN_SAMPLES
        if len(self.medians) >= low_window and not annealed:
            recent = statistics.median(self.medians[-_LOW_WINDOW:])
            if recent < t["update_ratio_low"]:
                trainer.emit(
                    finding(
                        "UPDATE_RATIO_LOW",
                        f"each step changes the weights by only {recent:.2g} of their norm "
                        f"(median of the last {min(len(self.medians), _LOW_WINDOW)} samples; "
                        "lecture: ~1e-3)",
                        f"raise the learning rate (now {trainer.lr():.3g}) by 10-100x",
                        {"ratio": recent, "lr": trainer.lr()},
                    )
                )

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "medians": list(self.medians), "lr_at_start": self.lr_at_start}
