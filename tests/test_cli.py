"""The command line: version, initlab (table, JSON, bad usage), demo."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from babysit import __version__
from babysit.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_initlab_json_is_machine_readable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the run goes to runs/initlab
    args = ["initlab", "--json", "--depth", "3", "--width", "40", "--n-inputs", "300"]
    result = runner.invoke(app, [*args, "--activation", "relu", "--init", "he"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["schema"] == 1
    assert [s["label"] for s in document["settings"]] == ["relu + he"]
    assert len(document["settings"][0]["layers"]) == 3


def test_initlab_prints_the_table_and_writes_the_run(tmp_path):
    args = ["initlab", "--depth", "2", "--width", "30", "--no-progress", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--activation", "tanh", "--init", "normal", "--std", "1"])
    assert result.exit_code == 0, result.output
    assert "tanh + N(0, 1²)" in result.output and "saturated" in result.output
    assert (tmp_path / "initlab.png").exists() and (tmp_path / "activations.json").exists()


def test_initlab_bad_usage_exits_2_with_one_line():
    result = runner.invoke(app, ["initlab", "--activation", "rectifier"])
    assert result.exit_code == 2
    assert "unknown activation 'rectifier'" in result.output
    assert "Traceback" not in result.output


def test_demo_quick_writes_a_run_and_keeps_an_old_one(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("earlier run")
    result = runner.invoke(app, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "activations.json").exists() and (out / "data_stats.json").exists()
    renamed = [p for p in tmp_path.iterdir() if p.name.startswith("demo-")]
    assert len(renamed) == 1 and (renamed[0] / "keep.txt").read_text() == "earlier run"
    report = out / "report.html"
    assert str(report) in result.output.replace("\n", "")
    html = report.read_text()
    for section in ("summary", "data", "activations", "lr-find", "search", "training"):
        assert f'id="{section}"' in html


def test_demo_runs_the_lecture_set_up_on_cifar10_files(tmp_path, cifar_factory):
    root = tmp_path / "cifar-10-batches-bin"
    cifar_factory(root, n_train=40, n_test=10)
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--quick", "--data", f"cifar10:{root}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert "in_features=3072, out_features=50" in html  # the lecture's 2-layer net, 50 hidden
    assert "mean image" in result.output


def test_demo_with_data_it_cannot_load_is_a_usage_error_and_writes_nothing(tmp_path):
    out = tmp_path / "demo"
    missing = runner.invoke(
        app, ["demo", "--data", f"cifar10:{tmp_path / 'nope'}", "--out", str(out)]
    )
    assert missing.exit_code == 2 and "data_batch_1.bin" in missing.output
    unknown = runner.invoke(app, ["demo", "--data", "imagenet", "--out", str(out)])
    assert unknown.exit_code == 2 and "mnist1d" in unknown.output
    assert "Traceback" not in missing.output + unknown.output
    assert not out.exists()


def test_train_writes_a_run_and_exits_0(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", "digits", "--epochs", "2", "--lr", "0.01", "--quiet"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "final epoch" in result.output and "val_acc" in result.output
    assert (out / "metrics.csv").exists() and (out / "checkpoints" / "last.pt").exists()


def test_train_json_and_resume(tmp_path):
    out = tmp_path / "run"
    base = ["train", "--data", "digits", "--hidden", "16", "--lr", "0.01", "--out", str(out)]
    first = runner.invoke(app, [*base, "--epochs", "1", "--json"])
    document = json.loads(first.output)
    assert document["schema"] == 1 and len(document["epochs"]) == 1
    second = runner.invoke(app, [*base, "--epochs", "2", "--json", "--resume"])
    assert [e["epoch"] for e in json.loads(second.output)["epochs"]] == [0, 1]


def test_train_nan_exits_1_and_bad_usage_exits_2(tmp_path):
    blown = runner.invoke(
        app,
        [
            "train",
            "--data",
            "digits",
            "--optimizer",
            "sgd",
            "--lr",
            "1e30",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            str(tmp_path / "nan"),
        ],
    )
    assert blown.exit_code == 1, blown.output
    assert "NAN_LOSS" in blown.output or "LR_TOO_HIGH" in blown.output
    bad = runner.invoke(app, ["train", "--data", "digits", "--optimizer", "adamm"])
    assert bad.exit_code == 2 and "unknown optimizer" in bad.output


def test_search_cli_runs_and_writes_the_run(tmp_path):
    out = tmp_path / "s"
    space = '{"lr": ["loguniform", 1e-3, 0.1], "hidden": 16}'
    result = runner.invoke(
        app,
        [
            "search",
            "--data",
            "digits",
            "--space",
            space,
            "--epochs",
            "2",
            "--n-trials",
            "4",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["schema"] == 1 and document["trials"] == 4
    assert document["best"]["params"]["hidden"] == 16
    assert (out / "trials.csv").exists() and (out / "search.db").exists()


def test_search_cli_bad_usage_exits_2(tmp_path):
    bad_kind = runner.invoke(app, ["search", "--space", '{"lr": ["logscale", 1, 2]}'])
    assert bad_kind.exit_code == 2 and "unknown kind 'logscale'" in bad_kind.output
    inverted = runner.invoke(app, ["search", "--space", '{"lr": ["loguniform", 1, 0.1]}'])
    assert inverted.exit_code == 2 and "empty or inverted" in inverted.output
    lonely = runner.invoke(app, ["search", "--worker"])
    assert lonely.exit_code == 2 and "--storage" in lonely.output
