"""The update/weight ratio, measured from the optimizer's real step (lecture: ~1e-3).

On every ``every``-th step the optimizer's step pre-hook copies the parameters and its post-hook
takes ``‖W_after − W_before‖ / ‖W_before‖`` per parameter tensor with ``torch._foreach`` ops,
so the ratio is the one the optimizer applied, whatever it is (Adam, momentum, weight decay,
a clipped gradient). The other steps cost nothing. Steps that an AMP ``GradScaler`` skips never
call ``optimizer.step()``, so they are not measured either.

Judged on weight tensors (``dim >= 2``; biases start at 0), as the median over tensors of each
sampled step: ``UPDATE_RATIO_HIGH`` when the median of the last 5 samples is above
``update_ratio_high``, ``UPDATE_RATIO_LOW`` when the median of the last 10 samples is below
``update_ratio_low`` while the learning rate is still at >= 10% of its start (an annealed
schedule is meant to end with small updates).
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


class UpdateRatio(Monitor):
    """Per-tensor update/weight ratios every ``every`` optimizer steps."""

    def __init__(self, *, every: int = 10) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.every = every
        self.medians: list[float] = []
        self.lr_at_start: float | None = None
        self._handles: list[Any] = []
        self._before: list[torch.Tensor] | None = None
        self._params: list[tuple[str, torch.Tensor]] = []
        self._pending: list[tuple[int, int, torch.Tensor]] = []  # (step, epoch, ratios)

    def on_fit_start(self, trainer: Session) -> None:
        if self.lr_at_start is None:
            self.lr_at_start = trainer.lr()
        self._params = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]
        opt = trainer.optimizer
        self._handles = [
            opt.register_step_pre_hook(lambda *_: self._pre(trainer)),
            opt.register_step_post_hook(lambda *_: self._post(trainer)),
        ]

    def on_fit_end(self, trainer: Session) -> None:
        self._judge(trainer)
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _pre(self, trainer: Session) -> None:
        if trainer.step % self.every == 0:
            self._before = [p.detach().clone() for _, p in self._params]

    @torch.no_grad()
    def _post(self, trainer: Session) -> None:
        if self._before is None:
            return
        after = [p.detach() for _, p in self._params]
        diff = torch._foreach_sub(after, self._before)
        num = torch.stack(torch._foreach_norm(diff))
        den = torch.stack(torch._foreach_norm(self._before))
        self._before = None
        ratios = num / den  # 0/0 -> nan for all-zero tensors (biases at init): not judged
        self._pending.append((trainer.step, trainer.epoch, ratios))
        self._judge(trainer)  # one transfer per sampled step

    def _judge(self, trainer: Session) -> None:
        """Read the pending ratios (one transfer), log them and apply the rules."""
        if not self._pending:
            return
        values = torch.stack([r for _, _, r in self._pending]).tolist()
        weights = [i for i, (_, p) in enumerate(self._params) if p.dim() >= 2]
        for (step, epoch, _), row in zip(self._pending, values, strict=True):
            for (name, _), value in zip(self._params, row, strict=True):
                if math.isfinite(value):  # a tensor that was all zeros has no ratio
                    trainer.rows.append((step, epoch, "train", f"update_ratio/{name}", value))
            judged = [row[i] for i in weights if row[i] == row[i]]
            if judged:
                self.medians.append(statistics.median(judged))
        self._pending = []
        if self.medians:
            trainer.stats["update_ratio"] = statistics.median(self.medians[-_LOW_WINDOW:])
        self._rules(trainer)

    def _rules(self, trainer: Session) -> None:
        t = trainer.thresholds
        if len(self.medians) >= _HIGH_WINDOW:
            recent = statistics.median(self.medians[-_HIGH_WINDOW:])
            if recent > t["update_ratio_high"]:
                trainer.emit(
                    finding(
                        "UPDATE_RATIO_HIGH",
                        f"each step changes the weights by {recent:.2g} of their norm (median "
                        f"of the last {_HIGH_WINDOW} samples; lecture: ~1e-3)",
                        f"lower the learning rate (now {trainer.lr():.3g}) by 10-100x",
                        {"ratio": recent, "lr": trainer.lr(), "recent": self.medians[-5:]},
                    )
                )
        annealed = self.lr_at_start is not None and trainer.lr() < 0.1 * self.lr_at_start
        if len(self.medians) >= _LOW_WINDOW and not annealed:
            recent = statistics.median(self.medians[-_LOW_WINDOW:])
            if recent < t["update_ratio_low"]:
                trainer.emit(
                    finding(
                        "UPDATE_RATIO_LOW",
                        f"each step changes the weights by only {recent:.2g} of their norm "
                        f"(median of the last {_LOW_WINDOW} samples; lecture: ~1e-3)",
                        f"raise the learning rate (now {trainer.lr():.3g}) by 10-100x",
                        {"ratio": recent, "lr": trainer.lr()},
                    )
                )

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "medians": list(self.medians), "lr_at_start": self.lr_at_start}
