"""Tasks (issue 12, item 1): what the output means, inferred from the loss or given, and every
check, metric and error judging it (docs/architecture.md, "Data: tasks, batches and forward=")."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import babysit as bs
from babysit.tasks import Task, hits, resolve_task

# -- resolve_task ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss_fn", "kind"),
    [
        (None, "classification"),
        (nn.CrossEntropyLoss(), "classification"),
        (nn.NLLLoss(), "classification"),
        (nn.BCEWithLogitsLoss(), "multilabel"),
        (nn.BCELoss(), "multilabel"),
        (nn.MSELoss(), "regression"),
        (nn.L1Loss(), "regression"),
        (nn.HuberLoss(), "regression"),
        (nn.SmoothL1Loss(), "regression"),
        (nn.GaussianNLLLoss(), "regression"),
        (nn.KLDivLoss(reduction="batchmean"), "custom"),
        (lambda out, y: (out - y).abs().mean(), "custom"),
    ],
)
def test_auto_infers_the_kind_from_the_loss(loss_fn, kind):
    assert resolve_task("auto", loss_fn).kind == kind


def test_auto_reads_ignore_index_and_label_smoothing_from_the_loss():
    assert resolve_task("auto", None).ignore_index == -100  # torch's default, honoured
    task = resolve_task("auto", nn.CrossEntropyLoss(ignore_index=0, label_smoothing=0.1))
    assert (task.ignore_index, task.label_smoothing) == (0, 0.1)
    assert resolve_task(Task("classification", class_dim=1), nn.NLLLoss()).ignore_index == -100


@pytest.mark.parametrize(
    ("task", "loss_fn", "targets", "match"),
    [
        ("regression", nn.CrossEntropyLoss(), None, r"pass task='classification'"),
        ("classification", nn.MSELoss(), None, r"pass task='regression'"),
        ("multilabel", nn.CrossEntropyLoss(), None, r"BCEWithLogitsLoss"),
        (Task("classification", ignore_index=5), nn.CrossEntropyLoss(), None, "ignore_index=5"),
        ("classification", None, torch.randn(10) * 5, r"pass task='regression'"),
        ("multilabel", nn.BCEWithLogitsLoss(), torch.randn(10, 2) * 5, "task='regression'"),
        ("custom", None, None, r"needs a loss_fn"),
        ("segmentation", None, None, r"unknown task kind"),
    ],
)
def test_a_task_that_contradicts_the_loss_or_targets_is_one_clear_error(
    task, loss_fn, targets, match
):
    with pytest.raises(ValueError, match=match):
        resolve_task(task, loss_fn, targets)


def test_task_arguments_are_validated():
    with pytest.raises(TypeError, match="task must be"):
        resolve_task(3, None)
    with pytest.raises(ValueError, match="batch dimension"):
        Task("classification", class_dim=0)
    with pytest.raises(ValueError, match="num_classes"):
        Task("classification", num_classes=0)


def test_hits_honour_class_dim_ignore_index_and_soft_targets():
    out = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])  # (N=1, C=2, T=2): predicts 0 then 1
    labels = torch.tensor([[0, -100]])
    correct, counted = hits(out, labels, Task("classification", ignore_index=-100))
    assert correct.tolist() == [[True, False]] and counted.tolist() == [[True, False]]
    soft = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    correct, _ = hits(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), soft, Task("classification"))
    assert correct.tolist() == [True, False]
    correct, _ = hits(torch.tensor([[3.0, -1.0]]), torch.tensor([[1.0, 1.0]]), Task("multilabel"))
    assert correct.tolist() == [[True, False]]


# -- diagnose: each task judged as such -------------------------------------------------------


def _x(n=512, d=20, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _mlp(out, d=20):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, out))


def _codes(diagnosis, severities=("warning", "error")):
    return {f.code for f in diagnosis.findings if f.severity in severities}


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, state):
    return all(torch.equal(state[k], v) for k, v in model.state_dict().items())


LABEL_CHECKS = ["forward_runs", "labels", "initial_loss"]


def test_ignore_index_labels_are_not_out_of_range():
    """Was: LABELS_OUT_OF_RANGE (error) for CrossEntropyLoss's own ignore_index -100."""
    x = _x()
    y = torch.randint(0, 5, (512,), generator=torch.Generator().manual_seed(1))
    y[::7] = -100
    diagnosis = bs.diagnose(_mlp(5), (x, y), lr=1e-3, checks=LABEL_CHECKS)
    assert diagnosis.ok and not _codes(diagnosis)
    y[3] = -1  # not the ignore_index: still out of range
    diagnosis = bs.diagnose(_mlp(5), (x, y), lr=1e-3, checks=LABEL_CHECKS)
    (found,) = [f for f in diagnosis.findings if f.code == "LABELS_OUT_OF_RANGE"]
    assert "-1" in found.message and "ignore_index" in found.message


