"""Tests of babysit.data.transforms: round trips, the math, streaming == one-shot, agreement
with scikit-learn, errors and persistence."""

import io
import itertools

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, Dataset, TensorDataset

from babysit.data import PCA, Standardize, Whiten, ZeroCenter
from babysit.data import transforms as T

ALL = [
    lambda: ZeroCenter(),
    lambda: ZeroCenter(per="channel"),
    lambda: Standardize(),
    lambda: Standardize(per="channel"),
    lambda: PCA(),
    lambda: PCA(whiten=True),
    lambda: Whiten(method="zca"),
    lambda: Whiten(method="pca"),
]
IDS = ["zc-feature", "zc-channel", "std-feature", "std-channel", "pca", "pca-whiten", "zca", "pcaw"]
SHAPES = [(60, 12), (60, 3, 2, 2), (60, 3, 4)]


def data(shape, *, seed=0, offset=0.0, dtype=torch.float32):
    """Correlated, full-rank data with features on different scales."""
    g = torch.Generator().manual_seed(seed)
    n, d = shape[0], int(np.prod(shape[1:]))
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) + 2 * torch.eye(
        d, dtype=torch.float64
    )
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ mix
    x = x * torch.linspace(0.5, 3.0, d, dtype=torch.float64) + offset
    return x.reshape(shape).to(dtype)


@pytest.fixture
def small_chunks(monkeypatch):
    """Tiny chunks (5 and 7 rows of 12 features) and frequent flushes: every merge path runs."""
    monkeypatch.setattr(T, "_MIN_CHUNK_ROWS", 1)
    monkeypatch.setattr(T, "_CHUNK_ELEMENTS", 60)
    monkeypatch.setattr(T, "_COV_CHUNK_ELEMENTS", 84)
    monkeypatch.setattr(T, "_FLUSH_ROWS", 16)


def flat64(x):
    return x.reshape(x.shape[0], -1).double().numpy()


# --------------------------------------------------------------------------- round trips, shapes


