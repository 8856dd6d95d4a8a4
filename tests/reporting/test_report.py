"""babysit.report: one self-contained, escaped HTML page whose sections follow the data."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import babysit as bs
from babysit import runs
from babysit.cli import app
from babysit.reporting import write_report
from babysit.reporting.page import format_value

from .conftest import XSS, digits_data

pytestmark = pytest.mark.xdist_group("report")  # one process builds the shared run

SECTIONS = {"summary", "data", "activations", "activations-2", "lr-find", "search", "training"}


class Page(HTMLParser):
    """The tags, attributes and text of a page, for structural assertions."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.section: str | None = None
        self.images: dict[str, list[str]] = {}
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "section":
            self.section = attrs.get("id")
        if tag == "img":
            self.images.setdefault(self.section or "", []).append(attrs.get("src") or "")

    def handle_data(self, data):
        self.text.append(data)


def test_full_report_has_every_section_with_real_images(full_report):
    page = Page(full_report.read_text())
    ids = [a["id"] for t, a in page.tags if t == "section"]
    assert set(ids) == SECTIONS and ids[0] == "summary"
    for section in SECTIONS - {"summary"}:
        assert page.images.get(section), f"section {section} has no figure"
        for src in page.images[section]:
            assert src.startswith("data:image/png;base64,")
            png = base64.b64decode(src.split(",", 1)[1], validate=True)
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    alts = [a.get("alt") for t, a in page.tags if t == "img"]
    assert all(alts), "every figure has an alt text"


def test_report_is_self_contained(full_report):
    html = full_report.read_text()
    page = Page(html)
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object")]
    for tag, attrs in page.tags:
        if tag == "a":  # links are followed only on a click: in-page, or to the web
            assert (attrs.get("href") or "#").startswith(("#", "https://")), attrs
            continue
        for name in ("src", "href", "srcset", "poster"):  # what a browser would load
            value = attrs.get(name)
            assert value is None or value.startswith("data:"), (tag, name, value[:60])
    assert "url(" not in html  # no CSS resource either


def test_user_strings_are_escaped(full_report):
    html = full_report.read_text()
    assert XSS not in html
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    title = re.search(r'<h1 id="title">(.*?)</h1>', html).group(1)
    assert escaped in title  # the run's name
    assert f"a message with {escaped}" in html  # a finding's message
    assert html.count(escaped) >= 5  # advice, evidence, layer, search parameter, ...
    assert XSS in "".join(Page(html).text)  # shown to the reader as text


def test_summary_shows_findings_with_evidence_advice_and_their_page(full_report):
    html = full_report.read_text()
    summary = html.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert summary.count('class="finding ') >= 3
    assert "DEAD_RELU" in summary and "fraction = 0.9" in summary
    assert "BEST_AT_EDGE" in summary
    assert "Final metrics" in summary and "validation accuracy" in summary
    search = html.split('id="search"', 1)[1].split("</section>", 1)[0]
    assert "BEST_AT_EDGE" in search  # the callout sits with the search plot
    from babysit.explain import page

    page("DEAD_RELU")  # babysit has the page, so the report carries it
    assert '<details class="explain">' in summary and "How babysit measures it" in summary


def test_sections_appear_only_with_their_data(tmp_path):
    x, y = digits_data(300)
    bs.lr_find(bs.nn.mlp(64, [16], 10), (x, y), steps=30, run_dir=tmp_path)
    page = Page(bs.report(tmp_path).read_text())
    assert [a["id"] for t, a in page.tags if t == "section"] == ["summary", "lr-find"]


def test_fit_run_dir_alone_reports_training_and_activations(tmp_path):
    x, y = digits_data(300)
    bs.fit(bs.nn.mlp(64, [16], 10), (x, y), epochs=2, run_dir=tmp_path / "r", progress=False)
    page = Page(bs.report(tmp_path / "r", title="my run").read_text())
    ids = [a["id"] for t, a in page.tags if t == "section"]
    assert ids == ["summary", "activations", "training"]
    assert "my run" in "".join(page.text)


