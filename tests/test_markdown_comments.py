"""Authors keep private notes in HTML comments (`<!-- Notiz an mich: Honorar offen -->`).
Before, those went out in every email's HTML (a text part showed a note with a ">" in it
half), and were published on /issues/<slug> and in both feeds. Now rendering drops HTML
comments everywhere; the rest of the raw HTML, Outlook's conditional comments included,
stays as written."""

from __future__ import annotations

import json

from bs4 import BeautifulSoup
from starlette.testclient import TestClient

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from newsletter.web import create_app

ISSUE = """\
---
title: Notizen im Entwurf
slug: notizen
date: 2024-07-02
preheader: Was öffentlich ist
---

<!-- Notiz an mich: Honorar > 500 € offen -->

Hallo, das ist <span class="hervor">öffentlich</span> <!-- Rechnung an Jörg schreiben --> und bleibt.

<div class="kasten">
<!-- Zahlen prüfen -->
<p>Der Kasten bleibt.</p>
</div>

<!--
Mehrzeilig: Kündigung der Straßenbahn-Kooperation
-->
Zum Schluss.

<!--[if mso]><p>Nur für Outlook</p><![endif]-->
"""
NOTES = ("Notiz an mich", "Honorar", "500 €", "Rechnung an Jörg", "Zahlen prüfen", "Kündigung")


def assert_no_notes(text: str, where: str) -> None:
    leaked = [note for note in NOTES if note in text]
    assert not leaked, f"{where} shows {leaked}"


def test_build_leaves_the_notes_out_and_keeps_the_raw_html(make_project, cli, tmp_path) -> None:
    root = make_project(issues={"2024-07-02-notizen.md": ISSUE})
    result = cli(root, "build", "notizen", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    html = (tmp_path / "out" / "notizen.html").read_text("utf-8")
    text = (tmp_path / "out" / "notizen.txt").read_text("utf-8")
    assert_no_notes(html, "the HTML")
    assert_no_notes(text, "the text part")
    content = BeautifulSoup(html, "html.parser").find(class_="nl-content")
    assert content.find("span", class_="hervor").get_text() == "öffentlich"
    assert content.find("div", class_="kasten").get_text(strip=True) == "Der Kasten bleibt."
    assert "<!--[if mso]><p>Nur für Outlook</p><![endif]-->" in html
    for words in ("Hallo, das ist öffentlich", "und bleibt.", "Der Kasten bleibt.", "Zum Schluss."):
        assert words in text


def test_sent_email_web_page_and_feeds_leave_the_notes_out(make_project, cli, sg) -> None:
    root = make_project(issues={"2024-07-02-notizen.md": ISSUE})
    add_subscriber(open_engine(Project.load(root).database_url), "leserin@example.de")
    result = cli(root, "send", "notizen", "--yes")
    assert result.exit_code == 0, result.output
    [message] = sg.messages
    parts = {part["type"]: part["value"] for part in message["content"]}
    assert_no_notes(parts["text/html"], "the email's HTML")
    assert_no_notes(parts["text/plain"], "the email's text part")
    assert "Der Kasten bleibt." in parts["text/html"]

    client = TestClient(create_app(Project.load(root)))
    page = client.get("/issues/notizen")
    assert page.status_code == 200 and "Der Kasten bleibt." in page.text
    assert_no_notes(page.text, "/issues/notizen")
    atom = client.get("/feed.xml").text
    assert "Der Kasten bleibt." in atom
    assert_no_notes(atom, "feed.xml")
    [item] = json.loads(client.get("/feed.json").text)["items"]
    assert "Der Kasten bleibt." in item["content_html"]
    assert_no_notes(json.dumps(item, ensure_ascii=False), "feed.json")
