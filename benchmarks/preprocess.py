"""Speed and memory of babysit.data's preprocessing (issue 2), against one ``X.T @ X``.

Every fit (and transform) of ZeroCenter, Standardize, ZCA Whiten and PCA on N x D float32 data
(CIFAR-10 flattened: D = 3072) is timed as a ratio to one torch ``X.T @ X`` on the same data,
measured in the same process: the GEMM is timed right before every variant in every round and
the median over rounds of these paired ratios is reported (and the best-case ratio, fastest fit
over fastest GEMM), so a change in machine load hits the baseline and the variant alike.
Streaming fits are fed ``--batch``-row batches. scikit-learn's ``StandardScaler.fit`` and
``PCA(whiten=True, svd_solver="covariance_eigh").fit`` are references.

The data, ``torch.rand`` (pixel-like values), has a well-conditioned covariance, so ZCA and PCA
run their eigendecomposition in float32; the "ill-conditioned" rows fit random-walk rows
(``cumsum`` of the same values along the features: neighbouring features strongly correlated, as
pixels are; condition number ~1e7), for which babysit keeps the eigendecomposition in float64
(see ``babysit.data.transforms``). The "of which" rows split a fit into its parts.

Peak memory: each variant runs in its own subprocess, which reports its peak resident memory
(``VmHWM``; ``peak_rss_mib`` says why not ``ru_maxrss``): a streaming ZCA fit whose batches are
generated on the fly (the full X never exists) for several N, against a fit on the whole X.

    python benchmarks/preprocess.py                       # N = 50 000, D = 3072, 2 threads
    python benchmarks/preprocess.py --n 5000 --d 512 --repeats 1 --memory-n 2000,5000   # quick

Never run by the tests.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import torch

from _common import add_write_docs_arg, emit
from babysit.data import PCA, Standardize, Whiten, ZeroCenter

# Targets from issue 2, as ratios to one X.T @ X.
TARGET_COVARIANCE = 1.3  # streaming ZCA / PCA fit (scikit-learn's covariance_eigh PCA: ~1.24)
TARGET_MOMENTS = 0.2  # streaming ZeroCenter / Standardize fit


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=50_000, help="examples")
    p.add_argument("--d", type=int, default=3072, help="features (3072 = CIFAR-10 flattened)")
    p.add_argument("--batch", type=int, default=1000, help="rows per batch of streaming fits")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; median reported")
    p.add_argument("--threads", type=int, default=2, help="torch and BLAS threads")
    p.add_argument("--memory-n", default="10000,50000", help="N values of the memory runs")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # internal: one memory run
    add_write_docs_arg(p)
    return p.parse_args()


# --------------------------------------------------------------------------- speed


def clock(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed_variants(x: torch.Tensor, batch: int) -> dict[str, tuple[Callable, Callable | None]]:
    """name -> (fit, transform or None). Streaming fits get ``batch``-row views of the data."""
    import numpy as np
    from sklearn.decomposition import PCA as SkPCA
    from sklearn.preprocessing import StandardScaler

    from babysit.data import transforms as T

    xn = x.numpy()
    x_ill = (x - 0.5).cumsum(1)  # random-walk rows: condition number ~1e7

    def batches(data: torch.Tensor) -> Callable:
        return lambda: data.split(batch)  # views, no copies

    fitted: dict[str, object] = {}

    def fit(name: str, make: Callable, data: Callable) -> Callable:
        def run() -> None:
            fitted[name] = make().fit(data())

        return run

    def transform(name: str) -> Callable:
        data = xn if name.startswith("sklearn") else x_ill if "ill-cond" in name else x
        return lambda: fitted[name].transform(data)

    specs = {
        "ZeroCenter fit, streaming": (ZeroCenter, batches(x)),
        "ZeroCenter fit, in memory": (ZeroCenter, lambda: x),
        "Standardize fit, streaming": (Standardize, batches(x)),
        "Standardize fit, in memory": (Standardize, lambda: x),
        "Whiten(zca) fit, streaming": (Whiten, batches(x)),
        "Whiten(zca) fit, in memory": (Whiten, lambda: x),
        "PCA fit (all components), streaming": (PCA, batches(x)),
        "Whiten(zca) fit, streaming, ill-conditioned": (Whiten, batches(x_ill)),
        "PCA fit (all components), streaming, ill-conditioned": (PCA, batches(x_ill)),
        "sklearn StandardScaler.fit": (StandardScaler, lambda: xn),
        "sklearn PCA(whiten, covariance_eigh).fit": (
            lambda: SkPCA(whiten=True, svd_solver="covariance_eigh"),
            lambda: xn,
        ),
    }
    out: dict[str, tuple[Callable, Callable | None]] = {}
    for name, (make, data) in specs.items():
        timed = "streaming" in name or "sklearn" in name
        out[name] = (fit(name, make, data), transform(name) if timed else None)
    # The parts of a fit, on the same covariance (of the well-conditioned data).
    cov = torch.cov(x[: min(len(x), 4 * x.shape[1])].T.double())
    cov32 = cov.float()
    v = torch.randn(cov.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    parts = {
        "the streaming covariance accumulation": lambda: accumulate(x, batch),
        "the eigh precision check (λ_max, float32 Cholesky)": lambda: T._eigh_input(
            cov, torch.float32, 1e-5
        ),
        "eigh float32 (torch), well-conditioned": lambda: torch.linalg.eigh(cov32),
        "eigh float64 (numpy), ill-conditioned": lambda: np.linalg.eigh(cov.numpy()),
        "ZCA's W_ (float64 Gram product)": lambda: T._gram(v),
    }
    for name, run in parts.items():
        out[f"  of which {name}"] = (run, None)
    # The backends babysit does not use for each precision (see transforms._eigh).
    out["  not used: eigh float64 (torch)"] = (lambda: torch.linalg.eigh(cov), None)
    out["  not used: eigh float32 (numpy)"] = (lambda: np.linalg.eigh(cov32.numpy()), None)
    return out


def accumulate(x: torch.Tensor, batch: int) -> None:
    """The N-dependent part of a PCA/Whiten fit alone: mean and covariance, no eigh.

    Uses the private accumulator of babysit.data.transforms, the same code path as fit.
    """
    from babysit.data.transforms import _chunks, _Covariance

    acc = _Covariance(x.shape[1], torch.float32, x.device)
    for b in x.split(batch):
        for chunk in _chunks(b):
            acc.update(chunk)
    acc.result()


def run_speed(args: argparse.Namespace) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, args.d, generator=g)  # pixel-like values in [0, 1)
    variants = speed_variants(x, args.batch)
    # name -> per round (GEMM, fit, transform) wall seconds; the GEMM is timed right before each
    # variant so that a ratio compares two runs under the same machine load.
    times: dict[str, list[tuple[float, float, float]]] = {k: [] for k in variants}
    for r in range(args.repeats):
        for name, (fit, transform) in variants.items():
            gemm = clock(lambda: x.T @ x)
            fw = clock(fit)
            tw = clock(transform) if transform else float("nan")
            times[name].append((gemm, fw, tw))
            print(
                f"round {r + 1}: {name}: X.T@X {gemm:.2f} s, fit {fw:.2f} s, transform {tw:.2f} s",
                file=sys.stderr,
            )
    gemms = [t[0] for ts in times.values() for t in ts]
    rows = [
        {
            "name": "torch X.T @ X (the unit)",
            "fit": statistics.median(gemms),
            "ratio": 1.0,
            "best": 1.0,
        }
    ]
    for name, ts in times.items():
        rows.append(
            {
                "name": name,
                "fit": statistics.median(t[1] for t in ts),
                "ratio": statistics.median(t[1] / t[0] for t in ts),
                "best": min(t[1] for t in ts) / min(gemms),
                "transform": statistics.median(t[2] for t in ts),
                "fit_transform_ratio": statistics.median((t[1] + t[2]) / t[0] for t in ts),
            }
        )
    return rows


def target(name: str) -> float | None:
    if "streaming" not in name or name.startswith(("sklearn", " ")):
        return None
    return TARGET_COVARIANCE if name.startswith(("Whiten", "PCA")) else TARGET_MOMENTS


def speed_table(rows: list[dict]) -> str:
    lines = [
        "| variant | fit (s) | fit / GEMM | best fit / best GEMM | transform (s) "
        "| (fit + transform) / GEMM | target | met |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        goal = target(r["name"])
        tr = r.get("transform", float("nan"))
        both = r.get("fit_transform_ratio", float("nan"))
        lines.append(
            f"| {r['name']} | {r['fit']:.2f} | {r['ratio']:.2f}x | {r['best']:.2f}x "
            f"| {'' if tr != tr else f'{tr:.2f}'} | {'' if both != both else f'{both:.2f}x'} "
            f"| {'' if goal is None else f'<= {goal}x'} "
            f"| {'' if goal is None else ('yes' if r['ratio'] <= goal else 'no')} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- memory


def generated_batches(n: int, d: int, batch: int) -> Iterator[torch.Tensor]:
    """Batches made on the fly: the full N x D data never exists."""
    g = torch.Generator().manual_seed(0)
    for start in range(0, n, batch):
        yield torch.rand(min(batch, n - start), d, generator=g)


def memory_variant(args: argparse.Namespace) -> None:
    """Run one variant in this (fresh) process and print its peak RSS as JSON."""
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.variant == "stream-zca":
        Whiten().fit(generated_batches(args.n, args.d, args.batch))
    elif args.variant == "stream-standardize":
        Standardize().fit(generated_batches(args.n, args.d, args.batch))
    elif args.variant == "inmemory-zca":
        x = torch.rand(args.n, args.d, generator=torch.Generator().manual_seed(0))
        Whiten().fit(x)
    elif args.variant != "baseline":
        raise SystemExit(f"unknown variant {args.variant!r}")
    print(json.dumps({"peak_mib": peak_rss_mib(), "seconds": time.perf_counter() - t0}))


def peak_rss_mib() -> float:
    """This process's peak resident memory.

    ``ru_maxrss`` of a child started by fork + exec starts at the parent's peak (Linux keeps the
    old address space's high-water mark across exec), so a parent that held the speed test's data
    would inflate every child. ``VmHWM`` in /proc/self/status is the high-water mark of this
    process's own address space; ``ru_maxrss`` is the fallback off Linux.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_memory(args: argparse.Namespace) -> list[dict]:
    rows = []
    ns = [int(v) for v in args.memory_n.split(",")]
    runs = [("baseline", ns[0])] + [
        (v, n) for v in ("stream-standardize", "stream-zca", "inmemory-zca") for n in ns
    ]
    for variant, n in runs:
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--n",
            str(n),
            "--d",
            str(args.d),
            "--batch",
            str(args.batch),
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append({"variant": variant, "n": n, **json.loads(out.strip().splitlines()[-1])})
        print(f"  memory {variant} N={n}: {rows[-1]['peak_mib']:.0f} MiB", file=sys.stderr)
    return rows


def memory_table(rows: list[dict], d: int) -> str:
    base = next(r["peak_mib"] for r in rows if r["variant"] == "baseline")
    lines = [
        "| variant | N | X size (MiB) | peak RSS (MiB) | above import baseline (MiB) | fit (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        size = r["n"] * d * 4 / 2**20 if r["variant"] != "baseline" else 0
        lines.append(
            f"| {r['variant']} | {r['n'] if r['variant'] != 'baseline' else ''} | {size:.0f} "
            f"| {r['peak_mib']:.0f} | {r['peak_mib'] - base:.0f} | {r['seconds']:.2f} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    if args.variant:
        memory_variant(args)
        return
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # numpy's BLAS, used by scikit-learn
    out = [f"Data: N = {args.n}, D = {args.d} float32, batches of {args.batch} rows", ""]
    if not args.skip_speed:
        out += [speed_table(run_speed(args)), ""]
    if not args.skip_memory:
        out.append(memory_table(run_memory(args), args.d))
    emit(args, __file__, out, note=f"{args.threads} torch and BLAS threads.")


if __name__ == "__main__":
    main()
