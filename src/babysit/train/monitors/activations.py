"""Activation and gradient statistics while training, through a :class:`~babysit.Probe`.

Every ``every``-th training step a probe records each nonlinearity's output (dead ReLU units,
saturated tanh/sigmoid pre-activations), and the weight gradients the step's own backward left
in ``.grad`` give each weight layer's gradient norm (one ``_foreach_norm``). Between sampled
steps no hook is registered, so the cost is one probed step in ``every`` (``benchmarks/probes.py``
measures it; its table is in docs/benchmarks.md, "Probe overhead").

Rules (definitions in docs/architecture.md):

- ``DEAD_RELU``: a unit is dead when it outputs 0 on every example of >= 256 examples. A
  training batch is usually smaller, so at every sample the dead sets of the latest sampled
  steps that together cover 256 examples are intersected (a sliding window): a unit counts as
  dead only if it was dead at each of them. Warning from 70% of a layer (AUTOTRAINER, ICSE'21),
  info from 10%; ``benchmarks/monitors.py`` measures healthy and ReLU-killing runs against
  these lines (docs/benchmarks.md, "Training monitors").
- ``SATURATED_ACTIVATIONS``: more than 50% of a tanh/sigmoid layer's pre-activations beyond
  |z| = 3.0 / 5.3 on two consecutive samples (one batch can be unlucky).
- ``VANISHING_GRADIENTS`` / ``EXPLODING_GRADIENTS``: AUTOTRAINER's ratio of the first to the
  last weight layer's gradient norm, on two consecutive samples; "first" and "last" in the
  order the model registers its layers (``diagnose`` reads the forward order), each with the
  layers reading the same input (its depth group, seen in the first forward: ``SameInput``).

Under DDP (``torchrun``) every rank samples the same steps (the schedule is the step count, no
random draw), and the counts behind each judged number are summed across ranks before they are
divided (:mod:`.across_ranks`): a layer is dead or saturated on the global batch, every rank
emits the same findings, and the 256 examples a dead verdict needs are counted over all ranks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ... import distributed
from ...gradient_flow import (
    MEASURED_LAYERS_TEXT,
    SameInput,
    measured_layer,
    vanishing_or_exploding,
)
from ...probes import DEAD_MIN_EXAMPLES, Probe
from ._base import Monitor, finding
from .across_ranks import StepReducer

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["ActivationStats"]


class ActivationStats(Monitor):
    """Dead units, saturation and gradient flow, sampled every ``every`` steps.

    Args:
        every: probe every this many steps (a probed step costs about 0.6 plain steps of a
            small MLP on CPU; 100 keeps the overhead under 1%).
        max_examples: examples of a batch the probe measures.
    """

    def __init__(self, *, every: int = 100, max_examples: int = 1024) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.every = every
        self.max_examples = max_examples
        self.dead: dict[str, list] = {}  # layer -> window of [dead unit indices, examples]
        self.judged: set[str] = set()  # ReLU layers whose window reached DEAD_MIN_EXAMPLES
        self.flow_judged = False  # a sample had gradients in >= 2 depth groups
        self._samples = 0  # samples whose gradients were looked at
        self._loss_sum, self._loss_n = 0.0, 0  # training losses since the last sample
        self._first_loss: float | None = None  # the start where the session cannot measure it
        self.streaks: dict[str, int] = {}  # rule:layer -> consecutive samples over the limit
        self._probe: Probe | None = None
        self._reducer = StepReducer()  # under DDP: the layout the ranks agreed on
        self._weights: list[tuple[str, nn.Parameter]] = []
        self._siblings: SameInput | None = None  # depth groups, seen in the first forward

    def on_fit_start(self, trainer: Session) -> None:
        model = trainer.measured_model
        self._weights = [
            (n, m.weight)
            for n, m in model.named_modules()
            if measured_layer(m) and isinstance(getattr(m, "weight", None), nn.Parameter)
        ]
        self._siblings = SameInput(
            {m: n for n, m in model.named_modules() if measured_layer(m)}, model
        )
        self._probe = Probe(
            model, every=self.every, layers="activations", max_examples=self.max_examples, keep=2
        )
        self._probe.seek(trainer.step)
        self._probe.attach()

    def on_train_batch_end(self, trainer: Session, loss: float, batch_index: int) -> None:
        # after_step's "nothing to do" (the probe is not on this step, not ahead of the next,
        # and the next is not sampled), told here: it is most steps, and a call costs
        if len(trainer.rank_losses) > 1:  # under DDP: the mean over ranks, the same everywhere
            loss = trainer.global_loss
        if math.isfinite(loss):
            self._loss_sum += loss
            self._loss_n += 1
            if self._first_loss is None:
                self._first_loss = loss
        probe = self._probe
        if probe is not None and (trainer.step + 1) % self.every:
            current = probe.current_step
            if current != trainer.step and current <= trainer.step + 1:
                return
        self.after_step(trainer)

    def after_step(self, trainer: Session) -> None:
        """The step's backward is done: store the probe's records and judge them.

        The probe is touched twice per period only: after a sampled step (store, judge, disarm)
        and after the step before the next one (arm); other steps cost one modulo.
        """
        probe = self._probe
        if probe is None:
            return
        step = trainer.step
        if probe.current_step == step and probe.sampling:
            probe.step()
            records = [r for r in probe.records if r.step == step]
            if distributed.is_distributed():
                self._judge_global(trainer, records)
            else:
                self._judge(trainer, records)
                self._gradients(trainer, self._grad_norms())
            self._loss_sum, self._loss_n = 0.0, 0
        elif (step + 1) % self.every == 0 or probe.current_step > step + 1:
            probe.seek(step + 1)  # arms the hooks for the sampled step that follows

    def _judge_global(self, trainer: Session, records: list) -> None:
        """Under DDP: judge the step's statistics summed over every rank's shard."""
        judged = [
            r
            for r in records
            if not r.call and (r.dead_fraction is not None or r.saturated_fraction is not None)
        ]
        reduced = self._reducer.reduce(judged, [(n, w.grad) for n, w in self._weights])
        if reduced is None:
            trainer.emit(
                finding(
                    "CHECKS_SKIPPED",
                    f"the ranks recorded different activation layouts at step {trainer.step} "
                    "(a layer whose units follow the data, or a module called a data-dependent "
                    "number of times): dead units, saturation and gradient flow were not judged "
                    "on the global batch",
                    "nothing to fix in training; to have these layers judged, give every rank "
                    "batches of one shape, or run babysit.diagnose(model, data) in one process",
                    {"skipped": {"activation_stats": "layouts differ across ranks"}},
                    severity="info",
                )
            )
            return
        stats, grads = reduced
        self._judge(trainer, stats)
        self._gradients(trainer, grads)

    @torch.no_grad()
    def _grad_norms(self) -> dict[str, float]:
        """‖∂loss/∂W‖ of each weight layer that has a gradient, in one transfer."""
        named = [(n, w.grad) for n, w in self._weights if w.grad is not None]
        if not named:
            return {}
        norms = torch.stack(torch._foreach_norm([g for _, g in named])).tolist()
        return {n: v for (n, _), v in zip(named, norms, strict=True)}

    def on_validation_start(self, trainer: Session) -> None:
        if self._probe is not None:
            self._probe.detach()  # validation forwards are not training statistics

    def on_validation_end(self, trainer: Session) -> None:
        if self._probe is not None:
            self._probe.attach()

    def on_rollback(self, trainer: Session, to_step: int) -> None:
        if self._probe is not None:
            self._probe.seek(trainer.step + 1)  # drop what the blown-up forward measured

    def on_fit_end(self, trainer: Session) -> None:
        if self._probe is not None:
            self._probe.detach()
            self._probe = None
        if self._siblings is not None:
            self._siblings.remove()
        self._say_unjudged(trainer)

    def _say_unjudged(self, trainer: Session) -> None:
        """Cannot check means say so, in one CHECKS_SKIPPED (info) at the end of the run:

        - ReLU layers whose samples never covered the ``DEAD_MIN_EXAMPLES`` a dead-unit verdict
          needs (a run shorter than a few sampling periods: at batch 64 and ``every=100``,
          301 steps);
        - gradient flow, when no sample had gradients in two depth groups of the weight layers
          babysit measures (:func:`babysit.gradient_flow.measured_layer`: ``nn.Linear``,
          ``nn.ConvNd``, transformers' ``Conv1D``): a one-layer model, or one whose layers
          are of other types (a module that holds its own weight matrices).

        Not after a run the loss guard stopped (its error is the run's last word), nor before
        any sample was taken."""
        if trainer.stop_reason or self._samples == 0:
            return
        unjudged = {name: sum(n for _, n in w) for name, w in self.dead.items()}
        unjudged = {name: n for name, n in unjudged.items() if name not in self.judged}
        skipped: dict[str, str] = {}
        lines: list[str] = []
        advice: list[str] = []
        evidence: dict[str, Any] = {}
        if unjudged:
            seen = max(unjudged.values())
            names = ", ".join(f"'{name}'" for name in unjudged)
            skipped["dead_units"] = f"{seen} < {DEAD_MIN_EXAMPLES} examples"
            lines.append(
                f"dead ReLU units were not judged in {names}: the samples of this run (one "
                f"step in {self.every}) covered at most {seen} training examples, and a unit "
                f"is called dead only when it is 0 on all of >= {DEAD_MIN_EXAMPLES}"
            )
            advice.append(
                "to have dead units judged, train longer, sample more often "
                "(monitors=[..., ActivationStats(every=10)]), or run "
                "babysit.diagnose(model, data), which judges them on its probe batch"
            )
            evidence.update(layers=list(unjudged), n_examples=seen)
        if not self.flow_judged:
            measured = [name for name, _ in self._weights]
            skipped["gradient_flow"] = f"{len(measured)} weight layer(s), one depth group"
            lines.append(
                "gradient flow (vanishing / exploding gradients) was not judged: the weight "
                f"layers babysit measures ({MEASURED_LAYERS_TEXT}: {len(measured)} here) "
                "never gave two depth groups to compare"
            )
            advice.append(
                "for a model built from other layer types (a module that holds its own weight "
                "matrices), watch their gradient norms yourself (babysit.Probe)"
            )
            evidence["weight_layers"] = measured
        if not skipped:
            return
        trainer.emit(
            finding(
                "CHECKS_SKIPPED",
                "; ".join(lines),
                "nothing to fix in training; " + "; ".join(advice),
                {"skipped": skipped, **evidence, **_ranks()},
                severity="info",
            )
        )

    def _judge(self, trainer: Session, records: list) -> None:
        for r in records:
            if r.call:
                continue
            if r.dead_fraction is not None:
                trainer.log(f"dead_fraction/{r.name}", r.dead_fraction)
                self._dead_units(trainer, r)
            if r.saturated_fraction is not None:
                trainer.log(f"saturated_fraction/{r.name}", r.saturated_fraction)
                self._saturation(trainer, r)

    def _dead_units(self, trainer: Session, r: Any) -> None:
        """Slide a window over the latest samples that together cover >= 256 examples and
        count the units dead in every one of them."""
        window = self.dead.setdefault(r.name, [])
        window.append([list(r.dead_units or []), r.n_examples])
        while len(window) > 1 and sum(n for _, n in window[1:]) >= DEAD_MIN_EXAMPLES:
            window.pop(0)
        seen = sum(n for _, n in window)
        if seen < DEAD_MIN_EXAMPLES:
            return
        self.judged.add(r.name)
        units = set(window[0][0]).intersection(*(set(u) for u, _ in window[1:]))
        fraction = len(units) / max(r.n_units, 1)
        t = trainer.thresholds
        if fraction < t["dead_relu_info"]:
            return
        severity = "warning" if fraction >= t["dead_relu_warning"] else "info"
        message = (
            f"{fraction:.0%} of the ReLU units of '{r.name}' output 0 on all of {seen} "
            f"training examples (step {trainer.step}): they no longer learn"
        )
        evidence: dict[str, Any] = {"dead_fraction": fraction, "n_examples": seen}
        progress = self._loss_progress(trainer)
        if progress is not None:
            evidence["loss_over_start"] = progress
            if severity == "warning" and progress < t["dead_relu_learning"]:
                severity = "info"  # the live units carry the training: capacity, not learning
                message += (
                    f"; the training loss is down to {progress:.0%} of its start, so the "
                    "other units still carry the training: capacity is lost, not learning"
                )
        trainer.emit(
            finding(
                "DEAD_RELU",
                message,
                "lower the learning rate (a too-large update kills ReLUs), use He init with a "
                "small positive bias, or Leaky ReLU",
                {**evidence, "dead_units": len(units), **_ranks()},
                layer=r.name,
                severity=severity,
            )
        )

    def _loss_progress(self, trainer: Session) -> float | None:
        """The mean training loss since the previous sample over the loss of the initial
        weights (``fit`` measures it, :meth:`Session.start_loss`; elsewhere the first loss):
        ``None`` when either is missing or the start is not positive (a loss that can be
        negative has no "fraction of its start")."""
        measured = trainer.start_loss()
        start = measured[0] if measured is not None else self._first_loss
        if not self._loss_n or start is None or not start > 0:
            return None
        recent = self._loss_sum / self._loss_n
        return recent / start if recent >= 0 else None

    def _saturation(self, trainer: Session, r: Any) -> None:
        over = r.saturated_fraction > trainer.thresholds["saturated_fraction"]
        if not self._streak(f"saturation:{r.name}", over):
            return
        trainer.emit(
            finding(
                "SATURATED_ACTIVATIONS",
                f"{r.saturated_fraction:.0%} of the {r.kind} pre-activations of '{r.name}' are "
                f"saturated at step {trainer.step}: their local gradient is ~0",
                "shrink the init (babysit.nn.init_model(model, 'xavier')), lower the learning "
                "rate, or add batch norm before the activation",
                {"saturated_fraction": r.saturated_fraction, "std": r.std, **_ranks()},
                layer=r.name,
            )
        )

    def _gradients(self, trainer: Session, grads: dict[str, float]) -> None:
        for name, value in grads.items():
            trainer.log(f"grad_norm/{name}", value)
        self._samples += 1
        if len(grads) < 2 or not all(math.isfinite(g) for g in grads.values()):
            return
        groups = self._siblings.groups if self._siblings is not None else None
        if len({(groups or {}).get(n, n) for n in grads}) >= 2:
            self.flow_judged = True
        found = vanishing_or_exploding(grads, trainer.thresholds, groups)
        if not self._streak("gradients", bool(found)) or not found:
            return
        trainer.emit(found[0])

    def _streak(self, key: str, over: bool) -> bool:
        """Two consecutive samples over the limit."""
        self.streaks[key] = self.streaks.get(key, 0) + 1 if over else 0
        return self.streaks[key] >= 2

    def state_dict(self) -> dict[str, Any]:
        return {
            "every": self.every,
            "max_examples": self.max_examples,
            "dead": {k: [[list(u), n] for u, n in v] for k, v in self.dead.items()},
            "streaks": dict(self.streaks),
        }


def _ranks() -> dict[str, int]:
    """Evidence under DDP: how many ranks' examples the statistics cover (nothing otherwise)."""
    world = distributed.world_size()
    return {"world_size": world} if world > 1 else {}
