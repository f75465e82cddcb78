"""An HTML report opened in headless Chromium, as a person would open the file, offline.

The test process runs under gevent's monkey-patching (tests/conftest.py), where Playwright's
sync API must not run; so ``inspect_page`` runs this file as a script in a fresh interpreter
and reads its findings back as JSON. Every request that is not file:// or data: is aborted and
recorded: a report that fetches anything (a CDN, a font) fails the tests that check for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: How long a page may take to draw every figure (a CI runner is slow; plotly is quick).
DRAW_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class PageReport:
    """What Chromium saw: console errors and warnings, uncaught exceptions, requests that
    failed or were blocked, and every ``div.plot``'s name with the points of each trace."""

    console: list[dict[str, str]]
    page_errors: list[str]
    failed_requests: list[str]
    blocked_requests: list[str]
    plots: dict[str, list[int]]  # data-plot name -> points per trace
    height: int  # the page's full height in CSS pixels

    @property
    def errors(self) -> list[str]:
        """Console errors and page errors, the ones a report must never cause."""
        return [m["text"] for m in self.console if m["type"] == "error"] + self.page_errors


def require_chromium() -> None:
    """Skip without Debian's chromium; under CI (CI=true) a missing browser is a failure, as
    for every real component (tests/conftest.py's rule)."""
    if CHROMIUM.exists():
        return
    if os.environ.get("CI", "").strip().lower() in ("true", "1"):
        pytest.fail(f"{CHROMIUM} is missing in CI (CI=true); scripts/test-env installs it")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")


def inspect_page(
    html: Path,
    screenshot: Path | None = None,
    clip_height: int = 1600,
    width: int = 1280,
    timeout: float = 120.0,
) -> PageReport:
    """Open ``html`` in headless Chromium and report what happened; with ``screenshot``, also
    save a PNG of the page's top ``clip_height`` pixels at ``width`` wide."""
    return inspect_pages([(html, screenshot)], clip_height, width, timeout)[0]


def inspect_pages(
    pages: Sequence[tuple[Path, Path | None]],
    clip_height: int = 1600,
    width: int = 1280,
    timeout: float = 180.0,
) -> list[PageReport]:
    """``inspect_page`` for several (html, screenshot or None), one browser for them all (a
    launch costs seconds), each page in a fresh context of its own."""
    require_chromium()
    args = {"pages": [[str(html.resolve()), str(shot) if shot else None] for html, shot in pages],
            "clip_height": clip_height, "width": width}  # fmt: skip
    proc = subprocess.run([sys.executable, __file__, json.dumps(args)], capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(
            f"the browser script failed ({proc.returncode}): {proc.stderr[-3000:]}"
        )
    found: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return [PageReport(**one) for one in found]


#: In the page: every .plot div's name and its traces' point counts (plotly decodes the
#: inline typed arrays into _fullData; a trace with neither x nor y counts its values).
_COLLECT = """() => Array.from(document.querySelectorAll('.plot')).map(div => {
  const gd = div.querySelector('.js-plotly-plot');
  const traces = gd && gd._fullData ? gd._fullData : [];
  return [div.dataset.plot, traces.map(t => {
    const n = a => (a && typeof a.length === 'number') ? a.length : 0;
    return Math.max(n(t.x), n(t.y), n(t.values));
  })];
})"""
_DRAWN = """() => Array.from(document.querySelectorAll('.plot')).every(
  div => { const gd = div.querySelector('.js-plotly-plot'); return gd && gd._fullLayout; })"""


def _main(raw: str) -> None:
    """In the subprocess: open each page, wait for every figure, collect, screenshot."""
    from playwright.sync_api import sync_playwright  # only in the subprocess

    args = json.loads(raw)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=list(LAUNCH_ARGS),
                                    headless=True)  # fmt: skip
        found = [_visit(browser, Path(html), shot, args["width"], args["clip_height"])
                 for html, shot in args["pages"]]  # fmt: skip
        browser.close()
    print(json.dumps(found))


def _visit(browser: Any, html: Path, shot: str | None, width: int, clip_height: int) -> Any:
    """One page in a fresh context: every non-file request blocked and recorded."""
    from playwright.sync_api import FloatRect, Request, Route  # only in the subprocess

    console: list[dict[str, str]] = []
    page_errors: list[str] = []
    failed: list[str] = []
    blocked: list[str] = []

    def route(r: Route, request: Request) -> None:
        if request.url.startswith(("file:", "data:")):
            r.continue_()
        else:
            blocked.append(request.url)
            r.abort()

    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.route("**/*", route)
    page.on("console", lambda m: console.append({"type": m.type, "text": m.text})
            if m.type in ("error", "warning") else None)  # fmt: skip
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
    page.goto(html.as_uri(), wait_until="load")
    page.wait_for_function(_DRAWN, timeout=DRAW_TIMEOUT_MS)
    page.wait_for_timeout(300)  # let responsive relayouts settle before measuring
    plots = dict(page.evaluate(_COLLECT))
    height = int(page.evaluate("() => document.documentElement.scrollHeight"))
    if shot:
        clip = FloatRect(x=0, y=0, width=width, height=min(height, clip_height))
        page.screenshot(path=shot, clip=clip, full_page=True)
    context.close()
    blocked_urls = set(blocked)
    return {
        "console": console, "page_errors": page_errors,
        "failed_requests": [f for f in failed if f.split(": ")[0] not in blocked_urls],
        "blocked_requests": blocked, "plots": plots, "height": height,
    }  # fmt: skip


if __name__ == "__main__":
    _main(sys.argv[1])