@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "4d", "3d"])
@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_round_trip(make, shape):
    x = data(shape)
    est = make()
    y = est.fit_transform(x)
    assert y.dtype == torch.float32
    back = est.inverse_transform(y)
    assert back.shape == x.shape
    torch.testing.assert_close(back, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_round_trip_float64_is_exact(make):
    x = data((50, 3, 4), dtype=torch.float64)
    est = make().fit(x)
    y = est.transform(x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(est.inverse_transform(y), x, rtol=1e-10, atol=1e-10)


def test_output_shapes():
    x = data((40, 3, 2, 2))
    assert PCA(n_components=5).fit_transform(x).shape == (40, 5)
    assert Whiten(method="pca").fit_transform(x).shape == (40, 12)
    assert Whiten(method="zca").fit_transform(x).shape == (40, 3, 2, 2)
    assert PCA(n_components=5).fit(x).inverse_transform(torch.zeros(2, 5)).shape == (2, 3, 2, 2)


@pytest.mark.parametrize("shape", [(50, 3, 4, 5), (50, 3, 7)], ids=["NCHW", "NCL"])
def test_per_feature_is_the_mean_image_and_per_channel_one_per_channel(shape):
    x = data(shape, offset=5.0)
    x64 = x.double()
    spatial = tuple(range(2, len(shape)))
    feature = Standardize(per="feature").fit(x)
    channel = Standardize(per="channel").fit(x)
    assert feature.mean_.shape == shape[1:]
    assert channel.mean_.shape == (shape[1],)
    torch.testing.assert_close(feature.mean_, x64.mean(0))
    torch.testing.assert_close(feature.scale_, x64.std(0, correction=0))
    torch.testing.assert_close(channel.mean_, x64.mean((0, *spatial)))
    torch.testing.assert_close(channel.scale_, x64.std((0, *spatial), correction=0))
    z = channel.transform(x).double()
    torch.testing.assert_close(
        z.mean((0, *spatial)), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        z.std((0, *spatial), correction=0), torch.ones(3, dtype=torch.float64)
    )
    zc = ZeroCenter(per="channel").fit(x)
    torch.testing.assert_close(zc.transform(x), x - zc.mean_.float()[:, *[None] * len(spatial)])


def test_per_channel_on_2d_input_equals_per_feature():
    x = data((30, 6), offset=3.0)
    for cls in (ZeroCenter, Standardize):
        a, b = cls(per="channel").fit(x), cls(per="feature").fit(x)
        torch.testing.assert_close(a.mean_, b.mean_)
        torch.testing.assert_close(a.transform(x), b.transform(x))


def test_per_channel_transform_accepts_other_spatial_sizes():
    x = data((20, 3, 4, 4), offset=1.0)
    crop = data((5, 3, 6, 6), seed=1)
    out = Standardize(per="channel").fit(x).transform(crop)
    assert out.shape == crop.shape
    with pytest.raises(
        ValueError, match=r"expected input of shape \(N, 3, 4, 4\).*got \(5, 3, 6, 6\)"
    ):
        Standardize(per="feature").fit(x).transform(crop)
    with pytest.raises(ValueError, match=r"\(N, 3, \.\.\.\).*got \(5, 4, 6, 6\)"):
        Standardize(per="channel").fit(x).transform(torch.zeros(5, 4, 6, 6))


# --------------------------------------------------------------------------- whitening


@pytest.mark.parametrize("method", ["zca", "pca"])
def test_whitened_data_has_identity_covariance(method):
    x = data((400, 3, 2, 2), offset=2.0, dtype=torch.float64)
    z = Whiten(method=method, eps=0.0).fit_transform(x).reshape(400, -1)
    torch.testing.assert_close(
        torch.cov(z.T), torch.eye(12, dtype=torch.float64), atol=1e-9, rtol=0
    )
    # float32 data: the transform runs in float32, the smallest-variance direction is amplified
    z32 = Whiten(method=method, eps=0.0).fit_transform(x.float()).reshape(400, -1).double()
    torch.testing.assert_close(
        torch.cov(z32.T), torch.eye(12, dtype=torch.float64), atol=1e-3, rtol=0
    )


def test_zca_matrix_is_symmetric_and_stays_closest_to_the_input():
    x = data((300, 8), dtype=torch.float64)
    zca = Whiten(method="zca", eps=0.0).fit(x)
    assert torch.equal(zca.W_, zca.W_.T)
    torch.testing.assert_close(zca.W_ @ zca.W_inv_, torch.eye(8, dtype=torch.float64))
    # W = Σ^{-1/2}: W Σ W = I
    torch.testing.assert_close(zca.W_ @ zca.covariance_ @ zca.W_, torch.eye(8, dtype=torch.float64))
    # ZCA moves the (standardized) data less than PCA whitening does (Kessy et al., 2018)
    xs = Standardize().fit_transform(x)
    moved = {m: (Whiten(method=m, eps=0.0).fit_transform(xs) - xs).norm() for m in ("zca", "pca")}
    assert moved["zca"] < moved["pca"]


def test_eps_regularizes_and_singular_covariance_needs_eps():
    x = data((100, 5), dtype=torch.float64)
    x = torch.cat([x, x[:, :1] * 2], 1)  # a sixth, linearly dependent feature
    z = Whiten(eps=1e-5).fit_transform(x)
    assert torch.isfinite(z).all()
    eig = torch.linalg.eigvalsh(torch.cov(z.T))
    assert eig.max() <= 1 + 1e-9  # eps only shrinks: every direction has variance λ/(λ+ε) <= 1
    with pytest.raises(ValueError, match=r"singular.*pass eps > 0"):
        Whiten(eps=0.0).fit(torch.zeros(10, 3))


# --------------------------------------------------------------------------- eigh precision


def spectrum_data(n, spec, *, offset=0.0, seed=0):
    """float32 data whose covariance has eigenvalues ``spec`` along random orthogonal axes."""
    g = torch.Generator().manual_seed(seed)
    d = len(spec)
    axes, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    return ((z * spec.sqrt()) @ axes.T + offset).float()


WELL = torch.logspace(0, -1.5, 48, dtype=torch.float64)  # condition number 32 <= 100
IMAGE = 50 / torch.arange(1, 129, dtype=torch.float64) ** 2  # pixel-like decay, cond 8e5
WIDE = torch.logspace(3, -6, 128, dtype=torch.float64)  # eigenvalues from 1e3 down to 1e-6


@pytest.fixture
def eigh_dtypes(monkeypatch):
    """The dtypes the eigendecompositions of the fits ran in, in order."""
    seen = []
    eigh = T._eigh

    def spy(cov):
        seen.append(cov.dtype)
        return eigh(cov)

    monkeypatch.setattr(T, "_eigh", spy)
    return seen


def force_eigh_dtype(monkeypatch, dtype):
    monkeypatch.setattr(T, "_eigh_input", lambda cov, data_dtype, eps: cov.to(dtype))


def whitening_error(est, x, eps, min_variance=0.0):
    """max |cov(z) − target| of the whitened training data z, in the eigenbasis of covariance_,
    over the directions of variance >= min_variance; target diag(λ / (λ + ε))."""
    z = est.transform(x).reshape(len(x), -1).double()
    evals, evecs = torch.linalg.eigh(est.covariance_)  # ascending
    evals, evecs = evals.flip(0).clamp(min=0), evecs.flip(1)
    cov = torch.cov(z.T)
    cov = evecs.T @ cov @ evecs if est.method == "zca" else cov  # PCA output: already rotated
    keep = evals >= min_variance
    target = torch.diag(evals / (evals + eps))
    return (cov - target)[keep][:, keep].abs().max().item()


@pytest.mark.parametrize("offset", [0.0, 1e4])
@pytest.mark.parametrize("method", ["zca", "pca"])
def test_well_conditioned_float32_fit_uses_float32_eigh_and_whitens_as_well(
    method, offset, eigh_dtypes, monkeypatch
):
    x = spectrum_data(6000, WELL, offset=offset)
    est = Whiten(method=method, eps=0.0).fit(x)
    assert eigh_dtypes == [torch.float32]
    assert est.W_.dtype == est.components_.dtype == torch.float64
    error = whitening_error(est, x, 0.0)
    assert error < 5e-5  # measured 1e-6 .. 1.2e-5: 20x inside the 1e-3 of the tests above
    force_eigh_dtype(monkeypatch, torch.float64)
    ref = Whiten(method=method, eps=0.0).fit(x)
    assert error < 3 * whitening_error(ref, x, 0.0) + 5e-6  # as white as with float64
    torch.testing.assert_close(est.W_, ref.W_, rtol=0, atol=1e-4 * ref.W_.abs().max().item())
    scale = (x - x.mean(0)).abs().max()
    back = est.inverse_transform(est.transform(x))
    torch.testing.assert_close(back, x, rtol=0, atol=1e-5 * scale.item())


def test_whitened_held_out_data_has_identity_covariance_up_to_sampling_error():
    """Statistical check: fresh data from the training distribution, whitened with the float32
    route, has covariance I up to the sampling errors of the fit and of the check (N = M)."""
    n = 20_000
    for method in ("zca", "pca"):
        est = Whiten(method=method, eps=0.0).fit(spectrum_data(n, WELL, offset=3.0))
        fresh = spectrum_data(2 * n, WELL, offset=3.0)[n:]  # same axes, other samples
        z = est.transform(fresh).double()
        error = (torch.cov(z.T) - torch.eye(48, dtype=torch.float64)).abs().max().item()
        # entries have sd ≈ √(2/n) (fit) ⊕ √(1/n) (check); max of 1176 entries < 5 sd
        assert error < 5 * (3 / n) ** 0.5, (method, error)


@pytest.mark.parametrize("method", ["zca", "pca"])
@pytest.mark.parametrize(
    ("spec", "offset", "min_variance"),
    [(IMAGE, 1e3, 0.0), (WIDE, 100.0, 1e-2)],
    ids=["pixel-like", "1e-6..1e3"],
)
def test_ill_conditioned_float32_fit_keeps_float64_eigh(
    method, spec, offset, min_variance, eigh_dtypes, monkeypatch
):
    x = spectrum_data(20_000, spec, offset=offset)
    est = Whiten(method=method).fit(x)  # eps = 1e-5: λ_max / (λ_min + ε) >> 100
    assert eigh_dtypes == [torch.float64]
    error = whitening_error(est, x, 1e-5, min_variance)  # resolved directions of WIDE
    assert error < 1e-3  # measured 6e-5 (pixel-like), 4e-4 (1e-6..1e3)
    # The test can tell: a float32 eigendecomposition misses the tolerance on such data.
    force_eigh_dtype(monkeypatch, torch.float32)
    assert whitening_error(Whiten(method=method).fit(x), x, 1e-5, min_variance) > 1e-3


def test_eps_and_dtype_decide_the_eigh_precision(eigh_dtypes):
    wide = spectrum_data(2000, torch.logspace(0, -6, 32, dtype=torch.float64))
    Whiten(eps=1e-5).fit(wide)  # λ_max / (λ_min + ε) ≈ 1e5
    Whiten(eps=0.05).fit(wide)  # ≈ 20: eps regularizes the small directions
    PCA(eps=0.05).fit(wide)
    Whiten(eps=0.05).fit(wide.double())  # float64 data: always float64
    PCA().fit(torch.ones(10, 4))  # zero covariance
    assert eigh_dtypes == [torch.float64, torch.float32, torch.float32] + [torch.float64] * 2


@pytest.mark.parametrize(
    ("scale", "dtype"), [(1e-20, torch.float64), (1e-12, torch.float32), (1e15, torch.float32)]
)
def test_tiny_covariances_keep_float64_eigh(scale, dtype, eigh_dtypes):
    # variances ~1e-40 would be subnormal in float32; 1e-24 and 1e30 are fine. (Values above
    # ~1e17 overflow the float32 products of the covariance itself, whatever the eigh.)
    x = spectrum_data(2000, WELL) * scale
    est = Whiten(method="zca", eps=0.0).fit(x)
    assert eigh_dtypes == [dtype]
    assert whitening_error(est, x, 0.0) < 1e-4


def test_cpu_eigh_backends_agree(monkeypatch):
    cov = torch.cov(spectrum_data(500, WELL).T.double())
    monkeypatch.setattr(T, "_EIGH_BACKEND", {torch.float64: "numpy"})
    evals_np, evecs_np = T._eigh(cov)
    monkeypatch.setattr(T, "_EIGH_BACKEND", {})
    evals_torch, evecs_torch = T._eigh(cov)
    assert evals_np.dtype == evecs_np.dtype == torch.float64
    torch.testing.assert_close(evals_np, evals_torch, rtol=1e-12, atol=0)
    overlap = (evecs_np.T @ evecs_torch).abs()  # distinct eigenvalues: ±1 on the diagonal
    torch.testing.assert_close(overlap, torch.eye(48, dtype=torch.float64), rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ["zca", "pca"])
def test_w_inv_is_formed_on_first_use_and_follows_refits(method):
    x = spectrum_data(300, WELL)
    est = Whiten(method=method, eps=0.0)
    with pytest.raises(AttributeError, match="not fitted"):
        est.W_inv_  # noqa: B018
    est.fit(x[:200])
    assert est._w_inv is None  # fit does not pay for it
    eye = torch.eye(48, dtype=torch.float64)
    # float32 eigenvectors are orthonormal to ~1e-7, so W_inv_ W_ = I to ~1e-6 (1e-9 in float64)
    torch.testing.assert_close(est.W_inv_ @ est.W_, eye, rtol=0, atol=1e-5)
    est.partial_fit(x[200:])  # the cached inverse belongs to the old fit
    torch.testing.assert_close(est.W_inv_ @ est.W_, eye, rtol=0, atol=1e-5)
    f64 = Whiten(method=method, eps=0.0).fit(x.double())
    torch.testing.assert_close(f64.W_inv_ @ f64.W_, eye, rtol=0, atol=1e-9)
    loaded = Whiten(method=method, eps=0.0).load_state_dict(est.state_dict())
    assert torch.equal(loaded.W_inv_, est.W_inv_)


# --------------------------------------------------------------------------- streaming == one-shot


def loaders(x):
    y = torch.zeros(len(x))
    cuts = [0, 1, 8, 9, 70, 71, 150, len(x)]
    return {
        "loader7": DataLoader(TensorDataset(x, y), batch_size=7),
        "loader64": DataLoader(TensorDataset(x, y), batch_size=64),
        "uneven-list": [x[a:b] for a, b in itertools.pairwise(cuts)],
        "numpy-batches": [x[:100].numpy(), x[100:].numpy()],
    }


def reference(x, per="feature"):
    """float64 numpy statistics of the float32 data."""
    a = x.double().numpy()
    axes = (0,) if per == "feature" else (0, *range(2, a.ndim))
    return a.mean(axes), a.var(axes)


@pytest.mark.parametrize("chunks", ["default", "small"])
@pytest.mark.parametrize("per", ["feature", "channel"])
def test_streaming_moments_equal_one_shot_with_a_large_offset(per, chunks, request):
    if chunks == "small":
        request.getfixturevalue("small_chunks")
    g = torch.Generator().manual_seed(1)
    x = (1e4 + torch.randn(300, 3, 2, 2, generator=g, dtype=torch.float64)).float()  # std 1
    mean, var = reference(x, per)
    one = Standardize(per=per).fit(x)
    for name, batches in loaders(x).items():
        est = Standardize(per=per).fit(batches)
        assert est.n_samples_seen_ == 300, name
        np.testing.assert_allclose(est.mean_.numpy(), mean, rtol=0, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(est.var_.numpy(), var, rtol=1e-9, err_msg=name)
        torch.testing.assert_close(est.transform(x), one.transform(x))
        zc = ZeroCenter(per=per).fit(batches)
        np.testing.assert_allclose(zc.mean_.numpy(), mean, rtol=0, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("chunks", ["default", "small"])
def test_streaming_covariance_equals_one_shot_with_a_large_offset(chunks, request):
    if chunks == "small":
        request.getfixturevalue("small_chunks")
    x = (data((300, 3, 2, 2), dtype=torch.float64) / 3 + 1e4).float()
    a = flat64(x)
    ref_mean, ref_cov = a.mean(0), np.cov(a.T)
    scale = np.abs(ref_cov).max()
    # Naive float32 E[xxᵀ] − E[x]E[x]ᵀ loses everything at this offset: the test can tell.
    x2 = x.reshape(300, -1)
    naive = (x2.T @ x2 / 300).double().numpy() - np.outer(a.mean(0), a.mean(0))
    assert np.abs(naive * 300 / 299 - ref_cov).max() > scale
    one = Whiten().fit(x)
    for name, batches in {**loaders(x), "generator": (b for b in x.split(33))}.items():
        est = Whiten().fit(batches)
        np.testing.assert_allclose(est.mean_.numpy(), ref_mean, rtol=0, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(est.covariance_.numpy(), ref_cov, rtol=0, atol=1e-5 * scale)
        torch.testing.assert_close(est.transform(x), one.transform(x), atol=1e-3, rtol=1e-3)


def test_streaming_float64_data_is_exact_to_float64_rounding(small_chunks):
    x = data((200, 12), offset=1e6, dtype=torch.float64)
    a = x.numpy()
    est = PCA().fit(list(x.split(17)))
    np.testing.assert_allclose(est.covariance_.numpy(), np.cov(a.T), rtol=1e-9, atol=1e-9)


def test_partial_fit_sequence_equals_fit(small_chunks):
    x = data((120, 3, 4), offset=50.0)
    for make in ALL:
        whole, parts = make().fit(x), make()
        for batch in x.split(25):
            parts.partial_fit(batch)
        assert parts.n_samples_seen_ == 120
        torch.testing.assert_close(parts.transform(x), whole.transform(x), rtol=1e-4, atol=1e-4)


def test_fit_resets_previous_statistics():
    x, other = data((50, 4)), data((50, 4), seed=3, offset=100.0)
    a = Standardize().fit(other).fit(x)
    b = Standardize().fit(x)
    torch.testing.assert_close(a.mean_, b.mean_)
    assert a.n_samples_seen_ == 50


# --------------------------------------------------------------------------- scikit-learn agreement


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_standardize_agrees_with_sklearn_standard_scaler(offset):
    x = data((200, 10), offset=offset)
    a = flat64(x)
    sk = StandardScaler().fit(a)
    est = Standardize().fit(x)
    np.testing.assert_allclose(est.mean_.numpy(), sk.mean_, rtol=1e-12)
    np.testing.assert_allclose(est.var_.numpy(), sk.var_, rtol=1e-9)
    np.testing.assert_allclose(est.scale_.numpy(), sk.scale_, rtol=1e-9)
    np.testing.assert_allclose(est.transform(x).numpy(), sk.transform(a), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("n_components", [None, 4])
def test_pca_agrees_with_sklearn(n_components, whiten):
    x = data((300, 10), dtype=torch.float64)
    a = x.numpy()
    sk = SkPCA(n_components=n_components, whiten=whiten, svd_solver="full").fit(a)
    est = PCA(n_components=n_components, whiten=whiten, eps=0.0).fit(x)
    np.testing.assert_allclose(est.explained_variance_.numpy(), sk.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(
        est.explained_variance_ratio_.numpy(), sk.explained_variance_ratio_, rtol=1e-10
    )
    signs = np.sign((est.components_.numpy() * sk.components_).sum(1))  # up to sign
    np.testing.assert_allclose(est.components_.numpy() * signs[:, None], sk.components_, atol=1e-9)
    np.testing.assert_allclose(est.transform(x).numpy() * signs, sk.transform(a), atol=1e-8)
    assert est.n_components_ == sk.n_components_


@pytest.mark.parametrize("solver", ["covariance_eigh", "full"])
def test_float32_whitening_pca_agrees_with_sklearn(solver, eigh_dtypes):
    """float32 data on the float32-eigh route; scikit-learn's covariance_eigh solver also runs
    in float32 (its covariance and eigh), its full solver gets the data in float64. No offset:
    covariance_eigh forms XᵀX − n μμᵀ in float32 and loses ~1e-4 of it to an offset of 2."""
    x = spectrum_data(6000, WELL)
    a = x.numpy() if solver == "covariance_eigh" else x.double().numpy()
    sk = SkPCA(whiten=True, svd_solver=solver).fit(a)
    est = PCA(whiten=True, eps=0.0).fit(x)
    assert eigh_dtypes == [torch.float32]
    np.testing.assert_allclose(est.explained_variance_.numpy(), sk.explained_variance_, rtol=1e-4)
    signs = np.sign((est.components_.numpy() * sk.components_).sum(1))
    np.testing.assert_allclose(est.components_.numpy() * signs[:, None], sk.components_, atol=1e-4)
    np.testing.assert_allclose(est.transform(x).numpy() * signs, sk.transform(a), atol=1e-3)


def test_pca_sign_convention_is_deterministic():
    x = data((100, 6))
    comps = PCA().fit(x).components_
    top = comps.gather(1, comps.abs().argmax(1, keepdim=True))
    assert (top > 0).all()
    torch.testing.assert_close(PCA().fit(x.flip(0)).components_, comps, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fraction", [0.5, 0.8, 0.95, 0.999])
def test_n_components_fraction_picks_smallest_k_reaching_it(fraction):
    x = data((300, 10), dtype=torch.float64)
    full = PCA().fit(x)
    cum = full.explained_variance_ratio_.cumsum(0)
    est = PCA(n_components=fraction).fit(x)
    k = est.n_components_
    assert cum[k - 1] >= fraction and (k == 1 or cum[k - 2] < fraction)
    assert est.components_.shape == (k, 10) and est.transform(x).shape == (300, k)
    assert k == SkPCA(n_components=fraction, svd_solver="full").fit(x.numpy()).n_components_


# --------------------------------------------------------------------------- constants, dtypes


@pytest.mark.parametrize("per", ["feature", "channel"])
def test_constant_features_get_scale_one_and_no_nan(per):
    x = data((40, 3, 5))
    x[:, 1] = 0.1  # one constant channel (and 5 constant features)
    est = Standardize(per=per).fit(x)
    z = est.transform(x)
    assert torch.isfinite(z).all()
    assert (z[:, 1] == 0).all()
    scale = est.scale_.reshape(3, -1) if per == "feature" else est.scale_[:, None]
    assert (scale[1] == 1).all() and (scale[0] != 1).all()
    torch.testing.assert_close(est.inverse_transform(z), x)


def test_integer_and_numpy_inputs_and_dtypes():
    pixels = torch.randint(0, 256, (30, 3, 2, 2), generator=torch.Generator().manual_seed(0))
    z = ZeroCenter().fit(pixels).transform(pixels)
    assert z.dtype == torch.float32
    torch.testing.assert_close(
        z.double().mean(0), torch.zeros(3, 2, 2, dtype=torch.float64), atol=1e-4, rtol=0
    )
    est = Standardize().fit(pixels.numpy())
    out = est.transform(pixels.numpy().astype(np.float64))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert est.transform(pixels.half()).dtype == torch.float16
    flipped = pixels.numpy()[::-1]  # negative strides
    assert torch.isfinite(est.transform(flipped)).all()


def test_fit_does_not_modify_the_input_nor_track_gradients():
    x = data((30, 12), offset=3.0).requires_grad_()
    before = x.detach().clone()
    for make in ALL:
        make().fit(x)
    assert torch.equal(x.detach(), before)
    z = Standardize().fit(x).transform(x)
    z.sum().backward()  # transform stays differentiable
    assert x.grad is not None


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_transform_before_fit_raises(make):
    est = make()
    with pytest.raises(T.NotFittedError, match="not fitted yet: call fit"):
        est.transform(torch.zeros(3, 12))
    with pytest.raises(ValueError, match="not fitted yet: call fit"):
        est.inverse_transform(torch.zeros(3, 12))


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_wrong_feature_count_at_transform(make):
    est = make().fit(data((30, 12)))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 12\).*got \(4, 13\)"):
        est.transform(torch.zeros(4, 13))


def test_wrong_shape_at_inverse_transform():
    pca = PCA(n_components=3).fit(data((30, 12)))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3\).*got \(4, 12\)"):
        pca.inverse_transform(torch.zeros(4, 12))
    zca = Whiten().fit(data((30, 3, 2, 2)))
    with pytest.raises(ValueError, match=r"\(N, 3, 2, 2\).*got \(4, 12\)"):
        zca.inverse_transform(torch.zeros(4, 12))


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_nan_and_inf_are_reported_with_count_and_position(make):
    x = data((30, 12))
    x[4, 2] = float("nan")
    x[7, 0] = float("inf")
    with pytest.raises(ValueError, match=r"X contains 2 NaN/Inf.*\[\(4, 2\), \(7, 0\)\]"):
        make().fit(x)
    with pytest.raises(ValueError, match=r"batch 1 contains 2 NaN/Inf.*\[\(4, 2\), \(7, 0\)\]"):
        make().fit([x[:3], x[3:]])  # rows counted from the start of the stream


def test_huge_finite_values_are_not_mistaken_for_inf():
    x = torch.full((4, 2), 3e38)
    x[1] = 1e38
    assert ZeroCenter().fit(x).n_samples_seen_ == 4


@pytest.mark.parametrize("cls", [Standardize, PCA, Whiten])
def test_fitting_needs_two_examples(cls):
    with pytest.raises(ValueError, match=r"needs at least 2 example\(s\).*got 1"):
        cls().fit(torch.ones(1, 5))
    with pytest.raises(ValueError, match=r"at least 2 .*got 1"):
        cls().partial_fit([torch.ones(1, 5)])


def test_zero_center_needs_one_example():
    assert ZeroCenter().fit(torch.ones(1, 5)).n_samples_seen_ == 1
    with pytest.raises(ValueError, match=r"at least 1 example\(s\).*got 0"):
        ZeroCenter().fit(torch.ones(0, 5))


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_empty_iterable_raises(make):
    with pytest.raises(ValueError, match="empty iterable"):
        make().fit([])
    with pytest.raises(ValueError, match="empty iterable"):
        make().fit(iter(()))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ZeroCenter(per="pixel"), "per must be 'feature'.*got 'pixel'"),
        (lambda: Standardize(per=None), "per must be.*got None"),
        (lambda: Whiten(method="cholesky"), "method must be 'zca'.*got 'cholesky'"),
        (lambda: Whiten(eps=-1.0), "eps must be a finite number >= 0.*got -1.0"),
        (lambda: PCA(eps=float("nan")), "eps must be.*got nan"),
        (lambda: PCA(n_components=0), "n_components must be.*got 0"),
        (lambda: PCA(n_components=1.0), "n_components must be.*got 1.0"),
        (lambda: PCA(n_components=True), "n_components must be.*got True"),
        (lambda: PCA(n_components="all"), "n_components must be.*got 'all'"),
    ],
)
def test_bad_arguments_are_rejected_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_init_is_keyword_only_and_whiten_must_be_bool():
    with pytest.raises(TypeError):
        Standardize("channel")
    with pytest.raises(TypeError, match="whiten must be True or False"):
        PCA(whiten="yes")


def test_n_components_larger_than_features():
    with pytest.raises(ValueError, match="n_components=20 exceeds the number of features D=12"):
        PCA(n_components=20).fit(data((30, 12)))


class Examples(Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, i):
        return torch.zeros(4)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.zeros(10), r"shape \(10,\); expected a batch of shape \(N, \.\.\.\)"),
        ("abc", "got a str; pass a tensor"),
        (5, "got a int"),
        ({"x": torch.zeros(3, 2)}, "got a dict"),
        (Examples(), "map-style Examples.*DataLoader"),
        ([[1.0, 2.0], [3.0, 4.0]], "batch 0 is a float.*torch.tensor"),
        (torch.zeros(4, 2, dtype=torch.complex64), "complex"),
        ((torch.zeros(4, 2), torch.zeros(4)), r"batch 1 has shape \(4,\).*pass X alone"),
    ],
    ids=["1d", "str", "int", "dict", "map-dataset", "nested-list", "complex", "X-y-tuple"],
)
def test_bad_data_raises_helpful_errors(bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        Standardize().fit(bad)


def test_tensor_dataset_is_fitted_on_its_inputs():
    x = data((30, 4), offset=2.0)
    est = Standardize().fit(TensorDataset(x, torch.zeros(30)))
    torch.testing.assert_close(est.mean_, x.double().mean(0))


def test_fit_transform_needs_in_memory_data():
    with pytest.raises(TypeError, match=r"fit_transform needs a tensor.*call fit"):
        Standardize().fit_transform([torch.zeros(3, 2)])


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_failed_fit_leaves_fitted_estimator_unchanged(make):
    x = data((40, 12))
    est = make().fit(x)
    before = est.state_dict()
    expected = est.transform(x)
    bad = x.clone()
    bad[-1, 0] = float("nan")
    failures = [
        lambda: est.fit([x[:20], bad[20:]]),  # NaN in the second batch
        lambda: est.partial_fit([x[:20], bad[20:]]),
        lambda: est.partial_fit(torch.zeros(5, 13)),  # new feature count
        lambda: est.fit([x[:20], torch.zeros(5, 13)]),
        lambda: est.fit([]),
    ]
    for fail in failures:
        with pytest.raises(ValueError):
            fail()
        assert est.n_samples_seen_ == 40
        torch.testing.assert_close(est.transform(x), expected, rtol=0, atol=0)
    after = est.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]) if torch.is_tensor(value) else value == after[key], (
            key
        )


