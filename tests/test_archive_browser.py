"""The archive in headless Chromium at 375 and 1200 px: under `newsletter serve`, and as the
static site served from a folder by python's http.server, both on loopback."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import chromium
from tests.conftest import CONFIG
from tests.support.archive import run_cli, sent_project, serving

pytestmark = pytest.mark.browser

WIDTHS = (375, 1200)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with sent_project(tmp_path_factory.mktemp("browser") / "project", CONFIG) as root:
        yield root


@pytest.fixture(scope="module")
def static_site(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The built site served from its folder by http.server on 127.0.0.1."""
    out = tmp_path_factory.mktemp("static") / "site"
    result = run_cli(project, "archive", "build", "-o", str(out))
    assert result.exit_code == 0, result.output
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def check_readable(browser: Any, url: str, width: int) -> Any:
    """Open `url` at `width`; assert no horizontal scroll and no request off loopback."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    response = page.goto(url)
    assert response is not None and response.ok, url
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"{url} at {width}px scrolls sideways ({scroll_width}px)"
    body_size = page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
    assert body_size >= 14
    off_machine = [u for u in requests if not u.startswith("http://127.0.0.1:")]
    assert off_machine == [], off_machine
    return page


@pytest.mark.slow
@pytest.mark.parametrize("width", WIDTHS)
def test_served_archive_index_and_issue_page(browser, project, width):
    with serving(project) as base:
        page = check_readable(browser, base + "/", width)
        try:
            page.get_by_role("link", name="Zweite Ausgabe").click()
            page.wait_for_url(base + "/issues/zweite-ausgabe")
            assert page.locator("text=Hallo zusammen,").is_visible()
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            email = page.get_by_label("E-Mail-Adresse")
            assert email.is_visible()
            box = email.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
            page.get_by_role("link", name="Nächste Ausgabe").click()
            page.wait_for_url(base + "/issues/dritte-ausgabe")
        finally:
            page.close()
        check_readable(browser, base + "/issues/erste-ausgabe", width).close()


@pytest.mark.slow
@pytest.mark.parametrize("width", WIDTHS)
def test_served_404_page(browser, project, width):
    with serving(project) as base:
        page = browser.new_page(viewport={"width": width, "height": 900})
        try:
            response = page.goto(base + "/issues/entwurf")
            assert response is not None and response.status == 404
            assert page.locator("h1").inner_text() == "Seite nicht gefunden"
            assert page.evaluate("document.documentElement.scrollWidth") <= width
        finally:
            page.close()


@pytest.mark.slow
@pytest.mark.parametrize("width", WIDTHS)
def test_static_site_from_a_folder(browser, static_site, width):
    page = check_readable(browser, static_site + "/", width)
    try:
        page.get_by_role("link", name="Zweite Ausgabe").click()
        page.wait_for_url(static_site + "/issues/zweite-ausgabe/")
        assert page.locator("text=Hallo zusammen,").is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.get_by_role("link", name="Vorherige Ausgabe").click()
        page.wait_for_url(static_site + "/issues/erste-ausgabe/")
        page.get_by_role("banner").get_by_role("link", name="Archiv", exact=True).click()
        page.wait_for_url(static_site + "/")
        action = page.locator("form").get_attribute("action")
        assert action == "https://news.example.com/subscribe"
    finally:
        page.close()
    check_readable(browser, static_site + "/issues/dritte-ausgabe/", width).close()
    check_readable(browser, static_site + "/404.html", width).close()
