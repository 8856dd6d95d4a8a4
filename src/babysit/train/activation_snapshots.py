"""The lecture's activation figure for a run: per-layer statistics at init and after training.

``fit`` with a ``run_dir`` measures every nonlinearity's output (mean, std, dead and saturated
fractions, a histogram) and the back-propagated gradient norms on a fixed sample of the training
data, once before the first step and once at the end, with the same measurement as the init lab
(:func:`babysit.probes.measure_layers`), and writes them to ``activations.json``: the report draws
them side by side, so a std that collapsed or a layer that died during training shows.

Measuring never changes the run: the model is measured in eval mode (no dropout, batch norm with
its running statistics, which stay untouched), under a forked torch RNG, and the gradients the
measurement leaves are put back as they were, so weights, optimizer and random stream are the
same as without it. Under DDP only rank 0 measures and writes (a figure of rank 0's sample; the
other ranks do nothing, and no collective runs: the measured module is the one inside the
``DistributedDataParallel`` wrapper).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from .. import distributed, runs
from ..modes import eval_mode
from ..probes import measure_layers
from .callbacks import Callback

if TYPE_CHECKING:
    from .session import Session

__all__ = ["ActivationSnapshots"]

SAMPLE = 512  # training examples measured


class ActivationSnapshots(Callback):
    """Write ``activations.json``: the per-layer activation statistics at init and at the end.

    Needs in-memory training data of plain ``(x, y)`` batches (the trainer's fixed training
    sample); otherwise it does nothing. On a resumed run the "at init" snapshot already on
    disk is kept.
    """

    def __init__(self, sample: int = SAMPLE) -> None:
        self.sample = sample

    def on_fit_start(self, trainer: Session) -> None:
        self._guarded(self._first, trainer)

    def on_fit_end(self, trainer: Session) -> None:
        self._guarded(self._last, trainer)

    def _first(self, trainer: Session) -> None:
        run_dir = trainer.run_dir
        if run_dir is None or self._inputs(trainer) is None:
            return
        existing = runs.read_json(run_dir, runs.ACTIVATIONS)
        if existing is not None and existing.get("experiment") == "fit":
            return  # resumed: the init snapshot is the first run's
        layers = self._measure(trainer)
        label = "at init" if trainer.step == 0 else f"at resume (step {trainer.step})"
        if layers:
            runs.write_json(run_dir, runs.ACTIVATIONS, _document([(label, trainer.step, layers)]))

    def _last(self, trainer: Session) -> None:
        run_dir = trainer.run_dir
        if run_dir is None or self._inputs(trainer) is None:
            return
        existing = runs.read_json(run_dir, runs.ACTIVATIONS) or {}
        before = [
            (s["label"], s.get("step", 0), s["layers"])
            for s in existing.get("settings", [])[:1]
            if existing.get("experiment") == "fit"
        ]
        layers = self._measure(trainer)
        if layers:
            label = f"after training (step {trainer.step})"
            runs.write_json(
                run_dir, runs.ACTIVATIONS, _document([*before, (label, trainer.step, layers)])
            )

    @staticmethod
    def _guarded(hook, trainer: Session) -> None:
        """A figure is never worth a failed run: errors are dropped (raised under
        BABYSIT_STRICT_CHECKS=1, as in the tests)."""
        try:
            hook(trainer)
        except Exception:
            if os.environ.get("BABYSIT_STRICT_CHECKS") == "1":
                raise

    def _inputs(self, trainer: Session) -> torch.Tensor | None:
        if not distributed.is_main():
            return None  # one figure per run, from rank 0
        sample = getattr(trainer, "_train_sample", None)
        if sample is None or getattr(trainer, "forward_fn", None) is not None:
            return None
        x = sample.tensors[0]
        return x[: self.sample] if isinstance(x, torch.Tensor) and x.is_floating_point() else None

    def _measure(self, trainer: Session) -> list[dict[str, Any]]:
        model, x = trainer.measured_model, self._inputs(trainer)
        grads = {p: p.grad for p in model.parameters()}
        devices = [x.device.index] if x.device.type == "cuda" else []
        try:  # each module's own mode back (a frozen BatchNorm stays frozen: babysit.modes)
            with torch.random.fork_rng(devices=devices), eval_mode(model):
                rows = measure_layers(model, x, torch.Generator().manual_seed(0))
        finally:  # errors go to _guarded: no figure, training unaffected
            for p, g in grads.items():
                p.grad = g
        return [asdict(row) for row in rows]


def _document(snapshots: list[tuple[str, int, list[dict[str, Any]]]]) -> dict[str, Any]:
    return {
        "experiment": "fit",
        "settings": [
            {"label": label, "step": step, "layers": layers} for label, step, layers in snapshots
        ],
    }
