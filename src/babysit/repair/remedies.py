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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..batches import as_tensor
from ..findings import Finding
from ..nn.activations import WEIGHT_LAYERS, activation_name, weight_layers
from .modules import FittedScaler, OutputScaler
from .setup import SetUp

__all__ = ["CODE_ORDER", "ORDER", "REMEDIES", "Change", "Remedy", "Skip", "remedies_for"]


class Skip(Exception):
    """A remedy that does not apply to this set-up; the message says why."""


@dataclass(frozen=True)
class Change:
    """What a remedy did: the edited set-up and the patch lines describing the edit."""

    setup: SetUp
    patch: tuple[str, ...]


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

SATURATING = (nn.Sigmoid, nn.Tanh)
RELU_LIKE = ("relu", "leaky_relu", "prelu", "elu", "gelu", "selu", "silu")


def show(path: str) -> str:
    """A module path as the user writes it: ``"body.0"`` -> ``model.body[0]``."""
    out = "model"
    for part in path.split(".") if path else []:
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out


def _set(model: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """``model`` with the submodule at ``path`` replaced (the root itself when path is '')."""
    if not path:
        return module
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)
    return model


def _sequentials(model: nn.Module) -> Iterator[tuple[str, nn.Sequential]]:
    for path, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            yield path, module


def _child(path: str, index: int) -> str:
    return f"{path}.{index}" if path else str(index)


def _batchnorm_for(layer: nn.Module) -> nn.Module | None:
    if isinstance(layer, nn.Linear):
        return nn.BatchNorm1d(layer.out_features)
    if isinstance(layer, nn.Conv1d):
        return nn.BatchNorm1d(layer.out_channels)
    if isinstance(layer, nn.Conv2d):
        return nn.BatchNorm2d(layer.out_channels)
    if isinstance(layer, nn.Conv3d):
        return nn.BatchNorm3d(layer.out_channels)
    return None


def _is_activation(module: nn.Module) -> bool:
    return activation_name(module) is not None


def _inputs(setup: SetUp, what: str) -> torch.Tensor:
    """The input tensor of in-memory ``(X, y)`` data, or :class:`Skip` saying why not."""
    if setup.forward is not None:
        raise Skip(f"{what} needs the input tensor, which forward= hides")
    data = setup.data
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        data = data.tensors
    if isinstance(data, tuple | list) and len(data) == 2:
        try:
            x = as_tensor(data[0], "X")  # float64 arrays become float32, as fit reads them
        except (TypeError, ValueError):
            x = None
        if x is not None and x.is_floating_point():
            return x
    raise Skip(f"{what} needs in-memory (X, y) float tensors; pass the data as (X, y)")


def _with_inputs(setup: SetUp, x: torch.Tensor) -> object:
    data = setup.data
    if isinstance(data, TensorDataset):
        return TensorDataset(x, data.tensors[1])
    return (x, data[1])


def _scheme(model: nn.Module) -> str:
    """He for a ReLU-family net, Xavier otherwise (tanh, sigmoid, linear): the lecture's rule."""
    acts = {activation_name(m) for m in model.modules()} - {None}
    return "he" if acts & set(RELU_LIKE) or not acts else "xavier"


