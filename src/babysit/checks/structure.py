"""Structure checks: what the model's layer order makes explicit.

Static checks judge only what ``nn.Sequential`` order states. A model written with functional
calls in ``forward`` is never flagged for what cannot be seen (docs/architecture.md, "Healthy
means silent").
"""

from __future__ import annotations

import torch
from torch import nn

from ..findings import Finding
from ..nn.activations import WEIGHT_LAYERS, activation_name
from ._base import Context, check, finding

# Modules that are affine or pass values through: between two weight layers they leave the
# composition linear (BatchNorm is an affine map at inference; dropout only rescales).
_AFFINE = (
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
)
_OUTPUT_SQUASHERS = {"relu", "sigmoid", "tanh", "leaky_relu", "elu", "selu", "gelu", "silu"}


@check("layer_order", codes=["MISSING_NONLINEARITY", "ACTIVATION_ON_OUTPUT", "DROPOUT_TOO_HIGH"])
def layer_order(ctx: Context) -> list[Finding]:
    """Two weight layers with nothing nonlinear between, a squashed output, heavy dropout."""
    found = []
    for first, second in _linear_pairs(ctx.model):
        found.append(
            finding(
                "MISSING_NONLINEARITY",
                f"layers '{first}' and '{second}' follow each other with nothing nonlinear "
                "between: together they are one linear map",
                f"put an activation after '{first}' (e.g. nn.ReLU()), or drop one of the layers",
                {"first": first, "second": second},
                layer=second,
            )
        )
    last = _last_leaf(ctx.model)
    if ctx.classification and last is not None:
        name, module = last
        act = activation_name(module)
        if act in _OUTPUT_SQUASHERS:
            found.append(
                finding(
                    "ACTIVATION_ON_OUTPUT",
                    f"the model ends in {type(module).__name__} ('{name}'): the logits fed to "
                    "the classification loss are squashed or clipped",
                    "end the model with a plain nn.Linear: the loss applies the softmax",
                    {"layer_type": type(module).__name__},
                    layer=name,
                )
            )
    for name, module in ctx.model.named_modules():
        dropout = isinstance(module, nn.modules.dropout._DropoutNd)
        if dropout and module.p > ctx.thresholds["dropout_max"]:
            found.append(
                finding(
                    "DROPOUT_TOO_HIGH",
                    f"dropout '{name}' drops {module.p:.0%} of its inputs",
                    "use p <= 0.5 (0.5 for large fully connected layers, less elsewhere)",
                    {"p": module.p},
                    layer=name,
                )
            )
    return found


def _linear_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Consecutive weight layers inside any ``nn.Sequential`` with only affine modules between."""
    pairs = []
    for prefix, container in model.named_modules():
        if not isinstance(container, nn.Sequential):
            continue
        previous = None
        for child_name, child in container.named_children():
            path = f"{prefix}.{child_name}" if prefix else child_name
            if isinstance(child, WEIGHT_LAYERS):
                if previous is not None:
                    pairs.append((previous, path))
                previous = path
            elif not isinstance(child, _AFFINE):
                previous = None  # an activation, or a module we cannot see into
    return pairs


def _last_leaf(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The module that produces the output, when ``nn.Sequential`` order makes it explicit."""
    name, module = "", model
    while isinstance(module, nn.Sequential) and len(module):
        child_name = str(len(module) - 1)
        name = f"{name}.{child_name}" if name else child_name
        module = module[-1]
    return (name, module) if name else None


@check("output_kind", codes=["DOUBLE_SOFTMAX"], needs_labels=True)
def output_kind(ctx: Context) -> list[Finding]:
    """Probabilities fed to a loss that expects logits (CrossEntropyLoss) or log-probs (NLL)."""
    out = ctx.output()
    if out is None or not ctx.classification or out.dim() != 2 or out.shape[1] < 2:
        return []
    out = out.detach().double()
    rows = out.sum(1)
    probabilities = bool(
        (out >= 0).all() and (out <= 1).all() and torch.allclose(rows, torch.ones_like(rows))
    )
    if not probabilities:
        return []
    loss = type(ctx.loss_fn).__name__
    return [
        finding(
            "DOUBLE_SOFTMAX",
            f"the model outputs probabilities (each row in [0, 1], summing to 1) into {loss}, "
            "which applies its own (log-)softmax: gradients shrink and the loss saturates",
            "remove the final Softmax (CrossEntropyLoss wants logits), or use LogSoftmax "
            "with NLLLoss",
            {"loss": loss, "row_sum_mean": float(rows.mean()), "max_output": float(out.max())},
        )
    ]


@check("batch_order", codes=["BATCHES_NOT_SHUFFLED"])
def batch_order(ctx: Context) -> list[Finding]:
    """A DataLoader over label-sorted data with ``shuffle=False`` feeds one class at a time."""
    loader = ctx.data
    if not isinstance(loader, torch.utils.data.DataLoader) or not ctx.classification:
        return []
    labels = []
    for i, batch in enumerate(loader):
        if i == 4 or not isinstance(batch, tuple | list) or len(batch) < 2:
            break
        y = torch.as_tensor(batch[1])
        if y.is_floating_point() or y.dim() != 1 or len(y) < 8:
            return []
        labels.append(y)
    if len(labels) < 2:
        return []
    single_class = sum(int(len(torch.unique(y)) == 1) for y in labels)
    joined = torch.cat(labels)
    is_sorted = bool((joined[1:] >= joined[:-1]).all()) and len(torch.unique(joined)) > 1
    if single_class < 0.75 * len(labels) and not is_sorted:
        return []
    return [
        finding(
            "BATCHES_NOT_SHUFFLED",
            f"the DataLoader's first {len(labels)} batches are label-sorted "
            f"({single_class} hold a single class): each step sees one class at a time",
            "create the training DataLoader with shuffle=True",
            {"single_class_batches": single_class, "first_labels": joined[:16].tolist()},
        )
    ]


def _frozen_on_purpose(module: nn.Module) -> bool:
    """A batch norm whose parameters are all frozen, kept in eval mode: a fine-tune keeping the
    pretrained statistics (fit keeps it in eval too), not a forgotten model.train()."""
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


@check("model_mode", codes=["MODEL_IN_EVAL_MODE"])
def model_mode(ctx: Context) -> list[Finding]:
    """Dropout and batch norm behave as at test time when their module is in eval mode."""
    stuck = [
        name
        for name, module in ctx.model.named_modules()
        if not module.training
        and isinstance(module, nn.modules.dropout._DropoutNd | nn.modules.batchnorm._BatchNorm)
        and not _frozen_on_purpose(module)
    ]
    if not stuck:
        return []
    return [
        finding(
            "MODEL_IN_EVAL_MODE",
            f"{len(stuck)} dropout/batch-norm module(s) are in eval mode ({', '.join(stuck[:5])}):"
            " trained like this, dropout does nothing and batch norm never updates its statistics",
            "call model.train() before training (and model.eval() only to evaluate)",
            {"modules": stuck},
            layer=stuck[0],
        )
    ]
