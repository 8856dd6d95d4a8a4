"""Loss monitors: the lecture's break-out rule and the shape of the loss curve.

:class:`LossGuard` watches every step's loss. NaN/Inf is caught in the step where it appears
(before backward, so no NaN gradient reaches the weights); a loss above 3x its start is the
lecture's "cost > 3 * original cost: break out early" (:func:`babysit.divergence.diverged`,
which also handles losses that start at or below zero). The start is the mean loss of the
initial weights over several mini-batches where the session can measure it
(:meth:`Session.start_loss`: ``fit``; the spread of those batches' losses then widens the
limit, so one batch's chance high is not a break-out), else the first finite loss
(``watch``). Under ``fit``
both roll the model and optimizer back to the last good state, lower the learning rate by
``lr_factor`` and continue, up to ``max_rollbacks`` times (then training stops); each time a
``NAN_LOSS`` or ``LR_TOO_HIGH`` finding records it. Under ``watch`` (the user's loop) they are
reported, and ``watcher.diverged`` tells the loop to stop. Under DDP the guard judges every
rank's loss (``trainer.rank_losses``), each against that rank's own start (``fit``'s measured
start is the same for all): a NaN or a break-out on any rank is the same decision on every rank
in the same step, so they roll back or stop together.

:class:`LossCurve` reads the per-step loss series at each epoch's end: a long flat start then a
sudden drop (``LOSS_PLATEAU_AT_START``, the lecture's "bad initialization" curve), a loss that
barely moves while the weights barely move (``LR_TOO_LOW``), and a loss that swings instead of
descending (``LOSS_OSCILLATING``). Under DDP the curve is that of the loss averaged over ranks
(``trainer.global_loss``), the same on every rank.
"""

from __future__ import annotations

import itertools
import math
import statistics
from typing import TYPE_CHECKING

from ... import distributed
from ...divergence import MIN_SCALE, SPREAD_WIDTH, diverged, limit
from ._base import Monitor, finding

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["LossCurve", "LossGuard", "oscillation", "plateau_then_drop"]

# LOSS_PLATEAU_AT_START: the plateau spans at least this many of the curve's 50 windows.
# Measured (benchmarks/monitors.py): PyTorch's default init with SGD-momentum 0.01 has a real
# 5-window flat start that is healthy; bad-init plateaus span 7-21 windows.
_MIN_PLATEAU = 8
# ... and at least this many optimizer steps. With momentum (or Adam's first moment) 0.9 the
# effective step grows over ~1 / (1 - 0.9) = 10 steps, so a flat stretch shorter than twice that
# is the optimizer's start, not the lecture's bad-init plateau. Measured: a GRU (Adam, lr 0.032,
# benchmarks/healthy_zoo.py seed 4) judged after its first epoch (50 steps) was flat for 9
# steps, then fell 16%, and trained to its best accuracy; the bad-init plateaus of
# benchmarks/monitors.py last 48-287 steps.
PLATEAU_MIN_STEPS = 20
# The curve is judged at an epoch's end once it has grown by this factor since the last
# judgement (and at the end of training): live alerts, at a cost that does not grow with epochs.
JUDGE_GROWTH = 1.25


