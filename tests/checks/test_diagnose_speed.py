"""The default set's time target and diagnose's progress display (issue 12 item 9).

No timed assertions: the cost of a pass is set by hand (``ctx.cache["pass_s"]``) or the target
is made tiny, so what is tested is the rule, not this machine's speed.
"""

from __future__ import annotations

import io

import pytest
import torch

import babysit as bs
import babysit.checks as checks_pkg
from babysit.checks import build_context
from babysit.checks._base import CannotCheck
from babysit.checks.catalogue import mnist1d_standardized
from babysit.progress_line import ProgressLine


@pytest.fixture
def data():
    x, y = mnist1d_standardized()
    return x[:300], y[:300]


def model():
    torch.manual_seed(0)
    return bs.nn.mlp(40, [32], 10)


def skipped(diagnosis) -> dict[str, str]:
    return next((f.evidence["skipped"] for f in diagnosis if f.code == "CHECKS_SKIPPED"), {})


# ------------------------------------------------------------------------- the time target


def test_affordable_shrinks_the_batch_to_the_share_of_the_target(data):
    ctx = build_context(model(), data)
    ctx.cache["pass_s"] = ctx.n * 1e-3  # 1 ms per example
    assert ctx.affordable("c", 10, ctx.n, 8, 0.5) == ctx.n  # no target: everything
    ctx.time_target_s = 1.0
    # 0.5 s / (10 passes * 1 ms) = 50 examples
    assert ctx.affordable("c", 10, ctx.n, 8, 0.5) == 50
    with pytest.raises(CannotCheck) as err:
        ctx.affordable("c", 1000, ctx.n, 8, 0.5)  # 8 examples would take 8 s
    assert not err.value.warning  # a budget is an info, not "could not read the output"
    assert "checks=['c']" in err.value.reason and "8 s" in err.value.reason


def test_unaffordable_training_checks_are_listed_not_passed(data, monkeypatch):
    monkeypatch.setattr(checks_pkg, "DEFAULT_TIME_S", 1e-9)
    diagnosis = bs.diagnose(model(), data, progress=False)
    why = skipped(diagnosis)
    assert "time budget" in why["find_lr"] and "time budget" in why["learning_rate"]
    assert "LR_SUGGESTION" not in diagnosis.codes
    report = next(f for f in diagnosis if f.code == "CHECKS_SKIPPED")
    assert report.severity == "info" and "learning_rate" not in report.evidence["unreadable"]
    assert [f.code for f in diagnosis if f.severity != "info"] == []  # healthy stays silent


def test_a_check_named_by_hand_ignores_the_target(data, monkeypatch):
    monkeypatch.setattr(checks_pkg, "DEFAULT_TIME_S", 1e-9)
    diagnosis = bs.diagnose(model(), data, checks=["find_lr"], progress=False)
    assert "LR_SUGGESTION" in diagnosis.codes
    assert "find_lr" not in skipped(diagnosis)


def test_the_default_target_leaves_the_mlp_in_full(data):
    diagnosis = bs.diagnose(model(), data, progress=False)
    assert "LR_SUGGESTION" in diagnosis.codes
    assert not any("time budget" in why for why in skipped(diagnosis).values())


# ------------------------------------------------------------------------- the progress display


