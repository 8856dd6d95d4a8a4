r"""Fitted preprocessing of CS231n Lecture 6: zero-centre, standardize, PCA and whitening.

The lecture's recipe for image data is to zero-centre it (AlexNet subtracts the *mean image*, one
value per input element; VGG subtracts the *per-channel* mean), perhaps normalize it, and to know
PCA and whitening even though convnets rarely need them. Four estimators, in scikit-learn's style:

* ``ZeroCenter``:  :math:`x \mapsto x - \mu`
* ``Standardize``: :math:`x \mapsto (x - \mu) / \sigma`, with the population :math:`\sigma`
  (ddof 0, as scikit-learn's ``StandardScaler``) and :math:`\sigma := 1` for constant features
  (LeCun et al., "Efficient BackProp", 1998).
* ``PCA``: :math:`x \mapsto U_k^\top (x - \mu)`, divided by :math:`\sqrt{\lambda + \varepsilon}`
  when ``whiten=True`` (Pearson 1901; Hotelling 1933).
* ``Whiten``: PCA whitening :math:`x \mapsto \Lambda_\varepsilon^{-1/2} U^\top (x - \mu)` (rotated),
  or ZCA :math:`x \mapsto U \Lambda_\varepsilon^{-1/2} U^\top (x - \mu)`, the whitening that stays
  closest to the input and keeps its shape (Bell & Sejnowski, 1997; Krizhevsky, 2009; Kessy,
  Lewin & Strimmer, 2018), with :math:`\Lambda_\varepsilon = \Lambda + \varepsilon I`.

Here :math:`\Sigma = U \Lambda U^\top` is the sample covariance (ddof 1, as scikit-learn's ``PCA``),
eigenvalues in decreasing order, each eigenvector's largest-magnitude entry made positive.

**Streaming.** ``fit`` accepts a tensor, a numpy array, or an iterable of batches (a DataLoader
yielding tensors or ``(x, y)`` pairs); statistics are merged chunk by chunk with the pairwise
formulas of Chan, Golub & LeVeque ("Updating formulae and a pairwise algorithm for computing
sample variances", 1979): for two parts with counts :math:`n_a, n_b`, means :math:`\mu_a, \mu_b`
and centred sums :math:`M_a, M_b` (squares :math:`M_2` or outer products :math:`C`),

.. math::
    n = n_a + n_b,\quad \delta = \mu_b - \mu_a,\quad \mu = \mu_a + \delta \frac{n_b}{n},\quad
    M = M_a + M_b + \delta \delta^\top \frac{n_a n_b}{n}.

Each part is centred on its own mean before its sums are taken, so a large offset (say pixels
around 1e4 with unit spread) costs no precision. Memory is O(D) for the means and variances and
O(D²) for the covariance, whatever the number of examples. Statistics are kept in float64; each
chunk's covariance is one float32 product (float64 for float64 data) of the chunk centred on its
own mean, so its entries are small and exact to float32 rounding, folded into a float64 sum. Only
the block upper triangle of that product is computed (about half the flops of ``X.T @ X``).

**Precision of the eigendecomposition.** PCA and Whiten end with an eigendecomposition of the
D x D covariance, at D = 3072 about as costly as accumulating the covariance of 50 000 examples.
Float64 data get it in float64. Float32 data get it in float32 (about twice as fast;
scikit-learn's ``covariance_eigh`` solver does the same) when the covariance is well conditioned,
:math:`\lambda_{min} + \varepsilon \ge \lambda_{max} / 100` (certified by a Cholesky
factorization), and in float64 otherwise. A float32 eigendecomposition errs by about
:math:`10^{-6} \lambda_{max}` in absolute terms, which whitening divides by
:math:`\lambda_i + \varepsilon`: within the bound the whitened training data's covariance stays
within about 1e-4 of the identity, ten times inside the 1e-3 the tests allow float32 data; beyond
it (e.g. pixel data with the default ``eps``) float32 would miss 1e-3, so float64 is kept.

Everything is a torch tensor in and out (numpy arrays are accepted), in the input's floating dtype
(integer inputs, e.g. 0..255 pixels, become float32).

>>> import torch
>>> x = torch.tensor([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]])
>>> scaler = Standardize().fit(x)
>>> scaler.mean_, scaler.scale_
(tensor([ 2., 10.], dtype=torch.float64), tensor([1.6330, 1.0000], dtype=torch.float64))
>>> scaler.transform(x)[:, 1]  # a constant feature is centred, never divided by zero
tensor([0., 0., 0.])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, TensorDataset

__all__ = ["PCA", "NotFittedError", "Standardize", "Whiten", "ZeroCenter"]

ArrayLike = torch.Tensor | np.ndarray
Data = ArrayLike | Iterable[Any]  # a tensor/array (N, ...) or an iterable of batches / (x, y)

STATE_VERSION = 1  # bump when the state_dict layout changes
PERS = ("feature", "channel")
METHODS = ("zca", "pca")

# Data is processed in row chunks of about _CHUNK_ELEMENTS values (8 MiB of float32): small
# enough that a chunk's float64 copy stays in cache (float64 statistics nearly as fast as float32
# ones), big enough that few parallel regions are started (each one stalls when other processes
# hold the cores).
_CHUNK_ELEMENTS = 1 << 21
_MIN_CHUNK_ROWS = 8
# The covariance product needs tall chunks to run near peak GEMM speed: rows are gathered into
# a buffer of about _COV_CHUNK_ELEMENTS values (64 MiB of float32; 5461 rows at D = 3072).
_COV_CHUNK_ELEMENTS = 1 << 24
# float32 covariance sums are folded into the float64 accumulator at least every this many rows.
_FLUSH_ROWS = 1 << 16
# Column blocks of the triangular covariance product: k blocks compute (k + 1) / 2k of the full
# product (13/24 for 12 blocks); blocks narrower than ~256 columns lose more in GEMM speed than
# they save (D = 3072, 2 threads: 12 blocks 0.63x of X.T @ X, 8 blocks 0.68x, 16 blocks 0.69x).
_BLOCK_COLUMNS = 256
_MAX_BLOCKS = 12
_SHOW_BAD = 5  # non-finite positions quoted in an error message
# The eigendecomposition of a float32 fit runs in float32 when every eigenvalue plus eps is at
# least 1 / _FLOAT32_EIGH_MAX_COND of the largest (see ``_eigh_input``), in float64 otherwise.
_FLOAT32_EIGH_MAX_COND = 100.0
_POWER_ITERATIONS = 6  # block power iterations estimating the largest eigenvalue
# Which library runs a CPU eigendecomposition, per dtype (see ``_eigh``): "numpy" or "torch".
_EIGH_BACKEND = {torch.float32: "torch", torch.float64: "numpy"}


class NotFittedError(ValueError, AttributeError):
    """Raised by ``transform``/``inverse_transform`` before ``fit`` (like scikit-learn's)."""


# --------------------------------------------------------------------------- input handling


def _as_float_tensor(x: Any, what: str) -> torch.Tensor:
    """``x`` as a floating tensor (numpy arrays shared, integers and bools converted to float32)."""
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise TypeError(f"{what} has numpy dtype {x.dtype}; pass numbers (e.g. float32)")
        if not x.flags.writeable or any(s < 0 for s in x.strides):
            x = x.copy()  # torch.from_numpy rejects negative strides and warns on read-only
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{what} is a {type(x).__name__}; pass a torch.Tensor or numpy array of shape (N, ...)"
            " (convert a nested list with torch.tensor(...))"
        )
    if x.is_complex():
        raise TypeError(f"{what} has complex dtype {x.dtype}; pass real numbers")
    return x if x.is_floating_point() else x.to(torch.float32)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 data is processed in float64; everything else in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_batch(x: torch.Tensor, what: str, row0: int) -> None:
    """Raise unless ``x`` is a batch (N, ...) of finite values; ``row0``: its first row's index."""
    if x.dim() < 2:
        raise ValueError(
            f"{what} has shape {tuple(x.shape)}; expected a batch of shape (N, ...), one example"
            " per row: use x.reshape(-1, 1) for a single feature, x.reshape(1, -1) for one example"
            " (if you passed (X, y), pass X alone)"
        )
    _check_finite(x, what, row0)