def test_fit_writes_activations_at_init_and_after_without_changing_the_run(tmp_path):
    x, y = digits_data(300)
    weights = []
    for run_dir in (None, tmp_path / "r"):
        torch.manual_seed(0)
        model = bs.nn.mlp(64, [16, 16], 10, dropout=0.2)
        bs.fit(model, (x, y), epochs=2, run_dir=run_dir, progress=False, seed=1)
        weights.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*weights, strict=True):
        assert torch.equal(a, b)  # measuring (eval mode, forked RNG, grads restored) is invisible
    document = runs.read_json(tmp_path / "r", runs.ACTIVATIONS)
    labels = [s["label"] for s in document["settings"]]
    assert document["experiment"] == "fit" and labels[0] == "at init"
    assert labels[1].startswith("after training")
    assert [len(s["layers"]) for s in document["settings"]] == [2, 2]
    assert all(row["std"] > 0 for s in document["settings"] for row in s["layers"])


def test_a_broken_file_is_reported_not_fatal(tmp_path):
    x, y = digits_data(300)
    bs.fit(bs.nn.mlp(64, [16], 10), (x, y), epochs=1, run_dir=tmp_path, progress=False)
    (tmp_path / runs.FINDINGS).write_text("{not json")
    html = bs.report(tmp_path).read_text()
    assert "Could not read findings.json" in html and 'id="training"' in html


def _summary(html: str) -> str:
    return html.split('id="summary"', 1)[1].split("</section>", 1)[0]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "Expecting property name"),
        ('{"findings": null}', "no list of findings"),
        ('{"findings": [{"code": "X"}]}', "a finding could not be read"),
    ],
)
def test_unreadable_findings_are_never_no_findings(tmp_path, content, why):
    x, y = digits_data(300)
    bs.fit(bs.nn.mlp(64, [16], 10), (x, y), epochs=1, run_dir=tmp_path, progress=False)
    (tmp_path / runs.FINDINGS).write_text(content)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output  # the page is still written
    assert f"could not read {tmp_path / runs.FINDINGS}: " in result.stderr
    assert why in result.stderr and "wrote" in result.stdout
    summary = _summary((tmp_path / "report.html").read_text())
    assert "No findings" not in summary
    assert "The findings could not be read from" in summary and runs.FINDINGS in summary
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    del after[tmp_path / "report.html"]
    assert after == before  # reading is all the report does to the run's files


def test_readable_findings_next_to_an_unreadable_one_are_shown_and_say_so(tmp_path):
    finding = {"code": "DEAD_RELU", "severity": "warning", "message": "m", "advice": "a"}
    runs.write_json(tmp_path, runs.FINDINGS, {"findings": [finding, {"bogus": 1}]})
    path, problems = write_report(tmp_path)
    summary = _summary(path.read_text())
    assert "1 warning" in summary and "could not be read from" in summary
    assert problems and problems[0].startswith(f"{tmp_path / runs.FINDINGS}: a finding")


def test_a_run_that_wrote_no_findings_file_is_not_flagged(tmp_path):
    runs.write_json(tmp_path, "lr_find.json", {"schema": 1})
    path, problems = write_report(tmp_path)
    assert "findings" not in " ".join(problems)
    assert "could not be read from" not in _summary(path.read_text())


def test_a_newer_schema_is_named(tmp_path):
    runs.write_json(tmp_path, "lr_find.json", {"schema": 99})
    html = bs.report(tmp_path).read_text()
    assert "schema 99" in html and "upgrade babysit" in html


