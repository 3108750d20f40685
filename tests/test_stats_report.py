"""`newsletter report`: one self-contained page, checked in headless Chromium with JavaScript
off, at phone and desktop width, light and dark, in German and English.

Set NEWSLETTER_REPORT_SCREENSHOT=docs/report.png to refresh the README's screenshot."""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

import pytest

from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from newsletter.web import create_app
from tests.browser import chromium
from tests.conftest import CONFIG
from tests.sendgrid_server import FakeSendGrid
from tests.support.stats import ISSUE_A, post_events, post_reply, synthetic_events
from tests.support.web import event, live_server, sent_issue


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def report(newsletter, signer, cli, tmp_path):  # noqa: F811
    proj, engine, people, issues = newsletter
    with live_server(create_app(proj, engine)) as base:
        post_events(base, signer, synthetic_events(people, issues))
        post_reply(base, "Leser 1 <leser1@example.de>", "Re: Frühling", "\n  Danke für „KI“!\nmehr")
        post_reply(base, "Leser 3 <leser3@example.de>", "Re: Sommer", "<b>Schön</b>")
    out = tmp_path / "report.html"
    result = cli(proj.root, "report", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert f"Wrote {out}" in result.output
    return out


@pytest.mark.slow
def test_report_is_self_contained_german_and_holds_the_numbers(report, cli):
    page = report.read_text(encoding="utf-8")
    assert page.count("<svg") == 3  # list size, growth, click/reply rates
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert not re.search(r"url\(\s*['\"]?https?:", page), "no stylesheet or font from the web"
    for label in (
        "Wie läuft der Newsletter?",
        "Wachstum der Liste",
        "Klickrate",
        "Antwortrate",
        "Meistgeklickte Links der letzten Ausgaben",
        "Letzte Antworten",
        "Alle Ausgaben",
    ):
        assert label in page, label
    assert "How the newsletter" not in page
    assert "Studie über KI" in page and "https://example.com/studie" in page  # link text + URL
    # The last replies: sender, issue, first line; the reply's HTML is shown as text.
    assert "Leser 1" in page and "Danke für „KI“!" in page and "Frühjahrsausgabe" in page
    assert "&lt;b&gt;Schön&lt;/b&gt;" in page and "<b>Schön</b>" not in page
    assert "Öffnungen sind Schätzungen" in page


def test_report_labels_in_english(make_project, database_url, monkeypatch, cli, tmp_path):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(
        CONFIG.replace('language = "de"', 'language = "en"'), issues={"a.md": ISSUE_A}
    )
    engine = open_engine(Project.load(root).database_url)
    person = add_subscriber(engine, "reader@example.com")
    sent_issue(engine, [person.id], slug="fruehjahr", title="Spring issue")
    out = tmp_path / "r.html"
    assert cli(root, "report", "-o", str(out)).exit_code == 0
    page = out.read_text(encoding="utf-8")
    for label in (
        "How the newsletter is doing",
        "List growth",
        "Click rate",
        "Reply rate",
        "Top links of the last issues",
        "Latest replies",
        "All issues",
        "No replies yet.",
    ):
        assert label in page, label
    assert "Wie läuft" not in page and "Spring issue" in page
    assert "Opens are estimates" not in page  # opens are not tracked here


def test_report_into_a_missing_folder_is_a_one_line_error(project, cli, tmp_path):
    result = cli(project, "report", "-o", str(tmp_path / "nope" / "r.html"))
    assert result.exit_code == 1
    assert "does not exist; create it first" in result.output and "Traceback" not in result.output


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("width", [375, 1200])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_report_fits_phone_and_desktop_without_javascript(report, browser, width, scheme):
    context = browser.new_context(
        viewport={"width": width, "height": 900}, java_script_enabled=False, color_scheme=scheme
    )
    requests: list[str] = []
    try:
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())
        sizes = page.evaluate(
            """() => ({
                scroll: document.documentElement.scrollWidth,
                inner: window.innerWidth,
                svgs: [...document.querySelectorAll('figure svg')].map(
                    s => [s.getBoundingClientRect().width, s.getBoundingClientRect().height]),
                background: getComputedStyle(document.body).backgroundColor,
            })"""
        )
        assert sizes["scroll"] <= sizes["inner"] == width, "the page scrolls sideways"
        assert len(sizes["svgs"]) == 3
        for w, h in sizes["svgs"]:
            assert 0 < w <= width and h > 50
        red, green, blue = map(int, re.findall(r"\d+", sizes["background"])[:3])
        assert (red + green + blue < 150) == (scheme == "dark"), sizes["background"]
        assert [u for u in requests if not u.startswith("file:")] == []
        screenshot = os.environ.get("NEWSLETTER_REPORT_SCREENSHOT")
        if screenshot and width == 1200 and scheme == "light":
            page.set_viewport_size({"width": 1200, "height": 1400})
            page.screenshot(path=str(Path(screenshot)), full_page=False)
    finally:
        context.close()


