"""Each remedy on its own: its finding disappears on re-diagnosis, the model is what the patch
line says, and a structure it cannot edit is skipped with the reason."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import babysit as bs
from babysit.repair import REMEDIES, SetUp, Skip
from babysit.repair.modules import FittedScaler, OutputScaler

from .conftest import blobs, loud, mlp, state_hash


def _setup(model, data, **options) -> SetUp:
    options = {"lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0, "seed": 0, **options}
    return SetUp(model, data, data, options)


def _apply(name: str, setup: SetUp):
    """The remedy on a copy, as fix applies it; the original set-up must not change."""
    before = state_hash(setup.model)
    change = REMEDIES[name].apply(setup.copy(), None)
    assert state_hash(setup.model) == before
    return change


def _codes(setup: SetUp) -> set[str]:
    return loud(bs.diagnose(setup.model, setup.data, progress=False, **setup.options))


def test_reinit_by_activation_ends_saturation_with_xavier_for_tanh(data):
    s = _setup(bs.nn.init_model(mlp(nn.Tanh), "normal", std=1.0), data)
    assert "SATURATED_ACTIVATIONS" in _codes(s)
    change = _apply("reinit", s)
    assert change.patch == ('bs.nn.init_model(model, "xavier")',)
    assert "SATURATED_ACTIVATIONS" not in _codes(change.setup)
    w = change.setup.model[0].weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (20 + 32)), rel=0.2)  # Xavier, not He


def test_reinit_uses_he_for_relu(data):
    s = _setup(bs.nn.init_model(mlp(), "zeros"), data)
    assert "SYMMETRIC_INIT" in _codes(s)
    change = _apply("reinit", s)
    assert change.patch == ('bs.nn.init_model(model, "he")',)
    assert not {"SYMMETRIC_INIT", "PARAMS_WITHOUT_GRAD"} & _codes(change.setup)
    assert change.setup.model[0].weight.std().item() == pytest.approx(math.sqrt(2 / 20), rel=0.2)


def test_lsuv_breaks_symmetry_and_needs_the_inputs(data):
    s = _setup(bs.nn.init_model(mlp(), "zeros"), data)
    change = _apply("lsuv", s)
    assert "lsuv" in change.patch[0]
    assert "SYMMETRIC_INIT" not in _codes(change.setup)
    hidden = F.relu(change.setup.model[0](data[0]))
    assert hidden.std().item() > 0.1
    with pytest.raises(Skip, match="forward= hides"):
        _apply("lsuv", _setup(mlp(), data, forward=lambda m, b: (m(b[0]), b[1])))


def test_reset_biases_revives_dead_relus(data):
    s = _setup(bs.nn.init_model(mlp(), "he", bias=-10.0), data)
    assert "DEAD_RELU" in _codes(s)
    change = _apply("reset_biases", s)
    assert change.patch == ("set the biases of model[0], model[2], model[4] to 0",)
    assert all((m.bias == 0).all() for m in change.setup.model if isinstance(m, nn.Linear))
    assert "DEAD_RELU" not in _codes(change.setup)
    with pytest.raises(Skip, match="already 0"):
        _apply("reset_biases", change.setup)


def test_batchnorm_goes_before_each_nonlinearity_where_the_patch_says(data):
    s = _setup(mlp(nn.Tanh), data)
    change = _apply("batchnorm", s)
    assert change.patch == (
        "insert BatchNorm1d(32) after model[0]",
        "insert BatchNorm1d(32) after model[2]",
    )
    kinds = [type(m).__name__ for m in change.setup.model]
    assert kinds == ["Linear", "BatchNorm1d", "Tanh", "Linear", "BatchNorm1d", "Tanh", "Linear"]
    assert change.setup.model(data[0]).shape == (600, 4)


def test_batchnorm_is_skipped_for_a_functional_forward(data):
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(20, 32), nn.Linear(32, 4)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    with pytest.raises(Skip, match="functional forward"):
        _apply("batchnorm", _setup(Functional(), data))


def test_relu_he_swaps_saturating_activations_but_not_the_output(data):
    model = nn.Sequential(bs.nn.mlp(20, [32] * 8, 4, activation="sigmoid", init="xavier"))
    s = _setup(model[0], data)
    assert "VANISHING_GRADIENTS" in _codes(s)
    change = _apply("relu_he", s)
    assert change.patch[0] == (
        "replace Sigmoid() at model[1], model[3], model[5], model[7], model[9], model[11], "
        "model[13], model[15] with ReLU()"
    )
    assert change.patch[-1] == 'bs.nn.init_model(model, "he")'
    assert not any(isinstance(m, nn.Sigmoid) for m in change.setup.model)
    assert "VANISHING_GRADIENTS" not in _codes(change.setup)
    with pytest.raises(Skip, match="no Sigmoid/Tanh"):
        _apply("relu_he", _setup(mlp(), data))


def test_leaky_relu_swaps_relu_modules(data):
    change = _apply("leaky_relu", _setup(mlp(), data))
    assert [type(m).__name__ for m in change.setup.model][1] == "LeakyReLU"
    assert change.patch == (
        "replace ReLU() at model[1], model[3] with LeakyReLU(negative_slope=0.01)",
    )


def test_zero_output_gives_ln_c_at_init(data):
    model = mlp()
    with torch.no_grad():
        model[-1].weight.mul_(30)
    s = _setup(model, data)
    assert "INIT_LOSS_MISMATCH" in _codes(s)
    change = _apply("zero_output", s)
    assert change.patch == ("nn.init.zeros_(model[4].weight); zero its bias",)
    loss = F.cross_entropy(change.setup.model(data[0]), data[1]).item()
    assert loss == pytest.approx(math.log(4), abs=1e-6)
    assert "INIT_LOSS_MISMATCH" not in _codes(change.setup)
    scaled = _apply("scale_output", s).setup.model[-1].weight
    assert torch.allclose(scaled, model[-1].weight * 0.1)


def test_standardize_inputs_prepends_a_fitted_module_that_takes_raw_inputs(data):
    x, y = data
    raw = (x * 50 + 128, y)
    s = _setup(mlp(), raw)
    assert {"DATA_SCALE", "DATA_NOT_CENTERED"} <= _codes(s)
    change = _apply("standardize_inputs", s)
    assert "bs.data.Standardize(per='feature').fit(X_train)" in change.patch[0]
    seen = change.setup.data[0]
    assert seen.mean(0).abs().max() < 1e-3 and (seen.std(0) - 1).abs().max() < 1e-2
    assert not {"DATA_SCALE", "DATA_NOT_CENTERED"} & _codes(change.setup)
    full = change.setup.full_model
    assert isinstance(full[0], FittedScaler) and full[1] is change.setup.model
    assert torch.allclose(full(raw[0]), change.setup.model(seen), atol=1e-5)
    assert raw[0] is s.data[0] and s.preprocess is None  # the user's data is untouched


def test_zero_center_inputs_only_centres(data):
    x, y = data
    change = _apply("zero_center_inputs", _setup(mlp(), (x + 5, y)))
    assert torch.allclose(change.setup.preprocess.scale, torch.ones(20))
    assert "DATA_NOT_CENTERED" not in _codes(change.setup)


def test_standardize_inputs_needs_in_memory_tensors(data):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data), batch_size=64)
    with pytest.raises(Skip, match=r"\(X, y\)"):
        _apply("standardize_inputs", _setup(mlp(), loader))


def test_standardize_targets_appends_the_inverse_map(data):
    x, _ = data
    g = torch.Generator().manual_seed(1)
    y = (x @ torch.randn(20, 1, generator=g)) * 5e4 + 2e5
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 1))
    s = _setup(model, (x, y), loss_fn=nn.MSELoss())
    assert "TARGET_SCALE" in _codes(s)
    change = _apply("standardize_targets", s)
    assert "map the output back" in change.patch[0]
    assert "TARGET_SCALE" not in _codes(change.setup)
    full = change.setup.full_model
    assert isinstance(full[-1], OutputScaler)
    assert torch.allclose(full(x), change.setup.model(x) * y.std(0, unbiased=False) + y.mean(0))


def test_lr_range_test_sets_the_suggested_lr(data):
    s = _setup(mlp(), data, optimizer="sgd", lr=1e-6)
    assert "LR_TOO_LOW" in _codes(s)
    change = _apply("lr_range_test", s)
    lr = change.setup.options["lr"]
    assert 1e-4 < lr < 10 and change.patch[0].startswith(f"lr={lr:.2g}")
    assert "LR_TOO_LOW" not in _codes(change.setup)
    assert s.options["lr"] == 1e-6


def test_the_range_test_remedy_shows_no_progress_line_of_its_own(data, monkeypatch):
    # fix prints one line per remedy (and its diagnose none): the lr_find inside stays quiet
    # even on a terminal
    import importlib

    module = importlib.import_module("babysit.tuning.lr_find")
    monkeypatch.setattr(module, "stderr_is_terminal", lambda: True)
    shown = []
    real = module.ProgressLine

    def spy(*args, **kwargs):
        shown.append(kwargs["enabled"])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "ProgressLine", spy)
    _apply("lr_sweep", _setup(mlp(), data, optimizer="sgd"))
    assert shown == [False]


def test_lr_steps_and_weight_decay_arithmetic(data):
    s = _setup(mlp(), data, lr=1e-2, weight_decay=10.0)
    assert _apply("lr_down", s).setup.options["lr"] == pytest.approx(1e-3)
    assert _apply("lr_up", s).setup.options["lr"] == pytest.approx(1e-1)
    assert "REG_TOO_STRONG" in _codes(s)
    down = _apply("weight_decay_down", s)
    assert down.setup.options["weight_decay"] == pytest.approx(1.0)
    assert down.patch == ("weight_decay=1",)
    with pytest.raises(Skip, match="already 0"):
        _apply("weight_decay_down", _setup(mlp(), data))


def test_decoupled_weight_decay_replaces_adam_only(data):
    assert _apply("decoupled_weight_decay", _setup(mlp(), data)).setup.options["optimizer"] == (
        "adamw"
    )
    with pytest.raises(Skip, match="replaces Adam"):
        _apply("decoupled_weight_decay", _setup(mlp(), data, optimizer="sgd"))


def test_dropout_half(data):
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 4))
    s = _setup(model, data)
    assert "DROPOUT_TOO_HIGH" in _codes(s)
    change = _apply("dropout_half", s)
    assert change.patch == ("model[2].p = 0.5 (was 0.9)",)
    assert change.setup.model[2].p == 0.5 and model[2].p == 0.9
    assert "DROPOUT_TOO_HIGH" not in _codes(change.setup)


def test_shuffle_loader_builds_a_new_loader(data):
    x, y = data
    order = torch.argsort(y, stable=True)
    dataset = torch.utils.data.TensorDataset(x[order], y[order])
    loader = torch.utils.data.DataLoader(dataset, batch_size=64)
    s = _setup(mlp(), loader)
    assert "BATCHES_NOT_SHUFFLED" in _codes(s)
    change = _apply("shuffle_loader", s)
    assert change.patch == ("DataLoader(dataset, batch_size=64, shuffle=True)",)
    assert isinstance(change.setup.data.sampler, torch.utils.data.RandomSampler)
    assert isinstance(loader.sampler, torch.utils.data.SequentialSampler)  # the user's is kept
    assert change.setup.data.dataset is dataset
    assert "BATCHES_NOT_SHUFFLED" not in _codes(change.setup)


def test_remove_output_activation_where_the_structure_is_explicit(data):
    s = _setup(nn.Sequential(mlp(), nn.Softmax(dim=1)), data)
    assert "DOUBLE_SOFTMAX" in _codes(s)
    change = _apply("remove_output_activation", s)
    assert change.patch == ("remove Softmax(dim=1) at model[1]: the loss takes the logits",)
    assert isinstance(change.setup.model[1], nn.Identity)
    assert "DOUBLE_SOFTMAX" not in _codes(change.setup)


def test_remove_output_activation_skips_a_functional_softmax(data):
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = mlp()

        def forward(self, x):
            return F.softmax(self.fc(x), dim=1)

    s = _setup(Functional(), data)
    finding = next(f for f in bs.diagnose(s.model, data, lr=1e-3, progress=False)
                   if f.code == "DOUBLE_SOFTMAX")  # fmt: skip
    with pytest.raises(Skip, match="functional call in forward"):
        REMEDIES["remove_output_activation"].apply(s.copy(), finding)


def test_insert_relu_between_two_linear_layers(data):
    s = _setup(nn.Sequential(nn.Linear(20, 32), nn.Linear(32, 4)), data)
    assert "MISSING_NONLINEARITY" in _codes(s)
    change = _apply("insert_relu", s)
    assert change.patch == ("insert ReLU() after model[0]",)
    assert isinstance(change.setup.model[1], nn.ReLU)
    assert "MISSING_NONLINEARITY" not in _codes(change.setup)


def test_train_mode(data):
    model = nn.Sequential(nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    s = _setup(model.eval(), data)
    assert "MODEL_IN_EVAL_MODE" in _codes(s)
    change = _apply("train_mode", s)
    assert change.setup.model.training and not model.training
    assert "MODEL_IN_EVAL_MODE" not in _codes(change.setup)


def test_every_registered_code_is_a_known_finding_code():
    from babysit.findings import CODES
    from babysit.repair import ORDER

    assert set(ORDER) <= set(CODES)
    assert {name for names in ORDER.values() for name in names} <= set(REMEDIES)


def test_blobs_are_learnable():
    x, y = blobs()
    assert x.shape == (600, 20) and set(y.tolist()) == {0, 1, 2, 3}


def test_data_remedies_read_float64_numpy_arrays_as_float32(data):
    x, y = data
    raw = ((x * 50 + 128).double().numpy(), y.numpy())
    change = _apply("standardize_inputs", _setup(mlp(), raw))
    assert change.setup.data[0].dtype == torch.float32
    assert change.setup.full_model(torch.from_numpy(raw[0]).float()).shape == (600, 4)
    assert raw[0].dtype.name == "float64"  # the user's array is untouched


def test_baseline_orders_use_registered_remedies():
    from babysit.repair import ORDER
    from babysit.repair.baselines import AUTOTRAINER, autotrainer_order, random_order

    assert {n for names in AUTOTRAINER.values() for n in names} <= set(REMEDIES)
    assert autotrainer_order("DEAD_RELU", ORDER["DEAD_RELU"])[0] == "batchnorm"
    assert autotrainer_order("DROPOUT_TOO_HIGH", ORDER["DROPOUT_TOO_HIGH"]) == ("dropout_half",)
    draws = [random_order(seed)("DEAD_RELU", ORDER["DEAD_RELU"]) for seed in range(20)]
    assert all(len(d) == 1 and d[0] in ORDER["DEAD_RELU"] for d in draws)
    assert len({d[0] for d in draws}) > 1
    assert random_order(3)("DEAD_RELU", ORDER["DEAD_RELU"]) == random_order(3)(
        "DEAD_RELU", ORDER["DEAD_RELU"]
    )


def test_remove_output_activation_never_guesses_a_hidden_module(data):
    class HeadFirst(nn.Module):  # the ReLU registered last is a hidden one, not the output's
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(32, 4)
            self.body = nn.Linear(20, 32)
            self.act = nn.ReLU()

        def forward(self, x):
            return F.softmax(self.head(self.act(self.body(x))), dim=1)

    s = _setup(HeadFirst(), data)
    finding = next(f for f in bs.diagnose(s.model, data, lr=1e-3, progress=False)
                   if f.code == "DOUBLE_SOFTMAX")  # fmt: skip
    assert finding.layer is None
    with pytest.raises(Skip, match="functional call in forward"):
        REMEDIES["remove_output_activation"].apply(s.copy(), finding)