def test_soft_targets_are_accepted_and_invalid_ones_named():
    """Was: LABELS_NOT_INTEGER (error) for probability targets of the output's shape."""
    x = _x()
    soft = torch.softmax(torch.randn(512, 5, generator=torch.Generator().manual_seed(2)), 1)
    diagnosis = bs.diagnose(_mlp(5), (x, soft), lr=1e-3, checks=LABEL_CHECKS)
    assert not _codes(diagnosis)
    diagnosis = bs.diagnose(_mlp(5), (x, soft * 3), lr=1e-3, checks=LABEL_CHECKS)
    (found,) = [f for f in diagnosis.findings if f.code == "LABELS_NOT_INTEGER"]
    assert "not" in found.message and "probabilities" in found.message


class Tagger(nn.Module):
    """Tokens -> (N, C, T) tag scores, as cross-entropy wants sequences."""

    def __init__(self, vocab=30, tags=6):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, tags)

    def forward(self, tokens):
        return self.head(self.embed(tokens)).transpose(1, 2)


def _tokens(n=512, t=8, tags=6):
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 30, (n, t), generator=g)
    labels = tokens % tags
    labels[:, 6:] = -100  # padding
    return tokens, labels


def test_sequence_outputs_with_padding_are_read_along_class_dim():
    tokens, labels = _tokens()
    torch.manual_seed(0)
    diagnosis = bs.diagnose(Tagger(), (tokens, labels), lr=1e-3, checks=LABEL_CHECKS)
    assert not _codes(diagnosis)
    wide = labels.clone()
    wide[0, 0] = 6  # one tag more than the head has
    diagnosis = bs.diagnose(Tagger(), (tokens, wide), lr=1e-3, checks=LABEL_CHECKS)
    assert "LABELS_OUT_OF_RANGE" in diagnosis.codes


def test_float_column_targets_with_the_default_loss_are_an_error_not_a_zero_loss():
    """Was: fit trained at loss exactly 0 (softmax over one output is 1), with no finding."""
    x = _x()
    y = x[:, :1] * 2
    diagnosis = bs.diagnose(_mlp(1), (x, y), lr=1e-3, checks=LABEL_CHECKS)
    (found,) = [f for f in diagnosis.findings if f.code == "LABELS_NOT_INTEGER"]
    assert "exactly 0" in found.message and "task='regression'" in found.message
    model = _mlp(1)
    state = _state(model)
    with pytest.raises(ValueError, match=r"exactly 0.*task='regression'"):
        bs.fit(model, (x, y), epochs=1, progress=False)
    assert _same(model, state)


def _pretrained():
    """A classifier that already knows the answer: logits 8 * x[:, :5]."""
    model = nn.Linear(20, 5)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[:, :5] = 8 * torch.eye(5)
        model.bias.zero_()
    return model


def test_a_loss_at_init_below_ln_c_is_not_a_mismatch():
    """Was: INIT_LOSS_MISMATCH for |loss - ln C| > 1 both ways: a fine-tuned model's low start."""
    x = _x()
    y = x[:, :5].argmax(1)
    diagnosis = bs.diagnose(_pretrained(), (x, y), lr=1e-3, checks=LABEL_CHECKS)
    assert "INIT_LOSS_MISMATCH" not in diagnosis.codes


