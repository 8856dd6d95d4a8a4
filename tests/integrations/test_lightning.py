"""BabysitCallback in a real ``lightning.pytorch.Trainer`` on CPU (MLPs on digits / MNIST-1D)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

import babysit as bs
from babysit import runs
from babysit.cli import app
from babysit.integrations._bridge import UnsupportedVersion

from .conftest import finite, first_diverged, loud, mlp

L = pytest.importorskip("lightning.pytorch")
from babysit.integrations import lightning as bl  # noqa: E402
from babysit.integrations.lightning import BabysitCallback  # noqa: E402


class Classifier(L.LightningModule):
    """An MLP classifier that logs its accuracy as Lightning users do, and keeps its losses."""

    def __init__(self, net: nn.Module, *, lr=1e-3, optimizer="adam", params=None):
        super().__init__()
        self.net = net
        self.lr, self.kind, self.params = lr, optimizer, params
        self.losses: list[float] = []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        loss = nn.functional.cross_entropy(out, y)
        self.losses.append(float(loss.detach()))
        self.log("train_acc", (out.argmax(1) == y).float().mean(), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        self.log("val_loss", nn.functional.cross_entropy(out, y))
        self.log("val_acc", (out.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        params = self.parameters() if self.params is None else self.params(self)
        if self.kind == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        return torch.optim.SGD(params, lr=self.lr)


def loaders(data, batch_size=32):
    x, y, xv, yv = data
    gen = torch.Generator().manual_seed(0)
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=gen)
    return train, DataLoader(TensorDataset(xv, yv), batch_size=512)


def trainer(callback, **kw):
    settings = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(callbacks=[callback], **{**settings, **kw})


def test_healthy_run_is_silent_and_writes_the_run_directory(digits, tmp_path):
    module = Classifier(mlp(64))
    cb = BabysitCallback(monitors="all", run_dir=tmp_path / "run")
    t = trainer(cb)
    t.fit(module, *loaders(digits))
    assert loud(cb.findings) == set()
    assert cb.bridge.step == t.global_step == 3 * 36
    config = runs.read_json(tmp_path / "run", runs.CONFIG)
    assert config["kind"] == "lightning" and config["on_error"] == "stop"
    rows = runs.read_metrics(tmp_path / "run")
    names = {r["name"] for r in rows}
    assert {"loss", "acc"} <= names and any(n.startswith("update_ratio/") for n in names)
    assert runs.read_json(tmp_path / "run", runs.FINDINGS)["findings"] == []
    snaps = runs.read_json(tmp_path / "run", runs.ACTIVATIONS)
    assert [s["label"] for s in snaps["settings"]] == ["at init", "after training (step 108)"]
    # the report reads it, from the command line as users run it
    done = CliRunner().invoke(app, ["report", str(tmp_path / "run")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "run" / "report.html").stat().st_size > 0


@pytest.mark.parametrize("on_error", ["stop", "rollback", "warn"])
def test_lr_10_is_caught_in_the_step_it_happens(mnist1d_small, tmp_path, on_error):
    module = Classifier(mlp(40), lr=10.0, optimizer="sgd")
    cb = BabysitCallback(on_error=on_error, run_dir=tmp_path / "run")
    t = trainer(cb, max_epochs=1)
    t.fit(module, *loaders(mnist1d_small))
    blowups = [f for f in cb.findings if f.code in ("LR_TOO_HIGH", "NAN_LOSS")]
    assert blowups, cb.findings
    step = first_diverged(module.losses)
    assert step is not None and blowups[0].step == step  # the step it happened in
    lr = t.optimizers[0].param_groups[0]["lr"]
    if on_error == "stop":
        assert t.should_stop and t.global_step == step + 1  # no step after it
        assert finite(module) and lr == 10.0
        assert "stopped" in blowups[0].message
    elif on_error == "rollback":
        assert t.global_step == len(module.losses) == 32  # went on to the end
        assert finite(module) and lr <= 1.0 + 1e-9
        assert "rolled back" in blowups[0].message
    else:
        assert t.global_step == 32 and lr == 10.0
    saved = runs.read_json(tmp_path / "run", runs.FINDINGS)["findings"]
    assert blowups[0].code in {f["code"] for f in saved}


def test_frozen_model_found_with_the_codes_watch_gives(digits):
    """The optimizer holds only a frozen copy's parameters: nothing the loss trains moves."""

    def frozen_only(module):
        return list(module.frozen.parameters())

    module = Classifier(mlp(64), lr=0.1, optimizer="sgd", params=frozen_only)
    module.frozen = mlp(64, seed=1).requires_grad_(False)
    cb = BabysitCallback()
    trainer(cb).fit(module, *loaders(digits))
    # the same mistake in a loop the user keeps, under babysit.watch
    x, y, _, _ = digits
    net, frozen = mlp(64), mlp(64, seed=1).requires_grad_(False)
    opt = torch.optim.SGD(frozen.parameters(), lr=0.1)
    with bs.watch(net, opt) as watcher:
        for _ in range(3):
            for i in range(0, len(x) - 31, 32):
                loss = nn.functional.cross_entropy(net(x[i : i + 32]), y[i : i + 32])
                watcher.observe(loss)
                opt.zero_grad()
                loss.backward()
                opt.step()
            watcher.end_epoch()
    expected = loud(watcher.findings)
    assert expected & {"UPDATE_RATIO_LOW", "LR_TOO_LOW"}
    assert expected <= loud(cb.findings)