def _check_finite(x: torch.Tensor, what: str, row0: int) -> None:
    # One cheap reduction first: any NaN or Inf makes the sum non-finite.
    total = x.sum(dtype=torch.float64) if x.element_size() < 4 else x.sum()
    if torch.isfinite(total):
        return
    bad = ~torch.isfinite(x)
    count = int(bad.sum())
    if count == 0:
        return  # the float32 sum overflowed; every value is finite
    where = [tuple([row0 + i[0], *i[1:]]) for i in bad.nonzero()[:_SHOW_BAD].tolist()]
    index = "(row, feature)" if x.dim() == 2 else "(row, *index in the example)"
    raise ValueError(
        f"{what} contains {count} NaN/Inf value(s); first at {index} {where}"
        f"{' ...' if count > _SHOW_BAD else ''} (rows counted from the start of the data)."
        " Drop or impute them (e.g. torch.nan_to_num) before fitting"
    )


def _batches(X: Data, method: str) -> Iterator[torch.Tensor]:
    """The checked float batches of ``X``: one tensor/array, or each batch of an iterable."""
    if isinstance(X, TensorDataset):
        X = X.tensors[0]
    if isinstance(X, torch.Tensor | np.ndarray):
        x = _as_float_tensor(X, "X")
        _check_batch(x, "X", 0)
        yield x
        return
    _check_iterable(X, method)
    row = 0
    for i, item in enumerate(X):
        if isinstance(item, tuple | list) and item:
            item = item[0]  # (x, y) from a DataLoader: the inputs
        what = f"batch {i}"
        x = _as_float_tensor(item, what)
        _check_batch(x, what, row)
        row += x.shape[0]
        yield x


def _check_iterable(X: Any, method: str) -> None:
    if isinstance(X, Dataset) and not isinstance(X, IterableDataset):
        raise TypeError(
            f"{method} got a map-style {type(X).__name__}, whose items are single examples; wrap"
            " it in DataLoader(dataset, batch_size=...) to pass batches"
        )
    if isinstance(X, str | bytes | Mapping) or not isinstance(X, Iterable):
        raise TypeError(
            f"{method} got a {type(X).__name__}; pass a tensor or numpy array of shape (N, ...) or"
            " an iterable of such batches (e.g. a DataLoader yielding x or (x, y))"
        )


def _chunks(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Row chunks of ``x`` of about ``_CHUNK_ELEMENTS`` values each."""
    per_row = max(1, math.prod(x.shape[1:]))
    return x.split(max(_MIN_CHUNK_ROWS, _CHUNK_ELEMENTS // per_row))


def _sum64(x: torch.Tensor) -> torch.Tensor:
    """Column sums (D,) of ``x`` (B, D) in float64, chunk by chunk to stay in cache."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for chunk in _chunks(x):
        total += chunk.sum(0, dtype=torch.float64)
    return total


def _shape_str(shape: tuple[int, ...]) -> str:
    return "(N, " + ", ".join(map(str, shape)) + ")"


# --------------------------------------------------------------------------- streaming statistics


def _merge_means(
    n_a: int, mean_a: torch.Tensor, n_b: int, mean_b: torch.Tensor
) -> tuple[int, torch.Tensor, torch.Tensor, float]:
    """Chan et al.'s merge of two means: the total count, mean, δ and the weight n_a n_b / n."""
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / n), delta, n_a * n_b / n


class _Moments:
    """Streaming count, mean and M₂ = Σ (x − mean)² of K statistics, each over B·L values."""

    def __init__(self, size: int, device: torch.device, with_m2: bool) -> None:
        self.n = 0
        self.mean = torch.zeros(size, dtype=torch.float64, device=device)
        self.m2 = torch.zeros_like(self.mean) if with_m2 else None

    def update(self, x: torch.Tensor) -> None:
        """Merge a chunk ``x`` of shape (B, K, L), two-pass in float64."""
        count = x.shape[0] * x.shape[2]
        if count == 0:
            return
        if self.m2 is None:
            mean_b = x.sum((0, 2), dtype=torch.float64) / count  # (K,)
            self.n, self.mean, _, _ = _merge_means(self.n, self.mean, count, mean_b)
            return
        x = x.to(torch.float64)  # a chunk: the copy stays in cache
        mean_b = x.sum((0, 2)) / count
        m2_b = (x - mean_b[:, None]).square_().sum((0, 2))  # centred on the chunk's own mean
        self.n, self.mean, delta, weight = _merge_means(self.n, self.mean, count, mean_b)
        self.m2 += m2_b + delta.square() * weight


