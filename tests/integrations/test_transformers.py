"""BabysitCallback in a real ``transformers.Trainer`` on CPU: a 2-layer BERT built from a config
(64-token vocabulary, hidden 32; nothing downloaded) on synthetic tokens, and an MLP module that
returns its own loss as HF models do."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import babysit as bs
from babysit import runs
from babysit.cli import app
from babysit.integrations._bridge import UnsupportedVersion

from .conftest import finite, first_diverged, loud, mlp

T = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from babysit.integrations import transformers as bt  # noqa: E402
from babysit.integrations.transformers import BabysitCallback  # noqa: E402


class Tokens(torch.utils.data.Dataset):
    """Sequences of 16 tokens; the label says whether token 7 occurs (about half do)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 64, (n, 16), generator=g)
        self.labels = (self.ids == 7).any(1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[i]}


def bert(seed: int = 0):
    torch.manual_seed(seed)
    config = T.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
    )
    return T.BertForSequenceClassification(config)


class Features(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class OwnLoss(nn.Module):
    """An MLP that computes its own loss, as a Hugging Face model does (``outputs.loss``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x, labels=None):
        logits = self.net(x)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return {"loss": loss, "logits": logits}


def arguments(tmp_path, **kw):
    settings = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=32,
        num_train_epochs=2,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=5,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    return T.TrainingArguments(**{**settings, **kw})


def train(model, args, train_data, callback, **kw):
    trainer = T.Trainer(
        model=model, args=args, train_dataset=train_data, callbacks=[callback], **kw
    )
    trainer.train()
    return trainer


def losses_of(model) -> list[float]:
    """Every training forward's own loss, recorded beside the callback (the test's witness)."""
    seen: list[float] = []

    def hook(module, args, output):
        if torch.is_grad_enabled() and module.training:
            seen.append(float(output["loss"]))

    model.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("monitors", ["default", "all"])
def test_healthy_tiny_bert_is_silent_and_the_report_reads_its_run(tmp_path, monitors):
    cb = BabysitCallback(monitors=monitors)
    args = arguments(tmp_path, eval_strategy="epoch")
    trainer = train(bert(), args, Tokens(192), cb, eval_dataset=Tokens(64, seed=1))
    assert loud(cb.findings) == set()
    assert cb.bridge.step == trainer.state.global_step == 12
    run = tmp_path / "out" / "babysit"  # the default: args.output_dir + "/babysit"
    assert cb.run_dir == run
    assert runs.read_json(run, runs.CONFIG)["kind"] == "transformers"
    rows = runs.read_metrics(run)
    names = {r["name"] for r in rows}
    assert {"loss", "lr"} <= names and any(n.startswith("update_ratio/bert.") for n in names)
    assert [r["split"] for r in rows if r["name"] == "loss" and r["split"] == "val"] == ["val"] * 2
    done = CliRunner().invoke(app, ["report", str(run)])
    assert done.exit_code == 0, done.output
    assert (run / "report.html").exists()


class Arithmetic(torch.utils.data.Dataset):
    """16-token arithmetic sequences (start + k * step, step in 1..3): a learnable LM task."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(1, 64, (n, 1), generator=g)
        step = torch.randint(1, 4, (n, 1), generator=g)
        self.ids = (start + step * torch.arange(16)) % 63 + 1

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def test_healthy_tiny_gpt2_is_silent_and_its_gradient_flow_is_judged(tmp_path):
    """GPT-2's projections are transformers' Conv1D: measured, the flow is judged (before, one
    measured layer, the head, and a CHECKS_SKIPPED said so), and a healthy run stays silent."""
    torch.manual_seed(0)
    config = T.GPT2Config(
        vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=1,
        eos_token_id=1,
    )  # fmt: skip
    cb = BabysitCallback(monitors="all")
    train(T.GPT2LMHeadModel(config), arguments(tmp_path), Arithmetic(192), cb)
    assert loud(cb.findings) == set(), cb.findings
    skipped = [f.evidence.get("skipped", {}) for f in cb.findings if f.code == "CHECKS_SKIPPED"]
    assert not any("gradient_flow" in s for s in skipped), skipped


@pytest.mark.parametrize("on_error", ["stop", "rollback"])
def test_lr_10_is_caught_in_the_step_it_happens(tmp_path, on_error):
    model = bert()
    seen = losses_of(model)
    cb = BabysitCallback(on_error=on_error)
    args = arguments(tmp_path, learning_rate=10.0, optim="sgd", num_train_epochs=1)
    trainer = train(model, args, Tokens(192), cb)
    blowups = [f for f in cb.findings if f.code in ("LR_TOO_HIGH", "NAN_LOSS")]
    step = first_diverged(seen)
    assert blowups and step is not None and blowups[0].step == step
    assert finite(model)
    if on_error == "stop":
        assert trainer.state.global_step == step + 1  # ended in that step, through control
    else:
        assert trainer.state.global_step == 6 and cb.bridge.rollbacks >= 1
        # lr / 10 stuck: the linear schedule's base was divided too
        scheduler = bt._unwrap(trainer.lr_scheduler, "scheduler")
        expected = 10.0 * 0.1**cb.bridge.rollbacks  # every group (HF: decay and no decay)
        assert scheduler.base_lrs == [pytest.approx(expected)] * len(scheduler.base_lrs)


