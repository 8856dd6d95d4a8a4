"""The HTML report, opened in a real (Debian) Chromium, offline: self-contained, safe, readable.

The harness tests come first: each proves one check can fail, so a clean report means something.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.services


def _load_harness():
    """``tests/reporting/browser.py`` by file path: ``tests`` is not an importable package."""
    name = "babysit_tests_browser"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("browser.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before exec: dataclasses looks the module up
        spec.loader.exec_module(module)
    return sys.modules[name]


inspect_page = _load_harness().inspect_page

PAYLOAD = "<script>alert(1)</script>"
SECTIONS = ("summary", "data", "activations", "training", "search", "lr-find")
PHONE, DESKTOP = (390, 844), (1280, 900)
# A valid 1x1 PNG: a data: image that must load.
PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def _page(tmp_path: Path, body: str, name: str = "page.html") -> Path:
    path = tmp_path / name
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>t</title></head>"
        f"<body>{body}</body></html>",
        encoding="utf-8",
    )
    return path


def test_harness_clean_page_records_nothing(chromium_path, tmp_path):
    body = (
        "<h1 id='title'>&lt;b&gt;run</h1>"
        "<section class='section' id='summary'><h2>Summary</h2><p>ok</p></section>"
        f"<section class='section' id='data'><h2>Data</h2><img src='{PIXEL}' alt='a dot'></section>"
        "<a href='#data'>to data</a>"
    )
    report = inspect_page(_page(tmp_path, body), chromium_path)
    assert report.blocked_requests == []
    assert report.console_errors == []
    assert report.dialogs == []
    assert report.broken_images == []
    assert report.images_without_alt == []
    assert report.image_count == 1
    assert report.images_per_section == {"summary": 0, "data": 1}
    assert report.section_ids == ["summary", "data"]
    assert report.title_text == "<b>run"
    assert report.script_count == 0
    assert not report.horizontal_overflow
    assert "ok" in report.text


def test_harness_blocks_and_records_network_and_sibling_files(chromium_path, tmp_path):
    (tmp_path / "plot.png").write_bytes(b"not fetched")  # a sibling file: not self-contained
    body = "<img src='https://example.com/x.png' alt='x'><img src='plot.png'>"
    report = inspect_page(_page(tmp_path, body), chromium_path)
    sibling = (tmp_path / "plot.png").as_uri()
    # Requests are routed concurrently: their order is not the page's.
    assert sorted(report.blocked_requests) == sorted(["https://example.com/x.png", sibling])
    assert report.broken_images == ["https://example.com/x.png", "plot.png"]
    assert report.images_without_alt == ["plot.png"]


def test_harness_records_dialog(chromium_path, tmp_path):
    report = inspect_page(_page(tmp_path, "<script>alert(1)</script>"), chromium_path)
    assert report.dialogs == ["alert: 1"]
    assert report.script_count == 1
    assert report.scripts == ["alert(1)"]


def test_harness_records_console_and_page_errors(chromium_path, tmp_path):
    report = inspect_page(_page(tmp_path, "<script>console.error('x')</script>"), chromium_path)
    assert report.console_errors == ["x"]
    report = inspect_page(_page(tmp_path, "<script>undefinedName()</script>"), chromium_path)
    assert len(report.console_errors) == 1
    assert report.console_errors[0].startswith("pageerror:")


def test_harness_detects_overflow_and_screenshots(chromium_path, tmp_path):
    wide = _page(tmp_path, "<div style='width:600px;height:3000px'>wide</div>")
    shot, top = tmp_path / "img" / "top.png", 500
    report = inspect_page(
        wide, chromium_path, viewport=PHONE, screenshot=shot, screenshot_height=top
    )
    assert report.horizontal_overflow
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20]), int.from_bytes(png[20:24])  # the IHDR chunk
    assert (width, height) == (PHONE[0], top)  # the top of the page, not all 3000 px
    assert not inspect_page(wide, chromium_path, viewport=DESKTOP).horizontal_overflow


def _base(section_id: str) -> str:
    """``search-2`` -> ``search``: a repeated section keeps its kind."""
    head, _, tail = section_id.rpartition("-")
    return head if head and tail.isdigit() else section_id


@pytest.mark.xdist_group("report")  # the process that builds the shared run uses it
@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_report_is_self_contained_safe_and_fits(full_report, chromium_path, viewport):
    report = inspect_page(full_report, chromium_path, viewport=viewport)
    assert report.blocked_requests == [], "the report must not load anything"
    assert report.console_errors == []
    assert report.dialogs == [], "user text ran as script"
    assert report.broken_images == []
    assert report.images_without_alt == []
    assert set(SECTIONS) <= {_base(s) for s in report.section_ids}, report.section_ids
    without_plot = [
        s for s, n in report.images_per_section.items() if _base(s) != "summary" and n < 1
    ]
    assert without_plot == [], f"sections without a plot: {without_plot}"
    assert PAYLOAD in report.title_text  # shown as text, not run
    assert report.text.count(PAYLOAD) >= 2  # the title and the finding message at least
    assert report.script_count == 0, report.scripts  # the report has no script at all
    assert report.viewport_meta == "width=device-width, initial-scale=1"
    assert not report.horizontal_overflow, f"wider than a {viewport[0]} px window"
