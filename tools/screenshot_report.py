"""Screenshot the top of a babysit HTML report for the README (title, summary, first plot).

    python tools/screenshot_report.py RUN_DIR/report.html docs/img/report.png [--width 1100]

Uses the browser harness of the report tests (``tests/reporting/browser.py``), so the image comes
from the same offline, fresh-profile Chromium the tests check. Needs the dev dependencies
(``playwright``) and Debian's ``chromium``; it never downloads a browser.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "tests" / "reporting" / "browser.py"


def load_harness():
    """The test harness by file path: ``tests`` is not an importable package."""
    name = "babysit_tests_browser"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HARNESS)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before exec: dataclasses looks the module up
        spec.loader.exec_module(module)
    return sys.modules[name]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the report.html to open")
    parser.add_argument("output", type=Path, help="the PNG to write, e.g. docs/img/report.png")
    parser.add_argument("--width", type=int, default=1100, help="window width, CSS px")
    parser.add_argument("--height", type=int, default=1400, help="height kept from the top, CSS px")
    parser.add_argument("--scale", type=float, default=1, help="device pixels per CSS pixel")
    parser.add_argument(
        "--chromium",
        default=os.environ.get("BABYSIT_CHROMIUM") or shutil.which("chromium"),
        help="Chromium binary (default: $BABYSIT_CHROMIUM, else chromium on PATH)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.report.is_file():
        sys.exit(f"no report at {args.report}: create one with babysit.report(run_dir)")
    if not args.chromium or not Path(args.chromium).exists():
        sys.exit("no Chromium: install Debian's chromium or pass --chromium PATH")
    if args.width < 1 or args.height < 1:
        sys.exit(f"--width and --height must be positive, got {args.width} and {args.height}")
    page = load_harness().inspect_page(
        args.report,
        args.chromium,
        viewport=(args.width, args.height),
        screenshot=args.output,
        screenshot_height=args.height,
        scale=args.scale,
    )
    # A README image of a broken report is worse than none: say what went wrong.
    problems = {
        "blocked requests": page.blocked_requests,
        "console errors": page.console_errors,
        "dialogs": page.dialogs,
        "broken images": page.broken_images,
    }
    for what, found in problems.items():
        if found:
            print(f"warning: {what}: {found}", file=sys.stderr)
    print(f"wrote {args.output} (top {args.height} px of {args.report} at {args.width} px wide)")
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