def test_nan_caught_although_the_trainer_filters_it_from_its_logs(tmp_path):
    model = OwnLoss(mlp(40))
    calls = []

    def poison(module, args, output):  # the 4th training forward's loss is NaN
        if torch.is_grad_enabled():
            calls.append(1)
            if len(calls) == 4:
                output["loss"] = output["loss"] * math.nan
        return output

    model.register_forward_hook(poison)
    x, y = torch.randn(256, 40), torch.randint(0, 10, (256,))
    cb = BabysitCallback()
    args = arguments(tmp_path, logging_nan_inf_filter=True, logging_steps=1, num_train_epochs=1)
    trainer = train(model, args, Features(x, y), cb)
    nan = [f for f in cb.findings if f.code == "NAN_LOSS"]
    assert len(nan) == 1 and nan[0].step == 3 and nan[0].severity == "error"
    assert trainer.state.global_step == 4 and finite(model)
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert all(math.isfinite(v) for v in logged)  # the Trainer's own log hid it


def test_gradient_accumulation(tmp_path):
    model = bert()
    seen = losses_of(model)
    cb = BabysitCallback(monitors="all")
    args = arguments(tmp_path, gradient_accumulation_steps=2, num_train_epochs=2, logging_steps=1)
    trainer = train(model, args, Tokens(256), cb)
    assert cb.bridge.step == trainer.state.global_step == 8
    assert loud(cb.findings) == set()
    logged = [r["value"] for r in runs.read_metrics(cb.run_dir) if r["name"] == "loss"]
    assert len(logged) == 8
    # one number per optimizer step, the loss the Trainer itself reports for that step
    reported = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert logged == pytest.approx(reported, abs=2e-4)
    pair = seen[0] + seen[1]  # BERT takes **kwargs: HF treats its loss as already scaled
    assert logged[0] == pytest.approx(pair if trainer.model_accepts_loss_kwargs else pair / 2)


def test_bf16_on_cpu(tmp_path):
    cb = BabysitCallback()
    args = arguments(tmp_path, bf16=True, num_train_epochs=1)
    trainer = train(bert(), args, Tokens(192), cb)
    assert loud(cb.findings) == set() and cb.bridge.step == trainer.state.global_step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 training needs a CUDA device")
def test_fp16_on_cuda(tmp_path):  # pragma: no cover - CPU-only CI
    cb = BabysitCallback()
    args = arguments(tmp_path, fp16=True, use_cpu=False, num_train_epochs=1)
    trainer = train(bert(), args, Tokens(192), cb)
    assert "NAN_LOSS" not in {f.code for f in cb.findings}
    assert cb.bridge.step <= trainer.state.global_step  # steps the scaler skipped: not counted


def test_frozen_model_found_with_the_codes_watch_gives(tmp_path, digits):
    x, y, _, _ = digits
    model = OwnLoss(mlp(64))
    frozen = mlp(64, seed=1).requires_grad_(False)
    optimizer = torch.optim.SGD(frozen.parameters(), lr=0.1)
    cb = BabysitCallback()
    # a constant lr, as in the loop below (a decayed lr is not judged "too low", by design)
    args = arguments(tmp_path, num_train_epochs=3, lr_scheduler_type="constant")
    train(model, args, Features(x, y), cb, optimizers=(optimizer, None))
    net, frozen = mlp(64), mlp(64, seed=1).requires_grad_(False)
    opt = torch.optim.SGD(frozen.parameters(), lr=0.1)
    with bs.watch(net, opt) as watcher:
        for _ in range(3):
            for i in range(0, len(x), 32):
                loss = nn.functional.cross_entropy(net(x[i : i + 32]), y[i : i + 32])
                watcher.observe(loss)
                opt.zero_grad()
                loss.backward()
                opt.step()
            watcher.end_epoch()
    expected = loud(watcher.findings)
    assert expected & {"UPDATE_RATIO_LOW", "LR_TOO_LOW"}
    assert expected <= loud(cb.findings)


def test_dead_relu_init_found_with_the_code_fit_gives(tmp_path, digits):
    x, y, _, _ = digits
    net = mlp(64)
    with torch.no_grad():
        net[0].bias.fill_(-100.0)
    cb = BabysitCallback(monitors="all")
    train(OwnLoss(net), arguments(tmp_path, num_train_epochs=3), Features(x, y), cb)
    found = [f for f in cb.findings if f.code == "DEAD_RELU" and f.severity == "warning"]
    assert [f.layer for f in found] == ["net.1"]


