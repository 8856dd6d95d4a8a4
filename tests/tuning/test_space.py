"""Search spaces: validation with clear errors, log-space sampling, narrowing, edges."""

from __future__ import annotations

import math

import optuna
import pytest

import babysit as bs
from babysit.tuning.space import Choice, IntUniform, LogUniform, Uniform, check_space


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: bs.loguniform(1e-3, 1e-5), "empty or inverted"),
        (lambda: bs.uniform(0.5, 0.5), "empty or inverted"),
        (lambda: bs.loguniform(0.0, 1.0), "log range must be > 0"),
        (lambda: bs.loguniform(-1.0, 1.0), "log range must be > 0"),
        (lambda: bs.uniform(0.0, math.inf), "finite"),
        (lambda: bs.intuniform(8, 2), "empty or inverted"),
        (lambda: bs.intuniform(0, 8, log=True), "low >= 1"),
        (lambda: bs.choice([]), "empty"),
        (lambda: bs.choice(["relu", "relu"]), "repeats"),
    ],
)
def test_bad_ranges_are_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_kinds_are_type_errors():
    with pytest.raises(TypeError, match="numbers"):
        bs.uniform("0", 1)
    with pytest.raises(TypeError, match="ints"):
        bs.intuniform(1.5, 8)
    with pytest.raises(TypeError, match="list of values"):
        bs.choice("relu")
    with pytest.raises(TypeError, match="loguniform, uniform"):
        check_space({"lr": (1e-5, 1e-1)})
    with pytest.raises(ValueError, match="non-empty dict"):
        check_space({})


def test_plain_values_are_fixed_parameters():
    space = check_space({"lr": bs.loguniform(1e-5, 1e-1), "optimizer": "adam"})
    assert space["optimizer"] == Choice(["adam"])


def test_loguniform_samples_uniformly_in_log_space():
    """Lecture: sample 10**uniform(-6, -3): each decade gets the same share of the trials."""
    param = bs.loguniform(1e-6, 1e-2)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = []
    for _ in range(4000):
        trial = study.ask()
        values.append(param.suggest(trial, "lr"))
        study.tell(trial, 0.0)
    decades = [sum(10.0 ** -(k + 1) <= v < 10.0**-k for v in values) for k in range(2, 6)]
    assert all(abs(d - 1000) < 5 * math.sqrt(1000 * 0.75) for d in decades), decades


def test_narrowing_spans_the_top_values_padded_and_stays_inside():
    param = bs.loguniform(1e-6, 1e-1)
    narrow = param.narrowed([1e-4, 1e-3])
    assert isinstance(narrow, LogUniform)
    assert narrow.low == pytest.approx(10**-4.25, rel=0.05)
    assert narrow.high == pytest.approx(10**-2.75, rel=0.05)
    assert param.narrowed([1e-6, 1e-1]) == param  # already the whole range
    assert bs.uniform(0.0, 0.5).narrowed([0.1, 0.2]) == Uniform(0.075, 0.23)
    assert bs.choice(["relu", "tanh", "elu"]).narrowed(["tanh", "tanh"]) == Choice(["tanh"])
    assert bs.intuniform(10, 200).narrowed([50, 60]) == IntUniform(31, 79)  # >= 25% of the range


def test_edges_and_extensions():
    lr = bs.loguniform(1e-6, 1e-1)
    assert lr.edge(2e-6) == "low" and lr.edge(5e-2) == "high" and lr.edge(1e-3) is None
    assert lr.extended("low") == LogUniform(1e-7, 1e-1)
    assert lr.extended("high") == LogUniform(1e-6, 1.0)
    assert bs.uniform(0.0, 0.5).extended("low") == Uniform(0.0, 0.5)  # stays >= 0
    assert bs.uniform(0.1, 0.5).extended("high") == Uniform(0.1, 0.7)
