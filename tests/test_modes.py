"""Each module keeps its own train/eval flag through babysit's eval-mode measurements
(``babysit.modes``): a BatchNorm the user froze under a training model stays frozen."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from babysit.inputs import check_lr_find_data
from babysit.modes import eval_mode, kept_modes


def frozen_bn_model() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model.train()
    model[1].eval()  # fine-tuning keeps pretrained statistics this way
    return model


def modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_eval_mode_restores_each_modules_own_flag_also_after_an_error():
    model = frozen_bn_model()
    before = modes(model)
    with eval_mode(model):
        assert not any(modes(model))
    assert modes(model) == before == [True, True, False, True, True]
    with pytest.raises(RuntimeError, match="inside"), kept_modes(model):
        model.train()
        raise RuntimeError("inside")
    assert modes(model) == before


def test_lr_find_data_check_leaves_a_frozen_batchnorm_frozen():
    # model.train(was_training) put the BatchNorm back in training mode here
    model = frozen_bn_model()
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    check_lr_find_data(model, x, y, nn.CrossEntropyLoss(), batch_size=32)
    assert modes(model) == [True, True, False, True, True]


def test_fit_activation_snapshots_leave_a_frozen_batchnorm_frozen(tmp_path):
    """fit's run_dir measures activations at init, in eval mode: the frozen BatchNorm's
    running statistics must not move during the training that follows."""
    import babysit as bs

    torch.manual_seed(0)
    model = frozen_bn_model()
    stats = model[1].running_mean.clone()
    x, y = torch.randn(256, 4), torch.randint(0, 3, (256,))
    bs.fit(model, (x, y), epochs=1, batch_size=32, lr=1e-2, run_dir=tmp_path / "run")
    assert not model[1].training
    torch.testing.assert_close(model[1].running_mean, stats, rtol=0, atol=0)
