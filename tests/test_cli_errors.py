"""User errors on the command line: one line ``babysit: ...`` on stderr, exit 2, no traceback,
nothing written; the global ``--debug`` shows the traceback; internal bugs still surface."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from babysit.cli import app

runner = CliRunner()


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("babysit: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unwritable_out_for_train_and_demo():
    _one_line_error(
        runner.invoke(app, ["train", "--data", "digits", "--epochs", "1", "--out", "/proc/x"]),
        "the run directory /proc/x is not writable",
    )
    _one_line_error(
        runner.invoke(app, ["demo", "--quick", "--out", "/proc/demo"]),
        "cannot create the run directory /proc/demo",
        "--out",
    )


def test_initlab_bad_std_changes_nothing(tmp_path):
    out = tmp_path / "lab"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["initlab", "--init", "normal", "--std", "-1", "--depth", "2", "--width", "10"]
    _one_line_error(runner.invoke(app, [*args, "--out", str(out)]), "std > 0, got std=-1.0")
    assert [p.name for p in tmp_path.iterdir()] == ["lab"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_hidden_that_is_not_widths(tmp_path):
    for hidden in ("a,b", "100,-5", "0"):
        result = runner.invoke(app, ["train", "--hidden", hidden, "--out", str(tmp_path / "r")])
        _one_line_error(result, "--hidden takes positive layer widths", repr(hidden))
    assert not (tmp_path / "r").exists()


def test_a_model_builder_that_raises_is_named(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "def make_model():\n    raise ValueError('no such layer: Conv9d')\n"
    )
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["diagnose", "mymodels:make_model", "--data", "digits"])
    _one_line_error(result, "mymodels:make_model raised ValueError: no such layer: Conv9d")


def test_resume_of_a_missing_run_refuses_and_writes_nothing(tmp_path):
    out = tmp_path / "typo"
    result = runner.invoke(
        app,
        ["train", "--data", "digits", "--epochs", "1", "--quiet", "--resume", "--out", str(out)],
    )
    _one_line_error(result, "no run to continue in", "drop --resume")
    assert not out.exists()


def test_global_debug_shows_the_traceback():
    args = ["initlab", "--init", "normal", "--std", "-1", "--depth", "2", "--width", "10"]
    result = runner.invoke(app, ["--debug", *args])
    assert result.exit_code != 2
    assert isinstance(result.exception, ValueError) and "std > 0" in str(result.exception)
    again = runner.invoke(app, args)  # the flag does not stick to later invocations
    _one_line_error(again, "std > 0")


def test_an_internal_error_is_not_dressed_as_a_usage_error(tmp_path, monkeypatch):
    import babysit.initlab as lab

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in babysit")

    monkeypatch.setattr(lab, "run", broken)
    result = runner.invoke(app, ["initlab", "--out", str(tmp_path / "lab")])
    assert result.exit_code == 1 and isinstance(result.exception, ZeroDivisionError)


def test_initlab_without_out_writes_runs_initlab_and_keeps_an_old_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["initlab", "--depth", "2", "--width", "20", "--n-inputs", "50", "--no-progress"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    run = tmp_path / "runs" / "initlab"
    assert "wrote runs/initlab/activations.json and runs/initlab/initlab.png" in first.stdout
    assert (run / "initlab.png").exists()
    assert json.loads((run / "activations.json").read_text())["schema"] == 1
    second = runner.invoke(app, [*args, "--json"])
    assert second.exit_code == 0
    assert json.loads(second.stdout)["schema"] == 1  # stdout stays pure JSON
    assert "wrote runs/initlab/activations.json" in second.stderr
    kept = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("initlab-")]
    assert len(kept) == 1 and (kept[0] / "initlab.png").exists()


def test_diagnose_into_an_unwritable_out_names_the_path(tmp_path, monkeypatch):
    (tmp_path / "good.py").write_text(
        "import babysit as bs\n\ndef make():\n    return bs.nn.mlp(64, [16], 10)\n"
    )
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["diagnose", "good:make", "--data", "digits", "--out", "/proc/x"])
    _one_line_error(result, "/proc/x", "No such file or directory")
    assert "Errno" not in result.stderr
