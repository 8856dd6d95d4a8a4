"""benchmarks/_common.write_docs: each script's block of docs/benchmarks.md, replaced in place."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.append(str(BENCHMARKS))  # after everything else: shadows nothing

import _common  # noqa: E402  (benchmarks/ is not a package)

DOC = """# Benchmarks

## A
<!-- benchmarks/a.py:begin -->
old table of a
<!-- benchmarks/a.py:end -->

### History
kept

## B
<!-- benchmarks/b.py:begin -->
b
<!-- benchmarks/b.py:end -->
"""


def test_write_docs_replaces_only_its_block_and_records_where_it_ran(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    _common.write_docs("benchmarks/a.py", "| new | table |\n|---|---|", doc=doc, note="2 threads.")
    text = doc.read_text()
    block = text.split("<!-- benchmarks/a.py:begin -->")[1].split("<!-- benchmarks/a.py:end -->")[0]
    assert "old table" not in block and "| new | table |" in block
    header = block.strip().splitlines()[0]
    assert re.search(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", header)
    for part in ("commit", "cores", "torch", "load average", "2 threads."):
        assert part in header
    assert (
        text.split("<!-- benchmarks/a.py:end -->")[1]
        == DOC.split("<!-- benchmarks/a.py:end -->")[1]
    )
    assert text.startswith("# Benchmarks\n\n## A\n")  # what lies outside the block is kept
    _common.write_docs("benchmarks/a.py", "second", doc=doc)  # again: replaced, not appended
    assert doc.read_text().count("<!-- benchmarks/a.py:begin -->") == 1
    assert "| new | table |" not in doc.read_text() and "second" in doc.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["benchmarks.md"]  # no temporary file left


@pytest.mark.parametrize(
    "doc",
    [
        "no markers at all\n",
        "<!-- benchmarks/a.py:end -->\n<!-- benchmarks/a.py:begin -->\n",
        DOC + "<!-- benchmarks/a.py:begin -->\n",
    ],
)
def test_missing_or_broken_markers_are_refused_and_the_doc_is_unchanged(tmp_path, doc):
    path = tmp_path / "benchmarks.md"
    path.write_text(doc)
    with pytest.raises(ValueError, match=r"expected one <!-- benchmarks/a.py:begin -->"):
        _common.write_docs("benchmarks/a.py", "new", doc=path)
    assert path.read_text() == doc


def test_every_script_that_writes_docs_has_its_block():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    writers = [
        p
        for p in BENCHMARKS.glob("*.py")
        if p.name != "_common.py" and "add_write_docs_arg(" in p.read_text()
    ]
    assert {p.name for p in writers} >= {"diagnose.py", "probes.py", "monitors.py", "preprocess.py"}
    for script in writers:
        begin, end = _common.markers(script.name)
        assert text.count(begin) == 1 and text.count(end) == 1, script.name
        assert text.index(begin) < text.index(end)


def test_the_monitor_benchmark_judges_with_the_products_monitors_and_thresholds():
    import monitors  # benchmarks/monitors.py
    from babysit.nn import mlp
    from babysit.thresholds import resolve

    scenario = monitors.B(
        "B linear, 3 epochs",
        lambda: mlp(40, [], 10),
        "mlp(40, [], 10)",
        frozenset({"UNDERFITTING"}),
        fit=monitors._fit(epochs=3),
    )
    caught = monitors.run(scenario, 0, {})
    assert monitors.verdict(scenario, caught["findings"])[0] == "OK"
    evidence = monitors.numbers(caught, resolve({}))
    assert evidence["tr_eval"] < resolve({})["underfit_accuracy"]  # what UNDERFITTING read
    # A threshold passed as a user would (fit(thresholds=...)) changes the verdict: the
    # benchmark has no rule or threshold of its own.
    relaxed = monitors.run(scenario, 0, {"underfit_accuracy": 0.05})
    assert monitors.verdict(scenario, relaxed["findings"])[0] == "MISSED"
