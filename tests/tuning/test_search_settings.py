"""A search continued with other settings is refused before anything is written; continued
with the same settings (a crash, another worker) it goes on; the built-in objective refuses
parameter names it does not read."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import babysit as bs
from babysit import runs
from babysit.cli import app


def _quadratic(params, trial):
    return -((math.log10(params["lr"]) + 3) ** 2)


def _snapshot(folder):
    """Every file under ``folder`` with its bytes (and the set of names)."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


SPACE = {"lr": bs.loguniform(1e-6, 1.0)}
KW = {"n_trials": 6, "stages": 2, "epochs": 4, "progress": False}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"epochs": 10}, "epochs: 4 there, 10 now"),
        ({"n_trials": 9}, "n_trials: 6 there, 9 now"),
        ({"stages": 3}, "stages: 2 there, 3 now"),
        ({"space": {"lr": bs.loguniform(1e-5, 1.0)}}, "space lr: [1e-06 … 1 (log)] there, [1e-05"),
        ({"space": {**SPACE, "dropout": 0.1}}, "space dropout: not searched there, [0.1] now"),
        ({"direction": "minimize"}, "direction"),
        ({"pruner": "none"}, "pruner"),
    ],
)
def test_another_search_into_the_same_run_dir_is_refused_and_changes_nothing(
    tmp_path, change, named
):
    first = bs.search(SPACE, _quadratic, run_dir=tmp_path / "s", **KW)
    before = _snapshot(tmp_path / "s")
    assert runs.read_json(tmp_path / "s", "config.json")["command"] == "search"
    kw = {**KW, **change}
    space = kw.pop("space", SPACE)
    with pytest.raises(ValueError, match="holds a search started with other settings") as e:
        bs.search(space, _quadratic, run_dir=tmp_path / "s", **kw)
    assert named in str(e.value) and "another run_dir" in str(e.value)
    assert _snapshot(tmp_path / "s") == before  # byte for byte, search.db included
    again = bs.search(SPACE, _quadratic, run_dir=tmp_path / "s", **KW)  # same settings: goes on
    assert again.trials == first.trials


