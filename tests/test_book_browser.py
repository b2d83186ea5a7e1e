"""Drive the built book (_build/html) in headless Chromium, as a reader would see it.

Run after `make book` with `make browser` (pytest -m browser). Every page is served from a
local HTTP server; any request outside the site is blocked and recorded. For every page we
assert: MathJax typeset the math (no raw TeX left, no math errors), every image loaded, no
output shows a traceback or an error, and no request left the site. A full-page screenshot of
each page is written to _build/screenshots/.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("NORMTUT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRED_PAGES = [
    "book/intro.html",
    "book/setup.html",
    "chapters/01_parameter_access.html",
    "chapters/02_initialization.html",
    "chapters/03_parameter_tying.html",
]
ERROR_MARKERS = ["Traceback (most recent call last)", "Error in callback", "Exception ignored"]


def _pages() -> list[str]:
    skip = {"_static", "_sources", "_images", "_sphinx_design_static"}
    return sorted(
        str(p.relative_to(HTML))
        for p in HTML.rglob("*.html")
        if not skip & set(p.relative_to(HTML).parts)
    )


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").exists():
        pytest.fail("_build/html is missing: run `make book` before the browser test")
    handler = functools.partial(QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: `apt-get install chromium` (see .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_required_pages_exist():
    for page in REQUIRED_PAGES:
        assert (HTML / page).exists(), page


def test_mathjax_is_served_locally():
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").exists()
    for page in REQUIRED_PAGES:
        text = (HTML / page).read_text()
        assert "cdn.jsdelivr.net" not in text and "mathjax@3" not in text, page


PAGES = _pages() if HTML.exists() else REQUIRED_PAGES


@pytest.mark.parametrize("page", PAGES)
def test_page_renders(site, browser, page):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside: list[str] = []
    console_errors: list[str] = []

    def route(r):
        if r.request.url.startswith(site):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    tab = context.new_page()
    tab.on("pageerror", lambda e: console_errors.append(str(e)))
    response = tab.goto(site + page, wait_until="load")
    assert response is not None and response.ok, f"{page}: HTTP {response and response.status}"
    tab.wait_for_load_state("networkidle")

    # MathJax: wait until typesetting has finished, then look for raw TeX and math errors.
    has_math = tab.evaluate("document.querySelectorAll('.math, div.math, span.math').length")
    if has_math:
        tab.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise")
        tab.evaluate("MathJax.startup.promise")
        assert tab.evaluate("document.querySelectorAll('mjx-container').length") >= has_math
        assert tab.evaluate("document.querySelectorAll('mjx-merror').length") == 0
    text = tab.evaluate("(document.querySelector('main') || document.body).innerText")
    assert text.strip(), f"{page}: empty main content"
    for raw in ("$$", "\\(", "\\["):
        assert raw not in _prose(tab), f"{page}: raw TeX {raw!r} left in the text"

    # Every image (figures included) loaded.
    broken = tab.evaluate(
        "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
        ".map(i => i.src)"
    )
    assert not broken, f"{page}: images did not load: {broken}"

    # No cell output shows an error, a traceback or a stderr stream.
    outputs = tab.evaluate(
        "Array.from(document.querySelectorAll('.cell_output, .output')).map(e => e.innerText)"
    )
    for out in outputs:
        for marker in ERROR_MARKERS:
            assert marker not in out, f"{page}: output shows {marker!r}"
        # a progress bar must show its final state only, not every intermediate redraw
        partial = [m for m in re.findall(r"(\d{1,3})%\|", out) if int(m) < 100]
        assert not partial, f"{page}: intermediate progress-bar states in an output"
    assert tab.evaluate("document.querySelectorAll('.output.stderr').length") == 0, page
    assert tab.evaluate("document.querySelectorAll('.output.traceback').length") == 0, page

    assert not outside, f"{page}: requests outside the site: {outside}"
    assert not console_errors, f"{page}: JavaScript errors: {console_errors}"

    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / page.replace("/", "__").replace(".html", ".png")
    tab.screenshot(path=str(shot), full_page=True)
    # Code and printed output fit the text column of a 1280-pixel window: no cell scrolls
    # sideways (book/_static/normtut.css sizes the code font for 80 columns), hidden
    # inputs included once opened (after the screenshot, which shows the page as a reader
    # first sees it).
    tab.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    wide = tab.evaluate(
        """() => [...document.querySelectorAll('div.cell pre')]
        .filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
        .map(e => e.innerText.split('\\n').reduce((a, l) => l.length > a.length ? l : a))"""
    )
    assert not wide, f"{page}: cells wider than the text column: {wide[:3]}"
    context.close()


def _prose(tab) -> str:
    """The visible text of the page outside code cells (code may legitimately hold '$$')."""
    return tab.evaluate(
        """() => {
        const main = document.querySelector('main');
        if (!main) return '';
        const clone = main.cloneNode(true);
        clone.querySelectorAll('pre, code, .highlight, mjx-container, script')
             .forEach(e => e.remove());
        return clone.innerText;
    }"""
    )


def test_chapters_show_figures(site, browser):
    """Each chapter page carries at least two figures (rendered images)."""
    context = browser.new_context()
    context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(site) else r.abort())
    tab = context.new_page()
    for page in [p for p in REQUIRED_PAGES if p.startswith("chapters/")]:
        tab.goto(site + page, wait_until="load")
        n = tab.evaluate("document.querySelectorAll('.cell_output img').length")
        assert n >= 2, f"{page}: {n} figures"
    context.close()