def _block_edges(dim: int) -> list[int]:
    """Column block boundaries of the triangular product (see ``_BLOCK_COLUMNS``)."""
    blocks = min(_MAX_BLOCKS, max(1, dim // _BLOCK_COLUMNS))
    return [round(i * dim / blocks) for i in range(blocks + 1)]


def _add_gram_upper(out: torch.Tensor, a: torch.Tensor, edges: list[int]) -> None:
    """``out += aᵀ a`` on the block upper triangle only: block row i is a_iᵀ a[:, i:]."""
    for lo, hi in itertools.pairwise(edges):
        out[lo:hi, lo:].addmm_(a[:, lo:hi].T, a[:, lo:])


def _mirror_upper(c: torch.Tensor) -> torch.Tensor:
    """Make ``c`` exactly symmetric from its upper triangle, in place."""
    upper = c.triu(1)
    return c.triu_().add_(upper.T)


def _gram(a: torch.Tensor) -> torch.Tensor:
    """``aᵀ a`` (symmetric) with about half the flops of the full product."""
    out = torch.zeros(a.shape[1], a.shape[1], dtype=a.dtype, device=a.device)
    _add_gram_upper(out, a, _block_edges(a.shape[1]))
    return _mirror_upper(out)


class _Covariance:
    """Streaming count, mean and C = Σ (x − mean)(x − mean)ᵀ of D features (Chan et al.'s merge).

    Rows are gathered into a chunk buffer. A full chunk is centred on the compute-dtype rounding
    ``s`` of its own float64 mean ``m``; its product ``xcᵀ xc`` is accumulated in the compute dtype
    (block upper triangle only). With ``r = m − s``, the chunk's centred sum is
    ``xcᵀ xc − b r rᵀ`` and merging it adds ``w δ δᵀ`` (Chan et al.); these rank-1 terms are
    collected and added to the float64 ``c`` together with the products, every ``_FLUSH_ROWS`` rows.
    """

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device) -> None:
        self.n = 0
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)
        self.c = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.dtype = dtype
        # torch.empty reserves memory without touching it: small data costs only what it fills
        self._buffer = torch.empty(
            max(_MIN_CHUNK_ROWS, _COV_CHUNK_ELEMENTS // dim), dim, dtype=dtype, device=device
        )
        self._filled = 0
        self._buffer_sum = torch.zeros_like(self.mean)  # float64 column sums of the buffer
        self._edges = _block_edges(dim)
        self._sums: torch.Tensor | None = None  # xcᵀ xc sums not yet folded into c
        self._rank1: list[tuple[torch.Tensor, float]] = []  # (v, w): c += w v vᵀ, not yet folded
        self._sum_rows = 0

    def update(self, x: torch.Tensor) -> None:
        """Add rows ``x`` of shape (B, D); a full buffer is merged."""
        while x.shape[0]:
            take = min(len(self._buffer) - self._filled, x.shape[0])
            self._buffer[self._filled : self._filled + take].copy_(x[:take])
            self._buffer_sum += x[:take].sum(0, dtype=torch.float64)
            self._filled += take
            x = x[take:]
            if self._filled == len(self._buffer):
                self._merge_buffer()

    def result(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Count, mean and the full symmetric C (frees the working buffers)."""
        self._merge_buffer()
        self._flush()
        self._sums = self._buffer = None
        return self.n, self.mean, _mirror_upper(self.c)  # the products filled the upper triangle

    def _merge_buffer(self) -> None:
        b = self._filled
        if b == 0:
            return
        mean_b = self._buffer_sum / b  # (D,) float64
        shift = mean_b.to(self.dtype)
        xc = self._buffer[:b].sub_(shift)  # (B, D): small values, no offset to lose precision to
        self._add_products(xc)
        resid = mean_b - shift.to(torch.float64)  # mean of xc: the rounding of the shift
        self.n, self.mean, delta, weight = _merge_means(self.n, self.mean, b, mean_b)
        self._rank1 += [(resid, -float(b)), (delta, weight)]
        self._filled = 0
        self._buffer_sum.zero_()
        if self._sum_rows >= _FLUSH_ROWS:
            self._flush()

    def _add_products(self, xc: torch.Tensor) -> None:
        """``sums += xcᵀ xc`` on the block upper triangle."""
        if self._sums is None:
            self._sums = torch.zeros_like(self.c, dtype=self.dtype)
        _add_gram_upper(self._sums, xc, self._edges)
        self._sum_rows += xc.shape[0]

    def _flush(self) -> None:
        """Fold the pending products and rank-1 terms into ``c`` (one pass over it each)."""
        if self._sums is not None and self._sum_rows:
            self.c += self._sums
            self._sums.zero_()
            self._sum_rows = 0
        if self._rank1:
            vectors = torch.stack([v for v, _ in self._rank1], 1)  # (D, m)
            weights = torch.tensor([w for _, w in self._rank1], dtype=torch.float64)
            self.c.addmm_(vectors * weights.to(vectors.device), vectors.T)  # Σ w v vᵀ
            self._rank1 = []


def _top_eigenvalue(cov: torch.Tensor) -> float:
    """A lower bound on the largest eigenvalue of the symmetric PSD ``cov``, close to it.

    Block power iteration from a fixed start (the all-ones vector, which the top eigenvector of
    pixel data resembles, and three fixed random ones); every Rayleigh quotient is a lower bound,
    as is the largest diagonal entry. The bound is only used to pick a precision: being low by a
    few percent moves the threshold of ``_eigh_input`` by as much.
    """
    dim = cov.shape[0]
    g = torch.Generator(device=cov.device).manual_seed(0)
    v = torch.randn(dim, 4, generator=g, dtype=cov.dtype, device=cov.device)
    v[:, 0] = 1.0
    for _ in range(_POWER_ITERATIONS):
        v = torch.linalg.qr(cov @ v).Q
    rayleigh = torch.linalg.eigvalsh(v.T @ cov @ v)[-1]
    return max(float(rayleigh), float(cov.diagonal().max()))


def _eigh_input(cov: torch.Tensor, data_dtype: torch.dtype, eps: float) -> torch.Tensor:
    """``cov`` in the precision its eigendecomposition needs: a float32 copy or ``cov`` itself.

    A float32 eigendecomposition is about twice as fast as a float64 one, but its eigenvalues
    carry absolute errors of about c·u·λ_max (u = 2⁻²⁴, c ≈ 10-20 at D = 3072), so whitening,
    which divides direction i by √(λ_i + ε), errs by about c·u·λ_max / (λ_min + ε). Float32 data
    get it only when that condition number is at most ``_FLOAT32_EIGH_MAX_COND`` (100: whitened
    covariance errors below ~1e-4, ten times inside the 1e-3 the tests allow float32 data; at
    condition 1e3 they reach 1e-3; see docs/benchmarks.md). The check is a float32 Cholesky
    factorization of Σ + (ε − λ_max / 100) I, which succeeds only if that matrix is positive
    definite, i.e. λ_min + ε >= λ_max / 100 up to float32 rounding (~1e-6 λ_max, far below the
    margin). With the power iteration for λ_max it costs ~0.03x of a 50 000 x 3072 X.T @ X.
    Float64 data always get float64.
    """
    if data_dtype != torch.float32:
        return cov
    top = _top_eigenvalue(cov)
    f32 = torch.finfo(torch.float32)
    if not f32.tiny / f32.eps < top < f32.max / 4:
        return cov  # zero, or too small or large for float32 (λ_max · 2⁻²³ would be subnormal)
    cov32 = cov.to(torch.float32)
    diagonal = cov32.diagonal()
    saved = diagonal.clone()
    diagonal.add_(eps - top / _FLOAT32_EIGH_MAX_COND)
    info = torch.linalg.cholesky_ex(cov32).info
    diagonal.copy_(saved)  # exactly cov32 again
    return cov32 if int(info) == 0 else cov


def _eigh(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh(cov)`` (ascending eigenvalues, eigenvectors as columns), same dtype.

    Both libraries call LAPACK's divide-and-conquer ``syevd`` in the matrix's precision; on the
    CPU the faster one per dtype is used (``_EIGH_BACKEND``): for a 3072 x 3072 covariance on a
    2-core AMD EPYC, float64 took 0.57x of a 50 000 x 3072 ``X.T @ X`` with numpy (OpenBLAS in
    its wheels) and 0.82x with torch (MKL), float32 0.38x with torch and 0.45-0.55x with numpy
    (docs/benchmarks.md). Other devices use torch.
    """
    if cov.device.type == "cpu" and _EIGH_BACKEND.get(cov.dtype) == "numpy":
        evals, evecs = np.linalg.eigh(cov.numpy())  # reads the lower triangle, like torch
        return torch.from_numpy(evals), torch.from_numpy(evecs)
    return torch.linalg.eigh(cov)


def _eigh_descending(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (D,) in decreasing order (clipped at 0) and eigenvectors as rows (D, D).

    Computed in ``cov``'s dtype, returned in float64. Each eigenvector's largest-magnitude entry
    is made positive so the result is deterministic (scikit-learn's ``svd_flip`` convention).
    """
    evals, evecs = _eigh(cov)  # ascending; columns are eigenvectors
    evals, evecs = evals.to(torch.float64), evecs.to(torch.float64)
    evals = evals.flip(0).clamp_(min=0)  # round-off makes zero eigenvalues slightly negative
    components = evecs.flip(1).T.contiguous()  # (D, D), row i = i-th principal axis
    top = components.gather(1, components.abs().argmax(1, keepdim=True))  # (D, 1)
    components *= torch.where(top < 0, -1.0, 1.0)
    return evals, components


# --------------------------------------------------------------------------- estimators


class _Estimator:
    """Shared machinery: fit = reset + partial_fit, checks, state_dict, repr."""

    _min_samples: ClassVar[int] = 2
    _needs: ClassVar[str] = "to estimate a variance"
    _state_names: ClassVar[tuple[str, ...]] = ()

    # --- hooks for subclasses
    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _accumulator(self, x: torch.Tensor, shape: tuple[int, ...], resume: bool) -> Any:
        raise NotImplementedError

    def _rows(self, x: torch.Tensor, acc: Any) -> torch.Tensor:
        raise NotImplementedError

    def _commit(self, acc: Any, shape: tuple[int, ...], n: int) -> None:
        raise NotImplementedError

    # --- fitting
    def fit(self, X: Data) -> Self:
        """Learn the statistics from ``X`` (tensor/array or iterable of batches), forgetting any
        previous fit. Returns ``self``."""
        return self._fit(X, resume=False, method="fit")

    def partial_fit(self, X: Data) -> Self:
        """Update the statistics with more data (tensor/array or iterable of batches)."""
        return self._fit(X, resume=self._is_fitted(), method="partial_fit")

    def fit_transform(self, X: ArrayLike) -> torch.Tensor:
        """``fit(X).transform(X)`` for data held in memory."""
        if not isinstance(X, torch.Tensor | np.ndarray):
            raise TypeError(
                f"fit_transform needs a tensor or numpy array, got {type(X).__name__}; for batches"
                " call fit(loader) and then transform(batch) on each batch"
            )
        return self.fit(X).transform(X)

    def _fit(self, X: Data, *, resume: bool, method: str) -> Self:
        # Everything is computed into locals and committed at the end, so a failure (bad batch,
        # too few examples) leaves a previously fitted estimator as it was.
        shape = self.example_shape_ if resume else None
        acc, n_new, n_batches = None, 0, 0
        with torch.no_grad():
            for x in _batches(X, method):
                shape = self._check_fit_shape(x, shape, resume, method, n_batches)
                if acc is None:
                    acc = self._accumulator(x, shape, resume)
                for chunk in _chunks(x.detach()):
                    acc.update(self._rows(chunk, acc))
                n_new += x.shape[0]
                n_batches += 1
            if n_batches == 0:
                raise ValueError(
                    f"{method} got an empty iterable (no batches); pass a tensor of shape (N, ...)"
                    " or a DataLoader that yields at least one batch"
                )
            n = n_new + (self.n_samples_seen_ if resume else 0)
            if n < self._min_samples:
                raise ValueError(
                    f"{type(self).__name__} needs at least {self._min_samples} example(s) in total"
                    f" {self._needs}; got {n}. Pass more data"
                )
            self._commit(acc, shape, n)
        return self

    def _check_fit_shape(
        self, x: torch.Tensor, shape: tuple[int, ...] | None, resume: bool, method: str, i: int
    ) -> tuple[int, ...]:
        got = tuple(x.shape[1:])
        if shape is None or got == shape:
            return got
        where = f"{type(self).__name__} was fitted on" if resume and i == 0 else "earlier data had"
        raise ValueError(
            f"{method} got examples of shape {got} but {where} examples of shape {shape};"
            " all data must have one example shape (call fit to start over with a new shape)"
        )

    # --- transforming
    def _is_fitted(self) -> bool:
        return "n_samples_seen_" in vars(self)

    def _check_fitted(self, method: str) -> None:
        if not self._is_fitted():
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet: call fit(X) with training"
                f" data before {method}"
            )

    def _input(self, X: ArrayLike, method: str) -> tuple[torch.Tensor, torch.dtype]:
        """``X`` as a compute-dtype tensor, and the dtype to return."""
        self._check_fitted(method)
        x = _as_float_tensor(X, "X")
        return x.to(_compute_dtype(x.dtype)), x.dtype

    def _check_shape(self, x: torch.Tensor, expected: tuple[int, ...], method: str) -> None:
        if x.dim() < 2 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__}.{method} expected input of shape {_shape_str(expected)}"
                f" (examples of shape {expected}, as in fit); got {tuple(x.shape)}"
            )

    # --- persistence
    def state_dict(self) -> dict[str, Any]:
        """Plain types and tensors: the class, format version, init arguments and learned state."""
        sd: dict[str, Any] = {
            "class": type(self).__name__,
            "version": STATE_VERSION,
            "params": self._params(),
        }
        if self._is_fitted():
            sd["n_samples_seen_"] = self.n_samples_seen_
            sd["example_shape_"] = list(self.example_shape_)
            sd.update({name: getattr(self, name) for name in self._state_names})
        return sd

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> Self:
        """Restore a state saved by ``state_dict`` of the same class and arguments."""
        name = type(self).__name__
        if not isinstance(state_dict, Mapping) or "class" not in state_dict:
            raise TypeError(f"expected a dict from {name}.state_dict(); got {type(state_dict)}")
        if state_dict["class"] != name:
            raise ValueError(
                f"this state_dict belongs to {state_dict['class']}, not {name}; load it with"
                f" {state_dict['class']}(...).load_state_dict(sd)"
            )
        if state_dict.get("version") != STATE_VERSION:
            raise ValueError(
                f"state_dict version {state_dict.get('version')!r} is not supported (this babysit"
                f" writes version {STATE_VERSION}); refit and save again"
            )
        params = dict(state_dict.get("params", {}))
        if params != self._params():
            saved = f"{name}({', '.join(f'{k}={v!r}' for k, v in params.items())})"
            raise ValueError(
                f"this state_dict was saved from {saved} but this is {self!r}; create {saved} and"
                " load into it"
            )
        self._load_state(state_dict)
        return self

    def _load_state(self, sd: Mapping[str, Any]) -> None:
        names = ("n_samples_seen_", "example_shape_", *self._state_names)
        missing = [attr for attr in names if attr not in sd]
        if "n_samples_seen_" in sd and missing:
            raise ValueError(f"state_dict lacks {missing}; save it with state_dict() after fit")
        for attr in names:
            vars(self).pop(attr, None)
        if "n_samples_seen_" not in sd:
            return  # an unfitted estimator's state
        for attr in self._state_names:
            value = sd[attr]
            setattr(self, attr, value.clone() if isinstance(value, torch.Tensor) else value)
        self.example_shape_ = tuple(int(s) for s in sd["example_shape_"])
        self.n_samples_seen_ = int(sd["n_samples_seen_"])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"


def _check_per(per: Any) -> None:
    if per not in PERS:
        raise ValueError(
            f"per must be 'feature' (one statistic per input element: the mean image, AlexNet) or"
            f" 'channel' (one per channel of (N, C, ...) input, broadcast over the rest: VGG);"
            f" got {per!r}"
        )


class _MomentEstimator(_Estimator):
    """ZeroCenter and Standardize: per-feature or per-channel moments."""

    _with_var: ClassVar[bool]

    def __init__(self, *, per: str = "feature") -> None:
        _check_per(per)
        self.per = per

    def _params(self) -> dict[str, Any]:
        return {"per": self.per}

    def _values_per_stat(self, shape: tuple[int, ...]) -> int:
        """How many values of one example feed one statistic (1, or the spatial size)."""
        return math.prod(shape[1:]) if self.per == "channel" else 1

    def _accumulator(self, x: torch.Tensor, shape: tuple[int, ...], resume: bool) -> _Moments:
        per_stat = self._values_per_stat(shape)
        acc = _Moments(math.prod(shape) // per_stat, x.device, self._with_var)
        if resume:
            acc.n = self.n_samples_seen_ * per_stat
            acc.mean = self.mean_.reshape(-1).clone()
            if self._with_var:
                acc.m2 = self.var_.reshape(-1) * acc.n
        return acc

    def _rows(self, x: torch.Tensor, acc: Any) -> torch.Tensor:
        x = x.to(_compute_dtype(x.dtype))
        if self.per == "channel":
            return x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))  # (B, C, L)
        return x.reshape(x.shape[0], math.prod(x.shape[1:]), 1)  # (B, D, 1)

    def _stat_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape[:1] if self.per == "channel" else shape

    def _broadcast(self, stat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A learned statistic shaped to broadcast against ``x`` (N, ...), in x's dtype."""
        stat = stat.to(device=x.device, dtype=x.dtype)
        if self.per == "channel":
            return stat.reshape(-1, *([1] * (x.dim() - 2)))  # (C, 1, ..., 1)
        return stat

    def _check_input(self, x: torch.Tensor, method: str) -> None:
        shape = self.example_shape_
        if self.per == "feature" or len(shape) == 1:
            self._check_shape(x, shape, method)
        elif x.dim() != len(shape) + 1 or x.shape[1] != shape[0]:
            # per-channel statistics apply to any spatial size (e.g. a larger crop)
            raise ValueError(
                f"{type(self).__name__}.{method} expected input of shape (N, {shape[0]}, ...) with"
                f" {len(shape) - 1} spatial dim(s) (C = {shape[0]} channels, as in fit); got"
                f" {tuple(x.shape)}"
            )


class ZeroCenter(_MomentEstimator):
    r"""Subtract the mean: :math:`x \mapsto x - \mu`, the lecture's first preprocessing step.

    ``per="feature"`` learns one mean per input element, the *mean image* AlexNet subtracts
    (Krizhevsky et al., 2012); ``per="channel"`` learns one mean per channel of (N, C, ...) input,
    broadcast over the spatial dims, as VGG does (Simonyan & Zisserman, 2015). For (N, D) input
    both are one mean per column.

    Args:
        per: ``"feature"`` or ``"channel"``.

    Attributes:
        mean_: float64, the example shape (``per="feature"``) or ``(C,)`` (``per="channel"``).
        n_samples_seen_: examples seen by ``fit``/``partial_fit``.
        example_shape_: the shape of one example seen in ``fit``.

    Example:
        >>> images = torch.rand(8, 3, 4, 4)
        >>> ZeroCenter(per="channel").fit(images).mean_.shape
        torch.Size([3])
    """

    _min_samples = 1
    _needs = "to estimate a mean"
    _state_names = ("mean_",)
    _with_var = False

    def _commit(self, acc: _Moments, shape: tuple[int, ...], n: int) -> None:
        self.mean_ = acc.mean.reshape(self._stat_shape(shape))
        self.example_shape_ = shape
        self.n_samples_seen_ = n

    def transform(self, X: ArrayLike) -> torch.Tensor:
        """``X - mean_`` for X of shape (N, *example_shape_)."""
        x, out = self._input(X, "transform")
        self._check_input(x, "transform")
        return (x - self._broadcast(self.mean_, x)).to(out)

    def inverse_transform(self, X: ArrayLike) -> torch.Tensor:
        """``X + mean_``: undo ``transform``."""
        x, out = self._input(X, "inverse_transform")
        self._check_input(x, "inverse_transform")
        return (x + self._broadcast(self.mean_, x)).to(out)


class Standardize(_MomentEstimator):
    r"""Zero-centre and divide by the standard deviation: :math:`x \mapsto (x - \mu) / \sigma`.

    :math:`\sigma` is the population standard deviation (ddof 0), as in scikit-learn's
    ``StandardScaler``; a constant feature (zero variance up to float64 round-off) gets
    ``scale_ = 1``, so it is centred and never divided by zero. ``per`` as in ``ZeroCenter``.

    Args:
        per: ``"feature"`` or ``"channel"``.

    Attributes:
        mean_, var_, scale_: float64, the example shape (``per="feature"``) or ``(C,)``.
        n_samples_seen_: examples seen by ``fit``/``partial_fit``.
        example_shape_: the shape of one example seen in ``fit``.

    Example:
        >>> x = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
        >>> Standardize().fit_transform(x)
        tensor([[-1.,  0.],
                [ 1.,  0.]])
    """

    _needs = "to estimate a standard deviation"
    _state_names = ("mean_", "var_", "scale_")
    _with_var = True

    def _commit(self, acc: _Moments, shape: tuple[int, ...], n: int) -> None:
        var = acc.m2 / acc.n
        # scikit-learn's bound on the round-off of a variance computed in float64
        eps = torch.finfo(torch.float64).eps
        constant = var <= acc.n * eps * var + (acc.n * acc.mean * eps) ** 2
        stat_shape = self._stat_shape(shape)
        self.mean_ = acc.mean.reshape(stat_shape)
        self.var_ = var.reshape(stat_shape)
        self.scale_ = torch.where(constant, 1.0, var.sqrt()).reshape(stat_shape)
        self.example_shape_ = shape
        self.n_samples_seen_ = n

    def transform(self, X: ArrayLike) -> torch.Tensor:
        """``(X - mean_) / scale_`` for X of shape (N, *example_shape_)."""
        x, out = self._input(X, "transform")
        self._check_input(x, "transform")
        return ((x - self._broadcast(self.mean_, x)) / self._broadcast(self.scale_, x)).to(out)

    def inverse_transform(self, X: ArrayLike) -> torch.Tensor:
        """``X * scale_ + mean_``: undo ``transform``."""
        x, out = self._input(X, "inverse_transform")
        self._check_input(x, "inverse_transform")
        mean, scale = self._broadcast(self.mean_, x), self._broadcast(self.scale_, x)
        return torch.addcmul(mean, x, scale).to(out)


def _check_eps(eps: Any) -> None:
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 <= eps < math.inf:
        raise ValueError(
            f"eps must be a finite number >= 0 added to the eigenvalues (e.g. 1e-5); got {eps!r}"
        )


class _CovarianceEstimator(_Estimator):
    """PCA and Whiten: eigendecomposition of the streamed covariance of flattened examples."""

    _needs = "to estimate a covariance"

    def _accumulator(self, x: torch.Tensor, shape: tuple[int, ...], resume: bool) -> _Covariance:
        dim = math.prod(shape)
        self._check_dim(dim)
        acc = _Covariance(dim, _compute_dtype(x.dtype), x.device)
        if resume:
            acc.n = self.n_samples_seen_
            acc.mean = self.mean_.clone()
            acc.c = self.covariance_ * (acc.n - 1)
        return acc

    def _check_dim(self, dim: int) -> None:
        """Raise if the arguments do not fit D features (before any data is consumed)."""

    def _rows(self, x: torch.Tensor, acc: Any) -> torch.Tensor:
        return x.reshape(x.shape[0], math.prod(x.shape[1:])).to(acc.dtype)  # (B, D)

    def _commit(self, acc: _Covariance, shape: tuple[int, ...], n: int) -> None:
        _, mean, c = acc.result()
        cov = c.div_(n - 1)  # sample covariance, ddof 1 like sklearn's PCA
        evals, components = _eigh_descending(_eigh_input(cov, acc.dtype, self.eps))
        self._set_eigen(evals, components)  # may raise: nothing set before it
        self.mean_ = mean
        self.covariance_ = cov
        self.example_shape_ = shape
        self.n_samples_seen_ = n

    def _set_eigen(self, evals: torch.Tensor, components: torch.Tensor) -> None:
        raise NotImplementedError

    def _centred(self, x: torch.Tensor, method: str) -> torch.Tensor:
        """(N, D) rows of ``x`` minus ``mean_``, after checking the example shape."""
        self._check_shape(x, self.example_shape_, method)
        return x.reshape(x.shape[0], -1) - self.mean_.to(x.device, x.dtype)

    def _uncentred(self, xc: torch.Tensor) -> torch.Tensor:
        """(N, D) centred rows back to (N, *example_shape_) data."""
        return (xc + self.mean_.to(xc.device, xc.dtype)).reshape(-1, *self.example_shape_)


def _check_n_components(n_components: Any) -> None:
    ok_int = isinstance(n_components, int) and not isinstance(n_components, bool)
    ok_int = ok_int and n_components >= 1
    ok_float = isinstance(n_components, float) and 0 < n_components < 1
    if n_components is not None and not ok_int and not ok_float:
        raise ValueError(
            "n_components must be an int >= 1 (number of components), a float in (0, 1) (the"
            f" fraction of variance to explain) or None (all); got {n_components!r}"
        )


class PCA(_CovarianceEstimator):
    r"""Principal component analysis: :math:`x \mapsto U_k^\top (x - \mu)` (Hotelling, 1933).

    Examples are flattened to (N, D); :math:`U_k` holds the k eigenvectors of the sample
    covariance (ddof 1) with the largest eigenvalues. With ``whiten=True`` each coordinate is
    divided by :math:`\sqrt{\lambda_i + \varepsilon}`, giving unit variance. Each ``fit`` or
    ``partial_fit`` call ends with an O(D³) eigendecomposition: stream with ``fit(loader)``. It
    runs in float32 for float32 data with :math:`\lambda_{min} + \varepsilon \ge \lambda_{max}
    / 100`, else in float64 (see the module docstring); the attributes are float64 either way.

    Args:
        n_components: an int k <= D, a float in (0, 1) (the smallest k whose components explain at
            least that fraction of the variance) or None (all D).
        whiten: divide each coordinate by its standard deviation.
        eps: added to the eigenvalues before whitening, so near-zero ones are not blown up.

    Attributes:
        mean_ (D,), components_ (k, D) (rows, by decreasing variance, largest-magnitude entry
        positive), explained_variance_ (k,), explained_variance_ratio_ (k,), n_components_,
        covariance_ (D, D) (lets ``partial_fit`` continue), n_samples_seen_, example_shape_.

    Example:
        >>> x = torch.randn(100, 5) @ torch.randn(5, 5)
        >>> pca = PCA(n_components=2).fit(x)
        >>> pca.transform(x).shape, pca.inverse_transform(pca.transform(x)).shape
        (torch.Size([100, 2]), torch.Size([100, 5]))
    """

    _state_names = (
        "mean_",
        "covariance_",
        "components_",
        "explained_variance_",
        "explained_variance_ratio_",
        "n_components_",
    )

    def __init__(
        self, *, n_components: int | float | None = None, whiten: bool = False, eps: float = 1e-5
    ) -> None:
        _check_n_components(n_components)
        if not isinstance(whiten, bool):
            raise TypeError(f"whiten must be True or False; got {whiten!r}")
        _check_eps(eps)
        self.n_components = n_components
        self.whiten = whiten
        self.eps = eps

    def _params(self) -> dict[str, Any]:
        return {"n_components": self.n_components, "whiten": self.whiten, "eps": self.eps}

    def _check_dim(self, dim: int) -> None:
        if isinstance(self.n_components, int) and self.n_components > dim:
            raise ValueError(
                f"n_components={self.n_components} exceeds the number of features D={dim}; pass"
                f" n_components <= {dim}, a variance fraction such as 0.99, or None"
            )

    def _set_eigen(self, evals: torch.Tensor, components: torch.Tensor) -> None:
        total = evals.sum()
        ratio = evals / total if total > 0 else torch.zeros_like(evals)
        k = self._choose_k(ratio)
        if self.whiten and self.eps == 0 and bool((evals[:k] == 0).any()):
            raise ValueError(
                "cannot whiten: some of the kept components have zero variance; pass eps > 0 or"
                " fewer n_components"
            )
        self.components_ = components[:k].clone()
        self.explained_variance_ = evals[:k].clone()
        self.explained_variance_ratio_ = ratio[:k].clone()
        self.n_components_ = k

    def _choose_k(self, ratio: torch.Tensor) -> int:
        if self.n_components is None:
            return ratio.numel()
        if isinstance(self.n_components, int):
            return self.n_components
        # smallest k with cumulative ratio >= the fraction
        target = torch.tensor([self.n_components], dtype=ratio.dtype, device=ratio.device)
        return min(int(torch.searchsorted(ratio.cumsum(0), target)) + 1, ratio.numel())

    def _std(self, x: torch.Tensor) -> torch.Tensor:
        return (self.explained_variance_ + self.eps).sqrt().to(x.device, x.dtype)

    def transform(self, X: ArrayLike) -> torch.Tensor:
        """Coordinates (N, k) of X (N, *example_shape_) on the principal components."""
        x, out = self._input(X, "transform")
        y = self._centred(x, "transform") @ self.components_.T.to(x.device, x.dtype)  # (N, k)
        return (y / self._std(y) if self.whiten else y).to(out)

    def inverse_transform(self, X: ArrayLike) -> torch.Tensor:
        """Data (N, *example_shape_) from coordinates (N, k): exact when k = D."""
        y, out = self._input(X, "inverse_transform")
        self._check_shape(y, (self.n_components_,), "inverse_transform")
        if self.whiten:
            y = y * self._std(y)
        return self._uncentred(y @ self.components_.to(y.device, y.dtype)).to(out)


class Whiten(_CovarianceEstimator):
    r"""Whitening: decorrelate the features and give each unit variance.

    With :math:`\Sigma = U \Lambda U^\top` the sample covariance (ddof 1) of the flattened
    examples and :math:`\Lambda_\varepsilon = \Lambda + \varepsilon I`,

    * ``method="pca"``: :math:`x \mapsto \Lambda_\varepsilon^{-1/2} U^\top (x - \mu)`, the data
      rotated onto the principal axes, output (N, D);
    * ``method="zca"``: :math:`x \mapsto U \Lambda_\varepsilon^{-1/2} U^\top (x - \mu)`, rotated
      back, so the output keeps the example's shape and stays as close to the input as whitening
      allows (Bell & Sejnowski, 1997; Kessy, Lewin & Strimmer, 2018); Krizhevsky (2009) used it on
      CIFAR-10.

    ``eps`` is absolute (in squared data units): standardize first or scale it with the data.
    Each ``fit``/``partial_fit`` call ends with an O(D³) eigendecomposition: to stream, pass the
    whole iterable to ``fit(loader)`` rather than calling ``partial_fit`` per batch. It runs in
    float32 for float32 data with :math:`\lambda_{min} + \varepsilon \ge \lambda_{max} / 100`,
    else in float64 (see the module docstring); the attributes are float64 either way.

    Args:
        method: ``"zca"`` or ``"pca"``.
        eps: added to the eigenvalues; regularizes directions of near-zero variance.

    Attributes:
        W_ (D, D): the whitening matrix, ``y = (x - mean_) @ W_.T`` (symmetric for ZCA);
        W_inv_ (D, D): its inverse, used by ``inverse_transform`` and formed on first use (for
        ZCA a second D x D product that ``fit`` + ``transform`` do not need); mean_ (D,);
        components_ (D, D) (eigenvectors as rows); explained_variance_ (D,) (eigenvalues,
        decreasing); covariance_; n_samples_seen_; example_shape_.

    Example:
        >>> x = torch.randn(200, 3) @ torch.tensor([[2.0, 0, 0], [1, 1, 0], [0, 0, 0.5]])
        >>> z = Whiten(eps=0.0).fit_transform(x)
        >>> torch.allclose(torch.cov(z.T), torch.eye(3), atol=1e-4)
        True
    """

    _state_names = ("mean_", "covariance_", "components_", "explained_variance_", "W_", "W_inv_")

    def __init__(self, *, method: str = "zca", eps: float = 1e-5) -> None:
        if method not in METHODS:
            raise ValueError(
                f"method must be 'zca' (whitened data that keeps its shape and stays closest to the"
                f" input) or 'pca' (whitened principal-component coordinates); got {method!r}"
            )
        _check_eps(eps)
        self.method = method
        self.eps = eps

    def _params(self) -> dict[str, Any]:
        return {"method": self.method, "eps": self.eps}

    def _set_eigen(self, evals: torch.Tensor, components: torch.Tensor) -> None:
        if self.eps == 0 and bool((evals == 0).any()):
            raise ValueError(
                f"cannot whiten: the covariance is singular ({int((evals == 0).sum())} zero"
                " eigenvalue(s)); pass eps > 0 (e.g. 1e-5), or use PCA(n_components=...)"
            )
        std = (evals + self.eps).sqrt()  # (D,)
        if self.method == "zca":
            # U f(Λ) Uᵀ = Vᵀ V with V = f(Λ)^{1/2} Uᵀ: a Gram product, exactly symmetric
            w = _gram(components / std.sqrt()[:, None])  # U Λ^{-1/2} Uᵀ
        else:
            w = components / std[:, None]  # Λ^{-1/2} Uᵀ
        self.components_ = components
        self.explained_variance_ = evals
        self.W_ = w
        self._w_inv = None  # W_inv_ is formed on first use

    @property
    def W_inv_(self) -> torch.Tensor:
        """The inverse of ``W_`` (D, D), formed from the eigendecomposition on first use.

        Only ``inverse_transform`` and ``state_dict`` need it; for ZCA it costs a second D x D
        Gram product (U Λ^{1/2} Uᵀ), as much as ``W_`` itself, so ``fit`` does not pay for it.
        """
        if "components_" not in vars(self):
            raise AttributeError(f"{type(self).__name__} is not fitted yet: W_inv_ comes from fit")
        if self._w_inv is None:
            std = (self.explained_variance_ + self.eps).sqrt()
            if self.method == "zca":
                self._w_inv = _gram(self.components_ * std.sqrt()[:, None])  # U Λ^{1/2} Uᵀ
            else:
                self._w_inv = self.components_.T * std  # U Λ^{1/2}
        return self._w_inv

    @W_inv_.setter
    def W_inv_(self, value: torch.Tensor) -> None:
        self._w_inv = value

    def _out_shape(self) -> tuple[int, ...]:
        return self.example_shape_ if self.method == "zca" else (math.prod(self.example_shape_),)

    def transform(self, X: ArrayLike) -> torch.Tensor:
        """Whitened X: (N, *example_shape_) for ZCA, (N, D) for PCA whitening."""
        x, out = self._input(X, "transform")
        y = self._centred(x, "transform") @ self.W_.T.to(x.device, x.dtype)  # (N, D)
        return y.reshape(-1, *self._out_shape()).to(out)

    def inverse_transform(self, X: ArrayLike) -> torch.Tensor:
        """Undo ``transform``: data of shape (N, *example_shape_)."""
        y, out = self._input(X, "inverse_transform")
        self._check_shape(y, self._out_shape(), "inverse_transform")
        xc = y.reshape(y.shape[0], -1) @ self.W_inv_.T.to(y.device, y.dtype)
        return self._uncentred(xc).to(out)
