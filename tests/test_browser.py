"""The smoke-built book, served on localhost and opened in headless Chromium, renders as a reader
would see it: math typeset, figures loaded, no console errors, no request leaving localhost."""

import os

import pytest

from esae import browser_check

CHROMIUM = browser_check.find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (make test installs it where it can: apt-get install chromium)")


@pytest.mark.slow
def test_book_renders_in_chromium(smoke_book, tmp_path):
    workspace, _ = smoke_book
    html = workspace / "_build" / "html"
    reports = browser_check.check_book(html, pages=None, screenshots=tmp_path)  # every page
    assert [r.page for r in reports] == list(browser_check.all_pages(html))
    assert set(browser_check.DEFAULT_PAGES) <= {r.page for r in reports}
    for report in reports:
        assert report.ok, report.summary()
        assert report.screenshot.stat().st_size > 10_000
    by_page = {r.page: r for r in reports}
    assert by_page["book/chapters/01_groups.html"].typeset > 20
    assert by_page["book/chapters/01_groups.html"].images >= 3
    for page, report in by_page.items():  # every chapter figure numbered and captioned
        if "/chapters/" in page and not page.endswith("_summary.html"):
            assert report.figcaptions >= report.images >= 1, report.summary()


def test_checker_flags_raw_math_broken_images_and_external_requests(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><main><p>Unrendered $x^2$ here.</p>"
                    "<img src='missing.png'><img src='https://example.com/a.png'></main></body></html>")
    (report,) = browser_check.check_book(tmp_path, pages=("bad.html",), screenshots=tmp_path / "shots")
    assert not report.ok
    assert report.raw_math and report.broken_images
    assert any("example.com" in url for url in report.external_requests)
    assert any(err.startswith("404") for err in report.http_errors)


def test_checker_flags_uncaptioned_figures_long_code_and_wide_pages(tmp_path):
    (tmp_path / "chapters").mkdir()
    (tmp_path / "chapters" / "ok.png").write_bytes(_png())
    code = "\n".join(f"x{i} = {i}" for i in range(30))
    (tmp_path / "chapters" / "bad.html").write_text(
        "<html><body><main><img src='ok.png'>"
        "<figure><img src='ok.png'><figcaption>Figure 1: fine</figcaption></figure>"
        f"<div class='cell_input'><pre>{code}</pre></div>"
        "<details><div class='cell_input'><pre>" + code + "</pre></div></details>"
        "<div style='width: 2000px'>wide</div></main></body></html>")
    (report,) = browser_check.check_book(tmp_path, pages=("chapters/bad.html",), screenshots=tmp_path / "shots")
    assert not report.ok
    assert len(report.uncaptioned_figures) == 1 and report.figcaptions == 1
    assert report.long_code_cells == ["30 lines"]  # the folded one is not visible
    assert report.too_wide


def _png() -> bytes:
    import base64

    return base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")
