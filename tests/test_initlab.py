"""The lecture's init experiment: the five qualitative outcomes, with seeded tolerances.

Reference numbers come from a numpy simulation of the same set-up (10 layers × 500 units,
1000 unit-Gaussian inputs), quoted in the issue.
"""

from __future__ import annotations

import itertools
import json
import statistics

import pytest
import torch

from babysit import initlab
from babysit.nn import mlp


@pytest.fixture(scope="module")
def lecture():
    result = initlab.run(seed=0)
    return {r.setting.label: r for r in result.results}


def test_runs_the_five_lecture_settings(lecture):
    assert list(lecture) == [
        "tanh + N(0, 0.01²)",
        "tanh + N(0, 1²)",
        "tanh + xavier_normal",
        "relu + xavier_normal",
        "relu + he_normal",
    ]
    assert all(len(r.layers) == 10 for r in lecture.values())


def test_tanh_small_init_collapses_to_zero(lecture):
    std = lecture["tanh + N(0, 0.01²)"].stds
    assert std[0] == pytest.approx(0.21, abs=0.02)
    assert std[2] == pytest.approx(0.01, rel=0.3)
    assert std[9] < 1e-4


def test_tanh_unit_init_saturates_every_layer(lecture):
    for row in lecture["tanh + N(0, 1²)"].layers:
        assert row.saturated_fraction == pytest.approx(0.89, abs=0.04)


def test_tanh_xavier_declines_slowly_without_collapse(lecture):
    std = lecture["tanh + xavier_normal"].stds
    assert std[0] == pytest.approx(0.63, abs=0.03)
    assert std[9] == pytest.approx(0.22, abs=0.03)
    assert all(a > b for a, b in itertools.pairwise(std))
    assert max(r.saturated_fraction for r in lecture["tanh + xavier_normal"].layers) < 0.01


def test_relu_xavier_halves_the_variance_per_layer(lecture):
    std = lecture["relu + xavier_normal"].stds
    ratios = [b / a for a, b in itertools.pairwise(std)]
    assert statistics.median(ratios) == pytest.approx(2**-0.5, abs=0.05)
    assert std[0] == pytest.approx(0.58, abs=0.03)
    assert std[9] == pytest.approx(0.025, rel=0.35)


def test_relu_he_keeps_the_std_stable(lecture):
    for std in lecture["relu + he_normal"].stds:
        assert std == pytest.approx(0.8, abs=0.1)


def test_small_init_makes_the_weight_gradients_vanish(lecture):
    tiny = lecture["tanh + N(0, 0.01²)"].layers
    xavier = lecture["tanh + xavier_normal"].layers
    for small, good in zip(tiny, xavier, strict=True):
        assert small.weight_grad_norm < 1e-3 * good.weight_grad_norm
    # the gradient reaching the first layers shrinks by ~0.22× per layer on the way down
    assert tiny[0].act_grad_norm < 1e-4 * tiny[9].act_grad_norm


def test_writes_activations_json_and_the_figure(tmp_path):
    result = initlab.run(depth=3, width=40, n_inputs=300, run_dir=tmp_path)
    document = json.loads((tmp_path / "activations.json").read_text())
    assert document["schema"] == 1 and document["experiment"] == "initlab"
    assert len(document["settings"]) == 5
    assert document["settings"][4]["layers"][0]["std"] == result.results[4].layers[0].std
    png = (tmp_path / "initlab.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_runs_on_a_users_builder_model_without_modifying_it():
    model = mlp(20, [30, 30], 5, activation="tanh")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = initlab.run(["xavier", "lsuv"], model=model, n_inputs=300)
    assert [r.setting.label for r in result.results] == ["xavier", "lsuv"]
    assert len(result.results[0].layers) == 2  # two tanh layers; the output layer has none
    lsuv_first = result.results[1].layers[0]
    assert lsuv_first.std < 1.0  # tanh of unit-variance pre-activations
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_settings_from_cli_pairs_and_validates():
    pairs = initlab.settings_from_cli(["tanh", "relu"], ["normal"], std=1.0)
    assert [s.label for s in pairs] == ["tanh + N(0, 1²)", "relu + N(0, 1²)"]
    assert initlab.settings_from_cli([], [], std=None) == list(initlab.LECTURE_SETTINGS)
    with pytest.raises(ValueError, match="pair up in order: got 2 activations and 3 inits"):
        initlab.settings_from_cli(["tanh", "relu"], ["he", "xavier", "lsuv"], std=None)
    with pytest.raises(ValueError, match="unknown activation 'rectifier'"):
        initlab.settings_from_cli(["rectifier"], [], std=None)
