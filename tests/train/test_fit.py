"""babysit.fit: it trains, writes the run directory, and says clearly what is wrong with bad
input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import babysit as bs
from babysit import runs
from babysit.train import CheckpointError

from .conftest import small_mlp


def test_fit_trains_digits_and_reports_per_epoch_metrics(digits):
    x, y, xv, yv = digits
    history = bs.fit(small_mlp(), (x, y), val=(xv, yv), epochs=3, lr=0.01, progress=False)
    assert len(history) == 3
    assert history["epoch"] == [0, 1, 2]
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history.final["val_acc"] > 0.85  # a 64-32-10 MLP reaches ~95% on digits
    assert set(history.final) >= {"train_loss", "train_acc", "val_loss", "val_acc", "lr"}
    assert history.stop_reason is None and history.rollbacks == 0
    assert not [f for f in history.findings if f.severity != "info"], history.findings


def test_fit_is_deterministic_under_a_seed(digits):
    x, y, _, _ = digits
    a = bs.fit(small_mlp(), (x, y), epochs=2, progress=False, seed=3)
    b = bs.fit(small_mlp(), (x, y), epochs=2, progress=False, seed=3)
    c = bs.fit(small_mlp(), (x, y), epochs=2, progress=False, seed=4)
    assert a["train_loss"] == b["train_loss"]
    assert a["train_loss"] != c["train_loss"]


def test_monitors_none_is_a_plain_loop_with_the_same_numbers(digits):
    """Monitors only observe: the trained weights are bitwise those of a run without them."""
    x, y, xv, yv = digits
    m1, m2 = small_mlp(), small_mlp()
    bs.fit(m1, (x, y), val=(xv, yv), epochs=2, progress=False, monitors=None)
    bs.fit(m2, (x, y), val=(xv, yv), epochs=2, progress=False, monitors="all")
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p1, p2)


def test_run_directory_layout(digits, tmp_path):
    x, y, xv, yv = digits
    run = tmp_path / "run"
    bs.fit(small_mlp(), (x, y), val=(xv, yv), epochs=2, progress=False, run_dir=run)
    config = json.loads((run / "config.json").read_text())
    assert config["schema"] == 1 and config["kind"] == "fit" and config["epochs"] == 2
    assert (run / "findings.json").exists()
    assert (run / "checkpoints" / "last.pt").exists() and (run / "checkpoints" / "best.pt").exists()
    rows = runs.read_metrics(run)
    names = {(r["split"], r["name"].split("/")[0]) for r in rows}
    assert {("train", "loss"), ("train", "acc"), ("val", "acc"), ("val", "loss")} <= names
    assert ("train", "update_ratio") in names and ("train", "grad_norm") in names
    steps = [r["step"] for r in rows if r["name"] == "loss" and r["split"] == "train"]
    assert steps == list(range(len(steps))) and len(steps) == 2 * math.ceil(len(x) / 64)
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"] == {"epoch": 2, "batch": 0, "step": len(steps)}


def test_existing_run_dir_is_renamed_not_overwritten(digits, tmp_path):
    x, y, _, _ = digits
    run = tmp_path / "run"
    run.mkdir()
    (run / "mine.txt").write_text("keep me")
    bs.fit(small_mlp(), (x, y), epochs=1, progress=False, run_dir=run)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("run-")]
    assert len(kept) == 1 and (kept[0] / "mine.txt").read_text() == "keep me"


def test_regression_with_custom_loss_and_metric():
    torch.manual_seed(0)
    x = torch.randn(512, 5)
    y = x @ torch.arange(1.0, 6.0).unsqueeze(1) + 0.01 * torch.randn(512, 1)
    model = nn.Linear(5, 1)
    history = bs.fit(
        model,
        (x, y),
        val=(x[:100], y[:100]),
        loss_fn=nn.MSELoss(),
        metrics={"mae": lambda out, t: (out - t).abs().mean()},
        optimizer="adam",
        lr=0.1,
        epochs=30,
        progress=False,
    )
    assert "train_acc" not in history.final
    assert history.final["val_mae"] < 0.1
    assert history.final["train_mae"] < history["train_mae"][0]


class _DictDataset(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"pixels": self.x[i], "label": self.y[i]}


def test_forward_for_batches_that_are_not_pairs(digits):
    x, y, _, _ = digits
    data = _DictDataset(x, y)
    history = bs.fit(
        small_mlp(),
        data,
        forward=lambda model, batch: (model(batch["pixels"]), batch["label"]),
        epochs=2,
        lr=0.01,
        progress=False,
    )
    assert history.final["train_acc"] > 0.8


def test_dataset_and_dataloader_inputs_train(digits):
    x, y, _, _ = digits
    a = bs.fit(small_mlp(), TensorDataset(x, y), epochs=2, progress=False)
    b = bs.fit(small_mlp(), (x, y), epochs=2, progress=False)
    assert a["train_loss"] == b["train_loss"]  # a TensorDataset is batched like tensors
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    c = bs.fit(small_mlp(), loader, epochs=2, lr=0.01, progress=False)
    assert c.final["train_acc"] > 0.8


@pytest.mark.parametrize("schedule", ["cosine", "step", "onecycle"])
def test_named_schedules_change_the_learning_rate(digits, schedule):
    x, y, _, _ = digits
    history = bs.fit(small_mlp(), (x, y), epochs=4, lr=0.01, schedule=schedule, progress=False)
    assert history["lr"][-1] < 0.01


def test_schedule_factory_is_stepped_per_epoch(digits):
    x, y, _, _ = digits
    history = bs.fit(
        small_mlp(),
        (x, y),
        epochs=3,
        lr=0.1,
        optimizer="momentum",
        schedule=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
        progress=False,
    )
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025])  # the lr each epoch trained with


def test_progress_bar_prints_epochs_and_alerts(digits, capsys):
    x, y, _, _ = digits
    bs.fit(small_mlp(), (x, y), epochs=1, progress=True, lr=1e4, optimizer="sgd")
    err = capsys.readouterr().err
    assert "epoch 1/1" in err
    assert "LR_TOO_HIGH" in err or "NAN_LOSS" in err


# -- bad input: a clear error, nothing written ---------------------------------------------------


def test_unknown_optimizer_names_the_known_ones(digits):
    x, y, _, _ = digits
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'.*adam"):
        bs.fit(small_mlp(), (x, y), optimizer="adamm", progress=False)


@pytest.mark.parametrize(
    ("kw", "match"), [({"epochs": 0}, "epochs"), ({"batch_size": 1.5}, "batch")]
)
def test_bad_loop_arguments(digits, kw, match):
    x, y, _, _ = digits
    with pytest.raises(ValueError, match=match):
        bs.fit(small_mlp(), (x, y), progress=False, **kw)


def test_non_finite_inputs_are_refused_before_training(digits, tmp_path):
    x, y, _, _ = digits
    x = x.clone()
    x[7, 3] = float("nan")
    model = small_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"NaN/Inf.*example 7"):
        bs.fit(model, (x, y), progress=False, run_dir=tmp_path / "run")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_model_with_nothing_to_train_is_refused_before_anything_runs(digits, tmp_path):
    x, y, _, _ = digits
    model = small_mlp().requires_grad_(False)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"every parameter.*requires_grad=False.*requires_grad_"):
        bs.fit(model, (x, y), progress=False, run_dir=tmp_path / "run")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="has no parameters"):
        bs.fit(nn.Flatten(), (x, y), progress=False)


def test_wrong_feature_shape_names_the_input_shape(digits):
    x, y, _, _ = digits
    with pytest.raises(RuntimeError, match=r"first batch \(x of shape \(64, 64\)"):
        bs.fit(bs.nn.mlp(40, [8], 10), (x, y), progress=False)


def test_targets_of_the_wrong_shape_for_cross_entropy(digits):
    x, y, _, _ = digits
    with pytest.raises(ValueError, match="integer class indices"):
        bs.fit(small_mlp(), (x, y.unsqueeze(1)), progress=False)
    with pytest.raises(ValueError, match=r"y.long\(\)"):
        bs.fit(small_mlp(), (x, y.float()), progress=False)


def test_label_beyond_the_output_layer(digits):
    x, y, _, _ = digits
    with pytest.raises(ValueError, match="outputs 5 classes"):
        bs.fit(bs.nn.mlp(64, [8], 5), (x, y), progress=False, batch_size=len(x))


def test_mismatched_lengths_and_one_shot_iterators(digits):
    x, y, _, _ = digits
    with pytest.raises(ValueError, match="differ in length"):
        bs.fit(small_mlp(), (x, y[:-1]), progress=False)
    with pytest.raises(TypeError, match="one-shot iterator"):
        bs.fit(small_mlp(), ((a, b) for a, b in [(x, y)]), progress=False)


def test_unwritable_run_dir_fails_before_training(digits, tmp_path):
    x, y, _, _ = digits
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    model = small_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(CheckpointError, match="not writable"):
        bs.fit(model, (x, y), progress=False, run_dir=blocker / "run")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert blocker.read_text() == "not a directory"


def test_cuda_when_absent_is_a_clear_error(digits):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    x, y, _, _ = digits
    with pytest.raises(ValueError, match="CUDA is not available"):
        bs.fit(small_mlp(), (x, y), device="cuda", progress=False)


def test_unknown_monitor_spec_and_ignore_code(digits):
    x, y, _, _ = digits
    with pytest.raises(ValueError, match="monitors must be"):
        bs.fit(small_mlp(), (x, y), monitors="some", progress=False)
    with pytest.raises(ValueError, match="unknown finding codes"):
        bs.fit(small_mlp(), (x, y), ignore=["NOT_A_CODE"], progress=False)


def test_without_tensorboard_there_is_no_tb_dir(digits, tmp_path, monkeypatch):
    from babysit.train.tensorboard import TensorBoard

    monkeypatch.setattr(TensorBoard, "available", staticmethod(lambda: False))
    x, y, _, _ = digits
    bs.fit(small_mlp(), (x, y), epochs=1, progress=False, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "tb").exists()
    assert (tmp_path / "run" / "metrics.csv").exists()


def test_progress_off_a_terminal_is_plain_throttled_text_without_rich(digits, capsys, monkeypatch):
    """Rich's bar cost 1-2 ms per epoch where nobody sees it (a log, CI): off a terminal the
    progress is plain lines, at most one epoch line per ``min_interval`` (the clock is frozen
    here, so only the first and the last epoch print) and every finding's line."""
    import rich.progress

    from babysit.train import progress

    def no_rich(*args, **kwargs):
        raise AssertionError("rich.progress.Progress used off a terminal")

    monkeypatch.setattr(rich.progress, "Progress", no_rich)
    monkeypatch.setattr(progress.time, "monotonic", lambda: 100.0)
    x, y, _, _ = digits
    bs.fit(small_mlp(), (x, y), epochs=4, lr=0.01, progress=True)
    lines = capsys.readouterr().err.splitlines()
    epochs = [line.split("  ")[0] for line in lines if line.startswith("epoch")]
    assert epochs == ["epoch 1/4", "epoch 4/4"], lines
    # the only finding: 72 steps sample too few examples to judge dead units, and it says so
    others = [line for line in lines if not line.startswith("epoch")]
    assert len(others) == 1 and others[0].startswith("INFO CHECKS_SKIPPED"), lines
    assert "[" not in "".join(lines)  # no rich markup in a log
    bs.fit(small_mlp(), (x, y), epochs=3, progress=True, lr=1e4, optimizer="sgd")
    err = capsys.readouterr().err
    assert "epoch 1/3" in err and ("ERROR NAN_LOSS" in err or "LR_TOO_HIGH" in err)
