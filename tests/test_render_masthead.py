"""The masthead (name or logo, issue number, date, "View in browser") and the sign-off line
that invites replies, in the HTML and the text part."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup

from newsletter.check import GMAIL_CLIP_BYTES
from newsletter.project import Project
from newsletter.render import SAMPLE_SUBSCRIBER, RenderedIssue, render_file
from tests.browser import chromium
from tests.conftest import CONFIG, EXAMPLE_ISSUE

UNSUBSCRIBE = "https://news.example.com/unsubscribe/TOKEN123"
FRONT = "---\ntitle: Ausgabe mit Kopf\npreheader: Kurz\ndate: 2024-07-02\nnumber: 12\n{extra}---\n"


def render(
    make_project: Callable[..., Path], config: str = CONFIG, extra: str = "", **kw: Any
) -> tuple[RenderedIssue, BeautifulSoup, str]:
    root = make_project(config=config, issues={"x.md": FRONT.format(extra=extra) + "Text.\n"}, **kw)
    rendered = render_file(Project.load(root), root / "issues" / "x.md")
    html, text = rendered.personalize(SAMPLE_SUBSCRIBER, UNSUBSCRIBE)
    return rendered, BeautifulSoup(html, "html.parser"), text


def test_masthead_in_html_and_text(make_project: Callable[..., Path]) -> None:
    _, soup, text = render(make_project)
    masthead = soup.find(class_="nl-masthead-text")
    assert masthead.find(class_="nl-masthead-name").get_text() == "Jens' Briefing"
    meta = masthead.find(class_="nl-masthead-meta")
    assert " ".join(meta.get_text().split()) == "Ausgabe 12 · 2. Juli 2024 · Im Browser ansehen"
    assert meta.find("a")["href"] == "https://news.example.com/issues/x"
    # The web version can drop the link with its separator: it is the browser already.
    meta.find(class_="nl-view-online").decompose()
    assert " ".join(meta.get_text().split()) == "Ausgabe 12 · 2. Juli 2024"
    # The masthead comes before the card; "View in browser" is no longer in the footer.
    assert masthead.find_next(class_="nl-card") is not None
    assert "Im Browser ansehen" not in soup.find(class_="nl-footer-text").get_text()
    assert text.startswith(
        "Jens' Briefing\nAusgabe 12 · 2. Juli 2024\n"
        "Im Browser ansehen: https://news.example.com/issues/x\n\nAusgabe mit Kopf\n"
    )
    assert "Im Browser ansehen" not in text[text.index("\n-- \n") :]


def test_masthead_in_english_without_number_or_base_url(make_project: Callable[..., Path]) -> None:
    config = CONFIG.replace('base_url = "https://news.example.com"\n', "")
    root = make_project(
        config=config,
        issues={"x.md": "---\ntitle: T\npreheader: p\ndate: 2024-07-02\nlanguage: en\n---\nHi.\n"},
    )
    rendered = render_file(Project.load(root), root / "issues" / "x.md")
    soup = BeautifulSoup(rendered.html, "html.parser")
    assert soup.find(class_="nl-masthead-meta").get_text().strip() == "July 2, 2024"
    assert "View in browser" not in rendered.html and "View in browser" not in rendered.text
    assert rendered.text.startswith("Jens' Briefing\nJuly 2, 2024\n\nT\n")
    assert "Just reply to this email" in rendered.text


def test_logo_with_styled_alt_text(make_project: Callable[..., Path]) -> None:
    config = (
        CONFIG + '\n[theme]\nlogo_url = "https://news.example.com/logo.png"\nlogo_width = 160\n'
    )
    _, soup, text = render(make_project, config)
    masthead = soup.find(class_="nl-masthead-text")
    assert masthead.find(class_="nl-masthead-name") is None
    logo = masthead.find("img")
    assert (logo["src"], logo["alt"], logo["width"]) == (
        "https://news.example.com/logo.png",
        "Jens' Briefing",
        "160",
    )
    # With images blocked, the alt text still reads as a masthead.
    style = logo["style"].replace(" ", "")
    assert "font-size:20px" in style and "font-weight:bold" in style and "color:#1f2937" in style
    assert text.startswith("Jens' Briefing\nAusgabe 12")


def test_reply_prompt_and_switching_it_off(make_project: Callable[..., Path]) -> None:
    _, soup, text = render(make_project)
    prompt = soup.find(class_="nl-reply-prompt")
    assert "Antworte einfach auf diese E-Mail" in prompt.get_text()
    assert prompt.find_parent(class_="nl-content") is not None  # inside the card
    assert "Antworte einfach auf diese E-Mail" in text.split("\n-- \n")[0]
    config = CONFIG + "\n[theme]\nreply_prompt = false\n"
    rendered, soup, text = render(make_project, config)
    assert soup.find(class_="nl-reply-prompt") is None
    assert "Antworte einfach" not in text
    assert "Text.\n\n-- \n" in text


def test_a_project_template_overrides_the_masthead(make_project: Callable[..., Path]) -> None:
    templates = {
        "masthead.mjml.j2": (
            '<mj-section><mj-column><mj-text css-class="mine">Mein Kopf {{ issue.number }}'
            "</mj-text></mj-column></mj-section>\n"
        ),
        "masthead.txt.j2": "MEIN KOPF {{ issue.number }}\n\n",
    }
    _, soup, text = render(make_project, templates=templates)
    assert soup.find(class_="nl-masthead-text") is None
    assert "Mein Kopf 12" in soup.find(class_="mine").get_text()
    assert text.startswith("MEIN KOPF 12\n\nAusgabe mit Kopf\n")


def test_bad_number_is_an_error(make_project: Callable[..., Path], cli) -> None:
    root = make_project(issues={"x.md": "---\ntitle: T\nnumber: [1, 2]\n---\nText.\n"})
    result = cli(root, "build", "x")
    assert result.exit_code == 1
    assert "x.md:3" in result.output and "`number` must be text" in result.output


def test_masthead_keeps_the_email_under_gmails_clipping_size(project: Path) -> None:
    config = (project / "newsletter.toml").read_text(encoding="utf-8")
    (project / "newsletter.toml").write_text(
        config + '\n[theme]\nlogo_url = "https://news.example.com/logo.png"\n', encoding="utf-8"
    )
    issue = project / "issues" / EXAMPLE_ISSUE.name
    issue.write_text(
        issue.read_text(encoding="utf-8").replace("language: de\n", "language: de\nnumber: 42\n"),
        encoding="utf-8",
    )
    rendered = render_file(Project.load(project), issue)
    html, _ = rendered.personalize(SAMPLE_SUBSCRIBER, UNSUBSCRIBE)
    assert "Ausgabe 42" in html
    size = len(html.encode("utf-8"))
    assert size < GMAIL_CLIP_BYTES
    assert size < 20_000, f"the example issue grew to {size} bytes"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize(("width", "margin"), [(375, 0), (800, 8)])
def test_card_has_a_top_margin_at_desktop_width(
    browser: Any, make_project: Callable[..., Path], width: int, margin: int
) -> None:
    _, soup, _ = render(make_project)
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.route("**/*", lambda route: route.abort())
        page.set_content(str(soup))
        got = page.evaluate(
            "parseFloat(getComputedStyle(document.querySelector('.nl-card')).marginTop)"
        )
        assert got == margin
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    finally:
        page.close()