def test_another_data_set_is_refused_and_the_same_tensors_continue(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.randint(0, 3, (64,), generator=g)
    data = ((x[:48], y[:48]), (x[48:], y[48:]))
    kw = {"epochs": 1, "n_trials": 2, "stages": 1, "progress": False, "run_dir": tmp_path / "s"}
    space = {"lr": bs.loguniform(1e-3, 1e-2), "hidden": 8}
    first = bs.search(space, data=data, **kw)
    before = _snapshot(tmp_path / "s")
    other = ((x[:48] + 1, y[:48]), (x[48:], y[48:]))  # same shapes, other values
    with pytest.raises(ValueError, match="data: "):
        bs.search(space, data=other, **kw)
    with pytest.raises(ValueError, match=r'data: \{.*there, "digits" now'):
        bs.search(space, data="digits", **kw)
    assert _snapshot(tmp_path / "s") == before
    same = ((x[:48].clone(), y[:48].clone()), (x[48:].clone(), y[48:].clone()))
    assert bs.search(space, data=same, **kw).trials == first.trials


def test_a_crashed_search_resumes_with_the_same_settings(tmp_path):
    calls = []

    def crashing(params, trial):
        calls.append(trial.number)
        if len(calls) == 3 and not (tmp_path / "crashed").exists():
            (tmp_path / "crashed").touch()
            raise KeyboardInterrupt  # the process dies mid-search (not caught as a FAIL)
        return _quadratic(params, trial)

    with pytest.raises(KeyboardInterrupt):
        bs.search(SPACE, crashing, run_dir=tmp_path / "s", **KW)
    assert runs.read_json(tmp_path / "s", "config.json")["settings"]["epochs"] == 4
    result = bs.search(SPACE, crashing, run_dir=tmp_path / "s", **KW)
    done = [t for t in result.trials if t["state"] == "COMPLETE"]
    assert len(done) == 6 and [s["trials"] for s in result.stages] == [4, 2]


def test_a_shared_study_with_other_settings_is_refused(tmp_path):
    """No run directory: the settings recorded in the study (as a PostgreSQL study shares
    them with every worker) decide."""
    db = tmp_path / "shared.db"
    url = f"sqlite:///{db}"
    bs.search(SPACE, _quadratic, storage=url, study_name="mlp", **KW)
    before = db.read_bytes()
    with pytest.raises(ValueError, match=r"the study 'mlp' holds .*epochs: 4 there, 8 now"):
        bs.search(SPACE, _quadratic, storage=url, study_name="mlp", **{**KW, "epochs": 8})
    assert db.read_bytes() == before
    other = bs.search(SPACE, _quadratic, storage=url, study_name="mlp2", **{**KW, "epochs": 8})
    assert len(other.trials) == 6  # another study name is another search


def test_a_run_dir_of_another_command_is_refused(tmp_path):
    run = tmp_path / "fit"
    runs.write_json(run, "config.json", {"lr": 0.1})
    runs.write_json(run, "findings.json", {"findings": []})
    before = _snapshot(run)
    with pytest.raises(ValueError, match="holds a run of another command"):
        bs.search(SPACE, _quadratic, run_dir=run, **KW)
    assert _snapshot(run) == before


def test_cli_search_into_an_out_with_other_settings_exits_2_and_changes_nothing(tmp_path):
    runner = CliRunner()
    out = tmp_path / "s"
    args = ["search", "--data", "digits", "--space", '{"lr": ["loguniform", 1e-3, 0.1]}']
    args += ["--n-trials", "2", "--stages", "1", "--out", str(out), "--json"]
    first = runner.invoke(app, [*args, "--epochs", "1"])
    assert first.exit_code == 0, first.output
    before = _snapshot(out)
    second = runner.invoke(app, [*args, "--epochs", "2"])
    assert second.exit_code == 2
    lines = second.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("babysit: ")
    assert "epochs: 1 there, 2 now" in lines[0]
    assert _snapshot(out) == before
    again = runner.invoke(app, [*args, "--epochs", "1"])
    assert again.exit_code == 0 and json.loads(again.output)["trials"] == 2


@pytest.mark.parametrize("name", ["learning_rate", "width"])
def test_the_builtin_objective_rejects_names_it_does_not_use(tmp_path, name):
    space = {name: bs.loguniform(1e-4, 1e-1), "lr": bs.loguniform(1e-3, 1e-2)}
    with pytest.raises(ValueError, match=f"does not use the parameter.*{name}") as e:
        bs.search(space, data="digits", n_trials=2, stages=1, run_dir=tmp_path / "s")
    for known in ("lr", "weight_decay", "hidden", "dropout", "optimizer", "batch_size"):
        assert known in str(e.value)
    assert not (tmp_path / "s").exists()  # refused before any trial (or file)


def test_a_model_builder_may_read_its_own_names():
    def model(params):
        return torch.nn.Sequential(
            torch.nn.Linear(64, params["width"]),
            torch.nn.ReLU(),
            torch.nn.Linear(params["width"], 10),
        )

    space = {"width": bs.choice([8]), "lr": 3e-3}
    result = bs.search(
        space, model=model, data="digits", epochs=1, n_trials=1, stages=1, progress=False
    )
    assert result.best is not None and result.best["params"]["width"] == 8


def test_cli_unknown_parameter_exits_2(tmp_path):
    out = tmp_path / "s"
    result = CliRunner().invoke(
        app,
        [
            "search",
            "--data",
            "digits",
            "--space",
            '{"learning_rate": ["loguniform", 1e-4, 1]}',
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2
    assert "learning_rate" in result.output and "lr" in result.output
    assert not out.exists()


@pytest.mark.services
def test_a_shared_postgresql_study_with_other_settings_is_refused(postgres_url):
    import uuid

    import optuna

    name = f"wp-A-settings-{uuid.uuid4().hex[:8]}"
    first = bs.search(SPACE, _quadratic, storage=postgres_url, study_name=name, **KW)
    with pytest.raises(ValueError, match=rf"the study '{name}' holds .*epochs: 4 there, 8 now"):
        bs.search(SPACE, _quadratic, storage=postgres_url, study_name=name, **{**KW, "epochs": 8})
    from babysit.tuning import open_storage

    storage = open_storage(postgres_url)
    stored = optuna.load_study(study_name=f"{name}-stage1", storage=storage)
    assert len(stored.trials) == 4 and stored.user_attrs["settings"]["epochs"] == 4
    stage2 = optuna.load_study(study_name=f"{name}-stage2", storage=storage)
    assert len(stage2.trials) == 2 and stage2.user_attrs["epochs"] == 4  # untouched
    again = bs.search(SPACE, _quadratic, storage=postgres_url, study_name=name, **KW)
    assert again.trials == first.trials  # the same settings continue it