class LossGuard(Monitor):
    """NaN/Inf and 3x-explosion guard with rollback (``fit``) or a flag (``watch``).

    Args:
        lr_factor: the learning rate is multiplied by this after each rollback (0.1: one
            decade, the lecture's coarse grid step).
        max_rollbacks: after this many rollbacks the next blow-up stops training.
        snapshot_every: keep the state of every this-many-th step whose loss was good, as the
            state to return to (a copy of model and optimizer state in memory).
    """

    def __init__(
        self, *, lr_factor: float = 0.1, max_rollbacks: int = 3, snapshot_every: int = 25
    ) -> None:
        if not 0 < lr_factor < 1:
            raise ValueError(f"lr_factor must be in (0, 1), got {lr_factor!r}")
        if not isinstance(max_rollbacks, int) or max_rollbacks < 0:
            raise ValueError(f"max_rollbacks must be an int >= 0, got {max_rollbacks!r}")
        if not isinstance(snapshot_every, int) or snapshot_every < 1:
            raise ValueError(f"snapshot_every must be a positive int, got {snapshot_every!r}")
        self.lr_factor = lr_factor
        self.max_rollbacks = max_rollbacks
        self.snapshot_every = snapshot_every
        # The start: the mean loss of the initial weights over ``start_batches`` mini-batches
        # where the session measured it (fit), else the first finite loss (start_batches 1;
        # rank 0's under DDP). docs/architecture.md, "The divergence rule".
        self.initial_loss: float | None = None
        self.initial_losses: list[float | None] | None = None  # every rank's, under DDP only
        self.start_batches = 1
        # the standard deviation of the measured start's batch losses (0: a start of one loss)
        self.start_spread = 0.0
        self.rollbacks = 0
        self.diverged = False
        self._snapshot_due = True
        self._limit = 3.0
        # limit(initial_loss, _limit), for the start it was computed from (_bound_of)
        self._bound = math.inf
        self._bound_of: object = _UNSET

    def on_fit_start(self, trainer: Session) -> None:
        self._snapshot_due = True  # a resumed run takes a fresh snapshot at its first good step
        self._limit = trainer.thresholds["loss_explosion"]
        self._bound_of = _UNSET
        if self.initial_loss is None:  # not resumed: fit measures the start, watch cannot
            measured = trainer.start_loss()
            if measured is not None:
                self.initial_loss, self.start_batches, self.start_spread = measured
                world = distributed.world_size()
                self.initial_losses = [self.initial_loss] * world if world > 1 else None

    def on_loss(self, trainer: Session, loss: float) -> None:
        """Judge every rank's loss of this step (``trainer.rank_losses``; in one process just
        ``loss``): a NaN or a break-out on any rank is a blow-up on all of them, decided from
        the same numbers on every rank, so they roll back or stop together."""
        if len(trainer.rank_losses) <= 1:  # one process: the hot path, no lists
            start = self.initial_loss
            if start is None and math.isfinite(loss):
                self.initial_loss = start = loss
            if start is not self._bound_of:  # a new start (or thresholds): its limit, once
                self._bound_of = start
                self._bound = _bound(start, self._limit, self.start_spread)
            # = not diverged(loss, start, self._limit), with the limit computed once per start
            if math.isfinite(loss) and loss <= self._bound:
                if self._snapshot_due or trainer.step % self.snapshot_every == 0:
                    self._good_step(trainer)
                return
        losses = trainer.rank_losses if len(trainer.rank_losses) > 1 else (loss,)
        starts = self._starts(losses)
        blown = [
            r
            for r, (value, start) in enumerate(zip(losses, starts, strict=True))
            if diverged(value, start, self._limit, spread=self.start_spread)
        ]
        if not blown:
            self._good_step(trainer)
            return
        nan = [r for r in blown if not math.isfinite(losses[r])]
        rank = (nan or blown)[0]  # the rank the finding names: the first NaN, else the first
        self._blow_up(trainer, losses[rank], nan=bool(nan), rank=rank, ranks=nan or blown)

    def _good_step(self, trainer: Session) -> None:
        if self._snapshot_due or trainer.step % self.snapshot_every == 0:
            trainer.remember_good_state()
            self._snapshot_due = False

    def _starts(self, losses: tuple[float, ...]) -> list[float | None]:
        """Each rank's first finite loss (its start for the divergence rule)."""
        if len(losses) == 1:
            if self.initial_loss is None and math.isfinite(losses[0]):
                self.initial_loss = losses[0]
            return [self.initial_loss]
        if self.initial_losses is None or len(self.initial_losses) != len(losses):
            # each rank's own first loss from here (a resume on another world size): a start
            # of one loss, with no spread
            self.initial_losses = [None] * len(losses)
            self.start_batches, self.start_spread = 1, 0.0
        for r, value in enumerate(losses):
            if self.initial_losses[r] is None and math.isfinite(value):
                self.initial_losses[r] = value
        self.initial_loss = self.initial_losses[0]
        return list(self.initial_losses)

    def _blow_up(
        self,
        trainer: Session,
        loss: float,
        *,
        nan: bool,
        rank: int = 0,
        ranks: list[int] | None = None,
    ) -> None:
        if self.diverged:
            return  # already reported; a user's loop that goes on does not get one per step
        lr = trainer.lr()
        can_retry = self.rollbacks < self.max_rollbacks
        start = self.initial_loss if self.initial_losses is None else self.initial_losses[rank]
        evidence = {
            "loss": loss if math.isfinite(loss) else str(loss),
            "initial_loss": start,
            "initial_loss_batches": self.start_batches,
            "initial_loss_spread": self.start_spread,
            "lr": lr,
            "rollbacks_before": self.rollbacks,
        }
        where = ""
        if self.initial_losses is not None:  # under DDP: which rank(s), of how many
            world = len(self.initial_losses)
            evidence.update({"rank": rank, "ranks": list(ranks or [rank]), "world_size": world})
            others = len(ranks or []) - 1
            where = f" on rank {rank}" + (f" (and {others} more)" if others > 0 else "")
            where += f" of {world}"
        code = "NAN_LOSS" if nan else "LR_TOO_HIGH"
        what = (
            f"the loss became {loss} at step {trainer.step}{where}"
            if nan
            else f"the loss {loss:.3g}{where} exceeds "
            f"{_rise(start, self._limit, self.start_spread)} at step "
            f"{trainer.step} (lecture: break out)"
        )
        rolled = can_retry and trainer.request_rollback(
            finding(code, what, "", evidence), self.lr_factor
        )
        if rolled:
            self.rollbacks += 1
            message = (
                f"{what}; rolled back to the last good state and lowered the learning rate "
                f"{lr:.3g} -> {lr * self.lr_factor:.3g}"
            )
            evidence["lr_after"] = lr * self.lr_factor
        else:
            self.diverged = True
            restored = trainer.restore_good_state()
            message = what + (
                f"; stopped after {self.rollbacks} rollback(s)" if self.rollbacks else "; stopped"
            )
            if restored:
                message += " (the model keeps its last good state)"
            trainer.request_stop(code)
        advice = (
            "lower the learning rate (try babysit.lr_find(model, data)); check for log(0), "
            "division by ~0 or NaN inputs; clip gradients with torch.nn.utils.clip_grad_norm_"
            if nan
            else "lower the learning rate (babysit.lr_find(model, data) suggests one)"
        )
        trainer.emit(
            finding(code, message, advice, evidence, severity="error" if nan else "warning"),
            once=False,
        )