def test_dead_relu_init_found_with_the_code_fit_gives(digits):
    def dead():
        net = mlp(64)
        with torch.no_grad():
            net[0].bias.fill_(-100.0)
        return net

    cb = BabysitCallback(monitors="all")
    trainer(cb).fit(Classifier(dead()), *loaders(digits))
    x, y, xv, yv = digits
    history = bs.fit(
        dead(), (x, y), val=(xv, yv), epochs=3, batch_size=32, optimizer="adam", lr=1e-3,
        monitors="all", progress=False,
    )  # fmt: skip
    assert "DEAD_RELU" in loud(history.findings)
    found = [f for f in cb.findings if f.code == "DEAD_RELU" and f.severity == "warning"]
    assert [f.layer for f in found] == ["net.1"]  # the same ReLU, named as the module has it


def test_gradient_accumulation_judges_the_step_mean_loss(digits, tmp_path):
    module = Classifier(mlp(64))
    cb = BabysitCallback(monitors="all", run_dir=tmp_path / "run")
    t = trainer(cb, max_epochs=2, accumulate_grad_batches=2)
    t.fit(module, *loaders(digits))
    assert cb.bridge.step == t.global_step == 36  # 36 batches an epoch, 2 per step
    assert loud(cb.findings) == set()
    logged = [r["value"] for r in runs.read_metrics(tmp_path / "run") if r["name"] == "loss"]
    own = module.losses
    assert logged[:3] == pytest.approx([(own[2 * i] + own[2 * i + 1]) / 2 for i in range(3)])


def test_bf16_mixed_on_cpu_is_silent_when_healthy_and_catches_lr_10(digits, mnist1d_small):
    module = Classifier(mlp(64))
    cb = BabysitCallback(monitors="all")
    trainer(cb, max_epochs=2, precision="bf16-mixed").fit(module, *loaders(digits))
    assert loud(cb.findings) == set()
    module = Classifier(mlp(40), lr=10.0, optimizer="sgd")
    cb = BabysitCallback()
    t = trainer(cb, max_epochs=1, precision="bf16-mixed")
    t.fit(module, *loaders(mnist1d_small))
    assert {"LR_TOO_HIGH", "NAN_LOSS"} & loud(cb.findings) and t.should_stop and finite(module)


