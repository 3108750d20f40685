"""The web archive and its feeds under a real `newsletter serve` process, over HTTP: issues
sent through the real CLI to the fake SendGrid; drafts, dry runs and outbox-only sends
stay out; the feed is read by feedparser."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import feedparser
import httpx
import pytest
from bs4 import BeautifulSoup

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import find_subscriber
from tests.conftest import CONFIG
from tests.support.archive import ISSUES, SENT, sent_project, serving

IMPRINT = "https://jens.example.com/impressum"
ARCHIVE_CONFIG = CONFIG.replace(
    'imprint_url = "https://news.example.com/impressum"\n', f'imprint_url = "{IMPRINT}"\n'
)
assert IMPRINT in ARCHIVE_CONFIG
NEWEST_FIRST = [ISSUES[name] for name in reversed(SENT)]
HIDDEN = ["entwurf", "trockenlauf", "nur-outbox"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("archive") / "project"
    with sent_project(root, ARCHIVE_CONFIG), serving(root) as base:
        yield root, base


def soup_of(response: httpx.Response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def words(soup: BeautifulSoup) -> str:
    return " ".join(soup.get_text(" ").split())


@pytest.mark.slow
def test_index_lists_the_sent_issues_newest_first(archive):
    _root, base = archive
    response = httpx.get(base + "/")
    assert response.status_code == 200
    soup = soup_of(response)
    assert soup.html["lang"] == "de"
    items = soup.select("ol.nl-archive-list li")
    assert [li.h2.get_text(strip=True) for li in items] == [t for t, _s, _p in NEWEST_FIRST]
    assert [li.a["href"] for li in items] == [f"/issues/{s}" for _t, s, _p in NEWEST_FIRST]
    first = items[-1]  # the oldest: its preheader and a German date
    assert "Die erste Ausgabe" in first.get_text()
    assert first.time["datetime"][:4].isdigit() and "." in first.time.get_text()
    # The second issue has no preheader: its first paragraph without personal fields.
    assert "Ein Absatz." in items[1].get_text()
    text = words(soup)
    for title in ("Geheimer Entwurf", "Trockenlauf", "Outbox"):
        assert title not in text
    assert soup.find("link", rel="alternate", type="application/atom+xml")["href"] == "/feed.xml"
    assert soup.find("form")["action"] == "/subscribe"


@pytest.mark.parametrize("slug", HIDDEN + ["gibt-es-nicht"])
def test_unpublished_issues_and_unknown_pages_answer_a_styled_404(archive, slug):
    _root, base = archive
    response = httpx.get(f"{base}/issues/{slug}")
    assert response.status_code == 404
    soup = soup_of(response)
    assert soup.html["lang"] == "de"
    assert soup.h1.get_text() == "Seite nicht gefunden"
    assert soup.find("a", string="Alle Ausgaben")["href"] == "/"
    assert "Noch nicht fertig" not in response.text and "Ein Absatz" not in response.text
    assert httpx.get(f"{base}/nichts/hier").status_code == 404


def test_issue_page_is_anonymous_with_the_archive_footer(archive):
    _root, base = archive
    title, slug, _ = ISSUES["2024-08-01-zweite"]
    response = httpx.get(f"{base}/issues/{slug}")
    assert response.status_code == 200
    soup = soup_of(response)
    text = words(soup)
    assert soup.html["lang"] == "de"
    assert title in text
    assert "Hallo zusammen," in text  # the personal field shows its default
    assert "Jörg" not in text and "leserin0@example.org" not in response.text
    # The email footer is gone: no "you receive this email", no dead unsubscribe link.
    assert "Du bekommst diese E-Mail" not in text
    assert "Abmelden" not in text
    assert not soup.find("a", href="#") and "nl-web-unsubscribe" not in response.text
    # The email's masthead stays, without "view in browser" (this is the browser) or its " · ".
    masthead = soup.find(class_="nl-masthead-text")
    assert "Jens' Briefing" in masthead.get_text()
    assert "Im Browser ansehen" not in text and not masthead.find(class_="nl-view-online")
    meta = masthead.find(class_="nl-masthead-meta")
    assert meta is None or not meta.get_text().strip().endswith("·")
    # In its place: how to subscribe, the address, the imprint.
    form = soup.find("form")
    assert form["method"] == "post" and form["action"] == "/subscribe"
    assert form.find("input", attrs={"name": "email", "type": "email"})
    assert "Du liest die Web-Version." in text
    assert "Musterstraße 1, 10115 Berlin, Germany" in text
    assert soup.find("a", string="Impressum")["href"] == IMPRINT
    # Previous (older) and next (newer) issues, and the feed.
    older, newer = ISSUES["2024-07-01-erste"], ISSUES["2024-09-01-dritte"]
    assert soup.find("a", rel="prev")["href"] == f"/issues/{older[1]}"
    assert older[0] in soup.find("a", rel="prev").get_text()
    assert soup.find("a", rel="next")["href"] == f"/issues/{newer[1]}"
    assert soup.find("link", rel="alternate", type="application/atom+xml")["href"] == "/feed.xml"
    assert soup.find("link", rel="canonical")["href"] == f"https://news.example.com/issues/{slug}"


def test_the_oldest_and_newest_issue_have_one_neighbour(archive):
    _root, base = archive
    oldest = soup_of(httpx.get(f"{base}/issues/erste-ausgabe"))
    newest = soup_of(httpx.get(f"{base}/issues/dritte-ausgabe"))
    assert oldest.find("a", rel="prev") is None and oldest.find("a", rel="next")
    assert newest.find("a", rel="next") is None and newest.find("a", rel="prev")


def test_subscribe_form_on_an_issue_page_starts_the_double_opt_in(archive):
    root, base = archive
    page = soup_of(httpx.get(f"{base}/issues/erste-ausgabe"))
    form = page.find("form")
    response = httpx.post(
        base + form["action"],
        data={"email": "neu.leserin@example.de", "name": "Neu", "website": ""},
    )
    assert response.status_code == 200
    assert "Fast geschafft" in response.text
    engine = open_engine(Project.load(root).database_url)
    assert find_subscriber(engine, "neu.leserin@example.de").status == "unconfirmed"


def test_the_archive_forms_first_name_is_the_readers_first_name(archive):
    """What a browser sends from the form as shown: its "Vorname" box fills `first_name`,
    which issues greet with (before, it went into `name` and the greeting found nothing)."""
    root, base = archive
    form = soup_of(httpx.get(f"{base}/issues/erste-ausgabe")).find("form")
    label = form.find("label", attrs={"for": "nl-name"}).get_text(strip=True)
    typed = {"nl-email": "vorname@example.de", "nl-name": "Zoë"}  # by the boxes' ids
    data = {
        field["name"]: typed.get(field.get("id"), field.get("value", ""))
        for field in form.find_all("input")
        if field.get("name")
    }
    assert httpx.post(base + form["action"], data=data).status_code == 200
    engine = open_engine(Project.load(root).database_url)
    assert label.startswith("Vorname")
    assert find_subscriber(engine, "vorname@example.de").first_name == "Zoë"


def test_atom_feed_parses_cleanly_with_umlauts_dates_and_links(archive):
    root, base = archive
    response = httpx.get(base + "/feed.xml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(response.content)
    assert feed.bozo == 0, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert feed.feed.title == "Jens' Briefing"
    assert feed.feed.language == "de"
    titles = [e.title for e in feed.entries]
    assert titles == [t for t, _s, _p in NEWEST_FIRST]  # umlauts and „quotes“ intact
    for entry, (_title, slug, _p) in zip(feed.entries, NEWEST_FIRST, strict=True):
        assert entry.link == f"https://news.example.com/issues/{slug}"
        assert entry.id.startswith("tag:news.example.com,") and entry.id.endswith(f":{slug}")
        assert entry.published_parsed is not None and entry.updated_parsed is not None
        [content] = entry.content
        assert content.type == "text/html"
        assert "Hallo zusammen," in content.value
        assert "Du bekommst diese E-Mail" not in content.value
    dates = [e.published_parsed for e in feed.entries]
    assert dates == sorted(dates, reverse=True)
    for slug in HIDDEN:
        assert slug not in response.text
    # Ids are stable: a second fetch gives the same document.
    assert httpx.get(base + "/feed.xml").content == response.content


def test_json_feed(archive):
    _root, base = archive
    response = httpx.get(base + "/feed.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/feed+json")
    document = json.loads(response.content)
    assert document["version"] == "https://jsonfeed.org/version/1.1"
    assert [i["title"] for i in document["items"]] == [t for t, _s, _p in NEWEST_FIRST]
    first = document["items"][0]
    assert first["url"] == "https://news.example.com/issues/dritte-ausgabe"
    assert first["id"].endswith(":dritte-ausgabe") and first["date_published"][:4].isdigit()
    assert "Hallo zusammen," in first["content_html"]


@pytest.mark.slow
def test_an_english_newsletter_gets_english_pages(tmp_path, monkeypatch):
    root = tmp_path / "en"
    config = ARCHIVE_CONFIG.replace('language = "de"', 'language = "en"')
    with sent_project(root, config), serving(root) as base:
        index = soup_of(httpx.get(base + "/"))
        assert index.html["lang"] == "en"
        assert "All issues" in words(index)
        feed = feedparser.parse(httpx.get(base + "/feed.xml").content)
        assert feed.bozo == 0 and feed.feed.language == "en"
        missing = httpx.get(base + "/issues/entwurf")
        assert missing.status_code == 404 and "Page not found" in missing.text


@pytest.mark.slow
def test_archive_disabled_turns_off_index_and_feeds(tmp_path):
    root = tmp_path / "off"
    config = ARCHIVE_CONFIG + "\n[archive]\nenabled = false\n"
    with sent_project(root, config), serving(root) as base:
        for path in ("/", "/feed.xml", "/feed.json"):
            assert httpx.get(base + path).status_code == 404, path
        # Sent emails link to their web version: it stays, without links into the archive.
        page = httpx.get(base + "/issues/zweite-ausgabe")
        assert page.status_code == 200
        soup = soup_of(page)
        assert soup.find("a", rel="prev") is None and soup.find("link", rel="alternate") is None
        assert soup.find("form")["action"] == "/subscribe"
