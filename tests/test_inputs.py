"""One validation path for every entry point (issue 13, item 7): babysit.batches and
babysit.inputs give fit, lr_find and diagnose the same clear errors, and nothing is changed."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import babysit as bs
from babysit.inputs import as_labels


def _data(n=256, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def _model(d=5, classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, classes))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, state):
    return all(torch.equal(state[k], v) for k, v in model.state_dict().items())


# -- lr_find: fit's messages instead of torch's -------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        # was: IndexError "Target 7 is out of bounds."
        (
            lambda x, y: (x, y + 5),
            ValueError,
            r"label 7 in the first batch, but the model outputs 3",
        ),
        # was: RuntimeError "mat1 and mat2 shapes cannot be multiplied" (no hint, no entry point)
        (lambda x, y: (torch.randn(len(x), 7), y), RuntimeError, r"^lr_find: the model raised"),
        # was: "data is empty: diagnose needs at least one example"
        (lambda x, y: (x[:0], y[:0]), ValueError, r"data is empty: lr_find needs"),
        (lambda x, y: (x, y - 1), ValueError, r"labels must be class indices >= 0"),
        (lambda x, y: (x, y.float()), ValueError, r"class labels must be integers"),
        (lambda x, y: (x.index_fill(0, torch.tensor([3]), float("nan")), y), ValueError, "NaN"),
        (lambda x, y: (x, y[:10]), ValueError, "differ in length"),
    ],
)
def test_lr_find_refuses_bad_data_clearly_and_changes_nothing(make, error, match, tmp_path):
    x, y = _data()
    model = _model()
    state = _state(model)
    with pytest.raises(error, match=match):
        bs.lr_find(model, make(x, y), run_dir=tmp_path / "run")
    assert _same(model, state) and model.training
    assert not (tmp_path / "run").exists()


def test_lr_find_names_a_loss_fn_that_raises():
    x, y = _data()
    with (
        pytest.warns(UserWarning, match="target size"),
        pytest.raises(RuntimeError, match=r"^lr_find: loss_fn raised on the first batch"),
    ):
        bs.lr_find(_model(), (x, y), loss_fn=nn.MSELoss())


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_lr_find_accepts_any_integer_labels(dtype):
    x, y = _data()
    as_long = bs.lr_find(_model(), (x, y), steps=20)
    other = bs.lr_find(_model(), (x, y.to(dtype)), steps=20)  # was: "expected ... Long"
    assert other.raw_losses == as_long.raw_losses


def test_lr_find_on_one_example_is_not_confident():
    """A 1-example "data set" gave confident=True (it measured memorising one example)."""
    x, y = _data()
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))  # no batch norm
    result = bs.lr_find(mlp, (x[:1], y[:1]))
    assert not result.confident
    assert any("only 1 example" in reason for reason in result.reasons)


def test_lr_find_validation_leaves_a_healthy_result_unchanged():
    """The validating forward runs in eval mode without gradients: no dropout draw, no
    batch-norm update, so the sweep is what it was (seeded runs agree)."""
    x, y = _data(1024)
    first = bs.lr_find(_model(), (x, y), steps=30)
    again = bs.lr_find(_model(), (x, y), steps=30)
    assert first.raw_losses == again.raw_losses and first.n_examples == 1024


# -- fit: any integer labels ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
@pytest.mark.parametrize("form", ["tensors", "dataset", "loader"])
def test_fit_accepts_any_integer_labels(dtype, form):
    """int32 labels failed in fit ("expected target dtype to be Long or Byte, but got Int")."""
    x, y = _data()
    data = {
        "tensors": (x, y.to(dtype)),
        "dataset": TensorDataset(x, y.to(dtype)),
        "loader": DataLoader(TensorDataset(x, y.to(dtype)), batch_size=32),
    }[form]
    history = bs.fit(_model(), data, epochs=1, progress=False)
    assert len(history) == 1 and history.final["train_loss"] > 0


def test_fit_and_lr_find_give_the_same_label_error():
    x, y = _data()
    with pytest.raises(ValueError) as in_fit:
        bs.fit(_model(), (x, y + 5), epochs=1, progress=False)
    with pytest.raises(ValueError) as in_lr_find:
        bs.lr_find(_model(), (x, y + 5))
    assert str(in_fit.value) == str(in_lr_find.value)


def test_diagnose_and_lr_find_name_themselves_for_empty_data():
    x, y = _data()
    with pytest.raises(ValueError, match="diagnose needs"):
        bs.diagnose(_model(), (x[:0], y[:0]))
    with pytest.raises(ValueError, match="lr_find needs"):
        bs.lr_find(_model(), (x[:0], y[:0]))


def test_as_labels_widens_integers_only():
    assert as_labels(torch.tensor([1, 2], dtype=torch.int32)).dtype == torch.int64
    for t in (torch.tensor([0.5]), torch.tensor([True]), torch.tensor([3])):
        assert as_labels(t) is t
