"""`newsletter serve` follows edits of newsletter.toml without a restart (docs/archive.md,
docs/sequences.md): a new `[theme]` colour shows on the next archive page, and switching the
archive off takes its index and feeds away. Before, the pages kept the config serve started
with until it was restarted."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from newsletter.web import create_app
from tests.support.web import sent_issue


def test_an_edited_config_shows_on_the_next_page(project: Path) -> None:
    proj = Project.load(project)
    engine = open_engine(proj.database_url)
    anna = add_subscriber(engine, "anna.müller@example.de")
    sent_issue(engine, [anna.id])
    client = TestClient(create_app(proj, engine))
    before = client.get("/issues/meta-ki-creator")
    assert before.status_code == 200 and "#0f766e" not in before.text

    config = project / "newsletter.toml"
    original = config.read_text("utf-8")
    config.write_text(original + '\n[theme]\nbrand_color = "#0f766e"\n', "utf-8")
    after = client.get("/issues/meta-ki-creator")
    assert after.status_code == 200 and "#0f766e" in after.text.lower()
    assert "#0f766e" in client.get("/").text.lower()

    config.write_text(original + "\n[archive]\nenabled = false\n", "utf-8")
    for path in ("/", "/feed.xml", "/feed.json"):
        assert client.get(path).status_code == 404, path
    # The issue's own page stays (sent emails link to it), without links to an archive.
    assert client.get("/issues/meta-ki-creator").status_code == 200

    config.write_text(original + "\n[archive\n", "utf-8")  # broken mid-edit: the last good one
    assert client.get("/feed.xml").status_code == 404
    config.write_text(original, "utf-8")
    assert client.get("/feed.xml").status_code == 200