# --------------------------------------------------------------------------- persistence, repr


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_state_dict_round_trip(make):
    x = data((40, 3, 4), offset=7.0)
    est = make().fit(x)
    buffer = io.BytesIO()
    torch.save(est.state_dict(), buffer)
    buffer.seek(0)
    fresh = make().load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh.transform(x), est.transform(x))
    y = est.transform(x)
    assert torch.equal(fresh.inverse_transform(y), est.inverse_transform(y))
    assert fresh.n_samples_seen_ == 40 and fresh.example_shape_ == (3, 4)
    # partial_fit continues from the loaded statistics
    more = data((10, 3, 4), seed=5)
    torch.testing.assert_close(
        fresh.partial_fit(more).transform(x), est.partial_fit(more).transform(x)
    )


def test_state_dict_contents_are_plain():
    sd = Standardize(per="channel").fit(data((10, 3, 2))).state_dict()
    assert sd["class"] == "Standardize" and sd["version"] == T.STATE_VERSION
    assert sd["params"] == {"per": "channel"}
    assert sd["example_shape_"] == [3, 2] and sd["n_samples_seen_"] == 10
    assert all(isinstance(v, torch.Tensor | int | str | list | dict) for v in sd.values())


def test_unfitted_state_dict_loads_as_unfitted():
    est = Whiten().fit(data((20, 4)))
    est.load_state_dict(Whiten().state_dict())
    with pytest.raises(T.NotFittedError):
        est.transform(data((2, 4)))


