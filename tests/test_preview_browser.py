"""The live preview in real headless chromium, against the real server on a free port."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from newsletter.preview.app import create_preview_app
from newsletter.preview.server import RunningServer, start_in_thread
from newsletter.project import Project
from tests.browser import chromium, png_size
from tests.conftest import EXAMPLE_ISSUE

pytestmark = pytest.mark.browser

# How long the page may take to follow a save (the promise is 1 s; CI machines are slow).
RELOAD_TIMEOUT_MS = 5000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def live(project: Path) -> Iterator[tuple[RunningServer, Path]]:
    """The preview of the example issue, served by uvicorn in a thread, watching the files."""
    issue = project / "issues" / EXAMPLE_ISSUE.name
    server = start_in_thread(create_preview_app(Project.load(project), issue))
    yield server, issue
    server.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def email_body(page: Any) -> Any:
    return page.frame_locator("#email").locator("body")


def save(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


@pytest.mark.slow
def test_page_shows_the_email_as_an_inbox_would(live, page) -> None:
    server, _issue = live
    page.goto(server.url)
    expect(page.locator("#from-name")).to_have_text("Jens")
    expect(page.locator("#from-email")).to_have_text("jens@example.com")
    expect(page.locator("#subject")).to_have_text("Meta, KI und das Ende der Creator?")
    expect(page.locator("#preheader")).to_have_text(
        "Was 40 Milliarden Dollar für Influencer bedeuten"
    )
    # The German text survives the pipeline, the server and the browser.
    expect(email_body(page)).to_contain_text("Warum entwickelt Meta generative KI?")
    expect(email_body(page)).to_contain_text("Menschen außerhalb der EU")
    expect(email_body(page)).to_contain_text("Hallo Alex")  # the sample subscriber
    expect(page.locator("#error")).to_be_hidden()
    assert page.locator("#email").evaluate("f => f.clientWidth") >= 600
    # Desktop stays desktop in a narrow window (the stage scrolls instead).
    page.set_viewport_size({"width": 700, "height": 900})
    assert page.locator("#email").evaluate("f => f.clientWidth") >= 600


def test_phone_width_has_no_horizontal_overflow(live, page, tmp_path: Path) -> None:
    server, _issue = live
    page.goto(server.url)
    expect(email_body(page)).to_contain_text("Warum entwickelt Meta")
    page.click("#width-phone")
    expect(page.locator("#email")).to_have_js_property("clientWidth", 375)
    frame = page.frame_locator("#email").locator("html")
    widths = frame.evaluate(
        """html => {
            const doc = html.ownerDocument;
            let right = 0, widest = "";
            for (const el of doc.body.querySelectorAll("*")) {
                const r = el.getBoundingClientRect();
                if (r.width && r.right > right) { right = r.right; widest = el.tagName; }
            }
            return {scroll: doc.documentElement.scrollWidth, view: doc.documentElement.clientWidth,
                    right: right, widest: widest};
        }"""
    )
    assert widths["view"] == 375, widths
    assert widths["scroll"] <= 375, widths
    assert widths["right"] <= 375.5, widths  # nothing inside sticks out either
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert png_size(tmp_path / "phone.png")[0] == 1280


@pytest.mark.slow
def test_saving_the_issue_updates_the_open_page(live, page) -> None:
    server, issue = live
    page.goto(server.url)
    expect(email_body(page)).to_contain_text("Wir alle nutzen Facebook")
    original = issue.read_text(encoding="utf-8")
    started = time.monotonic()
    save(issue, original.replace("Wir alle nutzen Facebook", "Wir alle lieben Fediverse"))
    expect(email_body(page)).to_contain_text("Wir alle lieben Fediverse", timeout=RELOAD_TIMEOUT_MS)
    elapsed = time.monotonic() - started
    assert elapsed < RELOAD_TIMEOUT_MS / 1000
    # The front matter too: the inbox header follows the new subject.
    save(issue, original.replace('subject: "Meta, KI', 'subject: "Zuckerberg, KI'))
    expect(page.locator("#subject")).to_have_text(
        "Zuckerberg, KI und das Ende der Creator?", timeout=RELOAD_TIMEOUT_MS
    )


def test_config_change_updates_the_sender(live, page, project: Path) -> None:
    server, _issue = live
    page.goto(server.url)
    expect(page.locator("#from-name")).to_have_text("Jens")
    config = project / "newsletter.toml"
    save(
        config,
        config.read_text(encoding="utf-8").replace(
            'from_name = "Jens"', 'from_name = "Jens Müller"'
        ),
    )
    expect(page.locator("#from-name")).to_have_text("Jens Müller", timeout=RELOAD_TIMEOUT_MS)


def test_broken_yaml_shows_the_error_and_the_next_good_save_recovers(live, page) -> None:
    server, issue = live
    page.goto(server.url)
    expect(email_body(page)).to_contain_text("Wir alle nutzen Facebook")
    original = issue.read_text(encoding="utf-8")
    broken = original.replace(
        'subject: "Meta, KI und das Ende der Creator?"', 'subject: "Meta, KI und das Ende'
    )
    save(issue, broken)
    error = page.locator("#error")
    expect(error).to_be_visible(timeout=RELOAD_TIMEOUT_MS)
    expect(error).to_contain_text(f"issues/{issue.name}, line ")
    expect(error).to_contain_text("YAML")
    # The last good email stays visible underneath, so the author keeps context.
    expect(email_body(page)).to_contain_text("Wir alle nutzen Facebook")

    save(issue, original.replace("Wir alle nutzen Facebook", "Wir alle nutzen Mastodon"))
    expect(error).to_be_hidden(timeout=RELOAD_TIMEOUT_MS)
    expect(email_body(page)).to_contain_text("Wir alle nutzen Mastodon")


def test_broken_template_shows_its_file_and_line(live, page, project: Path) -> None:
    server, _issue = live
    page.goto(server.url)
    expect(email_body(page)).to_contain_text("Wir alle nutzen Facebook")
    templates = project / "templates"
    templates.mkdir(exist_ok=True)
    # A new templates/ folder is picked up too; a syntax error in it names its line.
    (templates / "email.txt.j2").write_text("Hallo\n{% if %}\n", encoding="utf-8")
    error = page.locator("#error")
    expect(error).to_be_visible(timeout=RELOAD_TIMEOUT_MS)
    expect(error).to_contain_text("email.txt.j2, line 2")
    (templates / "email.txt.j2").unlink()
    expect(error).to_be_hidden(timeout=RELOAD_TIMEOUT_MS)


COLOURS = """root => Array.from(root.ownerDocument.querySelectorAll("body *")).map(el => {
    const s = getComputedStyle(el);
    return el.tagName + " " + s.color + " " + s.backgroundColor;
})"""


def test_plain_text_view(live, page) -> None:
    server, _issue = live
    page.goto(server.url)
    expect(email_body(page)).to_contain_text("Wir alle nutzen Facebook")
    page.click("#view-text")
    expect(page.locator("#text")).to_be_visible()
    expect(page.locator("#text")).to_contain_text("Hallo Alex")
    expect(page.locator("#text")).to_contain_text("Menschen außerhalb der EU")
    expect(page.locator("#email")).to_be_hidden()
    page.click("#view-html")
    expect(page.locator("#email")).to_be_visible()


@pytest.mark.slow
def test_dark_view_matches_a_dark_mode_mail_client(live, page, browser, project: Path) -> None:
    server, _issue = live
    page.goto(server.url)
    expect(email_body(page)).to_contain_text("Wir alle nutzen Facebook")
    light = email_body(page).evaluate(COLOURS)
    page.click("#scheme-dark")
    expect(page.locator("#dark-note")).to_contain_text("the email's own dark styles")
    dark = email_body(page).evaluate(COLOURS)
    # What chromium itself shows the same email as with prefers-color-scheme: dark.
    reference = browser.new_context(viewport={"width": 800, "height": 900}, color_scheme="dark")
    try:
        other = reference.new_page()
        other.goto(server.url + "email.html")
        expected = other.locator("body").evaluate(COLOURS)
    finally:
        reference.close()
    assert dark != light
    assert dark == expected

    # An email without dark styles gets the forced inversion of the Gmail/Outlook apps.
    (project / "templates").mkdir(exist_ok=True)
    (project / "templates" / "responsive.css.j2").write_text(
        "@media only screen and (max-width: 480px) { p { margin: 0 } }\n", encoding="utf-8"
    )
    expect(page.locator("#dark-note")).to_contain_text("no dark styles", timeout=RELOAD_TIMEOUT_MS)
    assert "invert" in email_body(page).evaluate(
        "b => getComputedStyle(b.ownerDocument.documentElement).filter"
    )


@pytest.mark.slow
def test_screenshot_per_width(live, page, tmp_path: Path) -> None:
    server, _issue = live
    page.goto(server.url)
    expect(email_body(page)).to_contain_text("Warum entwickelt Meta")
    page.screenshot(path=str(tmp_path / "desktop.png"), full_page=True)
    page.click("#width-phone")
    expect(page.locator("#email")).to_have_js_property("clientWidth", 375)
    page.locator("#email").screenshot(path=str(tmp_path / "phone-email.png"))
    assert png_size(tmp_path / "desktop.png")[0] == 1280
    # The centred frame may sit on a half pixel, which the clip rounds outwards.
    assert png_size(tmp_path / "phone-email.png")[0] in (375, 376)


def test_reload_keeps_the_scroll_position(live, page) -> None:
    server, issue = live
    page.goto(server.url)
    expect(email_body(page)).to_contain_text("Wir alle nutzen Facebook")
    page.evaluate("window.scrollTo(0, 1500)")
    assert page.evaluate("window.scrollY") == 1500
    original = issue.read_text(encoding="utf-8")
    save(issue, original.replace("Wir alle nutzen Facebook", "Wir alle nutzen Bluesky"))
    expect(email_body(page)).to_contain_text("Wir alle nutzen Bluesky", timeout=RELOAD_TIMEOUT_MS)
    page.wait_for_timeout(200)
    assert page.evaluate("window.scrollY") == 1500
