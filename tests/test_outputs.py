"""Reading batches and outputs (babysit.outputs), the same in diagnose, lr_find and fit.

Issue 12, item 2: a model returning a tuple, dict or ModelOutput is read as its "logits", else
its first tensor, and the evidence says which; dict batches and multi-input models work through
forward=; a batch of 3+ items without forward= is an error naming forward=.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import babysit as bs
from babysit.checks.catalogue import mnist1d_standardized
from babysit.outputs import ForwardContractError, default_forward, read_output, run_batch, take


@pytest.fixture(scope="module")
def data():
    x, y = mnist1d_standardized()
    return x[:512], y[:512]


class Wrapped(nn.Module):
    """A healthy MLP whose output is wrapped the way real models wrap theirs."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = bs.nn.mlp(40, [64], 10)
        self.kind = kind

    def forward(self, x):
        logits = self.net(x)
        if self.kind == "tuple":
            return logits, logits.detach().argmax(1)
        if self.kind == "dict":
            return {"logits": logits, "features": logits.detach()}
        if self.kind == "hf":
            return HFOutput(logits=logits)
        return {"scores": logits}


class HFOutput(OrderedDict):
    """Like transformers' ModelOutput: an ordered dict whose keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Attr:
    def __init__(self, logits):
        self.logits = logits


# -- read_output ---------------------------------------------------------------------------


def test_read_output_finds_the_logits_or_the_first_tensor_and_says_where():
    t = torch.zeros(2, 3)
    assert read_output(t) == (t, "output")
    assert read_output((t, 1))[1] == "output[0]"
    assert read_output(("label", t))[1] == "output[1]"
    assert read_output({"hidden": t + 1, "logits": t})[1] == "output['logits']"
    assert read_output({"scores": t})[1] == "output['scores']"
    assert read_output(HFOutput(loss=t.sum(), logits=t))[1] == "output['logits']"
    assert read_output({"loss": t.sum(), "scores": t})[1] == "output['scores']"  # not the loss
    assert read_output((t.sum(), t))[1] == "output[1]"
    got, source = read_output(Attr(t))
    assert got is t and source == "output.logits"


def test_an_output_without_a_tensor_is_a_clear_error():
    with pytest.raises(TypeError, match=r"no tensor in it.*forward="):
        read_output({"text": "hello"})


def test_a_three_item_batch_is_never_read_as_x_y():
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"3 items.*forward="):
        default_forward(nn.Identity(), (x, x, torch.zeros(4)))
    with pytest.raises(ValueError, match=r"dict.*forward="):
        default_forward(nn.Identity(), {"x": x, "y": torch.zeros(4)})


def test_a_forward_that_returns_the_wrong_thing_is_a_clear_error():
    x = torch.zeros(4, 3)
    with pytest.raises(ForwardContractError, match=r"must return a pair \(output, target\)"):
        run_batch(nn.Identity(), (x, x), lambda m, b: m(b[0]))


def test_take_slices_every_per_example_tensor_of_any_batch():
    batch = {"x": torch.arange(6).view(6, 1), "meta": torch.ones(3), "y": torch.arange(6)}
    part = take(batch, slice(0, 2))
    assert part["x"].shape == (2, 1) and part["y"].tolist() == [0, 1]
    assert part["meta"].shape == (3,)  # not per-example: kept


# -- diagnose ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tuple", "dict", "hf", "first"])
def test_wrapped_outputs_are_checked_not_skipped(data, kind):
    """Before: ok=True after almost no check ran (only an info CHECKS_SKIPPED)."""
    diagnosis = bs.diagnose(Wrapped(kind), data, lr=1e-3)
    assert [f.code for f in diagnosis if f.severity != "info"] == []
    assert "CHECKS_SKIPPED" not in diagnosis.codes


def test_wrapped_output_with_a_bug_is_found(data):
    """The checks really ran on the read output: labels >= C on a dict-output model."""
    x, y = data
    diagnosis = bs.diagnose(Wrapped("dict"), (x, y + 5), lr=1e-3)
    assert "LABELS_OUT_OF_RANGE" in diagnosis.codes and not diagnosis.ok


def test_loss_failed_names_where_the_output_was_read(data):
    class Bad(Wrapped):
        def forward(self, x):
            return {"logits": self.net(x)[::2]}  # half the rows

    diagnosis = bs.diagnose(Bad("dict"), data, lr=1e-3)
    failed = next(f for f in diagnosis if f.code == "LOSS_FAILED")
    assert failed.evidence["output_read_from"] == "output['logits']"


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(20, 32)
        self.b = nn.Linear(20, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, left, right):
        return self.head(torch.relu(self.a(left) + self.b(right)))


class DictData(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"left": self.x[i, :20], "right": self.x[i, 20:], "label": self.y[i]}


def two_input_forward(model, batch):
    return model(batch["left"], batch["right"]), batch["label"]


def test_diagnose_runs_dict_batches_and_two_input_models_through_forward(data):
    x, y = data
    loader = DataLoader(DictData(x, y), batch_size=64, shuffle=True)
    diagnosis = bs.diagnose(TwoInputs(), loader, forward=two_input_forward, lr=1e-3)
    assert [f.code for f in diagnosis if f.severity != "info"] == []
    skipped = [f for f in diagnosis if f.code == "CHECKS_SKIPPED"]
    assert all(f.evidence["unreadable"] == [] for f in skipped)  # every check read the output
    broken = bs.diagnose(
        TwoInputs(),
        DataLoader(DictData(x, y + 3), batch_size=64),
        forward=two_input_forward,
        lr=1e-3,
    )
    assert "LABELS_OUT_OF_RANGE" in broken.codes


def test_forward_hides_the_inputs_and_diagnose_says_which_checks_it_skipped(data):
    x, y = data
    diagnosis = bs.diagnose(
        TwoInputs(), DictData(x, y), forward=two_input_forward, lr=1e-3, checks="all"
    )
    skipped = next(f for f in diagnosis if f.code == "CHECKS_SKIPPED")
    assert {"data_scale", "batch_independence"} <= set(skipped.evidence["skipped"])
    assert skipped.severity == "info"  # inapplicable, not unreadable
    assert "forward=" in skipped.evidence["skipped"]["data_scale"]


def test_diagnose_refuses_a_three_item_loader_without_forward(data):
    """Before: a loader of (x, mask, y) was silently read as (x, mask)."""
    x, y = data
    loader = DataLoader(TensorDataset(x, torch.ones(len(x)), y), batch_size=64)
    with pytest.raises(ValueError, match=r"3 items.*forward="):
        bs.diagnose(bs.nn.mlp(40, [64], 10), loader)
    with pytest.raises(ValueError, match=r"3 arrays.*forward="):
        bs.diagnose(bs.nn.mlp(40, [64], 10), (x, torch.ones(len(x)), y))


def test_diagnose_refuses_a_forward_that_returns_the_wrong_thing(data):
    net = TwoInputs()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(TypeError, match=r"diagnose: forward\(model, batch\) must return a pair"):
        bs.diagnose(net, DictData(*data), forward=lambda m, b: m(b["left"], b["right"]))
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


class MeanOverBatch(nn.Module):
    """A reduction over the batch dimension: MSELoss broadcasts (1, 1) against (N, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(40, 1)

    def forward(self, x):
        return self.linear(x).mean(0, keepdim=True)


# -- lr_find and fit read the same way ------------------------------------------------------


@pytest.mark.parametrize("kind", ["tuple", "hf"])
def test_lr_find_and_fit_read_wrapped_outputs(data, kind):
    """Before: cross-entropy raised on the tuple / dict."""
    result = bs.lr_find(Wrapped(kind), data, steps=20)
    assert result.losses and all(v == v for v in result.losses)
    history = bs.fit(Wrapped(kind), data, epochs=1, progress=False, monitors=None)
    assert history.findings == [] or all(f.severity == "info" for f in history.findings)


def test_lr_find_takes_forward_for_dict_batches(data):
    x, y = data
    result = bs.lr_find(TwoInputs(), DictData(x, y), forward=two_input_forward, steps=20)
    assert len(result.lrs) > 5


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda x, y: bs.lr_find(
                TwoInputs(), DictData(x, y), forward=lambda m, b: m(b["left"], b["right"])
            ),
            ForwardContractError,
            r"lr_find: forward\(model, batch\) must return a pair \(output, target\)",
        ),
        (
            lambda x, y: bs.lr_find(
                bs.nn.mlp(40, [64], 10),
                DataLoader(TensorDataset(x, torch.ones(len(x)), y), batch_size=64),
            ),
            ValueError,
            r"3 items.*forward=",
        ),
        (
            lambda x, y: bs.lr_find(MeanOverBatch(), (x, y[:, None].float()), loss_fn=nn.MSELoss()),
            ValueError,
            r"1 output rows for 64 targets",
        ),
        (
            lambda x, y: bs.lr_find(
                TwoInputs(), DictData(x, y), forward=two_input_forward, loss_fn=nn.MSELoss()
            ),
            RuntimeError,
            r"loss_fn raised on the first batch \(output of shape \(64, 10\), targets of shape",
        ),
    ],
)
def test_lr_find_bad_input_gives_one_clear_error(data, call, error, match):
    with pytest.raises(error, match=match):
        call(*data)


