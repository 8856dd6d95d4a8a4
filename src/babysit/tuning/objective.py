"""The search's built-in objective: build a model from the params, train it with ``fit``, score it.

Which series each pruner reads: the built-in objective reports the validation metric once per
epoch (``trial.report``; what ``MedianPruner`` compares) and the training loss to
:class:`~babysit.tuning.pruners.BreakOutPruner` (every epoch, and at once when it blows up).

It reads a fixed set of parameter names (:data:`TRAINING_PARAMS` for ``fit``,
:data:`MODEL_PARAMS` for the default ``babysit.nn.mlp``); a name it does not read would be
searched, narrowed and reported as "best" while every trial trained at its default, so
:func:`check_names` rejects it before any trial runs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import optuna
import torch

from .. import runs
from ..train import Callback, fit
from .pruners import broke_out, report_loss, report_start
from .stages import REPORTS_ATTR

__all__ = ["MODEL_PARAMS", "TRAINING_PARAMS", "Builtin", "TrialReporter", "check_names"]

# What fit() takes from a trial's params (and its default when a name is not searched).
TRAINING_PARAMS = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 64}
# What the default model, babysit.nn.mlp, takes from a trial's params.
MODEL_PARAMS = {
    "hidden": 100,
    "depth": 2,
    "activation": "relu",
    "init": "he",
    "batchnorm": False,
    "dropout": 0.0,
}


def check_names(names: Iterable[str], custom_model: bool) -> None:
    """Reject parameter names the built-in objective would ignore, listing the ones it reads.

    With ``model=`` the builder receives every parameter, so any name may be its own.
    """
    if custom_model:
        return
    known = {**TRAINING_PARAMS, **MODEL_PARAMS}
    unknown = sorted(n for n in names if n not in known)
    if unknown:
        raise ValueError(
            f"the built-in objective does not use the parameter(s) {', '.join(unknown)}: every "
            f"trial would train at the default instead; it reads {', '.join(sorted(known))} "
            "(pass model=params -> nn.Module to use other names, or objective=...)"
        )


class TrialReporter(Callback):
    """Reports the validation metric per epoch and the loss to the break-out pruner."""

    def __init__(self, trial: optuna.Trial, metric: str, *, report: bool = True) -> None:
        self.trial = trial
        self.metric = metric
        self.report = report  # False under cv: folds report their mean instead
        self.initial: float | None = None
        self.spread = 0.0

    def on_fit_start(self, trainer: Any) -> None:
        """The start ``fit``'s LossGuard judges against (its measured mean and spread), so a
        trial is pruned where ``fit`` would break out, not on one batch's chance high."""
        measured = trainer.start_loss()
        if self.initial is None and measured is not None:
            self.initial, _, self.spread = measured
            report_start(self.trial, self.initial, self.spread)

    def on_loss(self, trainer: Any, loss: float) -> None:
        if self.initial is None and math.isfinite(loss):
            self.initial = loss
            report_loss(self.trial, loss)
        # the lecture's break-out: stop within the step, not at the epoch's end
        if broke_out(loss, self.initial, spread=self.spread):
            report_loss(self.trial, loss)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"loss {loss:.4g} at step {trainer.step}: broke out")

    def on_train_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        if "train_loss" in metrics:
            report_loss(self.trial, metrics["train_loss"])
        if self.report and self.metric in metrics and math.isfinite(metrics[self.metric]):
            self.trial.report(metrics[self.metric], trainer.epoch)
        last = trainer.epoch + 1 >= trainer.epochs  # pruning a finished trial saves nothing
        if not last and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {trainer.epoch}")


