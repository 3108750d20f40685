"""A page of one's own placed in templates/web/ while `serve` runs is used on the next
request, as docs/archive.md promises. Before, an edit of an existing override showed, but a
new file did not until a restart: the cached Jinja environment had already found the
built-in template and kept it."""

from __future__ import annotations

from starlette.testclient import TestClient

from newsletter.project import Project
from newsletter.web import create_app

ARCHIVE_INDEX = (
    '{% extends "web/archive_base.html" %}'
    "{% block content %}<h1>Mein eigenes Archiv – Grüße</h1>{% endblock %}"
)
NOT_FOUND = (
    '{% extends "web/archive_base.html" %}'
    "{% block content %}<h1>Hier ist nichts, tut mir leid</h1>{% endblock %}"
)
SIGN_UP = (
    '{% extends "web/base.html" %}{% block content %}<h1>Mein Anmeldeformular</h1>{% endblock %}'
)


def test_a_new_override_in_templates_web_is_used_without_a_restart(make_project) -> None:
    root = make_project()
    client = TestClient(create_app(Project.load(root)))
    pages = {
        "/": "Mein eigenes Archiv",
        "/gibt-es-nicht": "Hier ist nichts",
        "/subscribe": "Mein Anmeldeformular",
    }
    for path, own in pages.items():
        assert own not in client.get(path).text, path  # the built-in pages, now in a cache

    web = root / "templates" / "web"
    web.mkdir(parents=True)
    (web / "archive_index.html").write_text(ARCHIVE_INDEX, encoding="utf-8")
    (web / "archive_404.html").write_text(NOT_FOUND, encoding="utf-8")
    (web / "subscribe.html").write_text(SIGN_UP, encoding="utf-8")
    index = client.get("/")
    assert index.status_code == 200 and "Mein eigenes Archiv – Grüße" in index.text
    missing = client.get("/gibt-es-nicht")
    assert missing.status_code == 404 and "Hier ist nichts, tut mir leid" in missing.text
    assert "Mein Anmeldeformular" in client.get("/subscribe").text

    for name in ("archive_index.html", "archive_404.html", "subscribe.html"):
        (web / name).unlink()  # and back to the built-in pages
    for path, own in pages.items():
        assert own not in client.get(path).text, path
