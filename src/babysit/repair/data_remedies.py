"""Remedies on the data: zero-centre and standardize the inputs (a fitted module prepended, so
the repaired model takes raw inputs), standardize regression targets (the inverse map
appended), and shuffle a loader's batches."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..batches import as_tensor
from ..findings import Finding
from .edit import Change, Skip, input_tensor, with_inputs
from .modules import FittedScaler, OutputScaler
from .setup import SetUp


def _fit_scaler(setup: SetUp, kind: str) -> Change:
    from ..data import Standardize, ZeroCenter

    what = "standardizing the inputs" if kind == "standardize" else "zero-centring the inputs"
    x = input_tensor(setup, what)
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
        setup.data = with_inputs(setup, FittedScaler(mean, scale)(x))
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
    input_tensor(setup, "standardizing the targets")
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