def test_huge_logits_at_init_are_still_a_mismatch():
    x = _x()
    y = torch.randint(0, 5, (512,), generator=torch.Generator().manual_seed(4))
    model = _mlp(5)
    with torch.no_grad():
        model[-1].weight.mul_(100)
    diagnosis = bs.diagnose(model, (x, y), lr=1e-3, checks=LABEL_CHECKS)
    (found,) = [f for f in diagnosis.findings if f.code == "INIT_LOSS_MISMATCH"]
    assert found.evidence["task"]["kind"] == "classification"
    assert found.evidence["expected"] == pytest.approx(math.log(5), abs=1e-4)


def test_best_constant_under_label_smoothing_is_the_smoothed_priors_entropy():
    from babysit.checks import build_context
    from babysit.checks.loss import baseline

    x = _x(400)
    y = torch.tensor([0] * 300 + [1] * 60 + [2] * 40)
    eps = 0.2
    ctx = build_context(_mlp(3), (x, y), loss_fn=nn.CrossEntropyLoss(label_smoothing=eps), lr=1e-3)
    base = baseline(ctx, torch.zeros(400, 3))
    prior = torch.tensor([300, 60, 40], dtype=torch.float64) / 400
    smoothed = (1 - eps) * prior + eps / 3
    # E over examples of CE with smoothed one-hot targets against q = smoothed prior
    q = smoothed.log()
    onehot = torch.nn.functional.one_hot(y, 3).double()
    targets = (1 - eps) * onehot + eps / 3
    expected = float(-(targets * q).sum(1).mean())
    assert base.best == pytest.approx(expected, rel=1e-4)
    assert base.best == pytest.approx(float(-(smoothed * smoothed.log()).sum()), rel=1e-4)
    assert base.neutral == pytest.approx(math.log(3), rel=1e-5)


def test_regression_is_judged_against_the_target_variance_and_scale():
    """Was: no loss-at-init check and no target-scale check for regression at all."""
    x = _x()
    y = x[:, :3].sum(1, keepdim=True) * 30 + 500
    model = _mlp(1)
    state = _state(model)
    checks = [*LABEL_CHECKS, "target_scale"]
    diagnosis = bs.diagnose(model, (x, y), loss_fn=nn.MSELoss(), lr=1e-3, checks=checks)
    assert {"TARGET_SCALE", "INIT_LOSS_MISMATCH"} <= diagnosis.codes
    mismatch = next(f for f in diagnosis.findings if f.code == "INIT_LOSS_MISMATCH")
    variance = float(y.double().var(unbiased=False))
    assert mismatch.evidence["best_constant"] == pytest.approx(variance, rel=1e-3)
    assert _same(model, state)
    standardized = (y - y.mean()) / y.std()
    diagnosis = bs.diagnose(_mlp(1), (x, standardized), task="regression", checks=checks, lr=1e-3)
    assert not _codes(diagnosis)  # task="regression" alone trains with MSE


