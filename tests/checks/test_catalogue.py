"""The evaluation of diagnose: every broken set-up found, no false alarm on healthy ones, and
the user's model and global RNG untouched."""

from __future__ import annotations

import pytest
import torch

import babysit as bs
from babysit.checks.catalogue import CASES

BROKEN = [name for name, case in CASES.items() if not case.healthy]
HEALTHY = [name for name, case in CASES.items() if case.healthy]


def test_catalogue_is_large_enough():
    assert len(BROKEN) >= 15 and len(HEALTHY) >= 5


def run(name):
    case = CASES[name]
    model, data, kwargs = case.build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    diagnosis = bs.diagnose(model, data, checks=case.checks, **kwargs)
    assert torch.equal(torch.get_rng_state(), rng), "diagnose must restore the global RNG"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the model must be unchanged"
    assert all(p.grad is None for p in model.parameters())
    return diagnosis


@pytest.mark.parametrize("name", BROKEN)
def test_broken_setup_is_found(name):
    diagnosis = run(name)
    for alternatives in CASES[name].expect:
        assert alternatives & diagnosis.codes, (
            f"{name}: expected one of {sorted(alternatives)}, got {diagnosis!r}"
        )


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_setup_is_silent(name):
    diagnosis = run(name)
    loud = [f"{f.code}: {f.message}" for f in diagnosis if f.severity != "info"]
    assert loud == [], f"false alarm on {name}"


def test_run_order_does_not_depend_on_import_order():
    from babysit.checks import FAMILIES, list_checks

    families = [spec.family for spec in list_checks().values()]
    assert families == sorted(families, key=FAMILIES.index)
    assert next(iter(list_checks())) == "forward_runs"