def _weight_layer_list(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = list(weight_layers(model))
    if not layers:
        raise Skip("the model has no Linear/Conv layer to re-initialise")
    return layers


def _current_lr(setup: SetUp) -> float:
    from ..optim import DEFAULT_LR

    lr = setup.options.get("lr")
    if lr is not None:
        return float(lr)
    optimizer = setup.options.get("optimizer", "adam")
    if isinstance(optimizer, str):
        return DEFAULT_LR.get(optimizer.strip().lower(), 1e-3)
    raise Skip("the optimizer is a factory whose lr babysit cannot read; pass lr=")


def _fmt(value: float) -> str:
    return f"{value:.2g}"


# ---------------------------------------------------------------------------------------------
# remedies
# ---------------------------------------------------------------------------------------------


def reinit(setup: SetUp, finding: Finding | None) -> Change:
    """Re-initialise every Linear/Conv layer by its activation: He for ReLU, Xavier for tanh."""
    from ..nn import init_model

    _weight_layer_list(setup.model)
    scheme = _scheme(setup.model)
    init_model(setup.model, scheme, generator=_generator(setup))
    return Change(setup, (f'bs.nn.init_model(model, "{scheme}")',))


def lsuv(setup: SetUp, finding: Finding | None) -> Change:
    """Layer-sequential unit-variance init (Mishkin & Matas, 2015) on a batch of the inputs."""
    import warnings

    from ..nn import init_model

    _weight_layer_list(setup.model)
    x = _inputs(setup, "LSUV")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init_model(setup.model, "lsuv", data=x[:512], generator=_generator(setup))
    return Change(setup, ('bs.nn.init_model(model, "lsuv", data=X[:512])',))


def reset_biases(setup: SetUp, finding: Finding | None) -> Change:
    """Every Linear/Conv bias to 0 (a negative bias kills ReLUs before training starts)."""
    changed = []
    with torch.no_grad():
        for path, layer in _weight_layer_list(setup.model):
            if layer.bias is not None and bool((layer.bias != 0).any()):
                layer.bias.zero_()
                changed.append(show(path))
    if not changed:
        raise Skip("every bias is already 0")
    return Change(setup, (f"set the biases of {', '.join(changed)} to 0",))


def batchnorm(setup: SetUp, finding: Finding | None) -> Change:
    """Insert BatchNorm after each Linear/Conv that an activation follows in an nn.Sequential."""
    lines = []
    for path, seq in list(_sequentials(setup.model)):
        children = list(seq)
        rebuilt: list[nn.Module] = []
        inserted = False
        for i, module in enumerate(children):
            rebuilt.append(module)
            nxt = children[i + 1] if i + 1 < len(children) else None
            if isinstance(module, WEIGHT_LAYERS) and nxt is not None and _is_activation(nxt):
                norm = _batchnorm_for(module)
                if norm is not None:
                    rebuilt.append(norm)
                    inserted = True
                    size = norm.num_features
                    lines.append(
                        f"insert {type(norm).__name__}({size}) after {show(_child(path, i))}"
                    )
        if inserted:
            setup.model = _set(setup.model, path, nn.Sequential(*rebuilt))
    if not lines:
        raise Skip(
            "no nn.Sequential with a Linear/Conv layer followed by an activation module to insert "
            "into (a functional forward cannot be edited): add nn.BatchNorm1d/2d by hand"
        )
    return Change(setup, tuple(lines))


def _swap(setup: SetUp, kinds: tuple[type, ...], make: Callable[[], nn.Module]) -> list[str]:
    """Replace every module of ``kinds`` except the model's last module (the output's)."""
    last = _last_module_path(setup.model)
    swapped: dict[tuple[str, str], list[str]] = {}  # (old, new) -> paths, one line each
    for path, module in list(setup.model.named_modules()):
        if path and isinstance(module, kinds) and path != last:
            new = make()
            setup.model = _set(setup.model, path, new)
            swapped.setdefault((f"{type(module).__name__}()", repr(new)), []).append(show(path))
    return [
        f"replace {old} at {', '.join(paths)} with {new}" for (old, new), paths in swapped.items()
    ]


def relu_he(setup: SetUp, finding: Finding | None) -> Change:
    """Swap saturating activations (sigmoid, tanh) for ReLU and re-initialise with He."""
    from ..nn import init_model

    lines = _swap(setup, SATURATING, nn.ReLU)
    if not lines:
        raise Skip("no Sigmoid/Tanh module to swap (a functional activation cannot be edited)")
    init_model(setup.model, "he", generator=_generator(setup))
    return Change(setup, (*lines, 'bs.nn.init_model(model, "he")'))


def leaky_relu(setup: SetUp, finding: Finding | None) -> Change:
    """ReLU -> LeakyReLU(0.01): a unit with a negative input still gets a gradient."""
    lines = _swap(setup, (nn.ReLU,), lambda: nn.LeakyReLU(0.01))
    if not lines:
        raise Skip("no nn.ReLU module to swap (a functional relu cannot be edited)")
    return Change(setup, tuple(lines))


def scale_output(setup: SetUp, finding: Finding | None) -> Change:
    """Scale the output layer's weights by 0.1: logits near 0 give the loss ln C at init."""
    path, layer = _weight_layer_list(setup.model)[-1]
    with torch.no_grad():
        layer.weight.mul_(0.1)
        if layer.bias is not None:
            layer.bias.zero_()
    return Change(setup, (f"scale the weights of {show(path)} by 0.1 and zero its bias",))


def zero_output(setup: SetUp, finding: Finding | None) -> Change:
    """Zero the output layer: the loss at init is exactly the best constant predictor's."""
    path, layer = _weight_layer_list(setup.model)[-1]
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()
    return Change(setup, (f"nn.init.zeros_({show(path)}.weight); zero its bias",))


def _fit_scaler(setup: SetUp, kind: str) -> Change:
    from ..data import Standardize, ZeroCenter

    what = "standardizing the inputs" if kind == "standardize" else "zero-centring the inputs"
    x = _inputs(setup, what)
    per = "channel" if x.dim() >= 4 else "feature"
    est = (Standardize if kind == "standardize" else ZeroCenter)(per=per).fit(x)
    mean = est.mean_.to(x.dtype)
    scale = est.scale_.to(x.dtype) if kind == "standardize" else torch.ones_like(mean)
    if per == "channel":
        shape = (-1,) + (1,) * (x.dim() - 2)
        mean, scale = mean.reshape(shape), scale.reshape(shape)
    scaler = FittedScaler(mean, scale)
    if setup.preprocess is not None:  # fitted on what the model sees: compose the two
        scaler = nn.Sequential(setup.preprocess, scaler)
    with torch.no_grad():
        setup.data = _with_inputs(setup, FittedScaler(mean, scale)(x))
    setup.preprocess = scaler
    name = "Standardize" if kind == "standardize" else "ZeroCenter"
    return Change(
        setup,
        (
            f"preprocess the inputs with bs.data.{name}(per={per!r}).fit(X_train) "
            "(Repair.model has it built in as its first module)",
        ),
    )


def standardize_inputs(setup: SetUp, finding: Finding | None) -> Change:
    """Prepend a fitted Standardize: ``(x - mean) / std`` (the lecture's normalization)."""
    return _fit_scaler(setup, "standardize")


def zero_center_inputs(setup: SetUp, finding: Finding | None) -> Change:
    """Prepend a fitted ZeroCenter: ``x - mean`` (the lecture's first preprocessing step)."""
    return _fit_scaler(setup, "zero_center")


def standardize_targets(setup: SetUp, finding: Finding | None) -> Change:
    """Train on standardized regression targets; append ``y * std + mean`` to the model."""
    _inputs(setup, "standardizing the targets")
    data = setup.data
    pair = data.tensors if isinstance(data, TensorDataset) else data
    y = as_tensor(pair[1], "y")
    if not y.is_floating_point():
        raise Skip("the targets are not real-valued: standardizing them applies to regression")
    mean = y.mean(0)
    std = y.std(0, unbiased=False)
    scale = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
    post = OutputScaler(mean, scale)
    if setup.postprocess is not None:
        post = nn.Sequential(post, setup.postprocess)
    setup.postprocess = post
    z = (y - mean) / scale
    x = as_tensor(pair[0], "X")
    setup.data = TensorDataset(x, z) if isinstance(data, TensorDataset) else (x, z)
    shown = _vector(mean), _vector(scale)
    return Change(
        setup,
        (
            f"train on standardized targets y' = (y - {shown[0]}) / {shown[1]} and map the "
            f"output back with output * {shown[1]} + {shown[0]} (Repair.model has it built in "
            "as its last module)",
        ),
    )


def _vector(t: torch.Tensor) -> str:
    values = [f"{v:.4g}" for v in t.reshape(-1).tolist()]
    return (
        values[0]
        if len(values) == 1
        else f"[{', '.join(values[:4])}{', ...' if len(values) > 4 else ''}]"
    )


def lr_range_test(setup: SetUp, finding: Finding | None) -> Change:
    """The learning rate the LR range test suggests for this (already repaired) set-up."""
    from ..tuning import lr_find

    opts = setup.options
    result = lr_find(
        setup.model,
        setup.data,
        optimizer=opts.get("optimizer", "adam"),
        loss_fn=opts.get("loss_fn"),
        weight_decay=opts.get("weight_decay", 0.0),
        forward=opts.get("forward"),
        task=opts.get("task", "auto"),
        device=opts.get("device", "cpu"),
        seed=opts.get("seed", 0),
    )
    if result.suggestion is None or not math.isfinite(result.suggestion):
        reasons = "; ".join(result.reasons) or "no suggestion"
        raise Skip(f"the range test gave no learning rate ({reasons})")
    lr = float(f"{result.suggestion:.2g}")
    setup.options["lr"] = lr
    return Change(setup, (f"lr={_fmt(lr)} (the LR range test's suggestion)",))


def lr_down(setup: SetUp, finding: Finding | None) -> Change:
    """lr / 10 (the lecture: when the cost explodes, the lr is too high)."""
    lr = _current_lr(setup) / 10
    setup.options["lr"] = lr
    return Change(setup, (f"lr={_fmt(lr)}",))


def lr_up(setup: SetUp, finding: Finding | None) -> Change:
    """lr x 10 (the lecture: a loss that barely moves means the lr is too low)."""
    lr = _current_lr(setup) * 10
    setup.options["lr"] = lr
    return Change(setup, (f"lr={_fmt(lr)}",))


def weight_decay_down(setup: SetUp, finding: Finding | None) -> Change:
    """weight_decay / 10; ``fix`` repeats it while the regularization still dominates."""
    wd = float(setup.options.get("weight_decay") or 0.0)
    if wd <= 0:
        raise Skip("weight_decay is already 0: the regularization is in the loss or the model")
    setup.options["weight_decay"] = wd / 10
    return Change(setup, (f"weight_decay={_fmt(wd / 10)}",))


def decoupled_weight_decay(setup: SetUp, finding: Finding | None) -> Change:
    """Adam + L2 -> AdamW (Loshchilov & Hutter, 2019): the decay no longer enters the gradient."""
    optimizer = setup.options.get("optimizer", "adam")
    if not isinstance(optimizer, str) or optimizer.strip().lower() != "adam":
        raise Skip(f"decoupled weight decay replaces Adam; the optimizer is {optimizer!r}")
    setup.options["optimizer"] = "adamw"
    return Change(setup, ('optimizer="adamw" (decoupled weight decay)',))


def dropout_half(setup: SetUp, finding: Finding | None) -> Change:
    """Every dropout rate above 0.5 -> 0.5 (UMLAUT's rule; Srivastava et al. use 0.5)."""
    lines = []
    for path, module in setup.model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0.5:
            lines.append(f"{show(path)}.p = 0.5 (was {module.p:g})")
            module.p = 0.5
    if not lines:
        raise Skip("no dropout module above 0.5 (a functional dropout cannot be edited)")
    return Change(setup, tuple(lines))


def shuffle_loader(setup: SetUp, finding: Finding | None) -> Change:
    """A DataLoader over the same dataset with ``shuffle=True`` (seeded)."""
    loader = setup.data
    if not isinstance(loader, DataLoader) or not isinstance(loader.dataset, Dataset):
        raise Skip("the data is not a DataLoader over a map-style dataset")
    if not hasattr(loader.dataset, "__len__"):
        raise Skip("the loader's dataset has no length: shuffle it at its source")
    generator = torch.Generator().manual_seed(int(setup.options.get("seed", 0)))
    new = DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        shuffle=True,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        drop_last=loader.drop_last,
        generator=generator,
    )
    setup.data = new
    setup.raw_data = new
    return Change(setup, (f"DataLoader(dataset, batch_size={loader.batch_size}, shuffle=True)",))