def test_steps_a_grad_scaler_skips_are_not_nan_findings(digits):
    """fp16 with a scale so large that the first steps overflow: the scaler skips them."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2))
    except RuntimeError as err:  # pragma: no cover - depends on the torch build
        pytest.skip(f"this CPU build has no float16 autocast: {err}")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)
    module = Classifier(mlp(64))
    cb = BabysitCallback(monitors="all", ignore=["UNDERFITTING"])  # one epoch: too short to say
    t = trainer(cb, max_epochs=1, plugins=[MixedPrecision("16-mixed", "cpu", scaler)])
    t.fit(module, *loaders(digits))
    skipped = 36 - cb.bridge.step
    assert skipped > 0 and scaler.get_scale() < 2.0**60  # some steps were really skipped
    assert "NAN_LOSS" not in {f.code for f in cb.findings}
    assert loud(cb.findings) == set() and finite(module)
    # the loss judged is the model's own, not the one the scaler multiplied
    guard = next(m for m in cb.bridge.callbacks if type(m).__name__ == "LossGuard")
    assert guard.initial_loss == pytest.approx(module.losses[0], rel=1e-3)


class TwoOptimizers(L.LightningModule):
    """Manual optimisation with an optimizer per layer (as a GAN steps its two nets)."""

    def __init__(self, lr=1e-3):
        super().__init__()
        self.automatic_optimization = False
        self.net = mlp(64)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        first, second = self.optimizers()
        loss = nn.functional.cross_entropy(self.net(x), y)
        first.zero_grad()
        second.zero_grad()
        self.manual_backward(loss)
        first.step()
        second.step()

    def configure_optimizers(self):
        return (
            torch.optim.Adam(self.net[0].parameters(), lr=self.lr),
            torch.optim.Adam(self.net[2].parameters(), lr=self.lr),
        )


def test_manual_optimisation_with_two_optimizers(digits, tmp_path):
    module = TwoOptimizers()
    cb = BabysitCallback(monitors="all", run_dir=tmp_path / "run")
    t = trainer(cb, max_epochs=2)
    t.fit(module, loaders(digits)[0])
    assert cb.bridge.step == 72  # one babysit step per training step, not per optimizer
    assert loud(cb.findings) == set()
    names = {r["name"] for r in runs.read_metrics(tmp_path / "run")}
    assert {"update_ratio/net.0.weight", "update_ratio/net.2.weight"} <= names
    # and a blow-up under manual optimisation is caught and stops
    module = TwoOptimizers(lr=50.0)
    module.configure_optimizers = lambda: (
        torch.optim.SGD(module.net[0].parameters(), lr=50.0),
        torch.optim.SGD(module.net[2].parameters(), lr=50.0),
    )
    cb = BabysitCallback()
    t = trainer(cb, max_epochs=1)
    t.fit(module, loaders(digits)[0])
    assert {"LR_TOO_HIGH", "NAN_LOSS"} & loud(cb.findings) and t.should_stop and finite(module)


def test_resumed_run_keeps_its_history(mnist1d_small, tmp_path):
    run = tmp_path / "run"
    module = Classifier(mlp(40), lr=10.0, optimizer="sgd")
    cb = BabysitCallback(on_error="warn", run_dir=run)
    first = trainer(cb, max_epochs=1)
    first.fit(module, *loaders(mnist1d_small))
    assert "LR_TOO_HIGH" in loud(cb.findings) or "NAN_LOSS" in loud(cb.findings)
    before = [f.to_dict() for f in cb.findings]
    first.save_checkpoint(tmp_path / "last.ckpt")
    steps_before = cb.bridge.step

    module.lr = 1e-3
    again = BabysitCallback(on_error="warn", run_dir=run)
    second = trainer(again, max_epochs=2)
    second.fit(module, *loaders(mnist1d_small), ckpt_path=tmp_path / "last.ckpt")
    assert [f.to_dict() for f in again.findings][: len(before)] == before
    assert again.bridge.step == steps_before + 32
    steps = [r["step"] for r in runs.read_metrics(run) if r["name"] == "loss"]
    assert steps == list(range(steps_before + 32))  # one history, no gap, no repeat
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("run-")] == []


def test_findings_reach_the_trainers_loggers(mnist1d_small, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    module = Classifier(mlp(40), lr=10.0, optimizer="sgd")
    cb = BabysitCallback()
    t = trainer(cb, max_epochs=1, logger=CSVLogger(tmp_path, name="csv"))
    t.fit(module, *loaders(mnist1d_small))
    code = next(f.code for f in cb.findings if f.code in ("LR_TOO_HIGH", "NAN_LOSS"))
    t.loggers[0].save()
    header = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert f"babysit/{code}" in header
    # without run_dir= the run goes to the logger's directory
    assert cb.run_dir == tmp_path / "csv" / "version_0" / "babysit"
    assert json.loads((cb.run_dir / "findings.json").read_text())["findings"]


def test_default_run_dir_without_a_logger_is_under_default_root_dir(digits, tmp_path):
    cb = BabysitCallback()
    trainer(cb, max_epochs=1, max_steps=3, default_root_dir=tmp_path).fit(
        Classifier(mlp(64)), loaders(digits)[0]
    )
    assert cb.run_dir == tmp_path / "babysit" and (tmp_path / "babysit" / "metrics.csv").exists()


def test_bad_inputs_fail_at_construction(monkeypatch):
    with pytest.raises(ValueError, match="'stop', 'rollback', 'warn'"):
        BabysitCallback(on_error="rollbak")
    monkeypatch.setattr(bl._lightning, "__version__", "1.8.6")
    with pytest.raises(UnsupportedVersion, match=r"lightning>=2\.0,<3\.0, but lightning 1\.8\.6"):
        BabysitCallback()


class NoForward(L.LightningModule):
    """The loss lives in training_step only (no forward), with a DataModule, as often written."""

    def __init__(self, dead=False):
        super().__init__()
        self.net = mlp(64)
        if dead:
            with torch.no_grad():
                self.net[0].bias.fill_(-100.0)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class DigitsModule(L.LightningDataModule):
    def __init__(self, data):
        super().__init__()
        self.x, self.y = data[0], data[1]

    def setup(self, stage):
        self.train = TensorDataset(self.x, self.y)

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=64, shuffle=True)


def test_diagnose_a_lightning_module_on_its_own_training_step_loss(digits):
    healthy = bl.diagnose(NoForward(), DigitsModule(digits), lr=1e-3)
    assert loud(healthy.findings) == set() and healthy.ok
    skipped = [f for f in healthy.findings if f.code == "CHECKS_SKIPPED"]
    assert skipped and skipped[0].severity == "info"  # said so, not passed silently
    module = NoForward(dead=True)
    before = [p.detach().clone() for p in module.parameters()]
    dead = bl.diagnose(module, loaders(digits)[0], lr=1e-3)  # a DataLoader works too
    assert "DEAD_RELU" in loud(dead.findings)
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
    with pytest.raises(TypeError, match="takes no forward"):
        bl.diagnose(module, loaders(digits)[0], forward=lambda m, b: b)


def test_a_second_fit_is_a_run_of_its_own(digits, tmp_path):
    cb = BabysitCallback(run_dir=tmp_path / "run")
    module = Classifier(mlp(64))
    trainer(cb, max_epochs=1, max_steps=4).fit(module, loaders(digits)[0])
    first = cb.bridge
    trainer(cb, max_epochs=1, max_steps=3).fit(module, loaders(digits)[0])
    assert cb.bridge is not first and cb.bridge.step == 3
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("run-")]) == 1  # kept


def test_no_optimizer_is_said_and_training_goes_on(digits, caplog):
    module = Classifier(mlp(64))
    module.configure_optimizers = lambda: None
    cb = BabysitCallback()
    with caplog.at_level("WARNING", logger="babysit"):
        trainer(cb, max_epochs=1, max_steps=2).fit(module, loaders(digits)[0])
    assert cb.bridge is None and "no optimizer" in caplog.text


def test_lightning_does_not_dispatch_the_hooks_the_callback_does_not_use(digits):
    """Each hook call costs Lightning's dispatch 5-8 µs: the per-batch hooks babysit does not
    use are never called, ``on_train_batch_start`` only until the monitors have started (its
    first batch, in each fit); a subclass keeps the hooks it overrides."""

    class Mine(BabysitCallback):
        def __init__(self):
            super().__init__()
            self.backwards = 0

        def on_after_backward(self, trainer, pl_module):
            self.backwards += 1

    plain, mine = BabysitCallback(), Mine()
    for callback in (plain, mine):
        for _fit in range(2):  # a second fit starts its monitors again
            profiler = L.profilers.SimpleProfiler()
            run = trainer(callback, max_epochs=1, limit_train_batches=5, profiler=profiler)
            run.fit(Classifier(mlp(64)), *loaders(digits))  # 5 steps, then validation
            calls = {
                action.removeprefix(f"[Callback]{callback.state_key}."): len(durations)
                for action, durations in profiler.recorded_durations.items()
                if action.startswith("[Callback]")
            }
            assert calls["on_train_batch_start"] == 1  # the first batch starts the monitors
            assert calls["on_before_optimizer_step"] == calls["on_train_batch_end"] == 5
            assert calls["on_validation_start"] == 1
            assert "on_before_zero_grad" not in calls and "on_validation_batch_end" not in calls
            assert ("on_after_backward" in calls) is (callback is mine)
            assert callback.bridge.step == 5
    assert mine.backwards == 10
