"""``babysit.watch``: the same monitors in a training loop the user keeps.

::

    watcher = babysit.watch(model, optimizer)
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        watcher.observe(loss)        # the one added line (before or after backward)
        loss.backward()
        optimizer.step()
    watcher.close()                  # or `with babysit.watch(...) as watcher:`
    print(watcher.findings)

The watcher registers an optimizer step pre-hook and post-hook (the update ratio is measured
from the real step; the post-hook also ends the step for the probes) and, on sampled steps
only, module hooks. It never changes what the loop computes: no gradient is touched, no
parameter moves, no random number is drawn. It cannot roll back a loop it does not own: a NaN
or diverged loss (:func:`babysit.divergence.diverged`, the rule ``fit`` uses) is reported and
``watcher.diverged`` becomes True for the loop to act on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import runs
from .callbacks import Callback
from .session import Session

__all__ = ["Watcher", "watch"]


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    monitors: str | Iterable[Callback] | None = "default",
    run_dir: str | Path | None = None,
    thresholds: Mapping[str, float] | None = None,
    ignore: Iterable[str] = (),
    progress: bool = False,
    task: Any = "auto",
) -> Watcher:
    """Attach babysit's monitors to a training loop you keep; add ``watcher.observe(loss)``.

    Args:
        model: the model the loop trains.
        optimizer: the optimizer whose ``step()`` the loop calls (its hooks count the steps).
        monitors: ``"default"``, ``"all"`` or a list (:mod:`babysit.train.monitors`).
        run_dir: when given, ``config.json``, ``metrics.csv`` and ``findings.json`` are
            written there (at each :meth:`Watcher.end_epoch` and at :meth:`Watcher.close`).
        thresholds, ignore: as in :func:`babysit.diagnose`.
        progress: print a line per finding as it fires.
        task: what the loop's output means (``"auto"``, a kind name or a
            :class:`babysit.Task`); recorded in ``config.json`` (the loop's loss is not seen,
            so ``"auto"`` stays unresolved).
    """
    return Watcher(
        model,
        optimizer,
        monitors=monitors,
        run_dir=run_dir,
        thresholds=thresholds,
        ignore=ignore,
        progress=progress,
        task=task,
    )


class Watcher(Session):
    """Monitors hooked into a user's loop; see :func:`watch`."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        monitors: str | Iterable[Callback] | None = "default",
        run_dir: str | Path | None = None,
        thresholds: Mapping[str, float] | None = None,
        ignore: Iterable[str] = (),
        progress: bool = False,
        task: Any = "auto",
    ) -> None:
        from .config import check_task
        from .monitors import resolve_monitors

        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        run_dir = None if run_dir is None else Path(run_dir)
        task = check_task(task)
        self.task = task if isinstance(task, str) else task.to_dict()
        super().__init__(
            model,
            optimizer,
            callbacks=resolve_monitors(monitors),
            thresholds=thresholds,
            ignore=ignore,
            run_dir=run_dir,
        )
        if run_dir is not None:
            if run_dir.exists() and any(run_dir.iterdir()):
                runs.fresh_run_dir(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            runs.write_json(run_dir, runs.CONFIG, self._config())
        if progress:
            from rich.console import Console

            from .progress import alert_line

            console = Console(stderr=True)
            self.alert = lambda f: console.print(alert_line(f))
        self.history: list[dict[str, Any]] = []
        self._last_loss = math.nan
        self._closed = False
        self.call("on_fit_start")
        # registered after the monitors' hooks, so it runs last: it ends the step
        self._handle = optimizer.register_step_post_hook(lambda *_: self._after_step())

    def observe(self, loss: torch.Tensor | float) -> None:
        """Report this step's loss (a tensor or a float). Reads one number."""
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        self._last_loss = value
        self.log("loss", value)
        self.call("on_loss", value)

    def end_epoch(self, **metrics: float) -> None:
        """Optional: report epoch metrics (``train_acc=..., val_acc=..., val_loss=...``) so the
        train/val gap monitor can judge them; also writes the run directory."""
        row = {"epoch": self.epoch, **{k: float(v) for k, v in metrics.items()}}
        self.history.append(row)
        for key, value in metrics.items():
            split, _, name = key.partition("_")
            self.log(
                name if split in ("train", "val") else key,
                float(value),
                split=split if split in ("train", "val") else "train",
            )
        self.call("on_train_epoch_end", row)
        if any(k.startswith("val_") for k in metrics):
            self.call("on_validation_epoch_end", row)
        self.epoch += 1
        self.flush()

    @property
    def diverged(self) -> bool:
        """True once the loss went NaN/Inf or diverged from its start (above 3x it for a loss
        that starts at 0.1 or more; :mod:`babysit.divergence`): the loop should stop."""
        return self.stop_reason is not None

    def close(self) -> None:
        """Run the end-of-training rules, remove every hook and write the run directory."""
        if self._closed:
            return
        self._closed = True
        self._handle.remove()
        self.call("on_fit_end")
        self.flush()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Watcher(step={self.step}, findings={sorted({f.code for f in self.findings})})"

    def _after_step(self) -> None:
        self.call("on_train_batch_end", self._last_loss, self.step)
        self.step += 1

    def _config(self) -> dict[str, Any]:
        return {
            "kind": "watch",
            "model": type(self.model).__name__,
            "model_repr": repr(self.model),
            "optimizer": type(self.optimizer).__name__,
            "lr": self.lr(),
            "task": self.task,
            "monitors": [type(c).__name__ for c in self.callbacks],
        }