class _Constant(nn.Module):
    """Ignores its input: the best it can do is the targets' mean."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.bias.expand(len(x), 1)


def test_regression_overfit_is_judged_against_the_variance_not_the_start():
    """Was: 'fitted' once the loss fell below 1% of its start: a model that only learns the
    mean of targets far from 0 passed."""
    x = _x(64)
    y = 0.5 + 0.01 * torch.randn(64, 1, generator=torch.Generator().manual_seed(5))
    diagnosis = bs.diagnose(
        _Constant(), (x, y), loss_fn=nn.MSELoss(), lr=1e-3, checks=["overfit_small_sample"]
    )
    (found,) = [f for f in diagnosis.findings if f.code == "CANNOT_OVERFIT"]
    assert found.evidence["best_constant_loss"] == pytest.approx(
        float(y[:20].double().var(unbiased=False)), rel=1e-3
    )


def test_multilabel_targets_are_judged_as_such():
    x = _x()
    y = (x[:, :4] > 0.5).float()
    loss = nn.BCEWithLogitsLoss()
    checks = [*LABEL_CHECKS, "overfit_small_sample"]
    assert not _codes(bs.diagnose(_mlp(4), (x, y), loss_fn=loss, lr=1e-3, checks=checks))
    diagnosis = bs.diagnose(_mlp(4), (x, y * 3), loss_fn=loss, lr=1e-3, checks=LABEL_CHECKS)
    assert "LABELS_OUT_OF_RANGE" in diagnosis.codes  # was: silent


def _negative_cosine(out, target):
    return -nn.functional.cosine_similarity(out, target).mean()


def test_custom_losses_say_which_checks_did_not_run():
    """Was: nothing said; the task-dependent checks returned [] as if all was well."""
    x = _x()
    data = (x, x[:, :3])
    checks = ["forward_runs", "labels", "initial_loss", "overfit_small_sample"]
    diagnosis = bs.diagnose(_mlp(3), data, loss_fn=_negative_cosine, lr=1e-3, checks=checks)
    (skipped,) = [f for f in diagnosis.findings if f.code == "CHECKS_SKIPPED"]
    assert skipped.severity == "warning"
    assert set(skipped.evidence["skipped"]) == {"labels", "initial_loss", "overfit_small_sample"}
    assert all("task=" in reason for reason in skipped.evidence["skipped"].values())
    said = bs.diagnose(
        _mlp(3), data, loss_fn=_negative_cosine, task="custom", lr=1e-3, checks=checks
    )
    assert [f.severity for f in said.findings if f.code == "CHECKS_SKIPPED"] == ["info"]


def test_diagnose_refuses_a_contradicting_task_and_changes_nothing():
    x = _x()
    y = torch.randint(0, 5, (512,))
    model = _mlp(5)
    state = _state(model)
    with pytest.raises(ValueError, match="pass task='classification'"):
        bs.diagnose(model, (x, y), task="regression", loss_fn=nn.CrossEntropyLoss())
    assert _same(model, state) and model.training


# -- fit: metrics per task, the task recorded ----------------------------------------------


def _frozen_sgd(params):
    return torch.optim.SGD(params, lr=0.0)  # evaluates the model as it is


def test_fit_accuracy_honours_class_dim_and_ignore_index():
    """Was: no accuracy for (N, C, T) outputs; ignored positions would have counted."""
    tokens, labels = _tokens(256)
    torch.manual_seed(0)
    model = Tagger()
    history = bs.fit(
        model,
        (tokens, labels),
        val=(tokens, labels),
        optimizer=_frozen_sgd,
        lr=None,
        epochs=1,
        progress=False,
        monitors=None,
    )
    with torch.no_grad():
        pred = model(tokens).argmax(1)
    counted = labels != -100
    expected = float((pred == labels)[counted].float().mean())
    assert history.final["val_acc"] == pytest.approx(expected)


def test_fit_multilabel_accuracy_is_per_output():
    x = _x(256)
    y = (x[:, :3] > 0).float()
    model = _mlp(3)
    history = bs.fit(
        model,
        (x, y),
        val=(x, y),
        loss_fn=nn.BCEWithLogitsLoss(),
        optimizer=_frozen_sgd,
        lr=None,
        epochs=1,
        progress=False,
        monitors=None,
    )
    with torch.no_grad():
        expected = float(((model(x) > 0) == (y > 0.5)).float().mean())
    assert history.final["val_acc"] == pytest.approx(expected)


def test_fit_regression_reports_mae_and_r2_and_records_the_task(tmp_path):
    """Was: regression got the loss only; config.json did not say what the task was."""
    x = _x(512, 5)
    y = x @ torch.arange(1.0, 6.0).unsqueeze(1)
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    history = bs.fit(
        model,
        (x, y),
        val=(x[:128], y[:128]),
        task="regression",
        lr=0.1,
        epochs=20,
        progress=False,
        run_dir=tmp_path / "run",
    )
    assert history.final["val_r2"] > 0.99 and history.final["val_mae"] < 0.2
    with torch.no_grad():
        out = model(x[:128])
    sst = float(((y[:128] - y[:128].mean()) ** 2).sum())
    assert history.final["val_r2"] == pytest.approx(
        1 - float(((out - y[:128]) ** 2).sum()) / sst, abs=1e-4
    )
    assert "val_acc" not in history.final
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["task"]["kind"] == "regression" and "MSELoss" in config["loss_fn"]


def test_fit_refuses_targets_that_would_broadcast(tmp_path):
    """Was: MSE on an (N, 1) output and (N,) targets compared every output with every target
    (an (N, N) loss; torch only warns) and trained on it."""
    x = _x(128, 5)
    y = x.sum(1)
    model = nn.Linear(5, 1)
    state = _state(model)
    with pytest.raises(ValueError, match=r"broadcast them to \(64, 64\).*unsqueeze"):
        bs.fit(model, (x, y), loss_fn=nn.MSELoss(), epochs=1, progress=False)
    assert _same(model, state)


def test_fit_refuses_a_contradicting_task_before_touching_anything(tmp_path):
    x = _x(128, 5)
    y = torch.randint(0, 3, (128,))
    model = _mlp(3, d=5)
    state = _state(model)
    with pytest.raises(ValueError, match="contradicts"):
        bs.fit(model, (x, y), task="multilabel", loss_fn=nn.CrossEntropyLoss(), progress=False)
    with pytest.raises(ValueError, match="task must be"):
        bs.fit(model, (x, y), task="ranking", progress=False, run_dir=tmp_path / "run")
    assert _same(model, state) and not (tmp_path / "run").exists()


# -- lr_find ----------------------------------------------------------------------------------


def test_lr_find_accepts_ignored_positions_and_a_task_without_a_loss():
    """Was: 'labels must be class indices >= 0' for the loss's own ignore_index."""
    tokens, labels = _tokens(256)
    torch.manual_seed(0)
    result = bs.lr_find(Tagger(), (tokens, labels), steps=10)
    assert len(result.losses) > 0 and all(math.isfinite(v) for v in result.losses)
    x = _x(256, 5)
    reg = bs.lr_find(nn.Linear(5, 1), (x, x[:, :1]), task="regression", steps=10)
    assert all(math.isfinite(v) for v in reg.losses)


