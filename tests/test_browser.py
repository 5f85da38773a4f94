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
    reports = browser_check.check_book(workspace / "_build" / "html", screenshots=tmp_path)
    assert [r.page for r in reports] == list(browser_check.DEFAULT_PAGES)
    for report in reports:
        assert report.ok, report.summary()
        assert report.screenshot.stat().st_size > 10_000
    by_page = {r.page: r for r in reports}
    assert by_page["book/chapters/01_groups.html"].typeset > 20
    assert by_page["book/chapters/01_groups.html"].images >= 3


def test_checker_flags_raw_math_broken_images_and_external_requests(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><main><p>Unrendered $x^2$ here.</p>"
                    "<img src='missing.png'><img src='https://example.com/a.png'></main></body></html>")
    (report,) = browser_check.check_book(tmp_path, pages=("bad.html",), screenshots=tmp_path / "shots")
    assert not report.ok
    assert report.raw_math and report.broken_images
    assert any("example.com" in url for url in report.external_requests)
    assert any(err.startswith("404") for err in report.http_errors)