def test_loading_another_class_or_config_fails_clearly():
    sd = Standardize().fit(data((20, 4))).state_dict()
    with pytest.raises(ValueError, match=r"belongs to Standardize, not ZeroCenter"):
        ZeroCenter().load_state_dict(sd)
    with pytest.raises(ValueError, match=r"saved from Standardize\(per='feature'\).*per='channel'"):
        Standardize(per="channel").load_state_dict(sd)
    zca = Whiten(method="zca").fit(data((20, 4))).state_dict()
    with pytest.raises(ValueError, match=r"create Whiten\(method='zca', eps=1e-05\)"):
        Whiten(method="pca").load_state_dict(zca)
    with pytest.raises(ValueError, match="version"):
        Standardize().load_state_dict({**sd, "version": 99})
    fitted = Standardize().fit(data((20, 4)))
    with pytest.raises(ValueError, match=r"lacks \['scale_'\]"):
        fitted.load_state_dict({k: v for k, v in sd.items() if k != "scale_"})
    assert fitted.n_samples_seen_ == 20  # a failed load keeps the fitted state
    with pytest.raises(TypeError, match="expected a dict"):
        Standardize().load_state_dict([1, 2])


def test_repr_shows_arguments():
    assert repr(Standardize(per="channel")) == "Standardize(per='channel')"
    assert repr(PCA(n_components=0.9)) == "PCA(n_components=0.9, whiten=False, eps=1e-05)"
    assert repr(Whiten(method="pca", eps=0.1)) == "Whiten(method='pca', eps=0.1)"


def test_docstring_examples():
    import doctest

    failures, _ = doctest.testmod(T, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
