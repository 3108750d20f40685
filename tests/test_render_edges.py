"""The email's last rough edges: dark mode colours the whole page, hyphenation by the
issue's language, strikethrough in the text part, an RFC 5322 `Date:` with `+0000`."""

from __future__ import annotations

import email
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import chromium

SHORT = """---
title: Kurz
date: 2024-07-02
language: {language}
---

Nur ein Satz mit einem Preis: ~~49 €~~ 39 €.
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def built_html(cli: Callable[..., Any], root: Path, language: str = "de") -> Path:
    (root / "issues" / "kurz.md").write_text(SHORT.format(language=language), encoding="utf-8")
    result = cli(root, "build", "kurz", "-o", str(root / "build"))
    assert result.exit_code == 0, result.output
    return root / "build" / "kurz.html"


@pytest.mark.browser
def test_dark_mode_colours_the_whole_page_below_a_short_email(browser, cli, make_project):
    html = built_html(cli, make_project())
    page = browser.new_page(viewport={"width": 1200, "height": 1600}, color_scheme="dark")
    try:
        page.goto(html.as_uri())
        height = page.evaluate("document.querySelector('.nl-body').getBoundingClientRect().bottom")
        assert height < 1400  # the email is short: the page goes on below it
        # What paints the canvas below the email: the body's background (html has none).
        assert page.evaluate("getComputedStyle(document.documentElement).backgroundColor") in (
            "rgba(0, 0, 0, 0)",
            "rgb(17, 24, 39)",
        )
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(17, 24, 39)"
    finally:
        page.close()


@pytest.mark.browser
@pytest.mark.parametrize("language", ["de", "en"])
def test_content_hyphenates_by_the_issues_language(browser, cli, make_project, language):
    html = built_html(cli, make_project(), language)
    page = browser.new_page(viewport={"width": 375, "height": 900})
    try:
        page.goto(html.as_uri())
        paragraph = page.locator(".nl-content p").first
        assert paragraph.evaluate("p => getComputedStyle(p).hyphens") == "auto"
        assert paragraph.evaluate("p => p.closest('[lang]').lang") == language
    finally:
        page.close()


def test_strikethrough_survives_in_the_text_part(cli, make_project):
    root = make_project()
    built_html(cli, root)
    text = (root / "build" / "kurz.txt").read_text(encoding="utf-8")
    assert "~~49 €~~ 39 €" in text


def test_date_header_uses_numeric_zone(cli, make_project):
    root = make_project()
    built_html(cli, root)
    outbox = root / "outbox"
    result = cli(root, "send", "kurz", "--test", "ich@example.org", "--outbox", str(outbox))
    assert result.exit_code == 0, result.output
    (eml,) = outbox.glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes())
    assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000", message["Date"])


WIDE_TABLE = """---
title: Vergleich
---

Ein Absatz.

| Plattform | Nutzerinnen und Nutzer | Wachstum | Datenbank |
|---|---|---|---|
| Instagram | zwei Milliarden Menschen | +40 % | PostgreSQL |
"""

NARROW_TABLE = """---
title: Vergleich
---

| Name | Preis |
|---|---|
| Kaffee | 3 € |
"""


def test_check_warns_about_a_table_wider_than_a_phone(cli, make_project):
    root = make_project(issues={"breit.md": WIDE_TABLE, "schmal.md": NARROW_TABLE})
    wide = cli(root, "check", "breit", "--strict")
    assert wide.exit_code == 1
    line = next(x for x in wide.output.splitlines() if "this table" in x)
    assert "breit.md:7: warning:" in line  # the table's first line
    assert "4 columns" in line and "327 px" in line and "Outlook for Windows" in line
    narrow = cli(root, "check", "schmal", "--strict")
    assert "this table" not in narrow.output, narrow.output
