"""Fixes found by the model zoo (issue 12), each beside its entry in ``babysit.checks.zoo``.

batch_independence on token models: integer inputs have no gradient, so the check
differentiates at the first nn.Embedding's output; where no such stand-in exists it says so.
Tensors stuck at zero (LoRA with A = B = 0) are PARAMS_WITHOUT_GRAD, a zero head is not."""

from __future__ import annotations

import torch
from torch import nn

import babysit as bs


class OneHot(nn.Module):
    """Integer inputs turned into floats in forward: no nn.Embedding to stand in for them."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.one_hot(x, 10).float().mean(1))


class SeqFirstGRU(nn.Module):
    """An embedding and a GRU with batch_first=False fed (N, T): the batch is mixed."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.rnn = nn.GRU(8, 8)  # expects (T, N, D)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.embed(x))[0][:, -1])


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 10, (64, 6), generator=g), torch.randint(0, 3, (64,), generator=g)


def test_token_model_batch_mixing_is_found():
    torch.manual_seed(0)
    d = bs.diagnose(SeqFirstGRU(), _data(), checks=["batch_independence"])
    assert [f.code for f in d if f.severity == "error"] == ["BATCH_DEPENDENCE"]


def test_integer_inputs_without_embedding_say_so():
    torch.manual_seed(0)
    model = OneHot()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = bs.diagnose(model, _data(), checks=["batch_independence"])
    skipped = [f for f in d if f.code == "CHECKS_SKIPPED"]
    assert skipped and "batch_independence" in skipped[0].evidence["skipped"]
    assert skipped[0].severity == "warning"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_zero_head_and_zero_biases_are_not_stuck():
    """A zero head blocks the earlier layers' gradient for one step only: not
    PARAMS_WITHOUT_GRAD (the stuck-at-zero rule takes that step before judging)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    for layer in (model[0], model[2]):
        nn.init.zeros_(layer.bias)
    nn.init.zeros_(model[2].weight)
    x = torch.randn(64, 8)
    y = torch.randint(0, 3, (64,))
    d = bs.diagnose(model, (x, y), checks=["gradient_flow"])
    assert "PARAMS_WITHOUT_GRAD" not in d.codes


class PositionsFirst(nn.Module):
    """A positional embedding of arange(T) runs before the token embedding, T equal to the
    check's 8 examples: the tokens' embedding must still be the one differentiated."""

    def __init__(self, mix: bool) -> None:
        super().__init__()
        self.pos = nn.Embedding(8, 8)
        self.tok = nn.Embedding(10, 8)
        self.head = nn.Linear(8, 3)
        self.mix = mix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pos(torch.arange(x.shape[1])) + self.tok(x)
        if self.mix:
            h = h - h.mean(0)  # a statistic over the batch: mixes examples
        return self.head(h.mean(1))


def test_positional_embedding_first_is_not_taken_for_the_input():
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 10, (64, 8), generator=g), torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(0)
    healthy = bs.diagnose(PositionsFirst(False), data, checks=["batch_independence"])
    assert not [f for f in healthy if f.severity != "info"]
    broken = bs.diagnose(PositionsFirst(True), data, checks=["batch_independence"])
    assert "BATCH_DEPENDENCE" in broken.codes


def test_a_huge_loss_is_no_gradient_check_failure():
    """Was: GRADIENT_CHECK_FAILED (error) on a right backward: an MSE of ~4e10 (targets of
    scale 2e5) is known to ~1e-5 in float64, which puts ~10 of round-off into the central
    difference; that is not a disagreement with autograd."""
    from babysit.checks.zoo import ZOO

    setup = ZOO["regression_unscaled_targets"].build()
    d = bs.diagnose(setup.model, setup.data, loss_fn=setup.loss_fn, checks=["gradient_check"])
    assert "GRADIENT_CHECK_FAILED" not in d.codes
    wrong = ZOO["wrong_custom_backward"].build()
    d = bs.diagnose(wrong.model, wrong.data, loss_fn=wrong.loss_fn, checks=["gradient_check"])
    assert "GRADIENT_CHECK_FAILED" in d.codes
