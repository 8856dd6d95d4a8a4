"""Remedies as data: for each finding code, the lecture's changes in the order ``fix`` tries them.

A remedy is a small function ``(set-up, finding) -> Change``: it edits the :class:`SetUp` it is
given (always a copy, see :meth:`SetUp.copy`: the user's model, optimizer and data are never
touched) and says what it changed as patch lines a user can follow. A remedy that cannot apply
to this set-up (no ``nn.Sequential`` to insert into, a functional activation, data that is not
in-memory tensors) raises :class:`Skip` with the reason, which ``fix`` records.

:data:`ORDER` maps each code to its remedies, best first. The order starts from the lecture's
advice (Xavier for tanh, He for ReLU, batch norm before the nonlinearity, zero-centre and scale
the data, lower the lr when the loss explodes, raise it when nothing moves, lower the
regularization when it dominates) and AUTOTRAINER's (Zhang et al., ICSE'21: vanishing
gradients -> ReLU + He -> batch norm; dying ReLU -> batch norm -> re-init -> Leaky ReLU; an
oscillating loss -> lr / 10). :data:`CODE_ORDER` is the order in which codes are repaired:
structure and data before initialization, initialization before the learning rate (the lr
that suits a badly scaled set-up is wrong for the repaired one). ``docs/architecture.md``,
"Repair".

The remedy functions live by what they edit: :mod:`.init_remedies`, :mod:`.structure_remedies`,
:mod:`.data_remedies`, :mod:`.optim_remedies` (shared tools in :mod:`.edit`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..findings import Finding
from .data_remedies import (
    shuffle_loader,
    standardize_inputs,
    standardize_targets,
    zero_center_inputs,
)
from .edit import Change, Skip, show
from .init_remedies import (
    leaky_relu,
    lsuv,
    reinit,
    relu_he,
    reset_biases,
    scale_output,
    zero_output,
)
from .optim_remedies import (
    decoupled_weight_decay,
    lr_down,
    lr_range_test,
    lr_sweep,
    lr_up,
    weight_decay_down,
)
from .setup import SetUp
from .structure_remedies import (
    batchnorm,
    dropout_half,
    insert_relu,
    remove_output_activation,
    train_mode,
)

__all__ = ["CODE_ORDER", "ORDER", "REMEDIES", "Change", "Remedy", "Skip", "remedies_for", "show"]


@dataclass(frozen=True)
class Remedy:
    """One remedy: ``apply(setup_copy, finding) -> Change`` (or raises :class:`Skip`); the
    finding (None when applied by hand) lets a remedy read the layer it names.

    ``repeat``: how many times ``fix`` may apply it again on top of itself while its finding
    persists (weight decay / 10 "until the regularization no longer dominates").
    ``retune_lr``: the remedy changes the scale of activations or gradients (data, init,
    structure), so when it removes its finding but does not train better at the old lr, ``fix``
    tries it once more with the range test's lr for the repaired set-up, verified together.
    """

    name: str
    summary: str
    apply: Callable[[SetUp, Finding | None], Change]
    repeat: int = 1
    retune_lr: bool = False


# ---------------------------------------------------------------------------------------------
# helpers: module paths and structure
# ---------------------------------------------------------------------------------------------


_ALL = [
    Remedy("reinit", "re-initialise by activation (He for ReLU, Xavier for tanh)", reinit,
           retune_lr=True),
    Remedy("lsuv", "LSUV init on a batch of the inputs", lsuv, retune_lr=True),
    Remedy("reset_biases", "every bias to 0", reset_biases, retune_lr=True),
    Remedy("batchnorm", "BatchNorm before each nonlinearity", batchnorm, retune_lr=True),
    Remedy("relu_he", "sigmoid/tanh -> ReLU with He init", relu_he, retune_lr=True),
    Remedy("leaky_relu", "ReLU -> LeakyReLU(0.01)", leaky_relu, retune_lr=True),
    Remedy("scale_output", "output layer weights x 0.1", scale_output, repeat=2,
           retune_lr=True),
    Remedy("zero_output", "output layer to zero", zero_output, retune_lr=True),
    Remedy("standardize_targets", "standardized regression targets", standardize_targets,
           retune_lr=True),
    Remedy("standardize_inputs", "prepend a fitted Standardize", standardize_inputs,
           retune_lr=True),
    Remedy("zero_center_inputs", "prepend a fitted ZeroCenter", zero_center_inputs,
           retune_lr=True),
    Remedy("lr_range_test", "lr from the LR range test", lr_range_test),
    Remedy("lr_sweep", "lr from one range-test sweep (the retune)", lr_sweep),
    Remedy("lr_down", "lr / 10", lr_down, repeat=2),
    Remedy("lr_up", "lr x 10", lr_up, repeat=2),
    Remedy("weight_decay_down", "weight decay / 10", weight_decay_down, repeat=4),
    Remedy("decoupled_weight_decay", "Adam -> AdamW", decoupled_weight_decay),
    Remedy("dropout_half", "dropout -> 0.5", dropout_half),
    Remedy("shuffle_loader", "a shuffled DataLoader", shuffle_loader),
    Remedy("remove_output_activation", "remove the activation on the logits",
           remove_output_activation, retune_lr=True),
    Remedy("insert_relu", "a ReLU between two linear layers", insert_relu, retune_lr=True),
    Remedy("train_mode", "model.train()", train_mode, retune_lr=True),
]  # fmt: skip

REMEDIES: dict[str, Remedy] = {r.name: r for r in _ALL}

_LR_HIGH = ("lr_range_test", "lr_down")
_LR_LOW = ("lr_range_test", "lr_up")

ORDER: dict[str, tuple[str, ...]] = {
    "DOUBLE_SOFTMAX": ("remove_output_activation",),
    "ACTIVATION_ON_OUTPUT": ("remove_output_activation",),
    "MISSING_NONLINEARITY": ("insert_relu",),
    "MODEL_IN_EVAL_MODE": ("train_mode",),
    "TARGET_SCALE": ("standardize_targets",),
    "DATA_SCALE": ("standardize_inputs",),
    "DATA_NOT_CENTERED": ("standardize_inputs", "zero_center_inputs"),
    "SYMMETRIC_INIT": ("reinit", "lsuv"),
    "DEAD_RELU": ("reset_biases", "reinit", "leaky_relu", "batchnorm"),
    "VANISHING_ACTIVATIONS": ("reinit", "lsuv", "batchnorm"),
    "EXPLODING_ACTIVATIONS": ("reinit", "lsuv", "batchnorm"),
    "SATURATED_ACTIVATIONS": ("reinit", "batchnorm", "relu_he"),
    "VANISHING_GRADIENTS": ("relu_he", "batchnorm", "lsuv"),
    "EXPLODING_GRADIENTS": ("reinit", "batchnorm", "lr_down"),
    "INIT_LOSS_MISMATCH": ("scale_output", "zero_output"),
    "DROPOUT_TOO_HIGH": ("dropout_half",),
    "REG_TOO_STRONG": ("weight_decay_down", "decoupled_weight_decay"),
    "NAN_LOSS": _LR_HIGH,
    "LR_TOO_HIGH": _LR_HIGH,
    "UPDATE_RATIO_HIGH": _LR_HIGH,
    "LOSS_OSCILLATING": _LR_HIGH,
    "LR_TOO_LOW": _LR_LOW,
    "UPDATE_RATIO_LOW": _LR_LOW,
    "BATCHES_NOT_SHUFFLED": ("shuffle_loader",),
}

# The order in which codes are repaired (those in ORDER; dict order above is the same).
CODE_ORDER: tuple[str, ...] = tuple(ORDER)


def remedies_for(code: str) -> tuple[str, ...]:
    """The remedy names for ``code`` in the order tried (empty: no automatic remedy)."""
    return ORDER.get(code, ())