def test_findings_on_a_wrapped_output_say_where_it_was_read(data):
    net = Wrapped("dict")
    bs.nn.init_model(net.net, "zeros")
    diagnosis = bs.diagnose(net, data, lr=1e-3)
    symmetric = next(f for f in diagnosis if f.code == "SYMMETRIC_INIT")
    assert symmetric.evidence["output_read_from"] == "output['logits']"


class MixesTheBatch(nn.Module):
    """A tuple output whose rows depend on other examples (a statistic over dim 0)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = bs.nn.mlp(40, [64], 10)

    def forward(self, x):
        logits = self.net(x)
        return logits - logits.mean(0), logits


def test_batch_independence_reads_a_tuple_output(data):
    """Before: a non-tensor output made the check return [] (nothing said)."""
    diagnosis = bs.diagnose(MixesTheBatch(), data, lr=1e-3, checks=["batch_independence"])
    assert "BATCH_DEPENDENCE" in diagnosis.codes


def test_fit_refuses_a_forward_that_returns_the_wrong_thing_before_training(data):
    x, y = data
    net = TwoInputs()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ForwardContractError, match=r"must return a pair \(output, target\)"):
        bs.fit(
            net,
            DictData(x, y),
            forward=lambda m, b: m(b["left"], b["right"]),
            epochs=1,
            progress=False,
        )
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_fit_trains_dict_batches_through_forward_with_a_dict_output(data):
    class DictOut(TwoInputs):
        def forward(self, left, right):
            return {"logits": super().forward(left, right)}

    x, y = data
    history = bs.fit(DictOut(), DictData(x, y), forward=two_input_forward, epochs=2, progress=False)
    losses = history["train_loss"]
    assert len(losses) == 2 and losses[-1] < losses[0]


def test_a_forward_that_raises_is_forward_failed_in_diagnose_and_an_error_in_lr_find(data):
    x, y = data

    def bad_key(model, batch):
        return model(batch["left"], batch["rigth"]), batch["label"]

    diagnosis = bs.diagnose(TwoInputs(), DictData(x, y), forward=bad_key, lr=1e-3)
    failed = next(f for f in diagnosis if f.code == "FORWARD_FAILED")
    assert "KeyError" in failed.message and "forward(model, batch)" in failed.advice
    assert failed.evidence["forward"] == "yours" and not diagnosis.ok
    with pytest.raises(RuntimeError, match=r"lr_find: forward\(model, batch\) raised.*KeyError"):
        bs.lr_find(TwoInputs(), DictData(x, y), forward=bad_key, steps=10)
