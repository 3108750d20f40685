"""The archive's pages pass axe-core in headless Chromium: `/`, an issue page, the 404 page
and `/subscribe`, at 375 and 1200 px, light and dark. Plus what a reader sees on them: a
site header, one <main>, labelled navigation, one date, no email-only reply prompt."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from bs4 import BeautifulSoup
from starlette.testclient import TestClient

from newsletter.project import Project
from newsletter.web import create_app
from tests.browser import chromium
from tests.conftest import CONFIG
from tests.support.archive_site import publish, serving
from tests.support.axe import serious_violations

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium and axe-core per page

ISSUES = {
    "2024-07-01-erste.md": """---
title: "Größer, schöner: „Über“ Öl & Ärger"
slug: erste-ausgabe
date: 2024-07-01
preheader: Die erste Ausgabe
---

Hallo {{ subscriber.first_name | default("zusammen") }},

Ein Absatz mit einem [Link](https://example.org/artikel) und einer Fußnote.[^1]

[^1]: Die Quelle: <https://example.org/quelle>.
""",
    "2024-08-01-zweite.md": """---
title: Zweite Ausgabe
slug: zweite-ausgabe
date: 2024-08-01
---

Hallo zusammen,

Noch ein Absatz, ~~49 €~~ 39 €.
""",
}

PAGES = {
    "index": "/",
    "issue": "/issues/erste-ausgabe",
    "not-found": "/gibt-es-nicht",
    "subscribe": "/subscribe",
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = publish(tmp_path_factory.mktemp("a11y") / "project", CONFIG, ISSUES)
    with serving(root) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def open_page(browser: Any, url: str, width: int, scheme: str) -> Any:
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    page.goto(url)
    return page


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 1200])
@pytest.mark.parametrize("name", list(PAGES))
def test_no_serious_axe_violations(browser, base, name, width, scheme):
    page = open_page(browser, base + PAGES[name], width, scheme)
    try:
        assert serious_violations(page) == []
    finally:
        page.close()


@pytest.mark.parametrize("name", ["index", "issue", "not-found"])
def test_site_header_main_and_labelled_navigation(browser, base, name):
    page = open_page(browser, base + PAGES[name], 1200, "light")
    try:
        header = page.get_by_role("banner")
        assert header.get_by_text("Jens' Briefing").is_visible()
        form = "/subscribe" if name == "not-found" else "#subscribe"
        for label, href in (("Archiv", "/"), ("Feed", "/feed.xml"), ("Abonnieren", form)):
            link = header.get_by_role("link", name=label, exact=True)
            assert link.get_attribute("href").endswith(href), label
        assert page.locator("main").count() == 1
        navs = page.locator("nav")
        for i in range(navs.count()):
            assert navs.nth(i).get_attribute("aria-label"), navs.nth(i).inner_html()
    finally:
        page.close()


def test_issue_page_shows_one_date_and_no_reply_prompt(browser, base):
    page = open_page(browser, base + PAGES["issue"], 375, "light")
    try:
        text = page.locator("body").inner_text()
        assert "Antworte einfach auf diese E-Mail" not in text
        assert text.count("1. Juli 2024") == 1, text
    finally:
        page.close()


def test_feeds_carry_no_reply_prompt_and_absolute_footnote_links(base):
    atom = ElementTree.fromstring(httpx.get(base + "/feed.xml").content)
    ns = {"a": "http://www.w3.org/2005/Atom"}
    atom_content = next(
        e.findtext("a:content", namespaces=ns)
        for e in atom.iterfind("a:entry", ns)
        if e.findtext("a:title", namespaces=ns).startswith("Größer")
    )
    feed = httpx.get(base + "/feed.json").json()
    json_content = next(
        i["content_html"] for i in feed["items"] if i["url"].endswith("/issues/erste-ausgabe")
    )
    page = "https://news.example.com/issues/erste-ausgabe"
    for content in (atom_content, json_content):
        assert "Antworte einfach" not in content
        assert f'href="{page}#fn1"' in content
        assert f'href="{page}#fnref1"' in content
        assert 'href="#' not in content


def test_issue_path_with_slash_redirects_permanently(base):
    response = httpx.get(base + "/issues/erste-ausgabe/?utm=x", follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == "/issues/erste-ausgabe?utm=x"


def test_header_shows_the_logo_with_its_alt_text(cli, make_project, tmp_path):
    config = (
        CONFIG
        + '\n[theme]\nlogo_url = "https://news.example.com/logo.png"\nlogo_alt = "Jens’ Briefing (Logo)"\n'
    )
    root = make_project(config=config)
    out = tmp_path / "site"
    result = cli(root, "archive", "build", "-o", str(out), "-q")
    assert result.exit_code == 0, result.output
    page = BeautifulSoup((out / "404.html").read_text(encoding="utf-8"), "html.parser")
    home = page.header.find("a", class_="nl-archive-home")
    assert home.img["src"] == "https://news.example.com/logo.png"
    assert home.img["alt"] == "Jens’ Briefing (Logo)"
    assert [a.get_text() for a in page.header.nav.find_all("a")] == ["Archiv", "Feed", "Abonnieren"]


def test_issue_page_without_the_archive_links_only_to_subscribing(tmp_path_factory):
    config = CONFIG + "\n[archive]\nenabled = false\n"
    root = publish(
        tmp_path_factory.mktemp("noarchive") / "p", config, dict(list(ISSUES.items())[:1])
    )
    with TestClient(create_app(Project.load(root))) as client:
        response = client.get("/issues/erste-ausgabe")
    assert response.status_code == 200
    page = BeautifulSoup(response.text, "html.parser")
    assert page.header.find("a", class_="nl-archive-home") is None  # no archive to go to
    assert "Jens' Briefing" in page.header.get_text()
    assert [a["href"] for a in page.header.find_all("a")] == ["#subscribe"]
    assert len(page.find_all("main")) == 1