def _last_module_path(model: nn.Module) -> str | None:
    """The path of the last leaf module in registration order (the output's, in a Sequential)."""
    leaves = [p for p, m in model.named_modules() if p and not list(m.children())]
    return leaves[-1] if leaves else None


OUTPUT_ACTIVATIONS = (nn.Softmax, nn.Sigmoid, nn.ReLU, nn.Tanh, nn.LogSigmoid, nn.Softplus)


def remove_output_activation(setup: SetUp, finding: Finding | None) -> Change:
    """Replace the module that turns the logits into probabilities/activations by Identity."""
    path = finding.layer if finding is not None else None
    module = None
    if path:
        try:
            module = setup.model.get_submodule(path)
        except AttributeError:
            module = None
    if module is None or not isinstance(module, OUTPUT_ACTIVATIONS):
        path = _last_module_path(setup.model)
        module = setup.model.get_submodule(path) if path else None
    if path is None or not isinstance(module, OUTPUT_ACTIVATIONS):
        raise Skip(
            "the output activation is not a module babysit can remove (a functional call in "
            "forward): delete it from forward by hand; the loss applies it"
        )
    setup.model = _set(setup.model, path, nn.Identity())
    return Change(setup, (f"remove {module!r} at {show(path)}: the loss takes the logits",))


