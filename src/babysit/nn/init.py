"""Weight initialization schemes of CS231n Lecture 6, by name, and :func:`init_model` to apply one.

The lecture's story, in order: ``W = 0`` (or any constant) makes every unit of a layer compute
the same thing, so symmetry never breaks; small random numbers (``0.01 * randn``) work for small
nets but make the activations of a deep net collapse to zero; Xavier (Glorot & Bengio, 2010:
``std = sqrt(2 / (fan_in + fan_out))``, the lecture's ``1 / sqrt(fan_in)`` for a square layer)
keeps a deep tanh net's activations at a healthy scale but halves the variance at every ReLU;
He init (``std = sqrt(2 / fan_in)``) puts that factor 2 back. The data-driven schemes (LSUV,
data-dependent init) measure the net on a batch and rescale it until the variance is right.

Each per-tensor scheme is a small function with a trailing underscore (it fills the tensor in
place and returns it), as in :mod:`torch.nn.init`, which does the sampling underneath. Fans come
from torch's own helpers, gains from :func:`babysit.nn.activations.gain`.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 10))
>>> model = init_model(model, "he", generator=torch.Generator().manual_seed(0))
>>> round(model[0].weight.std().item() * 1000**0.5, 2)  # hidden layer: gain sqrt(2)
1.41
>>> round(model[2].weight.std().item() * 1000**0.5, 2)  # output layer: linear, gain 1
1.0
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.init import _calculate_correct_fan, _calculate_fan_in_and_fan_out
from torch.utils.data import DataLoader, Dataset

from ..modes import eval_mode
from .activations import gain as activation_gain
from .activations import layer_nonlinearities, weight_layers

__all__ = [
    "INIT_SCHEMES",
    "data_dependent_",
    "he_normal_",
    "he_uniform_",
    "init_model",
    "lecun_normal_",
    "lsuv_",
    "random_walk_",
    "random_walk_gain",
]

INIT_SCHEMES: tuple[str, ...] = (
    "zeros",
    "constant",
    "normal",
    "uniform",
    "xavier_normal",
    "xavier_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "orthogonal",
    "random_walk",
    "lsuv",
    "data_dependent",
)
ALIASES: dict[str, str] = {"xavier": "xavier_normal", "he": "he_normal", "kaiming": "he_normal"}

# Sussillo & Abbott (2014) give closed forms for g only for linear and ReLU networks (their
# abstract says so). For tanh, their Sec. 2.3 finds g numerically; TensorFlow's
# uniform_unit_scaling_initializer docs quote it as "linear 1.0, relu ~1.43, tanh ~1.15" (1.43 is
# the ReLU formula at N = 100). Summaries of the paper's Sec. 3 add that g in 1.1-1.3 trains well.
# Not read from the paper's own text: pass g= to override.
RANDOM_WALK_TANH_G = 1.15

# The batch taken from a Dataset (not a DataLoader) for LSUV and data-dependent init. Mishkin &
# Matas (2015) use one mini-batch; 512 examples estimate a variance to about ±6%.
DATASET_BATCH = 512

# A unit whose pre-activation std is below this on the data is left unscaled by data_dependent_:
# dividing by ~0 would blow its weights up (e.g. a conv channel that sees a constant input).
MIN_UNIT_STD = 1e-8


# ---------------------------------------------------------------------------------------------
# Per-tensor schemes (those torch.nn.init lacks; the others are called from torch directly)
# ---------------------------------------------------------------------------------------------


def he_normal_(
    tensor: torch.Tensor,
    nonlinearity: str = "relu",
    param: float | None = None,
    *,
    mode: str = "fan_in",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Fill ``tensor`` from :math:`\mathcal{N}(0, \sigma^2)`, He et al. (2015), "Delving Deep
    into Rectifiers".

    .. math:: \sigma = \frac{\text{gain}}{\sqrt{\text{fan}}}

    Unlike :func:`torch.nn.init.kaiming_normal_`, the gain comes from
    :func:`babysit.nn.activations.gain`, so ELU, GELU, SiLU, PReLU and maxout work too.

    Args:
        tensor: an n-dimensional weight, ``n >= 2``.
        nonlinearity: the activation after the layer (``"linear"`` for none).
        param: the negative slope of leaky_relu/prelu.
        mode: ``"fan_in"`` keeps the forward variance, ``"fan_out"`` the backward one.
        generator: the random generator to sample from.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> w = he_normal_(torch.empty(1000, 1000), "relu", generator=g)
        >>> round(w.std().item(), 3)  # sqrt(2 / 1000)
        0.045
    """
    std = activation_gain(nonlinearity, param) / math.sqrt(_fan(tensor, mode))
    return nn.init.normal_(tensor, 0.0, std, generator=generator)