@pytest.mark.slow
def test_report_leaves_auto_replies_out(newsletter, cli, tmp_path):  # noqa: F811
    try:
        from newsletter.replies.decode import is_auto_reply  # noqa: F401
    except ImportError:
        pytest.skip("needs the replies helper's auto-reply detection (issue 12 item 9)")
    proj, engine, people, issues = newsletter
    with live_server(create_app(proj, engine)) as base:
        post_reply(
            base,
            "Leser 4 <leser4@example.de>",
            "Abwesenheitsnotiz: Re: Frühling",
            "Ich bin bis Montag nicht im Büro.",
            "Auto-Submitted: auto-replied\n",
        )
        post_reply(base, "Leser 5 <leser5@example.de>", "Re: Frühling", "Gern gelesen")
    out = tmp_path / "r.html"
    assert cli(proj.root, "report", "-o", str(out)).exit_code == 0
    page = out.read_text(encoding="utf-8")
    assert "Gern gelesen" in page and "nicht im Büro" not in page
    data = json.loads(cli(proj.root, "stats", "--format", "json").output)
    replied = {row["issue"]: row["counts"]["replied"] for row in data["issues"]}
    assert replied["fruehjahr"] == 1


@pytest.mark.slow
def test_replies_flagged_automatic_are_not_counted_or_shown(newsletter, cli, tmp_path):  # noqa: F811
    proj, engine, people, issues = newsletter
    from datetime import UTC, datetime

    with engine.begin() as conn:
        for person, automatic, text in (
            (people[1], True, "Ich bin im Urlaub."),
            (people[0], False, "Danke, sehr hilfreich"),
        ):
            conn.execute(
                schema.replies.insert().values(
                    subscriber_id=person.id,
                    issue_id=issues["sommer"],
                    from_email=person.email,
                    subject="Re: Sommer",
                    text=text,
                    attachments=[],
                    received_at=datetime.now(UTC),
                    automatic=automatic,
                )
            )
    data = json.loads(cli(proj.root, "stats", "--format", "json").output)
    assert {r["issue"]: r["counts"]["replied"] for r in data["issues"]}["sommer"] == 1
    out = tmp_path / "r.html"
    assert cli(proj.root, "report", "-o", str(out)).exit_code == 0
    page = out.read_text(encoding="utf-8")
    assert "Danke, sehr hilfreich" in page and "Urlaub" not in page


# --- A report that reads at a glance (issue 26, item 7) ---------------------------------


def _table_rates(page_html: str) -> dict[str, tuple[str, str]]:
    """Issue title -> (click rate, reply rate) as the "all issues" table shows them."""
    from bs4 import BeautifulSoup

    table = BeautifulSoup(page_html, "html.parser").select_one("#issues table")
    rows = {}
    for tr in table.select("tbody tr"):
        cells = [td.get_text(strip=True) for td in tr.find_all("td")]
        rows[cells[1]] = (cells[6], cells[8])
    return rows


def test_report_opens_with_the_headline_figures(report):
    from bs4 import BeautifulSoup

    html = report.read_text(encoding="utf-8")
    soup = BeautifulSoup(html, "html.parser")
    first = soup.select("main section")[0]
    assert first["id"] == "glance" and first.h2.get_text() == "Auf einen Blick"
    figures = {dt.get_text(strip=True): dt.find_next_sibling("dd") for dt in first.select("dl dt")}
    newest_size = soup.select_one("#growth tbody tr").find_all("td")[-1].get_text(strip=True)
    size = figures["Abonnenten"]
    assert size.contents[0].strip() == newest_size
    assert size.small.get_text() == f"+{newest_size} in 30 Tagen"  # everyone joined today
    rates = _table_rates(html)
    last_click, last_reply = rates["Sommerausgabe"]  # the issue sent last
    click, reply = (
        figures["Klickrate der letzten Ausgabe"],
        figures["Antwortrate der letzten Ausgabe"],
    )
    assert click.contents[0].strip() == last_click
    assert reply.contents[0].strip() == last_reply

    def number(text: str) -> float:
        return float(text.rsplit(": ", 1)[-1].replace("\xa0%", "").replace(",", "."))

    for shown, column in ((click, 0), (reply, 1)):
        assert shown.small.get_text().startswith("Median der letzten 2: ")
        # Two issues: the median is the middle of the table's two (rounded) rates.
        middle = sum(number(r[column]) for r in rates.values()) / 2
        assert abs(number(shown.small.get_text()) - middle) <= 0.051