def insert_relu(setup: SetUp, finding: Finding | None) -> Change:
    """Insert a ReLU between two weight layers that follow each other in an nn.Sequential."""
    lines = []
    for path, seq in list(_sequentials(setup.model)):
        children = list(seq)
        rebuilt: list[nn.Module] = []
        inserted = False
        for i, module in enumerate(children):
            rebuilt.append(module)
            nxt = children[i + 1] if i + 1 < len(children) else None
            if isinstance(module, WEIGHT_LAYERS) and isinstance(nxt, WEIGHT_LAYERS):
                rebuilt.append(nn.ReLU())
                inserted = True
                lines.append(f"insert ReLU() after {show(_child(path, i))}")
        if inserted:
            setup.model = _set(setup.model, path, nn.Sequential(*rebuilt))
    if not lines:
        raise Skip(
            "no two weight layers in a row inside an nn.Sequential: add the activation "
            "in forward by hand"
        )
    return Change(setup, tuple(lines))


def train_mode(setup: SetUp, finding: Finding | None) -> Change:
    """``model.train()``: dropout and batch norm behave as in training."""
    setup.model.train()
    return Change(setup, ("model.train() before the training loop",))


def _generator(setup: SetUp) -> torch.Generator:
    return torch.Generator().manual_seed(int(setup.options.get("seed", 0)))


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
