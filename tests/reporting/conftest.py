"""A run directory with every kind of data the report draws, built once per test process.

Real runs wherever they are fast (fit, lr_find, diagnose, the init lab, a search with a user
objective), plus the demo's ``data_stats.json``. User-supplied strings carry an XSS payload:
the run's name, a search parameter's name and a finding's message and evidence.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import babysit as bs
from babysit import initlab, runs
from babysit.findings import Finding

XSS = "<script>alert(1)</script>"


def digits_data(n: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = bs.data.load("digits").train.tensors
    x = bs.data.Standardize().fit(x).transform(x)
    return x[:n], y[:n]


def build_full_run(root: Path) -> Path:
    """Write every file the report reads into ``root`` (and ``root/train``, ``root/search``)."""
    torch.manual_seed(0)
    x, y = digits_data()
    train, val = (x[:480], y[:480]), (x[480:], y[480:])
    runs.fresh_run_dir(root)
    runs.write_json(root, runs.CONFIG, {"kind": "demo", "name": f"run {XSS}"})
    raw = bs.data.load("digits").train.tensors[0]
    runs.write_json(
        root,
        "data_stats.json",
        {
            "dataset": "digits",
            "before": {"mean": raw.mean(0).tolist(), "std": raw.std(0).tolist()},
            "after": {"mean": x.mean(0).tolist(), "std": x.std(0).tolist()},
        },
    )
    initlab.run(depth=3, width=32, n_inputs=200, run_dir=root)
    model = bs.nn.mlp(64, [32, 32], 10)
    bs.lr_find(model, train, steps=40, run_dir=root)
    diagnosis = bs.diagnose(bs.nn.mlp(64, [32], 10), train)
    planted = Finding(
        "DEAD_RELU",
        "warning",
        f"a message with {XSS} in it",
        f"advice with {XSS}",
        {"fraction": 0.9, XSS: XSS},
        layer=XSS,
    )
    findings = [*diagnosis.findings, planted]
    runs.write_json(root, runs.FINDINGS, {"findings": [f.to_dict() for f in findings]})
    bs.fit(model, train, val=val, epochs=3, lr=3e-3, run_dir=root / "train", progress=False)

    def objective(params, trial):  # best at the low edge of the first parameter: BEST_AT_EDGE
        return -params[XSS] + 0.1 * params["lr"]

    space = {XSS: bs.uniform(0.0, 1.0), "lr": bs.loguniform(1e-4, 1e-1)}
    bs.search(space, objective, n_trials=12, stages=2, run_dir=root / "search", seed=0)
    return root


@pytest.fixture(scope="session")
def full_run(tmp_path_factory) -> Path:
    """The run directory (do not modify: shared by the tests of a process)."""
    return build_full_run(tmp_path_factory.mktemp("full") / "run")


@pytest.fixture(scope="session")
def full_report(full_run) -> Path:
    """``report.html`` of :func:`full_run`."""
    return bs.report(full_run)
