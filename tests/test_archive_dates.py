"""One date per issue in the archive: the `date:` its front matter gives (what the email
showed), else the day it was published. Before, an issue dated 2024-07-02 and sent today
was listed on `GET /` (and dated in the feeds) with the day it was sent, while its own page
said "2. Juli 2024"; and it was listed above issues of later dates."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import feedparser
from babel.dates import format_date
from bs4 import BeautifulSoup
from starlette.testclient import TestClient

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from newsletter.web import create_app

DATED = "---\ntitle: Aus dem Sommer\nslug: sommer\ndate: 2024-07-02\n---\n\nGrüße vom Baggersee.\n"
UNDATED = "---\ntitle: Ganz frisch\nslug: frisch\n---\n\nNeues aus der Straße.\n"


def sent_project(make_project, cli) -> Path:
    """The undated issue sent first, then the one dated 2024-07-02 (both today)."""
    root = make_project(issues={"2024-07-02-sommer.md": DATED, "frisch.md": UNDATED})
    add_subscriber(open_engine(Project.load(root).database_url), "leserin@example.de")
    for slug in ("frisch", "sommer"):
        result = cli(root, "send", slug, "--yes")
        assert result.exit_code == 0, result.output
    return root


def listed(index_html: str) -> list[tuple[str, str, str]]:
    """(title, datetime attribute, date shown) of each issue on the index, in order."""
    soup = BeautifulSoup(index_html, "html.parser")
    return [
        (li.h2.get_text(strip=True), li.time["datetime"], li.time.get_text(strip=True))
        for li in soup.select("ol.nl-archive-list li")
    ]


def words(html: str) -> str:
    return " ".join(BeautifulSoup(html, "html.parser").get_text(" ").split())


def test_index_issue_pages_and_feeds_show_the_issues_own_date(make_project, cli, sg) -> None:
    root = sent_project(make_project, cli)
    today = datetime.now(UTC).date()
    sent_day = format_date(today, format="long", locale="de")  # e.g. "8. Dezember 2026"
    client = TestClient(create_app(Project.load(root)))

    assert listed(client.get("/").text) == [
        ("Ganz frisch", today.isoformat(), sent_day),
        ("Aus dem Sommer", "2024-07-02", "2. Juli 2024"),
    ]
    dated_page = words(client.get("/issues/sommer").text)
    assert "2. Juli 2024" in dated_page and sent_day not in dated_page
    assert sent_day in words(client.get("/issues/frisch").text)
    # Previous/next follow the same order: the summer issue is the older one.
    frisch = BeautifulSoup(client.get("/issues/frisch").text, "html.parser")
    assert frisch.find("a", rel="prev")["href"] == "/issues/sommer"

    atom = feedparser.parse(client.get("/feed.xml").content)
    assert atom.bozo == 0
    assert [(e.title, e.published[:10], e.updated[:10]) for e in atom.entries] == [
        ("Ganz frisch", today.isoformat(), today.isoformat()),
        ("Aus dem Sommer", "2024-07-02", "2024-07-02"),
    ]
    # The ids keep the year it was published: readers never see an issue twice.
    assert atom.entries[1].id == f"tag:news.example.com,{today.year}:sommer"
    items = json.loads(client.get("/feed.json").content)["items"]
    assert [(i["title"], i["date_published"][:10]) for i in items] == [
        ("Ganz frisch", today.isoformat()),
        ("Aus dem Sommer", "2024-07-02"),
    ]


def test_the_static_site_lists_the_issues_own_date(make_project, cli, sg, tmp_path) -> None:
    root = sent_project(make_project, cli)
    today = datetime.now(UTC).date()
    site = tmp_path / "site"
    result = cli(root, "archive", "build", "-o", str(site), "--quiet")
    assert result.exit_code == 0, result.output
    assert listed((site / "index.html").read_text("utf-8")) == [
        ("Ganz frisch", today.isoformat(), format_date(today, format="long", locale="de")),
        ("Aus dem Sommer", "2024-07-02", "2. Juli 2024"),
    ]
    assert "2. Juli 2024" in words((site / "issues/sommer/index.html").read_text("utf-8"))
