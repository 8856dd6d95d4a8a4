"""Open an HTML report in Debian's Chromium, offline, and say what a reader would see.

A plain helper (not a test module), shared by ``tests/reporting/test_browser.py`` and
``tools/screenshot_report.py``; both load it by file path (see ``load`` in each), since neither
``tests`` nor ``tools`` is an importable package. Playwright drives the system browser through
``executable_path``: never ``playwright install``, which downloads browsers.

Every request except the report itself and ``data:`` URLs is aborted and recorded, so a report
that is not self-contained shows up in ``blocked_requests`` (and as broken images) instead of
quietly fetching from the network or from files beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Every wait is bounded: a hung browser must fail the test, not block CI.
TIMEOUT_MS = 30_000

# Root in CI and here: Chromium's sandbox needs --no-sandbox. The rest keep a headless run quiet
# and offline (no component updates, sync or background fetches) and /dev/shm-independent.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# One round trip: everything read from the loaded page.
_READ_PAGE_JS = """() => {
  const images = Array.from(document.images);
  const sections = Array.from(document.querySelectorAll('section.section'));
  const title = document.querySelector('h1#title');
  const viewport = document.querySelector('meta[name="viewport"]');
  return {
    section_ids: sections.map(s => s.id),
    images_per_section: Object.fromEntries(
      sections.map(s => [s.id, s.querySelectorAll('img').length])),
    broken_images: images
      .filter(i => !i.complete || i.naturalWidth === 0)
      .map(i => (i.getAttribute('src') || '').slice(0, 80)),
    images_without_alt: images
      .filter(i => !(i.getAttribute('alt') || '').trim())
      .map(i => (i.getAttribute('src') || '').slice(0, 80)),
    image_count: images.length,
    script_count: document.querySelectorAll('script').length,
    scripts: Array.from(document.querySelectorAll('script'))
      .map(s => (s.getAttribute('src') || s.textContent).slice(0, 200)),
    title_text: title ? title.innerText : null,
    viewport_meta: viewport ? viewport.getAttribute('content') : null,
    horizontal_overflow:
      document.documentElement.scrollWidth > window.innerWidth + 1,
    text: document.body ? document.body.innerText : '',
  };
}"""


@dataclass
class PageReport:
    """What the browser saw; an empty list means "none of these happened"."""

    blocked_requests: list[str] = field(default_factory=list)  # URLs aborted (not file:/data:)
    console_errors: list[str] = field(default_factory=list)  # console.error and uncaught errors
    dialogs: list[str] = field(default_factory=list)  # "alert: 1": script ran that should not
    section_ids: list[str] = field(default_factory=list)  # section.section ids, in page order
    images_per_section: dict[str, int] = field(default_factory=dict)
    broken_images: list[str] = field(default_factory=list)  # src prefixes that did not decode
    images_without_alt: list[str] = field(default_factory=list)
    image_count: int = 0
    script_count: int = 0  # <script> elements in the DOM
    scripts: list[str] = field(default_factory=list)  # each one's src, or its first 200 chars
    title_text: str | None = None  # innerText of h1#title
    viewport_meta: str | None = None
    horizontal_overflow: bool = False  # wider than the window: a phone reader scrolls sideways
    text: str = ""  # body innerText


def _without_fragment(url: str) -> str:
    return url.split("#", 1)[0]


def inspect_page(
    html_path: str | Path,
    chromium_path: str | Path,
    *,
    viewport: tuple[int, int] = (1280, 900),
    screenshot: str | Path | None = None,
    screenshot_height: int | None = None,
    scale: float = 1,
) -> PageReport:
    """Load ``html_path`` in a fresh headless Chromium profile, offline, and report on it.

    ``screenshot``: write a PNG there, the full page, or only its top ``screenshot_height`` CSS
    pixels. ``scale``: device pixels per CSS pixel (2 for a sharp README image).
    """
    from playwright.sync_api import sync_playwright  # dev dependency, only needed here

    page_url = Path(html_path).resolve().as_uri()
    report = PageReport()

    def allowed(url: str) -> bool:
        return url.startswith("data:") or _without_fragment(url) == page_url

    def block(route) -> None:
        url = route.request.url
        if allowed(url):
            route.continue_()
            return
        if url not in report.blocked_requests:
            report.blocked_requests.append(url)
        route.abort()

    def seen(url: str) -> None:  # a second net, for any request the route did not see
        if not allowed(url) and url not in report.blocked_requests:
            report.blocked_requests.append(url)

    def on_dialog(dialog) -> None:
        report.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_console(message) -> None:
        if message.type == "error":
            report.console_errors.append(message.text)

    with sync_playwright() as playwright:
        # launch() gives each browser a fresh temporary profile and removes it on close.
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path),
            args=list(CHROMIUM_ARGS),
            headless=True,
            timeout=TIMEOUT_MS,
        )
        try:
            context = browser.new_context(
                viewport={"width": viewport[0], "height": viewport[1]},
                device_scale_factor=scale,
                service_workers="block",
            )
            context.set_default_timeout(TIMEOUT_MS)
            context.set_default_navigation_timeout(TIMEOUT_MS)
            context.route("**/*", block)
            context.on("request", lambda request: seen(request.url))
            context.on("dialog", on_dialog)
            context.on("console", on_console)
            page = context.new_page()
            page.on("pageerror", lambda err: report.console_errors.append(f"pageerror: {err}"))
            page.on("websocket", lambda ws: seen(ws.url))
            page.goto(page_url, wait_until="load", timeout=TIMEOUT_MS)
            for name, value in page.evaluate(_READ_PAGE_JS).items():
                setattr(report, name, value)
            if screenshot is not None:
                _screenshot(page, Path(screenshot), screenshot_height)
            context.close()
        finally:
            browser.close()
    return report


def _screenshot(page, path: Path, height: int | None) -> None:
    """The whole page, or its top ``height`` CSS pixels (never more than the page has)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if height is None:
        page.screenshot(path=str(path), full_page=True, timeout=TIMEOUT_MS)
        return
    width, page_height = page.evaluate(
        "() => [document.documentElement.clientWidth, document.documentElement.scrollHeight]"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": min(height, page_height)}
    page.screenshot(path=str(path), full_page=True, clip=clip, timeout=TIMEOUT_MS)