def he_uniform_(
    tensor: torch.Tensor,
    nonlinearity: str = "relu",
    param: float | None = None,
    *,
    mode: str = "fan_in",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Fill ``tensor`` from :math:`\mathcal{U}(-b, b)`, He et al. (2015), uniform variant.

    .. math:: b = \text{gain} \sqrt{\frac{3}{\text{fan}}}

    which gives the same variance as :func:`he_normal_`. Args are those of :func:`he_normal_`.

    Example:
        >>> w = he_uniform_(torch.empty(300, 300), "tanh")
        >>> bool(w.abs().max() <= 5 / 3 * (3 / 300) ** 0.5)
        True
    """
    bound = activation_gain(nonlinearity, param) * math.sqrt(3.0 / _fan(tensor, mode))
    return nn.init.uniform_(tensor, -bound, bound, generator=generator)


def lecun_normal_(
    tensor: torch.Tensor, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""Fill ``tensor`` from :math:`\mathcal{N}(0, 1/\text{fan\_in})`, LeCun et al. (1998),
    "Efficient BackProp".

    .. math:: \sigma = \frac{1}{\sqrt{\text{fan\_in}}}

    The lecture's "Xavier" line ``W = np.random.randn(fan_in, fan_out) / np.sqrt(fan_in)``; the
    init SELU networks assume (Klambauer et al., 2017).

    Args:
        tensor: an n-dimensional weight, ``n >= 2``.
        generator: the random generator to sample from.

    Example:
        >>> w = lecun_normal_(torch.empty(1000, 400), generator=torch.Generator().manual_seed(0))
        >>> round(w.std().item(), 3)  # 1 / sqrt(400)
        0.05
    """
    fan_in, _ = _calculate_fan_in_and_fan_out(tensor)
    return nn.init.normal_(tensor, 0.0, 1.0 / math.sqrt(fan_in), generator=generator)


def random_walk_gain(nonlinearity: str, fan_in: int, param: float | None = None) -> float:
    r"""The scale ``g`` of Sussillo & Abbott (2014) that makes the log gradient norm an unbiased
    random walk across layers of width ``N = fan_in``.

    .. math::
        g_\text{linear} = e^{1/(2N)}, \qquad
        g_\text{ReLU} = \sqrt{2}\, e^{1.2 / (\max(N, 6) - 2.4)}, \qquad
        g_\text{tanh} \approx 1.15

    The linear and ReLU forms are the paper's equations; the paper has no closed form for tanh
    and computes ``g ≈ 1.15`` numerically (:data:`RANDOM_WALK_TANH_G`). Any other activation gets
    ``gain(nonlinearity) * exp(1 / (2N))``: an extrapolation of the linear correction, not a
    result of the paper.

    Example:
        >>> round(random_walk_gain("relu", 100), 4)
        1.4317
    """
    key = nonlinearity.strip().lower().replace("-", "_")
    if fan_in < 1:
        raise ValueError(f"random_walk_gain needs fan_in >= 1, got {fan_in!r}")
    if key == "relu":
        return math.sqrt(2.0) * math.exp(1.2 / (max(fan_in, 6) - 2.4))
    if key == "tanh":
        return RANDOM_WALK_TANH_G
    return activation_gain(key, param) * math.exp(1.0 / (2.0 * fan_in))


def random_walk_(
    tensor: torch.Tensor,
    nonlinearity: str = "linear",
    param: float | None = None,
    *,
    g: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Fill ``tensor`` from :math:`\mathcal{N}(0, g^2/N)`, Sussillo & Abbott (2014), "Random
    Walk Initialization for Training Very Deep Feedforward Networks".

    .. math:: W_{ij} \sim \mathcal{N}\left(0, \frac{g^2}{N}\right), \quad N = \text{fan\_in}

    With ``g`` from :func:`random_walk_gain`, the log of the back-propagated gradient norm does
    a zero-drift random walk over depth, whose variance grows only linearly with depth.

    Args:
        tensor: an n-dimensional weight, ``n >= 2``.
        nonlinearity: the activation after the layer (``"linear"`` for none).
        param: the negative slope of leaky_relu/prelu.
        g: override the scale (the paper suggests tuning it around its formula).
        generator: the random generator to sample from.

    Example:
        >>> w = random_walk_(torch.empty(1000, 100), "relu")
        >>> w.shape
        torch.Size([1000, 100])
    """
    fan_in, _ = _calculate_fan_in_and_fan_out(tensor)
    scale = random_walk_gain(nonlinearity, fan_in, param) if g is None else g
    return nn.init.normal_(tensor, 0.0, scale / math.sqrt(fan_in), generator=generator)


def _fan(tensor: torch.Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return _calculate_correct_fan(tensor, mode)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Schemes by name: each takes (weight, nonlinearity, param, generator, **its keywords)
# ---------------------------------------------------------------------------------------------

_Gen = torch.Generator | None


def _zeros(w: torch.Tensor, act: str, param: float | None, gen: _Gen) -> None:
    nn.init.zeros_(w)


def _constant(w: torch.Tensor, act: str, param: float | None, gen: _Gen, *, value: float) -> None:
    nn.init.constant_(w, value)


def _normal(
    w: torch.Tensor, act: str, param: float | None, gen: _Gen, *, std: float = 0.01
) -> None:
    _check_positive("normal", "std", std)  # the lecture's "small random numbers", 0.01 * randn
    nn.init.normal_(w, 0.0, std, generator=gen)


def _uniform(w: torch.Tensor, act: str, param: float | None, gen: _Gen, *, a: float = 0.05) -> None:
    _check_positive("uniform", "a", a)
    nn.init.uniform_(w, -a, a, generator=gen)


def _xavier_normal(
    w: torch.Tensor, act: str, param: float | None, gen: _Gen, *, gain: float = 1.0
) -> None:
    nn.init.xavier_normal_(w, gain, generator=gen)


def _xavier_uniform(
    w: torch.Tensor, act: str, param: float | None, gen: _Gen, *, gain: float = 1.0
) -> None:
    nn.init.xavier_uniform_(w, gain, generator=gen)


def _he_normal(
    w: torch.Tensor, act: str, param: float | None, gen: _Gen, *, mode: str = "fan_in"
) -> None:
    he_normal_(w, act, param, mode=mode, generator=gen)


def _he_uniform(
    w: torch.Tensor, act: str, param: float | None, gen: _Gen, *, mode: str = "fan_in"
) -> None:
    he_uniform_(w, act, param, mode=mode, generator=gen)


def _lecun_normal(w: torch.Tensor, act: str, param: float | None, gen: _Gen) -> None:
    lecun_normal_(w, generator=gen)


def _orthogonal(
    w: torch.Tensor, act: str, param: float | None, gen: _Gen, *, gain: float | None = None
) -> None:
    # Saxe et al. (2013), "Exact solutions to the nonlinear dynamics of learning in deep linear
    # neural networks": rows (or columns) orthonormal, scaled by the activation's gain.
    scale = activation_gain(act, param) if gain is None else gain
    nn.init.orthogonal_(w, scale, generator=gen)


def _random_walk(
    w: torch.Tensor, act: str, param: float | None, gen: _Gen, *, g: float | None = None
) -> None:
    random_walk_(w, act, param, g=g, generator=gen)


_TENSOR_SCHEMES: dict[str, Callable[..., None]] = {
    "zeros": _zeros,
    "constant": _constant,
    "normal": _normal,
    "uniform": _uniform,
    "xavier_normal": _xavier_normal,
    "xavier_uniform": _xavier_uniform,
    "he_normal": _he_normal,
    "he_uniform": _he_uniform,
    "lecun_normal": _lecun_normal,
    "orthogonal": _orthogonal,
    "random_walk": _random_walk,
}

# Random schemes data_dependent_ may start from: the rescaling fixes every unit's scale, so only
# the shape of the distribution matters (zeros/constant units would have no variance to rescale).
_DATA_DEPENDENT_BASES = tuple(s for s in _TENSOR_SCHEMES if s not in ("zeros", "constant"))


# ---------------------------------------------------------------------------------------------
# The model-level entry point
# ---------------------------------------------------------------------------------------------


def init_model(
    model: nn.Module,
    scheme: str,
    *,
    nonlinearity: str | None = None,
    data: Any = None,
    bias: float = 0.0,
    generator: torch.Generator | None = None,
    **kw: Any,
) -> nn.Module:
    """Initialize every Linear/Conv1d/2d/3d layer of ``model`` in place with ``scheme``.

    Schemes (see :data:`INIT_SCHEMES`; case-insensitive, ``-`` same as ``_``) and their keywords:
    ``"zeros"``, ``"constant"`` (``value=``, required), ``"normal"`` (``std=0.01``),
    ``"uniform"`` (``a=0.05``, U(-a, a)), ``"xavier_normal"``/``"xavier_uniform"`` (``gain=1.0``),
    ``"he_normal"``/``"he_uniform"`` (``mode="fan_in"``), ``"lecun_normal"``, ``"orthogonal"``
    (``gain=`` the activation's), ``"random_walk"`` (``g=``), ``"lsuv"`` (``tol=0.1``,
    ``max_iter=10``; needs ``data``), ``"data_dependent"`` (``base="lecun_normal"``; needs
    ``data``). Aliases: ``"xavier"`` -> ``"xavier_normal"``, ``"he"``/``"kaiming"`` ->
    ``"he_normal"``. Batch-norm layers keep PyTorch's defaults (weight 1, bias 0).

    Args:
        model: the model; it is modified in place and returned.
        scheme: the scheme's name.
        nonlinearity: the activation after *every* weight layer, output layer included.
            ``None`` infers it per layer from the module order
            (:func:`~babysit.nn.activations.layer_nonlinearities`): the output layer, followed
            by no activation, is ``"linear"``. LSUV ignores it (its orthogonal start has gain 1).
        data: a batch of inputs, ``(X, y)``, a Dataset or a DataLoader (its first batch); used
            by ``"lsuv"`` and ``"data_dependent"`` only.
        bias: the value every bias is set to (the lecture suggests 0.01 for ReLU).
            ``"data_dependent"`` sets biases itself.
        generator: the random generator to sample from, for reproducibility.
        **kw: the scheme's own keywords, listed above.

    Raises:
        ValueError: unknown scheme (the message lists the known ones), a model without weight
            layers, missing ``data`` for a data-driven scheme.
        TypeError: a keyword the scheme does not take, or a missing required one.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
        >>> init_model(model, "zeros", bias=0.01)[0].bias
        Parameter containing:
        tensor([0.0100, 0.0100, 0.0100], requires_grad=True)
    """
    name = _scheme_name(scheme)
    _check_keywords(name, kw)
    _weight_layers(model)
    if nonlinearity is not None:
        activation_gain(nonlinearity)  # an unknown name raises ValueError listing the known ones
    if name == "lsuv":
        failures = _lsuv(model, data, bias=bias, generator=generator, **kw)
        if failures:
            warnings.warn(_unconverged(failures, **kw), stacklevel=2)
    elif name == "data_dependent":
        data_dependent_(model, data, nonlinearity=nonlinearity, generator=generator, **kw)
    else:
        _init_layers(model, name, nonlinearity, bias, generator, kw)
    return model


def _init_layers(
    model: nn.Module,
    scheme: str,
    nonlinearity: str | None,
    bias: float,
    generator: torch.Generator | None,
    kw: dict[str, Any],
) -> None:
    fill = _TENSOR_SCHEMES[scheme]
    nonlinearities = _nonlinearities(model, nonlinearity)
    with torch.no_grad():
        for path, layer in _weight_layers(model):
            act, param = nonlinearities.get(path, ("linear", None))
            fill(layer.weight, act, param, generator, **kw)
            if layer.bias is not None:
                nn.init.constant_(layer.bias, bias)


def _nonlinearities(
    model: nn.Module, nonlinearity: str | None
) -> dict[str, tuple[str, float | None]]:
    """``{layer path: (activation, param)}``: inferred, or ``nonlinearity`` for every layer."""
    if nonlinearity is None:
        return layer_nonlinearities(model)
    return {path: (nonlinearity, None) for path, _ in weight_layers(model)}


def _scheme_name(scheme: str) -> str:
    if not isinstance(scheme, str):
        raise TypeError(f"an init scheme must be a name (str), got {type(scheme).__name__}")
    key = scheme.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in INIT_SCHEMES:
        raise ValueError(
            f"unknown init scheme {scheme!r}; known schemes: {', '.join(INIT_SCHEMES)} "
            f"(aliases: {', '.join(f'{a} -> {s}' for a, s in ALIASES.items())})"
        )
    return key


def _check_keywords(scheme: str, kw: dict[str, Any]) -> None:
    """TypeError for a keyword ``scheme`` does not take, or a required one that is missing."""
    params = _scheme_keywords(scheme)
    accepted = sorted(params)
    unknown = sorted(set(kw) - set(params))
    if unknown:
        raise TypeError(
            f"init scheme {scheme!r} got unexpected keyword argument(s) {unknown}; it accepts "
            f"{', '.join(accepted) or 'none'} (besides nonlinearity, data, bias, generator)"
        )
    for name, p in params.items():
        if p.default is inspect.Parameter.empty and name not in kw:
            raise TypeError(
                f"init scheme {scheme!r} needs {name}=...: "
                f"e.g. init_model(model, {scheme!r}, {name}=0.01)"
            )


def _scheme_keywords(scheme: str) -> dict[str, inspect.Parameter]:
    """The keyword-only parameters of a scheme, less those init_model passes itself."""
    fn = {"lsuv": lsuv_, "data_dependent": data_dependent_}.get(scheme) or _TENSOR_SCHEMES[scheme]
    return {
        name: p
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is p.KEYWORD_ONLY and name not in ("nonlinearity", "bias", "generator")
    }


def _weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = list(weight_layers(model))
    if not layers:
        raise ValueError(
            f"found no Linear/Conv1d/Conv2d/Conv3d layer in {type(model).__name__} to initialize; "
            "init_model initializes those layers only: initialize other parameters yourself"
        )
    return layers


def _check_positive(scheme: str, name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"init scheme {scheme!r} needs {name} > 0, got {name}={value!r}")


# ---------------------------------------------------------------------------------------------
# Data-driven schemes
# ---------------------------------------------------------------------------------------------


def lsuv_(
    model: nn.Module,
    data: Any,
    *,
    tol: float = 0.1,
    max_iter: int = 10,
    bias: float = 0.0,
    generator: torch.Generator | None = None,
) -> nn.Module:
    r"""Layer-sequential unit-variance init, Mishkin & Matas (2015), "All you need is a good init".

    Every weight layer starts orthogonal (Saxe et al., 2013); then, from the first layer to the
    last, the layer's output (pre-activation) ``B`` is measured on ``data`` through the whole
    model and its weights rescaled until its variance is one:

    .. math:: W \leftarrow \frac{W}{\sqrt{\operatorname{Var}(B)}}
              \quad \text{until} \quad |\operatorname{Var}(B) - 1| < \text{tol}

    The forwards run in eval mode (no dropout, batch norm on its running statistics) under
    :func:`torch.no_grad`; the model's train/eval modes are restored afterwards.

    Args:
        model: the model, modified in place and returned.
        data: a batch of inputs, ``(X, y)``, a Dataset or a DataLoader (its first batch).
        tol: the accepted distance of the variance from 1 (the paper's ``Tol_var``).
        max_iter: rescalings per layer (the paper's ``T_max``). One rescaling is exact on the
            batch (the variance is quadratic in ``W``) unless the variance is zero or not
            finite; layers left outside the tolerance are named, with their variance, in one
            warning.
        bias: the value every bias is set to.
        generator: the random generator of the orthogonal init.

    Example:
        >>> model = nn.Sequential(nn.Linear(20, 50), nn.Tanh(), nn.Linear(50, 5))
        >>> x = torch.randn(256, 20)
        >>> round(lsuv_(model, x)[0](x).var().item(), 1)
        1.0
    """
    failures = _lsuv(model, data, tol=tol, max_iter=max_iter, bias=bias, generator=generator)
    if failures:
        warnings.warn(_unconverged(failures, tol=tol, max_iter=max_iter), stacklevel=2)
    return model


def _lsuv(
    model: nn.Module,
    data: Any,
    *,
    tol: float = 0.1,
    max_iter: int = 10,
    bias: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[tuple[str, float]]:
    """LSUV proper; returns ``(layer path, variance reached)`` for each layer out of tolerance."""
    _check_positive("lsuv", "tol", tol)
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"init scheme 'lsuv' needs an integer max_iter >= 1, got {max_iter!r}")
    x = _data_batch(data, "lsuv", model)
    layers = _weight_layers(model)
    _init_layers(model, "orthogonal", "linear", bias, generator, {})
    failures = []
    with eval_mode(model), torch.no_grad():
        for path, layer in layers:
            var = _unit_variance_(model, x, path, layer, tol, max_iter)
            if var is not None and abs(var - 1.0) >= tol:
                failures.append((path, var))
    return failures


def _unit_variance_(
    model: nn.Module, x: torch.Tensor, path: str, layer: nn.Module, tol: float, max_iter: int
) -> float | None:
    """Rescale ``layer.weight`` until its output variance is within ``tol`` of 1; return it."""
    out = _layer_output(model, x, path, layer)
    if out is None:
        return None
    var = out.var().item()
    for _ in range(max_iter):
        if abs(var - 1.0) < tol or not math.isfinite(var) or var == 0.0:
            break  # done, or nothing to rescale: the caller reports a variance out of tolerance
        layer.weight.div_(math.sqrt(var))
        var = _layer_output(model, x, path, layer).var().item()
    return var


def _unconverged(failures: list[tuple[str, float]], *, tol: float = 0.1, max_iter: int = 10) -> str:
    layers = ", ".join(f"{path!r} (variance {var:.4g})" for path, var in failures)
    return (
        f"lsuv: {len(failures)} layer(s) not within tol={tol} of unit output variance after "
        f"max_iter={max_iter} rescalings: {layers}; raise max_iter or tol, or check the data "
        "(a zero or non-finite variance cannot be rescaled)"
    )


def data_dependent_(
    model: nn.Module,
    data: Any,
    *,
    base: str = "lecun_normal",
    nonlinearity: str | None = None,
    generator: torch.Generator | None = None,
) -> nn.Module:
    r"""Data-dependent init, Krähenbühl et al. (2015), "Data-dependent Initializations of
    Convolutional Neural Networks" (their within-layer step).

    Weights start random (``base``, Gaussian by default as in the paper); then, from the first
    layer to the last, each output unit ``i`` (row of a Linear weight, output channel of a
    conv) is standardized on ``data``: with :math:`\mu_i, \sigma_i` the mean and std of its
    pre-activation over the batch (and, for a conv, over the spatial positions),

    .. math::
        W_i \leftarrow \frac{W_i}{\sigma_i}, \qquad b_i \leftarrow \frac{b_i - \mu_i}{\sigma_i}

    so every unit has zero mean and unit variance on the batch. Biases are set by the data (any
    ``bias`` given to :func:`init_model` is ignored); a layer without bias only gets the
    scaling. The paper's between-layer step, which equalizes the layers' rates of change, is
    not done. Forwards run in eval mode and the model's modes are restored.

    Args:
        model: the model, modified in place and returned.
        data: a batch of inputs, ``(X, y)``, a Dataset or a DataLoader (its first batch).
        base: the random scheme to start from; only its shape matters, not its scale.
        nonlinearity: passed to ``base`` (e.g. ``"orthogonal"`` uses its gain).
        generator: the random generator of the base init.

    Example:
        >>> model = nn.Sequential(nn.Linear(20, 50), nn.ReLU(), nn.Linear(50, 5))
        >>> x = torch.randn(256, 20) * 3 + 1
        >>> z = data_dependent_(model, x)[0](x)  # (256, 50): every unit standardized
        >>> mean, var = z.mean(0), z.var(0, correction=0)
        >>> bool(mean.abs().max() < 1e-4), bool((var - 1).abs().max() < 1e-4)
        (True, True)
    """
    base_key = ALIASES.get(base.strip().lower().replace("-", "_"), base)
    if base_key not in _DATA_DEPENDENT_BASES:
        raise ValueError(
            f"data_dependent needs a random base scheme, got base={base!r}; "
            f"choose one of {', '.join(_DATA_DEPENDENT_BASES)}"
        )
    x = _data_batch(data, "data_dependent", model)
    _init_layers(model, base_key, nonlinearity, 0.0, generator, {})
    with eval_mode(model), torch.no_grad():
        for path, layer in _weight_layers(model):
            out = _layer_output(model, x, path, layer)
            if out is not None:
                _standardize_units_(layer, out)
    return model


def _standardize_units_(layer: nn.Module, out: torch.Tensor) -> None:
    """Scale each output unit of ``layer`` and set its bias so that ``out`` is standardized."""
    channel_dim = -1 if isinstance(layer, nn.Linear) else 1  # Linear (..., C), conv (N, C, ...)
    units = out.movedim(channel_dim, -1).reshape(-1, out.shape[channel_dim])  # (N·positions, C)
    mean, std = units.mean(dim=0), units.std(dim=0, correction=0)  # (C,), (C,)
    scale = torch.where(std > MIN_UNIT_STD, 1.0 / std, torch.ones_like(std))
    layer.weight.mul_(scale.view(-1, *[1] * (layer.weight.dim() - 1)))
    if layer.bias is not None:
        layer.bias.copy_((layer.bias - mean) * scale)  # mean of W x is mean - b_old


# ---------------------------------------------------------------------------------------------
# Helpers of the data-driven schemes
# ---------------------------------------------------------------------------------------------


def _data_batch(data: Any, scheme: str, model: nn.Module) -> torch.Tensor:
    """One batch of inputs from ``data``, on the model's device and (float) dtype."""
    if data is None:
        raise ValueError(f"{scheme} needs data=...: a batch of inputs, (X, y), or a DataLoader")
    batch = data
    if isinstance(batch, Dataset):
        batch = DataLoader(batch, batch_size=DATASET_BATCH)
    if isinstance(batch, DataLoader | Iterator):
        batch = _first(batch, scheme)
    if isinstance(batch, tuple | list):
        batch = batch[0]  # (X, y) -> X
    try:
        x = torch.as_tensor(batch)
    except (TypeError, RuntimeError, ValueError) as err:
        raise TypeError(
            f"{scheme} needs data= as a batch of inputs, (X, y), a Dataset or a DataLoader; "
            f"got a batch of type {type(batch).__name__} ({err})"
        ) from None
    weight = _weight_layers(model)[0][1].weight
    dtype = weight.dtype if x.is_floating_point() else x.dtype
    return x.to(device=weight.device, dtype=dtype)


def _first(batches: Any, scheme: str) -> Any:
    for batch in batches:
        return batch
    raise ValueError(f"{scheme} got an empty data= ({type(batches).__name__}): pass some examples")


def _layer_output(
    model: nn.Module, x: torch.Tensor, path: str, layer: nn.Module
) -> torch.Tensor | None:
    """The output of ``layer`` (its first call) when ``model`` runs on ``x``; None if unused."""
    outputs: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _module, _input, out: outputs.append(out))
    try:
        model(x)
    finally:
        handle.remove()
    if not outputs:
        warnings.warn(
            f"layer {path!r} did not run when the model was called on the data, so it keeps "
            "its random init: check that forward uses it",
            stacklevel=2,
        )
        return None
    return outputs[0]
