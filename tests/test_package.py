"""`import babysit` stays light and exposes the public API."""

from __future__ import annotations

import json
import subprocess
import sys

import babysit

HEAVY = (
    "matplotlib",
    "optuna",
    "tensorboard",
    "mnist1d",
    "sklearn",
    "jinja2",
    "pandas",
    "lightning",
    "pytorch_lightning",
    "transformers",
    "accelerate",
)


def test_import_does_not_pull_heavy_dependencies():
    code = "import sys, json, babysit; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == []


def test_public_api_is_reachable():
    assert callable(babysit.nn.mlp) and callable(babysit.nn.init_model)
    assert callable(babysit.data.load) and babysit.data.ZeroCenter
    assert babysit.__version__