def test_bad_run_dirs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        bs.report(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(ValueError, match="holds no run: expected files written by fit"):
        bs.report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_cli_report(tmp_path, full_run):
    runner = CliRunner()
    bad = runner.invoke(app, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "holds no run" in bad.output and "Traceback" not in bad.output
    target = tmp_path / "copy"
    import shutil

    shutil.copytree(full_run / "train", target)
    good = runner.invoke(app, ["report", str(target)])
    assert good.exit_code == 0, good.output
    assert "report.html" in good.output and (target / "report.html").stat().st_size > 10_000


def test_report_overwrites_only_report_html(tmp_path):
    x, y = digits_data(300)
    bs.lr_find(bs.nn.mlp(64, [16], 10), (x, y), steps=30, run_dir=tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    bs.report(tmp_path)
    bs.report(tmp_path)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    del after[tmp_path / "report.html"]
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (float("nan"), "NaN"),
        (float("inf"), "inf"),
        (0.000123456, "0.0001235"),
        (True, "yes"),
        (None, ""),
        (list(range(10)), "[0, 1, 2, 3, 4, 5, 6, 7, …]"),
        ("<b>", "<b>"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text  # escaping is the template's job, tested above


def test_search_json_keeps_typed_trials(full_run):
    document = json.loads((full_run / "search" / "search.json").read_text())
    assert document["direction"] == "maximize" and document["trials"]
    assert isinstance(document["trials"][0]["params"]["lr"], float)


def test_report_path_is_returned_and_readable(full_report):
    assert isinstance(full_report, Path) and full_report.name == "report.html"
    assert full_report.stat().st_mode & 0o044  # group/others can read it like any file


def test_notebook_reprs_are_compact_and_escaped(tmp_path):
    x, y = digits_data(300)
    history = bs.fit(bs.nn.mlp(64, [16], 10), (x, y), val=(x, y), epochs=12, progress=False)
    html = history._repr_html_()
    assert html.startswith('<img src="data:image/png;base64,')
    epochs_table = html.split("</table>", 1)[0]
    assert "last 10 of 12 epochs" in epochs_table and epochs_table.count("<tr>") == 11

    space = {XSS: bs.uniform(0.0, 1.0)}
    result = bs.search(space, lambda p, t: -p[XSS], n_trials=12, stages=2, seed=0)
    html = result._repr_html_()
    assert XSS not in html and "&lt;script&gt;" in html
    assert "best value" in html and "BEST_AT_EDGE" in html and "data:image/png" in html

    found = bs.lr_find(bs.nn.mlp(64, [16], 10), (x, y), steps=30)
    html = found._repr_html_()
    assert "data:image/png" in html and "suggested lr" in html


def test_diagnose_and_initlab_run_dirs_each_get_their_sections(tmp_path):
    from babysit import initlab

    x, y = digits_data(300)
    model = bs.nn.init_model(bs.nn.mlp(64, [16], 10, activation="tanh"), "normal", std=1.0)
    bs.diagnose(model, (x, y), run_dir=tmp_path / "diag")
    html = bs.report(tmp_path / "diag").read_text()
    assert [a["id"] for t, a in Page(html).tags if t == "section"] == ["summary"]
    assert "SATURATED_ACTIVATIONS" in html

    initlab.run(depth=3, width=16, n_inputs=100, run_dir=tmp_path / "lab")
    html = bs.report(tmp_path / "lab").read_text()
    ids = [a["id"] for t, a in Page(html).tags if t == "section"]
    assert ids == ["summary", "activations"] and "activation experiment" in html


def test_odd_files_cost_their_section_never_the_page(tmp_path):
    x, y = digits_data(300)
    bs.fit(bs.nn.mlp(64, [16], 10), (x, y), epochs=2, run_dir=tmp_path, progress=False)
    with open(tmp_path / runs.METRICS, "a") as handle:
        handle.write("99,2,train,lo")  # a fit killed in the middle of an append
    runs.write_json(tmp_path, "data_stats.json", {"before": {"mean": [1, 2]}, "after": {}})
    (tmp_path / "lr_find.json").write_text("[1, 2]")
    (tmp_path / runs.FINDINGS).write_text('{"findings": null}')
    html = bs.report(tmp_path).read_text()
    assert 'id="training"' in html and 'id="activations"' in html
    assert "lr_find.json" in html and "holds a JSON list" in html
    summary = html.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert "epochs" in summary and "validation" not in summary  # no val split: not invented
    rows = runs.read_metrics(tmp_path)
    assert rows[-1]["step"] != 99  # the cut-off line is left out
    (tmp_path / runs.METRICS).write_text(
        "step,epoch,split,name,value\nx,0,train,loss,1\n1,0,a,b,2\n"
    )
    assert "Could not read metrics.csv" in bs.report(tmp_path).read_text()


def test_a_section_that_cannot_be_drawn_is_named(tmp_path):
    runs.write_json(
        tmp_path,
        "data_stats.json",
        {"before": {"mean": [1.0, 2.0], "std": [1.0, 1.0]}, "after": {"mean": [0.0], "std": [1]}},
    )
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output  # a drawing error is not a usage error
    assert "Could not draw data_stats.json" in (tmp_path / "report.html").read_text()
