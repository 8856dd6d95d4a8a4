"""Every threshold that turns a measurement into a finding: a named constant with its source.

``diagnose(..., thresholds={"dead_relu_warning": 0.5})`` and the monitors take overrides by
these names; :func:`resolve` rejects a name that does not exist.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["THRESHOLDS", "resolve"]

# name -> (value, why / source)
THRESHOLDS: dict[str, tuple[float, str]] = {
    # data
    "data_center_ratio": (
        1.0,
        "rms of per-feature means over rms of per-feature stds; lecture: zero-centre the data",
    ),
    "data_rms_scale": (
        10.0,
        "rms of all input values; raw 0..255 pixels give ~130 (UMLAUT: inputs outside [-1, 1])",
    ),
    "data_std_spread": (100.0, "largest over median per-feature std (non-constant features)"),
    "class_imbalance": (0.2, "rarest class count over most common class count"),
    "min_examples": (20.0, "the overfit check needs ~20 examples (lecture)"),
    "target_scale_high": (
        10.0,
        "rms of regression targets; as data_rms_scale for the inputs: a fresh network's outputs "
        "are ~N(0, 1), and MSE's gradients scale with the targets",
    ),
    "target_scale_low": (
        0.01,
        "rms of regression targets below which the loss and its gradients are ~1e-4 of a "
        "unit-scale problem's (the learning rate found for them is off by as much)",
    ),
    # loss at init
    "init_loss_tolerance": (
        1.0,
        "allowed |loss - ln C| in nats at init; lecture: expect ln C (2.3 for 10 classes)",
    ),
    "init_loss_ratio": (
        10.0,
        "regression: loss at init over the best constant predictor's loss (the target variance "
        "for MSE). Measured (MNIST-1D inputs, standardized targets, MLPs of depth 2-6, 3 seeds): "
        "PyTorch default, Xavier and He init start at 0.97-2.25x; inputs x10 75x, raw digits "
        "27x, N(0, 1) weights 2e5x",
    ),
    "reg_min_increase": (1e-4, "relative loss increase that weight decay must cause"),
    "reg_dominance": (1.0, "reg term over data loss above which regularization dominates"),
    "decoupled_decay_shrink": (
        8.0,
        "decoupled decay (AdamW): weight norm at init over the norm where the decay balances "
        "random-walk gradient steps, ||step|| / sqrt(2 lr wd). Measured on the MNIST-1D MLP, "
        "AdamW 1e-3, He / PyTorch init: wd 0.01 (the default) 0.74 / 0.31, wd 0.1 2.3 / 0.97, "
        "wd 1 7.4 / 3.1, wd 10 23 / 9.7: set between wd 1 and wd 10 (about 10x shrink)",
    ),
    # forward statistics
    "dead_relu_warning": (
        0.7,
        "docs/architecture.md, Definitions; AUTOTRAINER (ICSE'21) and DeepDiagnosis use 70%",
    ),
    "dead_relu_info": (0.1, "docs/architecture.md, Definitions: info from 10% dead units"),
    "dead_relu_learning": (
        0.5,
        "DEAD_RELU is a warning (not info) only while the mean training loss since the previous "
        "sample stays above this fraction of its start: dead units that stop learning leave the "
        "loss near its start (benchmarks/monitors.py's ReLU-killing runs: 0.75-1.0 of it when "
        "DEAD_RELU fires), while a 1-D convnet (AdamW 0.032, benchmarks/healthy_zoo.py) trains to "
        "its grid's best accuracy with 72-75% of a layer dead, its loss then 0.14-0.16 of it",
    ),
    "saturated_fraction": (
        0.5,
        "docs/architecture.md, Definitions; DeepDiagnosis (ICSE'22): > 50% saturated",
    ),
    "activation_collapse": (1e-2, "last over first hidden activation std (vanishing)"),
    "activation_growth": (1e2, "last over first hidden activation std (exploding)"),
    "activation_std_min": (1e-3, "absolute hidden activation std on standardized inputs"),
    # gradients
    "gradient_vanishing_ratio": (1e-3, "AUTOTRAINER (ICSE'21): ||g_first|| / ||g_last|| < 1e-3"),
    "gradient_vanishing_abs": (1e-4, "AUTOTRAINER (ICSE'21): and ||g_first|| < 1e-4"),
    "gradient_exploding_ratio": (70.0, "AUTOTRAINER (ICSE'21): ||g_first|| / ||g_last|| > 70"),
    "gradient_check_rel_error": (1e-4, "float64 central differences; cs231n notes: < 1e-4 OK"),
    "batch_dependence": (1e-6, "gradient reaching other examples, relative to the own one"),
    # training dynamics
    "loss_explosion": (
        3.0,
        "lecture: cost > 3× the original cost -> break out (babysit.divergence applies it, also "
        "to losses that start at or below zero)",
    ),
    "loss_min_decrease": (0.01, "relative decrease of the loss over diagnose's short run"),
    "train_loss_min_decrease": (
        0.05,
        "LR_TOO_LOW while training: relative decrease of the loss, first vs last 10% of the "
        "curve; measured: SGD 1e-4 on MNIST-1D 0.012-0.018 over 10 epochs, healthy runs >= 0.39 "
        "where the update-ratio gate opens (benchmarks/monitors.py)",
    ),
    "update_ratio_high": (
        3.0,
        "peak of the per-step median ratio over the first 10 steps; lecture: ~1e-3 healthy. "
        "Measured against trained quarter-decade grids (benchmarks/lr_find.py, issue 12 item 8): "
        "lrs within 2 points of the best peak at up to 0.55 (GRU, Adam), 0.49 (1-D convnet, "
        "AdamW) and 2.2 (a regression MLP with plain SGD, at its best lr: the small output "
        "layer moves by twice its size at first); the former 0.15 warned at the lr lr_find "
        "suggests (Adam on a digits MLP, 0.17). Adam 1 on an MLP peaks at ~7",
    ),
    "update_ratio_low": (
        1e-5,
        "median ratio over the run; lecture ~1e-3. Measured: healthy >= 1.3e-3, SGD 1e-4 6e-6",
    ),
    "lr_low_ratio_gate": (
        1e-3,
        "LR_TOO_LOW only when the weights move less than the lecture's ~1e-3 per step: a flat "
        "loss with normally moving weights is the model's fault, not the learning rate's",
    ),
    "plateau_flat": (
        0.03,
        "LOSS_PLATEAU_AT_START: window means within 3% of the first one count as flat "
        "(bad-init plateaus stay within 0.1%; PyTorch-default init's start within 0.5-0.7%)",
    ),
    "plateau_drop": (
        0.15,
        "LOSS_PLATEAU_AT_START: a fall of 15% below the plateau within 5 windows after it; "
        "measured: healthy <= 0.09, bad init 0.21 (MNIST-1D) to 0.67 (digits)",
    ),
    "loss_oscillation": (
        4.0,
        "LOSS_OSCILLATING: path length over net change of the smoothed loss (last half of "
        "20 windows); a descending curve scores ~1",
    ),
    "oscillation_rise": (
        0.25,
        "LOSS_OSCILLATING: the rises of the smoothed loss, each beyond one standard error of "
        "the mini-batch noise, must add up to 25% of its start",
    ),
    "oscillation_noise": (
        1.0,
        "LOSS_OSCILLATING: a rise of the smoothed loss counts by how far it exceeds this many "
        "standard errors of the mini-batch noise; measured (benchmarks/monitors.py, a Friedman "
        "regression at batch 32, SGD 1e-3 and 3e-3): 0 gave 13 false alarms in 20 healthy "
        "runs, 0.5 gave 3, 1.0 none; the oscillating MLPs were caught 6/9 at 0, 4/9 at 0.5, 3/9 "
        "at 1.0",
    ),
    "overfit_gap": (
        0.2,
        "OVERFITTING: train minus val accuracy for two epochs; lecture: 'big gap = overfitting'",
    ),
    "underfit_gap": (
        0.04,
        "UNDERFITTING: lecture 'no gap: increase model capacity'; on train accuracy in eval "
        "mode: healthy gaps >= 0.061, tiny/linear models <= 0.029 (benchmarks/monitors.py)",
    ),
    "underfit_accuracy": (0.6, "UNDERFITTING only when train accuracy is also below this"),
    "overfit_accuracy": (1.0, "lecture: overfit a small sample to 100% train accuracy"),
    "dropout_max": (0.5, "UMLAUT (Schoop et al., CHI'21): dropout above 0.5"),
}


def resolve(overrides: Mapping[str, float] | None) -> dict[str, float]:
    """Defaults merged with ``overrides``; an unknown name is a ``ValueError`` listing all."""
    values = {name: value for name, (value, _) in THRESHOLDS.items()}
    for name, value in (overrides or {}).items():
        if name not in values:
            raise ValueError(
                f"unknown threshold {name!r}; known thresholds: {', '.join(sorted(values))}"
            )
        values[name] = float(value)
    return values
