"""docs/integrations.md's examples run as written, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("transformers")

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.slow  # two real trainings per framework and two diagnoses: ~20 s on 2 loaded cores
def test_the_examples_run_and_say_what_the_page_says(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = blocks()
    assert len(code) == 5
    namespace: dict = {}
    for block in code:
        exec(compile(block, str(DOC), "exec"), namespace)  # our own page
    assert namespace["babysit"].findings == [] or all(
        f.severity == "info" for f in namespace["babysit"].findings
    )
    assert {f.code for f in namespace["diverging"].findings} & {"LR_TOO_HIGH", "NAN_LOSS"}
    assert (tmp_path / "runs" / "lightning" / "metrics.csv").exists()
    assert (tmp_path / "runs" / "hf" / "babysit" / "findings.json").exists()
    assert namespace["diagnosis"] is not None
