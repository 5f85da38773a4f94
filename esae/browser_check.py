"""Check the built book as a reader sees it: served on localhost, opened in headless Chromium.

    python -m esae.browser_check [_build/html] [--screenshots DIR] [--pages PAGE ...]

Every page of the book by default (``--pages`` picks some). For each page: a full-page screenshot;
math typeset by the bundled MathJax (no raw ``$...$`` left in the text, at least one typeset formula
where the page has math); every ``<img>`` loaded (non-zero natural size); no console errors; no
request to any host but localhost (requests elsewhere are blocked and reported); the page no wider
than the 1280-pixel viewport; no visible code cell longer than :data:`MAX_CODE_LINES` lines; and on
a chapter page every figure (an image in the page's content) inside a ``<figure>`` with a
``<figcaption>``. Uses Debian's ``chromium`` through Playwright. Exit status 0 when every page
passes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import shutil
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_PAGES = (
    "book/intro.html",
    "book/chapters/08_summary.html",
    "book/chapters/01_groups.html",
    "book/chapters/04_fitting_m.html",
    "book/chapters/07b_your_model.html",
    "book/api/equivariance.html",
)  # a quick subset (the test suite's); the command checks every page (all_pages)
MAX_CODE_LINES = 25
VIEWPORT = {"width": 1280, "height": 900}

# Layout: page width, visible code cells and their lengths, figures without a caption.
LAYOUT_JS = r"""() => {
  const main = document.querySelector('main') || document.body;
  const visible = el => (el.checkVisibility ? el.checkVisibility({visibilityProperty: true})
    : el.offsetParent !== null) && el.getClientRects().length > 0;
  const code = Array.from(main.querySelectorAll('div.cell_input pre'))
    .filter(visible)
    .map(pre => pre.textContent.replace(/\n$/, '').split('\n').length);
  const images = Array.from(main.querySelectorAll('img'))
    .filter(img => !img.closest('.navbar-brand, .logo, header, nav'));
  const uncaptioned = images.filter(img => { const f = img.closest('figure'); return !f || !f.querySelector('figcaption'); })
    .map(img => (img.getAttribute('alt') || img.currentSrc || img.src || '').slice(0, 60));
  return {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
          code, images: images.length, figcaptions: main.querySelectorAll('figure figcaption').length, uncaptioned};
}"""


def all_pages(html_dir: Path) -> tuple[str, ...]:
    """Every page of the built book: the intro, the chapters, the bibliography, the API reference."""
    html_dir = Path(html_dir)
    found = sorted(p.relative_to(html_dir).as_posix() for p in (html_dir / "book").rglob("*.html"))
    intro = [p for p in found if p == "book/intro.html"]
    return tuple(intro + [p for p in found if p != "book/intro.html"])
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Raw TeX that survived typesetting: a $...$ pair, \( \), or \[ \] in the visible text.
RAW_MATH_JS = r"""() => {
  const clone = document.querySelector('main') || document.body;
  const walker = document.createTreeWalker(clone, NodeFilter.SHOW_TEXT, {
    acceptNode: n => n.parentElement.closest('pre, code, script, style, mjx-container, .highlight')
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  const hits = [];
  while (walker.nextNode()) {
    const t = walker.currentNode.textContent;
    if (/\$[^$\s][^$]*\$/.test(t) || /\\\(|\\\[/.test(t)) hits.push(t.trim().slice(0, 80));
  }
  return hits;
}"""


def find_chromium() -> str | None:
    """Path of a Chromium executable, or None."""
    for path in CHROMIUM_CANDIDATES:
        if Path(path).is_file():
            return path
    return shutil.which("chromium")


@dataclass
class PageReport:
    page: str
    screenshot: Path | None = None
    typeset: int = 0
    raw_math: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    images: int = 0
    console_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    http_errors: list[str] = field(default_factory=list)
    figcaptions: int = 0
    uncaptioned_figures: list[str] = field(default_factory=list)
    long_code_cells: list[str] = field(default_factory=list)
    too_wide: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.raw_math or self.broken_images or self.console_errors or self.external_requests
                    or self.http_errors or self.uncaptioned_figures or self.long_code_cells or self.too_wide)

    def summary(self) -> str:
        status = "ok" if self.ok else "FAIL"
        detail = (f"{self.typeset} formulas typeset, {self.images} images, {self.figcaptions} figure captions"
                  + "".join(f"; {name}: {vals[:3]}" for name, vals in (
                      ("raw math", self.raw_math), ("broken images", self.broken_images),
                      ("console errors", self.console_errors), ("external requests", self.external_requests),
                      ("HTTP errors", self.http_errors), ("figures without a caption", self.uncaptioned_figures),
                      (f"visible code cells over {MAX_CODE_LINES} lines", self.long_code_cells),
                      ("wider than the viewport", self.too_wide)) if vals))
        return f"[{status}] {self.page}: {detail}"


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on an ephemeral localhost port; yield its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}/"
        finally:
            httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output readable
        pass


def check_book(html_dir: Path, pages: tuple[str, ...] | None = DEFAULT_PAGES, screenshots: Path | None = None,
               chromium: str | None = None, timeout_ms: int = 30_000) -> list[PageReport]:
    """Open each of ``pages`` (paths under ``html_dir``; ``None``: every page) and check it; return
    one report per page."""
    from playwright.sync_api import sync_playwright

    html_dir = Path(html_dir)
    pages = all_pages(html_dir) if pages is None else pages
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found: install Debian's chromium package (apt-get install chromium)")
    missing = [p for p in pages if not (html_dir / p).is_file()]
    if missing:
        raise FileNotFoundError(f"pages not in the built book {html_dir}: {', '.join(missing)}")
    if screenshots:
        screenshots.mkdir(parents=True, exist_ok=True)
    reports = []
    with serve(html_dir) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for page_path in pages:
                reports.append(_check_page(browser, base, page_path, screenshots, timeout_ms))
        finally:
            browser.close()
    return reports


def _check_page(browser, base: str, page_path: str, screenshots: Path | None, timeout_ms: int) -> PageReport:
    report = PageReport(page_path)
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()

    def route(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            report.external_requests.append(route.request.url)
            route.abort()

    page.route("**/*", route)
    page.on("console", lambda msg: msg.type == "error" and report.console_errors.append(msg.text))
    page.on("pageerror", lambda err: report.console_errors.append(str(err)))
    page.on("response", lambda r: r.status >= 400 and report.http_errors.append(f"{r.status} {r.url}"))
    page.goto(base + page_path, wait_until="load", timeout=timeout_ms)
    has_math = page.evaluate("() => document.querySelectorAll('.math, div.math, span.math').length > 0")
    if has_math:
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                               timeout=timeout_ms)
        page.evaluate("() => MathJax.startup.promise")
    page.wait_for_load_state("networkidle", timeout=timeout_ms)
    report.typeset = page.evaluate("() => document.querySelectorAll('mjx-container').length")
    if has_math and report.typeset == 0:
        report.raw_math.append("the page has math but MathJax typeset none of it")
    report.raw_math += page.evaluate(RAW_MATH_JS)
    images = page.evaluate("""() => Array.from(document.images).map(i => [i.currentSrc || i.src, i.complete && i.naturalWidth > 0])""")
    report.images = len(images)
    report.broken_images = [src for src, ok in images if not ok]
    layout = page.evaluate(LAYOUT_JS)
    if layout["scrollWidth"] > layout["innerWidth"]:
        report.too_wide.append(f"{layout['scrollWidth']} px in a {layout['innerWidth']} px viewport")
    report.long_code_cells = [f"{n} lines" for n in layout["code"] if n > MAX_CODE_LINES]
    report.figcaptions = layout["figcaptions"]
    if "chapters/" in page_path:
        report.uncaptioned_figures = layout["uncaptioned"]
    if screenshots:
        report.screenshot = screenshots / (page_path.replace("/", "_").removesuffix(".html") + ".png")
        page.screenshot(path=str(report.screenshot), full_page=True)
    context.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esae.browser_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("html_dir", nargs="?", default="_build/html", type=Path)
    parser.add_argument("--screenshots", type=Path, default=Path("_build/screenshots"))
    parser.add_argument("--pages", nargs="+", help="pages to check (default: every page of the book)")
    args = parser.parse_args(argv)
    reports = check_book(args.html_dir, tuple(args.pages) if args.pages else None, args.screenshots)
    for r in reports:
        print(r.summary() + (f" -> {r.screenshot}" if r.screenshot else ""))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