def test_watch_records_the_task(tmp_path):
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with bs.watch(model, opt, run_dir=tmp_path / "w", task=bs.Task("regression")):
        pass
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    assert config["task"]["kind"] == "regression"


def test_search_trains_its_builtin_model_for_the_task():
    """Was: the built-in objective was classification only (one output per class, accuracy)."""
    x = _x(256, 5)
    y = x @ torch.arange(1.0, 6.0) / 5  # 1-D targets: the default model gets one output
    result = bs.search(
        {"lr": bs.loguniform(1e-3, 1e-2), "hidden": bs.choice([16])},
        data=((x[:192], y[:192]), (x[192:], y[192:])),
        task="regression",
        metric="val_r2",
        n_trials=2,
        stages=1,
        epochs=2,
        progress=False,
    )
    assert len(result.trials) == 2
    assert all(t["state"] == "COMPLETE" and math.isfinite(t["value"]) for t in result.trials)


def test_the_labels_check_selected_alone_reads_the_output_itself():
    """Was: checks=["labels"] missed labels >= C (it read the width from another check)."""
    x = _x()
    y = torch.randint(0, 10, (512,), generator=torch.Generator().manual_seed(6))
    diagnosis = bs.diagnose(_mlp(5), (x, y), lr=1e-3, checks=["labels"])
    assert "LABELS_OUT_OF_RANGE" in diagnosis.codes


def test_diagnose_says_when_regression_targets_would_broadcast():
    """Was: silent; every check judged an (N, N) loss comparing each output with each target."""
    x = _x()
    y = x[:, 0]  # (N,) against the model's (N, 1)
    diagnosis = bs.diagnose(_mlp(1), (x, y), loss_fn=nn.MSELoss(), lr=1e-3, checks=LABEL_CHECKS)
    # the loss ran and broadcast: training is certainly wrong, an error naming shapes and fix
    (failed,) = [f for f in diagnosis.findings if f.code == "LOSS_FAILED"]
    assert failed.severity == "error" and not diagnosis.ok
    assert "broadcast" in failed.message and "unsqueeze" in failed.message
    assert failed.evidence["output_shape"] == [len(x), 1]
    assert failed.evidence["target_shape"] == [len(x)]


class _CrashAt(bs.Callback):
    def __init__(self, step):
        self.at = step

    def on_train_batch_end(self, trainer, loss, batch_index):
        if trainer.step == self.at:
            raise RuntimeError("simulated crash")


