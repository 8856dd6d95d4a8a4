"""The finding pages (one per code, a fixed shape) and ``babysit explain``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from babysit import explain
from babysit.cli import app
from babysit.findings import CODES

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
HEADINGS = ["## " + s for s in explain.SECTIONS]


def _section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section, up to the next level-2 heading."""
    start = text.index(f"## {heading}\n") + len(heading) + 4
    end = text.find("\n## ", start)
    return text[start : end if end >= 0 else None]


def _outside_code(text: str) -> str:
    """``text`` without its fenced code blocks (a ``# comment`` there is not a heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def test_every_code_has_a_page_and_no_page_lacks_a_code():
    assert explain.codes_with_pages() == sorted(CODES)


@pytest.mark.parametrize("code", list(CODES))
def test_page_shape(code):
    text = explain.page(code)
    lines = text.splitlines()
    assert lines[0].startswith(f"# {code}: ") and len(lines[0]) > len(code) + 4
    severity = re.search(r"^\*\*Severity:\*\* (\w+) · \*\*Raised by:\*\* \S", text, re.M)
    assert severity, f"{code}: no '**Severity:** ... · **Raised by:** ...' line"
    assert severity.group(1) == CODES[code][0]
    prose = _outside_code(text)
    headings = [line for line in prose.splitlines() if line.startswith("## ")]
    assert headings == HEADINGS
    assert [line for line in prose.splitlines() if line.startswith("# ")] == [lines[0]]
    assert 15 <= len(lines) <= 60
    for heading in explain.SECTIONS:
        assert _section(text, heading).strip(), f"{code}: empty section {heading!r}"


@pytest.mark.parametrize("code", list(CODES))
def test_measure_section_names_a_number_or_a_constant(code):
    body = _section(explain.page(code), "How babysit measures it")
    number = re.search(r"\d", body)
    constant = re.search(r"`[A-Za-z_][A-Za-z0-9_]*`", body)
    assert number and constant, f"{code}: the rule should quote its numbers and names"


def test_quoted_thresholds_match_their_values():
    """A page that names a threshold with ``= value`` quotes the value the code uses."""
    from babysit.thresholds import THRESHOLDS

    for code in CODES:
        for name, value in re.findall(r"`(\w+)` = \*\*([0-9.e+-]+)\*\*", explain.page(code)):
            assert name in THRESHOLDS, f"{code}: {name} is not a threshold"
            assert float(value) == THRESHOLDS[name][0], f"{code}: {name} = {value}"


def test_relative_links_point_to_existing_pages():
    known = set(explain.codes_with_pages())
    for code in CODES:
        for target in re.findall(r"\]\(([^)]+)\)", explain.page(code)):
            assert target.endswith(".md") and "/" not in target, f"{code}: link {target}"
            assert target[:-3] in known, f"{code}: broken link {target}"


def test_no_raw_html_in_pages():
    for code in CODES:
        assert not re.search(r"<[a-zA-Z/]", _outside_code(explain.page(code))), code


def test_page_is_case_insensitive():
    assert explain.page("dead_relu") == explain.page("DEAD_RELU")
    assert explain.page(" Dead_Relu ").startswith("# DEAD_RELU: ")


def test_unknown_code_suggests_close_matches():
    with pytest.raises(ValueError, match="DEAD_RELU") as err:
        explain.page("DEAD_RELUS")
    assert "babysit explain" in str(err.value)
    with pytest.raises(ValueError, match="unknown finding code 'XYZZY'"):
        explain.page("XYZZY")


def test_page_html_renders_and_escapes_raw_html(monkeypatch):
    html = explain.page_html("DEAD_RELU")
    assert "<h1>DEAD_RELU:" in html and "<h2>What to do</h2>" in html and "<pre><code" in html
    evil = "# X: t\n\n<script>alert(1)</script>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    monkeypatch.setattr(explain, "page", lambda code: evil)
    html = explain.page_html("DEAD_RELU")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<table>" in html


def test_docs_findings_is_the_package_directory():
    docs = REPO / "docs" / "findings"
    if not (REPO / "src" / "babysit" / "pages" / "findings").is_dir() or not docs.exists():
        pytest.skip("not a source checkout")
    assert docs.is_symlink()
    assert docs.resolve() == (REPO / "src" / "babysit" / "pages" / "findings").resolve()
    assert sorted(p.stem for p in docs.glob("*.md")) == sorted(CODES)


def test_cli_explain_prints_the_page():
    result = runner.invoke(app, ["explain", "dead_relu"])
    assert result.exit_code == 0, result.output
    assert "DEAD_RELU: most of a layer's ReLUs never fire" in result.output
    assert "What to do" in result.output


def test_cli_explain_without_code_lists_every_code():
    result = runner.invoke(app, ["explain"])
    assert result.exit_code == 0, result.output
    for code in CODES:
        assert code in result.output
    assert "babysit explain CODE" in result.output


def test_cli_explain_unknown_code_exits_2():
    result = runner.invoke(app, ["explain", "BOGUS"])
    assert result.exit_code == 2
    assert "unknown finding code 'BOGUS'" in result.stderr and not result.stdout
    assert "Traceback" not in result.output
