"""FitConfig: fit's settings validated in one place, frozen, and read back from config.json."""

from __future__ import annotations

import dataclasses
import json

import pytest

import babysit as bs
from babysit.train.config import FitConfig, conflicts

from .conftest import small_mlp


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"epochs": 0}, "epochs must be a positive int, got 0"),
        ({"batch_size": 2.5}, "batch_size must be a positive int, got 2.5"),
        ({"lr": -1.0}, "lr must be a finite number >= 0, got -1.0"),
        ({"lr": 0}, "lr must be positive, got 0"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"weight_decay": -0.1}, "weight_decay must be a finite number >= 0"),
        ({"optimizer": "adamm"}, "unknown optimizer 'adamm'; known: sgd"),
        ({"schedule": "linear"}, "unknown schedule 'linear'; known: cosine"),
        ({"seed": "one"}, "seed must be an int, got 'one'"),
        ({"device": "gpu0"}, "device='gpu0' is not a device"),
        ({"thresholds": {"dead_frac": 0.5}}, "unknown threshold 'dead_frac'"),
    ],
)
def test_bad_values_name_the_value_and_the_fix(kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        FitConfig(**kw)


def test_fit_validates_through_the_config_before_writing(digits, tmp_path):
    x, y, _, _ = digits
    with pytest.raises(ValueError, match="lr must be a finite number"):
        bs.fit(small_mlp(), (x, y), lr=float("inf"), progress=False, run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_frozen_normalised_and_round_trips_through_the_record():
    config = FitConfig(optimizer=" Adam ", schedule="Cosine", epochs=3, ignore="DEAD_RELU")
    assert config.optimizer == "adam" and config.schedule == "cosine"
    assert config.ignore == ("DEAD_RELU",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 0.1  # type: ignore[misc]
    record = json.loads(json.dumps(config.record()))
    assert FitConfig.from_record(record) == FitConfig(optimizer="adam", schedule="cosine", epochs=3)
    assert FitConfig.from_record(record, epochs=7).epochs == 7


def test_a_factory_cannot_be_rebuilt_from_its_name():
    def my_sgd(params):
        raise AssertionError("never called")

    record = FitConfig(optimizer=my_sgd).record()
    assert record["optimizer"] == "my_sgd"
    with pytest.raises(ValueError, match="factory that cannot be rebuilt"):
        FitConfig.from_record(record)


def test_conflicts_compare_floats_by_value_and_skip_missing_keys():
    recorded = {"lr": 0.1, "optimizer": "adam", "seed": 0}
    assert (
        conflicts(
            {"lr": 0.1 + 1e-17, "optimizer": "ADAM", "batch_size": 8},
            recorded,
            ["lr", "optimizer", "batch_size"],
        )
        == []
    )
    assert conflicts({"seed": 1}, recorded, ["seed"]) == [("seed", 1, 0)]


def test_config_json_keeps_its_keys(digits, tmp_path):
    """Old runs' readers (report, resume) rely on these keys and on "schema": 1."""
    x, y, _, _ = digits
    bs.fit(small_mlp(), (x, y), epochs=1, lr=None, progress=False, run_dir=tmp_path / "r")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["schema"] == 1 and config["kind"] == "fit"
    for key in (
        "model",
        "model_repr",
        "n_parameters",
        "optimizer",
        "lr",
        "weight_decay",
        "schedule",
        "epochs",
        "batch_size",
        "loss_fn",
        "seed",
        "device",
        "monitors",
        "n_train",
        "n_val",
    ):
        assert key in config, key
    assert config["lr"] == 1e-3  # lr=None resolved to Adam's default