def test_regression_metrics_survive_a_mid_epoch_resume(tmp_path):
    """The epoch's running regression sums travel in the checkpoint: mae and r2 of a resumed
    run equal the uninterrupted run's."""
    x = _x(640, 5)
    y = x @ torch.arange(1.0, 6.0).unsqueeze(1) / 5

    def train(run, resume=False, crash=None):
        torch.manual_seed(0)
        callbacks = [bs.Checkpoint(every_steps=7)] + ([_CrashAt(crash)] if crash else [])
        return bs.fit(
            nn.Linear(5, 1),
            (x, y),
            task="regression",
            epochs=2,
            lr=0.01,
            progress=False,
            run_dir=run,
            resume=resume,
            callbacks=callbacks,
        )

    full = train(tmp_path / "full")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tmp_path / "part", crash=9)
    state = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"]["batch"] == 7 and state["sums"]["reg"] is not None
    resumed = train(tmp_path / "part", resume=True)
    assert resumed["train_mae"] == full["train_mae"]
    assert resumed["train_r2"] == full["train_r2"]


class _DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _mlp(5)

    def forward(self, x):
        return {"scores": self.net(x)}


def test_a_dict_output_is_read_by_the_target_checks():
    """Was: the labels and loss-at-init checks returned nothing for a dict output, as if fine;
    then (wp-F) a warning CHECKS_SKIPPED. Since main's babysit.outputs.read_output a dict output
    is read as its first tensor, so the labels check judges it like any output."""
    x = _x()
    y = torch.randint(0, 5, (512,))
    y[0] = 7  # a label the 5 outputs cannot score
    diagnosis = bs.diagnose(_DictModel(), (x, y), lr=1e-3, checks=["labels"])
    codes = [f.code for f in diagnosis.findings]
    assert "LABELS_OUT_OF_RANGE" in codes and "CHECKS_SKIPPED" not in codes


# -- tasks under forward= (main's outputs/forward= infrastructure, merged) ---------------------


class _DictBatches(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"features": self.x[i], "target": self.y[i]}


def _by_key(model, batch):
    return model(batch["features"]), batch["target"]


def test_diagnose_judges_the_targets_forward_returns_by_the_task():
    x = _x()
    y = x[:, :3].sum(1, keepdim=True) * 30 + 500
    data = _DictBatches(x, y)
    checks = ["labels", "initial_loss", "target_scale", "overfit_small_sample"]
    diagnosis = bs.diagnose(
        _mlp(1), data, forward=_by_key, loss_fn=nn.MSELoss(), lr=1e-3, checks=checks
    )
    assert {"TARGET_SCALE", "INIT_LOSS_MISMATCH"} <= diagnosis.codes
    scale = next(f for f in diagnosis.findings if f.code == "TARGET_SCALE")
    assert scale.evidence["task"]["kind"] == "regression"
    with pytest.raises(ValueError, match="pass task='regression'"):  # checked against forward's
        bs.diagnose(_mlp(1), data, forward=_by_key, task="classification", checks=checks)


def test_lr_find_applies_the_task_rules_to_the_targets_forward_returns():
    x = _x()
    y = (x[:, :4] > 0.5).float() * 3  # multilabel targets outside [0, 1]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bs.lr_find(_mlp(4), _DictBatches(x, y), forward=_by_key, loss_fn=nn.BCEWithLogitsLoss())
    result = bs.lr_find(
        _mlp(4), _DictBatches(x, y / 3), forward=_by_key, task="multilabel", steps=10
    )
    assert len(result.losses) > 0


def test_overfit_skips_all_ignored_examples_under_forward():
    x = _x(64)
    y = torch.randint(0, 5, (64,))
    y[:30] = -100  # the first 30 examples have no target the loss counts
    diagnosis = bs.diagnose(
        _mlp(5), _DictBatches(x, y), forward=_by_key, lr=1e-3, checks=["overfit_small_sample"]
    )
    assert "CANNOT_OVERFIT" not in diagnosis.codes
    assert not [f for f in diagnosis.findings if f.code == "CHECKS_SKIPPED"]