def test_progress_false_prints_nothing(data, monkeypatch, capfd):
    monkeypatch.setattr(checks_pkg, "PROGRESS_AFTER_S", 0.0)
    bs.diagnose(model(), data, lr=1e-3, checks=["labels"], progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_is_off_when_stderr_is_not_a_terminal(data, monkeypatch, capfd):
    monkeypatch.setattr(checks_pkg, "PROGRESS_AFTER_S", 0.0)
    bs.diagnose(model(), data, lr=1e-3, checks=["labels"])  # default: stderr is captured
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_defaults_on_for_a_terminal(data, monkeypatch):
    seen = []
    monkeypatch.setattr(checks_pkg, "stderr_is_terminal", lambda: True)
    real = checks_pkg._run_checks

    def spy(*args, progress=False):
        seen.append(progress)
        return real(*args, progress=False)

    monkeypatch.setattr(checks_pkg, "_run_checks", spy)
    bs.diagnose(model(), data, lr=1e-3, checks=["labels"])
    assert seen == [True]


def test_progress_names_the_running_check_and_counts():
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with ProgressLine(3, label="diagnose", enabled=True, after_s=0.0, console=console) as shown:
        shown.update(1, "gradient_flow")
        shown._progress.refresh()
    text = buffer.getvalue()
    assert "gradient_flow" in text and "1/3" in text


def test_progress_waits_before_showing():
    buffer = io.StringIO()
    from rich.console import Console

    console = Console(file=buffer, force_terminal=True)
    with ProgressLine(3, label="diagnose", enabled=True, after_s=3600.0, console=console) as shown:
        shown.update(1, "labels")
        assert shown._progress is None
    assert buffer.getvalue() == ""


def test_cli_json_turns_the_progress_display_off(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from babysit.cli import app

    path = tmp_path / "speed_models.py"
    path.write_text(
        "import torch\nfrom babysit.nn import mlp\n\ndef with_data():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x, y = torch.randn(300, 8, generator=g), torch.randint(0, 3, (300,), generator=g)\n"
        "    return mlp(8, [16], 3), (x, y)\n"
    )
    seen = []
    real = checks_pkg.diagnose

    def spy(*args, **kwargs):
        seen.append(kwargs.get("progress", "missing"))
        return real(*args, **kwargs)

    monkeypatch.setattr(checks_pkg, "diagnose", spy)
    result = CliRunner().invoke(
        app, ["diagnose", f"{path}:with_data", "--checks", "labels", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert seen == [False]


# ------------------------------------------------------------------- passes shared by checks


class _Counted(torch.nn.Module):
    """An MLP that counts its forwards (copies share the counter: it is a class attribute)."""

    calls = 0

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(40, 32),
            torch.nn.ReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(32, 10),
        )

    def forward(self, x):
        type(self).calls += 1
        return self.net(x)


def test_initial_loss_reads_the_probe_forward_without_dropout(data):
    from babysit.checks.loss import initial_loss

    ctx = build_context(_Counted(), data)
    probed = ctx.probe()
    before = _Counted.calls
    assert initial_loss(ctx) == pytest.approx(probed.loss, rel=0, abs=0)
    assert _Counted.calls == before  # no forward of its own


def test_initial_loss_turns_dropout_off_rather_than_reading_the_probe(data):
    from babysit.checks.loss import initial_loss

    model = _Counted(dropout=0.5)
    ctx = build_context(model, data)
    probed = ctx.probe()  # dropout on: a noisy loss, not the loss at init
    model.eval()
    with torch.no_grad():
        clean = float(ctx.loss_fn(model(ctx.x), ctx.y))
    assert initial_loss(ctx) == pytest.approx(clean, rel=1e-6)
    assert probed.loss != pytest.approx(clean, rel=1e-6)


def test_the_activation_snapshot_measures_only_the_layers_it_judges(data):
    from babysit.checks.forward import activation_snapshot

    ctx = build_context(_Counted(), data)
    stats = activation_snapshot(ctx)
    assert sorted(stats) == ["net.1"]  # the ReLU; not the Linears, the Dropout or the model
    assert stats["net.1"].n_examples == 300 and stats["net.1"].dead_judgeable


def test_the_activation_snapshot_rides_on_the_probe_forward(data):
    from babysit.checks.execution import forward_runs
    from babysit.checks.forward import activation_snapshot

    ctx = build_context(_Counted(), data)
    forward_runs(ctx)
    shared = ctx.cache["activations"]
    before = _Counted.calls
    assert activation_snapshot(ctx) is shared and _Counted.calls == before  # no extra forward
    own = activation_snapshot(build_context(_Counted(), data))  # its own forward, fresh copy
    assert list(shared) == list(own) == ["net.1"]
    a, b = shared["net.1"], own["net.1"]
    assert (a.std, a.mean, a.dead_fraction, a.n_examples) == pytest.approx(
        (b.std, b.mean, b.dead_fraction, b.n_examples), rel=1e-6
    )


def test_with_dropout_on_the_snapshot_takes_its_own_forward_with_dropout_off(data):
    from babysit.checks.execution import forward_runs
    from babysit.checks.forward import activation_snapshot

    ctx = build_context(_Counted(dropout=0.5), data)
    forward_runs(ctx)
    assert "activations" not in ctx.cache  # the probe forward had dropout on
    before = _Counted.calls
    activation_snapshot(ctx)
    assert _Counted.calls == before + 1