class Builtin:
    """The built-in objective: build a model from the params, train it with ``fit``, score it.

    With ``cv=k`` the training and validation splits are pooled and cut into k folds
    (scikit-learn's ``KFold``, shuffled under the search's seed); the score is the mean over the
    folds, reported after each fold. With a run directory, each completed trial's weights are
    kept (``models/<study>-<trial>.pt``) for :meth:`SearchResult.ensemble`.
    """

    def __init__(
        self,
        model: Callable[[dict[str, Any]], torch.nn.Module] | None,
        data: Any,
        metric: str,
        cv: int | None,
        seed: int,
        models_dir: Path | None,
        task: Any = "auto",
    ) -> None:
        if data is None:
            raise ValueError(
                "search needs data for its built-in objective (e.g. data='mnist1d'), or pass "
                "objective=lambda params, trial: <metric>"
            )
        self.train, self.val, self.test, self.in_features, self.classes = splits(data)
        self.task = task
        kind = task if isinstance(task, str) else task.kind
        if kind == "regression":  # one output per target column, targets (N, outputs)
            self.train, self.val, self.test = (
                _columns(s) for s in (self.train, self.val, self.test)
            )
            self.classes = int(self.train[1].shape[1])
        self.model, self.metric, self.cv, self.seed = model, metric, cv, seed
        self.models_dir = models_dir

    def build(self, params: dict[str, Any]) -> torch.nn.Module:
        if self.model is not None:
            return self.model(params)
        from ..nn import mlp

        p = {**MODEL_PARAMS, **params}
        hidden = p["hidden"]
        widths = (
            list(hidden) if isinstance(hidden, list | tuple) else [int(hidden)] * int(p["depth"])
        )
        return mlp(
            self.in_features,
            widths,
            self.classes,
            activation=p["activation"],
            init=p["init"],
            batchnorm=bool(p["batchnorm"]),
            dropout=float(p["dropout"]),
        )

    def _fit(self, params: dict[str, Any], trial: optuna.Trial, train: Any, val: Any, report: bool):
        net = self.build(params)
        p = {**TRAINING_PARAMS, **params}
        history = fit(
            net,
            train,
            val=val,
            optimizer=p["optimizer"],
            lr=p["lr"],
            weight_decay=float(p["weight_decay"]),
            batch_size=int(p["batch_size"]),
            epochs=int(trial.user_attrs["epochs"]),
            monitors=None,
            progress=False,
            seed=trial.number,
            task=self.task,
            callbacks=[TrialReporter(trial, self.metric, report=report)],
        )
        if self.metric not in history.final:
            known = ", ".join(k for k in history.final if k not in ("epoch", "seconds"))
            raise ValueError(f"metric {self.metric!r} is not measured; known: {known}")
        return net, history.final[self.metric]

    def __call__(self, params: dict[str, Any], trial: optuna.Trial) -> float:
        trial.set_user_attr(REPORTS_ATTR, self.cv or int(trial.user_attrs["epochs"]))
        if self.cv is None:
            net, score = self._fit(params, trial, self.train, self.val, report=True)
            self._keep(net, params, trial)
            return score
        from sklearn.model_selection import KFold

        x = torch.cat([self.train[0], self.val[0]])
        y = torch.cat([self.train[1], self.val[1]])
        scores = []
        folds = KFold(self.cv, shuffle=True, random_state=self.seed).split(x.numpy())
        for i, (tr, va) in enumerate(folds):
            tr, va = torch.as_tensor(tr), torch.as_tensor(va)
            _, score = self._fit(params, trial, (x[tr], y[tr]), (x[va], y[va]), report=False)
            scores.append(score)
            trial.report(sum(scores) / len(scores), i)
            if i + 1 < self.cv and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {i + 1} of {self.cv}")
        trial.set_user_attr("cv_scores", scores)
        return sum(scores) / len(scores)

    def _keep(self, net: torch.nn.Module, params: dict[str, Any], trial: optuna.Trial) -> None:
        if self.models_dir is None:
            return
        buffer = io.BytesIO()
        torch.save({"params": params, "state": net.state_dict()}, buffer)
        path = self.models_dir / f"{trial.study.study_name}-{trial.number}.pt"
        runs.atomic_write_bytes(path, buffer.getvalue())

    @torch.no_grad()
    def ensemble(self, study_name: str, trials: list[dict[str, Any]]) -> dict[str, Any]:
        """Test accuracy of the averaged softmax of ``trials``' models, and of each alone."""
        if self.test is None:
            raise ValueError("ensemble needs a test split: search with data='mnist1d', a Splits…")
        x, y = self.test
        probs, singles = [], []
        for t in trials:
            path = self.models_dir / f"{study_name}-stage{t['stage']}-{t['number']}.pt"  # type: ignore[operator]
            if not path.exists():
                raise FileNotFoundError(
                    f"the weights of trial {t['number']} (stage {t['stage']}) are not in {path}: "
                    "they are kept on the machine that ran it; run ensemble() there"
                )
            saved = torch.load(path, weights_only=True)
            net = self.build(saved["params"])
            net.load_state_dict(saved["state"])
            net.eval()
            p = torch.softmax(net(x), dim=1)
            probs.append(p)
            singles.append(float((p.argmax(1) == y).float().mean()))
        mean = torch.stack(probs).mean(0)
        return {
            "k": len(trials),
            "ensemble_test_acc": float((mean.argmax(1) == y).float().mean()),
            "single_test_acc": singles,
            "best_single_test_acc": singles[0],
            "trials": [(t["stage"], t["number"]) for t in trials],
        }


def _columns(split: Any) -> Any:
    """``(x, y)`` with 1-D targets as one column, the shape a one-output model's MSE needs."""
    if split is None:
        return None
    x, y = split
    y = torch.as_tensor(y)
    return x, (y.unsqueeze(1) if y.dim() == 1 else y).float()


def splits(data: Any) -> tuple[Any, Any, Any, int, int]:
    """(train, val, test or None, in_features, classes); a data set name is standardized on
    its training split."""
    from ..data import Standardize, load

    if isinstance(data, str):
        loaded = load(data)
        (x, y), (xv, yv), (xt, yt) = (s.tensors for s in (loaded.train, loaded.val, loaded.test))
        scaler = Standardize().fit(x)
        x, xv, xt = (scaler.transform(t) for t in (x, xv, xt))
        return (x, y), (xv, yv), (xt, yt), x.shape[1], loaded.num_classes
    if hasattr(data, "train") and hasattr(data, "val"):
        (x, y), (xv, yv) = data.train.tensors, data.val.tensors
        test = data.test.tensors if getattr(data, "test", None) is not None else None
    else:
        (x, y), (xv, yv), *rest = data
        test = rest[0] if rest else None
    return (x, y), (xv, yv), test, int(x.shape[1]), int(torch.as_tensor(y).max()) + 1
