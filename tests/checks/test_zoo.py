"""The held-out evaluation of diagnose (issue 12): the model zoo of ``babysit.checks.zoo``.

Healthy entries: ``diagnose`` (default checks) gives no warning and no error. Broken entries:
every expected code is found at warning or error severity. The user's model and the global RNG
are unchanged afterwards.

Entries that fail on the code this evaluation was written against are marked
``xfail(strict=True)`` with the missing feature in the reason: once that feature lands the
test XPASSes, which fails the suite — whoever fixed it removes the entry from ``TODAY``.
The zoo's heaviest entry (``Entry.slow``: ResNet-20) is left to ``benchmarks/diagnose.py``;
entries that take more than about a second are marked ``slow``.
"""

from __future__ import annotations

import pytest
import torch

import babysit as bs
from babysit.checks.zoo import FAMILIES, ZOO

TODAY: dict[str, str] = {}  # every entry passes; add one here (with why) when it breaks

# measured > ~1 s each on one loaded core
SLOW = {
    "resnet_zero_init_residual", "digits_cnn", "transformer_classifier", "gru_bidirectional",
    "gru_forecaster", "token_tagger", "conv_autoencoder", "frozen_batchnorm_finetune",
    "transformer_batch_first_confusion", "transformer_view_not_transpose",
    "lstm_batch_first_confusion", "gru_raw_scale_inputs", "cnn_dead_relu_init",
    "resnet_raw_pixels", "resnet_zero_conv_init", "autoencoder_sigmoid_on_standardized",
}  # fmt: skip


def params(healthy: bool) -> list:
    out = []
    for name, entry in ZOO.items():
        if entry.healthy != healthy or entry.slow:
            continue
        marks = []
        if name in TODAY:
            marks.append(pytest.mark.xfail(strict=True, reason=TODAY[name]))
        if name in SLOW:
            marks.append(pytest.mark.slow)
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def test_zoo_is_large_and_labelled():
    healthy = [e for e in ZOO.values() if e.healthy]
    broken = [e for e in ZOO.values() if not e.healthy]
    assert len(healthy) >= 20 and len(broken) >= 20
    assert {e.family for e in ZOO.values()} == set(FAMILIES)
    assert set(TODAY) | SLOW <= set(ZOO)


def test_importing_the_zoo_builds_nothing():
    """The zoo is data: building happens in ``Entry.build``, seeded, afresh each time."""
    entry = ZOO["mse_regression"]
    a, b = entry.build(), entry.build()
    assert a.model is not b.model
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)


def diagnose(name: str) -> bs.Diagnosis:
    setup = ZOO[name].build()
    model = setup.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    rng = torch.get_rng_state()
    diagnosis = bs.diagnose(model, setup.data, **setup.kwargs())
    assert torch.equal(torch.get_rng_state(), rng), "diagnose must restore the global RNG"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the model must be unchanged"
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())
    return diagnosis


@pytest.mark.parametrize("name", params(healthy=True))
def test_healthy_entry_is_silent(name):
    diagnosis = diagnose(name)
    why = ZOO[name].wrong(diagnosis)
    assert why is None, f"{name}: {why}\n{diagnosis!r}"


@pytest.mark.parametrize("name", params(healthy=False))
def test_broken_entry_is_found(name):
    diagnosis = diagnose(name)
    why = ZOO[name].wrong(diagnosis)
    assert why is None, f"{name}: {why}\n{diagnosis!r}"


def test_judgement_rules():
    """``Entry.wrong``: the rule the tests and the benchmark share (a finding is a stand-in)."""

    def f(code, severity):
        return bs.Finding(code, severity, "m", "a", {})

    healthy, dict_out = ZOO["mse_regression"], ZOO["dict_output"]
    broken = ZOO["transformer_batch_first_confusion"]
    assert healthy.wrong([f("CHECKS_SKIPPED", "info")]) is None
    assert healthy.wrong([f("DATA_SCALE", "warning")]) is not None
    assert dict_out.wrong([f("CHECKS_SKIPPED", "info")]) is not None
    assert broken.wrong([f("BATCH_DEPENDENCE", "error")]) is None
    assert broken.wrong([f("BATCH_DEPENDENCE", "info")]) is not None
    assert broken.wrong([]) is not None


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["token_tagger", "dict_output", "tuple_output", "lora_adapter", "gaussian_nll"]
)
def test_healthy_entry_trains_silently(name):
    """``fit`` reads outputs as diagnose does (a dict's "logits", a tuple's first tensor),
    honours ``ignore_index`` and leaves zero-initialised adapters out of UPDATE_RATIO_HIGH:
    no warning or error in two epochs (``benchmarks/diagnose.py`` runs every healthy entry)."""
    setup = ZOO[name].build()
    history = bs.fit(
        setup.model, setup.data, epochs=2, batch_size=64, progress=False, seed=0,
        **setup.kwargs(),
    )  # fmt: skip
    loud = sorted({f.code for f in history.findings if f.severity != "info"})
    assert loud == [], f"{name}: {loud}"
