"""The report's "Repair" section: what ``babysit.fix`` wrote to ``fix.json``, shown.

One ``fix.json`` is produced by ``bs.fix`` on a tiny broken set-up (a tanh net with N(0, 1)
weights: saturated); others are written by hand to show every kind of step (accepted,
rejected with its evidence, skipped with its reason), what remains and what was not tried.
"""

from __future__ import annotations

import base64
import json
import re
from html import unescape
from pathlib import Path

import pytest
import torch
from torch import nn

import babysit as bs
from babysit import runs
from babysit.reporting import collect, write_report

from .conftest import XSS


def _section(html: str, section_id: str) -> str | None:
    """The HTML of ``<section id=section_id>``, or None when the page has none."""
    match = re.search(
        rf'<section class="section" id="{re.escape(section_id)}">(.*?)</section>', html, re.S
    )
    return match.group(1) if match else None


def _text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", html))


def _images(html: str) -> list[bytes]:
    return [
        base64.b64decode(src, validate=True)
        for src in re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    ]


def _blobs(n: int = 400, d: int = 20, classes: int = 4):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, d, generator=g) * 1.5
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, d, generator=g)
    return (x - x.mean(0)) / x.std(0), y


@pytest.fixture(scope="module")
def fixed_run(tmp_path_factory) -> tuple[Path, dict]:
    """``bs.fix`` on a saturated tanh net, its ``fix.json`` in the run directory."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 4))  # fmt: skip
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 1.0)
    run_dir = tmp_path_factory.mktemp("fix") / "run"
    repair = bs.fix(model, _blobs(), lr=1e-3, run_dir=run_dir, _steps=60)
    return run_dir, json.loads((run_dir / "fix.json").read_text()), repair


def test_fix_json_alone_is_a_run_and_gets_the_repair_section(fixed_run):
    run_dir, document, repair = fixed_run
    assert repair.changed, repair  # the set-up is chosen so that a remedy verifies
    assert sorted(p.name for p in run_dir.iterdir()) == ["fix.json"]
    html = bs.report(run_dir).read_text()
    repair_html = _section(html, "repair")
    assert repair_html is not None
    text = _text(repair_html)
    # before/after: every code of both diagnoses, with its status
    for code in {f["code"] for f in document["before"]["findings"] + document["after"]["findings"]}:
        assert code in text
    for code in document["fixed"]:
        assert re.search(rf"{code}\s+\w+\s+yes\s+no\s+fixed", text), code
    # every step tried, in order, with its verdict; the patch lines
    for step in document["steps"]:
        assert step["remedy"] in text
    assert text.count("accepted") >= sum(s["accepted"] for s in document["steps"])
    assert document["patch"] and all(line in text for line in document["patch"])
    # the curves of original vs repaired: a real PNG in the section
    pngs = _images(repair_html)
    assert len(pngs) == 1 and pngs[0][:8] == b"\x89PNG\r\n\x1a\n" and len(pngs[0]) > 2000
    assert 'alt="validation loss of the original and the repaired set-up' in repair_html
    # the configuration to train the repaired model with
    assert "Train the repaired model with" in text and "lr" in text
    assert str(run_dir) in _text(html) and "(fix)" in _text(html)  # the page names the kind


def test_summary_lists_what_remains_after_the_repair_and_what_the_original_had(fixed_run):
    run_dir, document, _ = fixed_run
    summary = _text(_section(bs.report(run_dir).read_text(), "summary") or "")
    assert "No findings: every check and monitor that ran stayed silent" not in summary
    for f in document["after"]["findings"]:
        assert f["code"] in summary
    assert "the findings shown are those of the repaired set-up" in summary
    had = sorted({f["code"] for f in document["before"]["findings"] if f["severity"] != "info"})
    assert had and f"Before it: {', '.join(had)} at warning or error" in summary


def _written(tmp_path: Path, **overrides) -> Path:
    """A hand-written fix.json: one rejected, one skipped and one accepted step."""
    finding = {
        "code": "SATURATED_ACTIVATIONS",
        "severity": "warning",
        "message": "73% of units saturated",
        "advice": "re-initialise",
        "evidence": {"fraction": 0.73},
        "layer": "1",
        "step": None,
    }
    left = {**finding, "code": "BATCH_DEPENDENCE", "severity": "error", "layer": "2"}
    document = {
        "schema": 1,
        "ok": False,
        "changed": True,
        "config": {"optimizer": "adam", "lr": 0.0032, "weight_decay": 0.0},
        "fixed": ["SATURATED_ACTIVATIONS"],
        "patch": [f'bs.nn.init_model(model, "xavier") {XSS}'],
        "steps": [
            {"code": "SATURATED_ACTIVATIONS", "remedy": "batchnorm", "accepted": False,
             "evidence": {"skipped": "no nn.Sequential to insert into"}, "patch": []},
            {"code": "SATURATED_ACTIVATIONS", "remedy": "relu_he", "accepted": False,
             "evidence": {"finding_gone": True, "new_findings": [], "val_loss_before": 2.25,
                          "val_loss_after": 2.5, "train_steps": 200,
                          "rejected": "the finding is gone but the short run's validation "
                                      "loss is not lower"},
             "patch": ["replace Tanh() at model[1] with ReLU()"]},
            {"code": "SATURATED_ACTIVATIONS", "remedy": "reinit", "accepted": True,
             "evidence": {"finding_gone": True, "new_findings": [], "val_loss_before": 2.25,
                          "val_loss_after": 1.125, "train_steps": 200},
             "patch": [f'bs.nn.init_model(model, "xavier") {XSS}']},
        ],
        "remaining": [{"code": "BATCH_DEPENDENCE", "severity": "error",
                       "line": "model[2]: replace view with permute",
                       "reason": "no automatic remedy: the change is in your code"}],
        "not_tried": [{"code": "LR_TOO_LOW", "remedy": "lr_up",
                       "reason": "not tried: budget_s was spent"}],
        "before": {"schema": 1, "ok": False, "findings": [finding, left]},
        "after": {"schema": 1, "ok": False, "findings": [left]},
        "curves": {"before": [[0, 2.5], [100, None]], "after": [[0, 2.4], [100, 1.5],
                                                                 [200, 1.125]]},
        "elapsed_s": 12.5,
    }  # fmt: skip
    document.update(overrides)
    run_dir = tmp_path / "run"
    runs.write_json(run_dir, "fix.json", document)
    return run_dir


def test_every_step_shows_its_verdict_and_evidence_and_user_strings_are_escaped(tmp_path):
    html = bs.report(_written(tmp_path)).read_text()
    section = _section(html, "repair")
    assert section is not None
    text = _text(section)
    assert re.search(
        r"1\s+SATURATED_ACTIVATIONS\s+batchnorm\s+skipped\s+skipped: no nn\.Sequen", text
    )
    assert re.search(r"2\s+SATURATED_ACTIVATIONS\s+relu_he\s+rejected\s+validation loss 2\.25 "
                     r"-> 2\.5 after 200 steps; the finding is gone but", text)  # fmt: skip
    assert re.search(r"3\s+SATURATED_ACTIVATIONS\s+reinit\s+accepted\s+validation loss 2\.25 "
                     r"-> 1\.125", text)  # fmt: skip
    assert "replace Tanh() at model[1] with ReLU()" in text  # a rejected step's patch, shown
    # what remains by hand, what was not tried, the patch, the time
    assert "model[2]: replace view with permute" in text
    assert "no automatic remedy: the change is in your code" in text
    assert re.search(r"LR_TOO_LOW\s+lr_up\s+not tried: budget_s was spent", text)
    assert re.search(r"SATURATED_ACTIVATIONS\s+warning\s+yes\s+no\s+fixed", text)
    assert re.search(r"BATCH_DEPENDENCE\s+error\s+yes\s+yes\s+remains", text)
    assert "The repair took 12.5 s" in text
    # a user string is escaped: the payload never appears as a tag
    assert XSS not in html and "&lt;script&gt;" in section
    # the original's curve turned NaN: the figure still draws both
    assert len(_images(section)) == 1
    # the summary shows what remains after the repair, labelled
    summary = _text(_section(html, "summary") or "")
    assert "BATCH_DEPENDENCE" in summary and "after the repair" in summary
    assert "No findings" not in summary


def test_a_healthy_fix_says_nothing_was_changed_and_draws_nothing(tmp_path):
    quiet = {"schema": 1, "ok": True, "findings": []}
    run_dir = _written(tmp_path, changed=False, fixed=[], patch=[], steps=[], remaining=[],
                       not_tried=[], before=quiet, after=quiet, curves={})  # fmt: skip
    section = _section(bs.report(run_dir).read_text(), "repair")
    assert section is not None
    text = _text(section)
    assert "nothing was repaired, nothing changed" in text
    assert not _images(section) and "Remedies tried" not in text and "Patch" not in text


def test_no_fix_json_no_repair_section(tmp_path):
    run_dir = tmp_path / "run"
    diagnosis = bs.diagnose(nn.Sequential(nn.Linear(20, 4)), _blobs(), lr=1e-3)
    runs.write_json(run_dir, runs.FINDINGS, diagnosis.to_dict())
    html = bs.report(run_dir).read_text()
    assert _section(html, "repair") is None and 'href="#repair"' not in html
    assert collect.collect(run_dir)[0].fix is None


def test_an_unreadable_fix_json_costs_its_section_and_never_reads_no_findings(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "fix.json").write_text("{not json")
    path, problems = write_report(run_dir)
    html = path.read_text()
    assert _section(html, "repair") is None
    summary = _text(_section(html, "summary") or "")
    assert "No findings" not in summary and "could not be read" in summary
    assert f"{run_dir / 'fix.json'} (fix.json could not be read)" in summary
    assert problems and "fix.json" in problems[0]
    assert (run_dir / "fix.json").read_text() == "{not json"  # nothing changed


def test_a_fix_json_with_unreadable_findings_costs_its_section_only(tmp_path):
    run_dir = _written(tmp_path, after={"findings": "oops"})
    path, problems = write_report(run_dir)
    html = path.read_text()
    assert _section(html, "repair") is None
    summary = _text(_section(html, "summary") or "")
    assert "No findings" not in summary and "Could not draw fix.json" in summary
    assert any("fix.json" in p for p in problems)


def test_the_report_reads_the_file_name_fix_writes():
    from babysit.repair.result import FIX_JSON

    assert collect.FIX == FIX_JSON and FIX_JSON in collect.RUN_FILES