_UNSET = object()  # no limit computed yet


def _bound(start: float | None, factor: float, spread: float) -> float:
    """The loss a finite loss must exceed to have diverged from ``start``
    (:func:`babysit.divergence.diverged`): no limit before a finite start is known."""
    if start is None or not math.isfinite(start):
        return math.inf
    return limit(start, factor, spread=spread)


def _rise(initial: float | None, factor: float, spread: float) -> str:
    """How the divergence limit reads for this start (see :mod:`babysit.divergence`)."""
    if initial is not None and initial >= max(MIN_SCALE, SPREAD_WIDTH * spread):
        return f"{factor:g}x its initial {initial:.3g}"
    start = initial or 0.0
    noise = f" ± {spread:.2g} from batch to batch" if spread else ""
    return (
        f"the divergence limit {limit(start, factor, spread=spread):.3g} (initial loss "
        f"{start:.3g}{noise})"
    )


class LossCurve(Monitor):
    """Judges the shape of the per-step loss curve at every epoch's end (and at the end).

    The curve is kept at bounded resolution: at most ``2 * MAX_POINTS`` bucket means, two
    neighbours merged whenever it grows beyond that, so memory and the cost of judging stay
    constant however long training runs.
    """

    MAX_POINTS = 2048

    def __init__(self, *, min_steps: int = 50) -> None:
        self.min_steps = min_steps
        self.losses: list[float] = []  # bucket means, ``bucket`` steps each
        self.bucket = 1
        self.pending: list[float] = []  # the steps of the bucket being filled
        self.count = 0
        self.judged_at = 0  # ``count`` at the last judgement
        self.lr_at_start: float | None = None

    def on_fit_start(self, trainer: Session) -> None:
        if self.lr_at_start is None:
            self.lr_at_start = trainer.lr()

    def on_loss(self, trainer: Session, loss: float) -> None:
        if len(trainer.rank_losses) > 1:  # under DDP: the curve of the mean over ranks
            loss = trainer.global_loss
        if not math.isfinite(loss):
            return
        self.count += 1
        if self.bucket == 1 and not self.pending:  # the mean of one step is its loss
            self.losses.append(loss)
            if len(self.losses) >= 2 * self.MAX_POINTS:
                self._halve()
            return
        self.pending.append(loss)
        if len(self.pending) >= self.bucket:
            self.losses.append(math.fsum(self.pending) / len(self.pending))
            self.pending = []
            if len(self.losses) >= 2 * self.MAX_POINTS:
                self._halve()

    def _halve(self) -> None:
        """Merge neighbouring bucket means: half the points, buckets twice as long."""
        pairs = zip(self.losses[0::2], self.losses[1::2], strict=True)
        self.losses = [(a + b) / 2 for a, b in pairs]
        self.bucket *= 2

    def on_train_epoch_end(self, trainer: Session, metrics: dict[str, float]) -> None:
        if self.count >= self.judged_at * JUDGE_GROWTH:  # judged O(log steps) times in all
            self.judge(trainer)

    def on_fit_end(self, trainer: Session) -> None:
        self.judge(trainer, final=True)

    def decrease(self) -> float | None:
        """Relative decrease of the loss, mean of the first 10% of the curve vs the last 10%."""
        if len(self.losses) < 20:
            return None
        k = max(len(self.losses) // 10, 2)
        start = statistics.fmean(self.losses[:k])
        end = statistics.fmean(self.losses[-k:])
        return (start - end) / max(abs(start), 1e-12)

    def judge(self, trainer: Session, *, final: bool = False) -> None:
        losses = self.losses
        if self.count < self.min_steps or len(losses) < 20:
            return
        self.judged_at = self.count
        t = trainer.thresholds
        trainer.stats["loss_decrease"] = self.decrease()  # type: ignore[assignment]
        drop = plateau_then_drop(losses, flat=t["plateau_flat"], drop=t["plateau_drop"])
        if drop is not None:
            drop["flat_steps"] *= self.bucket  # the curve's points are buckets of steps
        if drop is not None and drop["flat_steps"] >= PLATEAU_MIN_STEPS:
            trainer.emit(
                finding(
                    "LOSS_PLATEAU_AT_START",
                    f"the loss stayed flat for the first {drop['flat_steps']} steps "
                    f"({drop['flat_fraction']:.0%} of the run), then fell by "
                    f"{drop['drop']:.0%}: the lecture's bad-initialization curve",
                    "initialize for the activation (babysit.nn.init_model(model, 'he_normal') "
                    "for ReLU, 'xavier' for tanh), or add batch norm",
                    drop,
                )
            )
        if final:
            self._too_low(trainer)
        swing = oscillation(losses, min_rise=t["oscillation_rise"], noise=t["oscillation_noise"])
        if swing is not None and swing["zigzag"] > t["loss_oscillation"]:
            trainer.emit(
                finding(
                    "LOSS_OSCILLATING",
                    f"the loss swings instead of descending: its smoothed curve travels "
                    f"{swing['zigzag']:.1f}x its net change over the last {swing['windows']} "
                    "windows",
                    "lower the learning rate (or use a schedule); a larger batch reduces noise",
                    swing,
                )
            )

    def _too_low(self, trainer: Session) -> None:
        """At the end of training: the loss barely moved while the weights barely moved.

        Not when the loss rose (that is not a too-low rate), nor when a dead, saturated or
        vanishing-gradient warning already explains the flat loss, nor on an annealed schedule.
        """
        t = trainer.thresholds
        decrease = self.decrease()
        if decrease is None or decrease >= t["train_loss_min_decrease"] or decrease < -0.01:
            return
        if self.lr_at_start is not None and trainer.lr() < 0.1 * self.lr_at_start:
            return
        ratio = trainer.stats.get("update_ratio")
        if ratio is not None and ratio >= t["lr_low_ratio_gate"]:
            return  # the weights move normally: a flat loss is not the learning rate's fault
        explained = {"DEAD_RELU", "SATURATED_ACTIVATIONS", "VANISHING_GRADIENTS"}
        if any(f.code in explained and f.severity != "info" for f in trainer.findings):
            return
        k = max(len(self.losses) // 10, 2)
        start, end = statistics.fmean(self.losses[:k]), statistics.fmean(self.losses[-k:])
        trainer.emit(
            finding(
                "LR_TOO_LOW",
                f"the loss barely moves: {start:.4g} -> {end:.4g} ({decrease:+.2%}) over "
                f"{self.count} steps"
                + (f", weights move {ratio:.1e} per step (lecture: ~1e-3)" if ratio else ""),
                "raise the learning rate (by 10x, or run babysit.lr_find(model, data))",
                {
                    "loss_start": start,
                    "loss_end": end,
                    "decrease": decrease,
                    "update_ratio": ratio,
                    "lr": trainer.lr(),
                },
            )
        )


def smooth(values: list[float], windows: int) -> list[float]:
    """Means of ``windows`` equal consecutive chunks of ``values``."""
    return [statistics.fmean(chunk) for chunk in _chunks(values, windows)]


def _chunks(values: list[float], windows: int) -> list[list[float]]:
    """``windows`` equal consecutive chunks of ``values`` (the remainder left out)."""
    size = max(len(values) // windows, 1)
    return [values[i : i + size] for i in range(0, size * windows, size) if values[i : i + size]]


def plateau_then_drop(losses: list[float], *, flat: float, drop: float) -> dict | None:
    """A flat start then a sudden drop, on 50 window means of the curve.

    Flat: the first windows stay within ``flat`` (relative) of the first one for at least 16% of
    the run (8 of 50 windows). Drop: the windows after the plateau fall ``drop`` (relative)
    below its level within the next 10% of the run. A healthy curve falls from the first
    windows on.
    """
    means = smooth(losses, 50)
    if len(means) < 20:
        return None
    level = means[0]
    n_flat = 0
    while n_flat < len(means) and abs(means[n_flat] - level) <= flat * abs(level):
        n_flat += 1
    if n_flat < _MIN_PLATEAU or n_flat >= len(means) - 1:
        return None
    after = means[n_flat : n_flat + 5]
    fall = (level - min(after)) / max(abs(level), 1e-12)
    if fall < drop:
        return None
    size = len(losses) // len(means)
    return {
        "flat_steps": n_flat * size,
        "flat_fraction": n_flat / len(means),
        "plateau_loss": level,
        "loss_after_drop": min(after),
        "drop": fall,
    }


def oscillation(
    losses: list[float], windows: int = 20, *, min_rise: float = 0.25, noise: float = 1.0
) -> dict | None:
    """How much the smoothed loss swings in the last half of the run (``zigzag``).

    The curve is cut into ``windows`` window means (>= 10 steps each, so minibatch noise
    averages out). Over the last half, ``zigzag`` = path length / net change: a descending curve
    scores ~1, a swinging one many times that. Swings count only when they are large: the rises
    must add up to ``min_rise`` x the loss at the start (a converged curve's wiggles, or a flat
    one's, are not oscillation), each rise counted only by how far it exceeds what the
    mini-batch noise moves two window means apart (``noise`` x the standard error of their
    difference; see :func:`_window_noise`). ``None`` when there is no material swing.

    Why the noise: with a noisy loss (a regression MLP at batch 32 whose mini-batch losses
    range over 0.5-4.8 at the start) ten-step window means wander by ~0.1-0.2 by chance; nine
    such steps added up past a quarter of the start, and a run at an lr a decade and a half
    below its best was told to lower it (8 of 10 seeds). The price, measured
    (benchmarks/monitors.py, 3 seeds; threshold ``oscillation_noise``): swings that sit close
    to the noise are missed too — the digits MLP at Adam 0.03 is caught on 1 seed of 3 (3 of 3
    without the noise term) and the momentum-0.3 MLP that is stuck and swinging on none (1 of
    3 before; both runs are still far from healthy: UNDERFITTING or a poor val accuracy). A
    wrong "lower the lr" on a healthy run is the worse error.

    The scale the rises are measured against is the loss at the start, or its fall from there
    when that is larger. For a loss that stays at or above zero the fall never exceeds the
    start, so nothing changes; a negative-cosine loss starts near 0 (0.02-0.03 at batch 8) and
    falls to -0.99, and against its start alone 0.008 of rises beyond the noise was called
    oscillating on 2 of 8 healthy runs.
    """
    windows = min(windows, len(losses) // 10)
    if windows < 10:
        return None
    chunks = _chunks(losses, windows)
    means = [statistics.fmean(chunk) for chunk in chunks]
    half = len(means) // 2
    tail, errors = means[half:], [_window_noise(chunk) for chunk in chunks[half:]]
    if len(tail) < 5:
        return None
    steps = [b - a for a, b in itertools.pairwise(tail)]
    path = sum(abs(s) for s in steps)
    net = abs(tail[-1] - tail[0])
    start = abs(means[0])
    # the loss's scale: its start, or its fall where that is larger (a loss that starts near
    # zero and falls below it: a negative cosine from ~0 to -1; see below)
    scale = max(start, means[0] - min(means))
    rise = sum(s for s in steps if s > 0)
    rises = sum(s > 0 for s in steps)
    beyond = sum(
        max(s - noise * math.hypot(na, nb), 0.0)
        for s, (na, nb) in zip(steps, itertools.pairwise(errors), strict=True)
        if s > 0
    )
    if rises < 2 or beyond < min_rise * scale:
        return None
    return {
        "zigzag": path / max(net, 1e-3 * scale),
        "rises": rises,
        "windows": len(tail),
        "path": path,
        "net_change": net,
        "rise_total": rise,
        "rise_beyond_noise": beyond,
        "window_noise": statistics.median(errors),
        "start_loss": start,
        "scale": scale,
    }


def _window_noise(points: list[float]) -> float:
    """The standard error of a window's mean from its points' step-to-step noise: the median
    absolute successive difference / (0.6745 √2) estimates the points' standard deviation
    without letting a spike or the window's own trend inflate it; ÷ √n for the mean."""
    if len(points) < 3:
        return 0.0
    jumps = [abs(b - a) for a, b in itertools.pairwise(points)]
    return statistics.median(jumps) / (0.6745 * math.sqrt(2)) / math.sqrt(len(points))