def test_a_model_without_its_own_loss_is_said_so(tmp_path, digits):
    x, y, _, _ = digits

    def loss_outside(outputs, labels, num_items_in_batch=None):
        return nn.functional.cross_entropy(outputs["logits"], labels)

    cb = BabysitCallback()
    args = arguments(tmp_path, num_train_epochs=1, max_steps=3)
    train(OwnLoss(mlp(64)), args, Features(x, y), cb, compute_loss_func=loss_outside)
    skipped = [
        f
        for f in cb.findings
        if f.code == "CHECKS_SKIPPED" and "dead_units" not in f.evidence["skipped"]
    ]  # 3 steps also sample too few examples for dead units: a second, separate note
    assert len(skipped) == 1 and skipped[0].severity == "warning"
    assert "NAN_LOSS" in skipped[0].message and "outputs.loss" in skipped[0].message


def test_bad_inputs_fail_at_construction(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"'stop', 'rollback', 'warn'.*'sotp'"):
        BabysitCallback(on_error="sotp")
    monkeypatch.setattr(bt._transformers, "__version__", "4.30.2")
    with pytest.raises(UnsupportedVersion, match=r"transformers>=4\.46,<6\.0, but transformers 4"):
        BabysitCallback()


def test_run_dir_holding_another_run_is_renamed(tmp_path):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "findings.json").write_text('{"findings": [], "stop_reason": null}')
    cb = BabysitCallback(run_dir=run)
    train(bert(), arguments(tmp_path, max_steps=2), Tokens(64), cb)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("mine-")]
    assert len(kept) == 1 and (kept[0] / "findings.json").read_text().startswith('{"findings": []')
    assert (run / "metrics.csv").exists()


def test_diagnose_a_hugging_face_model_on_its_own_loss(digits):
    x, y, _, _ = digits
    healthy = bt.diagnose(OwnLoss(mlp(64)), Features(x, y), lr=1e-3)
    assert loud(healthy.findings) == set() and healthy.ok
    net = mlp(64)
    with torch.no_grad():
        net[0].bias.fill_(-100.0)
    assert "DEAD_RELU" in loud(bt.diagnose(OwnLoss(net), Features(x, y), lr=1e-3).findings)
    # a tiny BERT runs through it too, on outputs.loss
    found = bt.diagnose(bert(), Tokens(128), lr=1e-3, checks=["initial_loss", "dead_units"])
    assert "FORWARD_FAILED" not in {f.code for f in found.findings}
    with pytest.raises(TypeError, match="takes no loss_fn"):
        bt.diagnose(bert(), Tokens(128), loss_fn=nn.CrossEntropyLoss())


def test_model_loss_names_what_is_missing():
    with pytest.raises(ValueError, match="returned no loss: put the labels in the batch"):
        bt.model_loss(bert(), {"input_ids": torch.ones(2, 4, dtype=torch.long)})
    with pytest.raises(TypeError, match="a dict of tensors"):
        bt.model_loss(bert(), (torch.ones(2, 4, dtype=torch.long),))


@pytest.mark.parametrize("restore", [False, True])
def test_a_resumed_run_keeps_its_history(tmp_path, restore):
    """``trainer.train(resume_from_checkpoint=...)`` with a new callback continues babysit's run:
    its steps, metrics.csv (cut to the checkpoint, then the same rows as the uninterrupted run)
    and findings; the state rides in the checkpoint's trainer_state.json (ExportableState)."""
    import shutil

    args = arguments(
        tmp_path,
        save_strategy="steps",
        save_steps=6,
        logging_steps=1,
        restore_callback_states_from_checkpoint=restore,  # True: the Trainer rebuilds it
    )
    run = tmp_path / "out" / "babysit"
    full = train(bert(), args, Tokens(192), BabysitCallback(monitors="all"))
    assert full.state.global_step == 12 and (tmp_path / "out" / "checkpoint-6").is_dir()
    uninterrupted = runs.read_metrics(run)
    findings = runs.read_json(run, runs.FINDINGS)["findings"]
    shutil.copytree(run, tmp_path / "copy")
    again = BabysitCallback(monitors="all")
    trainer = T.Trainer(model=bert(), args=args, train_dataset=Tokens(192), callbacks=[again])
    trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-6"))
    (again,) = [c for c in trainer.callback_handler.callbacks if isinstance(c, BabysitCallback)]
    assert again.bridge.step == 12 and again.run_dir == run
    assert not any(p.name.startswith("babysit.") for p in (tmp_path / "out").iterdir())
    resumed = runs.read_metrics(run)
    key = [(r["step"], r["split"], r["name"]) for r in uninterrupted]
    assert [(r["step"], r["split"], r["name"]) for r in resumed] == key
    assert [r["value"] for r in resumed] == pytest.approx(
        [r["value"] for r in uninterrupted], rel=1e-4, abs=1e-6
    )
    assert runs.read_json(run, runs.FINDINGS)["findings"] == findings