def test_report_empty_states_speak_the_reports_language(
    make_project, database_url, monkeypatch, cli, tmp_path
):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(CONFIG, issues={"a.md": ISSUE_A})
    out = tmp_path / "leer.html"
    assert cli(root, "report", "-o", str(out)).exit_code == 0
    empty = out.read_text(encoding="utf-8")
    assert "No data" not in empty and "Noch keine Ausgabe verschickt." in empty
    engine = open_engine(Project.load(root).database_url)
    person = add_subscriber(engine, "leserin@example.de")
    # Sent through the fake SendGrid, which has not said "delivered" for anyone yet: no
    # rates to draw.
    with FakeSendGrid(api_key="SG.report-key", verified_senders=["jens@example.com"]) as sg:
        monkeypatch.setenv("SENDGRID_API_KEY", "SG.report-key")
        monkeypatch.setenv("SENDGRID_API_HOST", sg.url)
        sent = cli(root, "send", "a", "--yes")
        assert sent.exit_code == 0, sent.output
    assert cli(root, "report", "-o", str(out)).exit_code == 0
    page = out.read_text(encoding="utf-8")
    assert "No data" not in page
    assert "Noch keine zugestellten E-Mails, also noch keine Raten." in page
    assert person.email not in page


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 1200])
def test_report_charts_share_one_font_size_and_tables_fit_or_scroll_in_a_labelled_box(
    report, browser, width, scheme
):
    from tests.support.axe import serious_violations

    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
    try:
        page = context.new_page()
        page.goto(report.as_uri())
        sizes = page.evaluate(
            """() => [...document.querySelectorAll('figure svg')].map(svg => {
                const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
                return [...svg.querySelectorAll('text')]
                    .filter(t => t.textContent.trim() && t.getBoundingClientRect().width > 0)
                    .map(t => parseFloat(getComputedStyle(t).fontSize) * scale);
            })"""
        )
        assert len(sizes) == 3
        every = [size for chart in sizes for size in chart]
        assert max(every) - min(every) < 0.5, sizes  # one font size across the charts
        assert min(every) >= 11, min(every)
        boxes = page.evaluate(
            """() => [...document.querySelectorAll('table')].map(table => {
                const box = table.parentElement;
                return {overflows: box.scrollWidth > box.clientWidth + 1,
                        role: box.getAttribute('role'), label: box.getAttribute('aria-label'),
                        tabindex: box.getAttribute('tabindex')};
            })"""
        )
        assert boxes
        for box in boxes:
            assert (
                box["role"] == "region"
                and box["label"].startswith("Tabelle")
                and box["tabindex"] == "0"
            )
        if width == 1200:
            assert not any(box["overflows"] for box in boxes), boxes
        else:
            assert any(box["overflows"] for box in boxes)  # the issues table scrolls in its box
        assert serious_violations(page) == []
    finally:
        context.close()


@pytest.mark.slow
@pytest.mark.browser
def test_german_report_writes_rates_and_links_as_its_text_and_keeps_the_legend_whole(
    newsletter, signer, cli, browser, tmp_path
):
    proj, engine, people, issues = newsletter
    encoded = "https://example.org/podcast-%C3%B6ffi"
    clicks = [
        event("click", p.email, issue_id=issues["sommer"], subscriber_id=p.id, url=encoded)
        for p in people[:9]
    ]
    with live_server(create_app(proj, engine)) as base:
        post_events(base, signer, synthetic_events(people, issues) + clicks)
    out = tmp_path / "report.html"
    assert cli(proj.root, "report", "-o", str(out)).exit_code == 0
    page_text = out.read_text(encoding="utf-8")
    # The links as a reader reads them; the stored URL stays as it came.
    assert "https://example.org/podcast-öffi" in page_text and "%C3%B6" not in page_text
    stats = cli(proj.root, "stats", "sommer")
    assert "https://example.org/podcast-öffi" in stats.output and "%C3" not in stats.output
    data = json.loads(cli(proj.root, "stats", "sommer", "--format", "json").output)
    assert encoded in [link["url"] for link in data["links"]]

    context = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        page = context.new_page()
        page.goto(out.as_uri())
        charts = page.evaluate(
            """() => [...document.querySelectorAll('figure svg')].map(svg => ({
                y: [...svg.querySelectorAll('.axis.y text')]
                    .filter(t => t.textContent.trim() && t.getBoundingClientRect().height > 0)
                    .map(t => { const r = t.getBoundingClientRect();
                                return [t.textContent, r.top, r.bottom]; }),
                legend: [...svg.querySelectorAll('.legends text')].map(t => t.textContent),
            }))"""
        )
    finally:
        context.close()
    assert len(charts) == 3
    rate_labels = [text for text, _, _ in charts[2]["y"]]
    assert rate_labels and all(re.fullmatch(r"\d+,\d\xa0%", t) for t in rate_labels), rate_labels
    assert charts[1]["legend"] == ["Neu", "Abgemeldet, unzustellbar, beschwert"]
    for chart in charts:
        boxes = sorted((top, bottom) for _, top, bottom in chart["y"])
        for (_, above), (below, _) in itertools.pairwise(boxes):
            assert above <= below + 0.5, chart["y"]  # no label runs into the next
