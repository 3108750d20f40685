"""`newsletter sends` says what the web archive does with each send now: a send the provider
accepted nobody of is not published (the archive leaves it out), and a scheduled one is
published from its time on. Before, both read "published (sent to the whole list)". Sends
through the real CLI to the fake SendGrid, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from newsletter.cli import main
from newsletter.project import Project
from newsletter.store.engine import dispose_all, open_engine
from newsletter.store.subscribers import add_subscriber
from newsletter.web import create_app
from tests.sendgrid_server import FakeSendGrid

KEY = "SG.as-it-stands-key"
ISSUE = "---\ntitle: Für alle\nslug: fuer-alle\n---\n\nHallo zusammen, „liebe“ Leser.\n"


@pytest.fixture
def project(make_project, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    with FakeSendGrid(api_key=KEY, verified_senders=["jens@example.com"]) as server:
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", server.url)
        monkeypatch.setenv("NEWSLETTER_SEND_BACKOFF", "0.01")
        root = make_project(issues={"2024-07-02-fuer-alle.md": ISSUE})
        engine = open_engine(Project.load(root).database_url)
        add_subscriber(engine, "jörg@example.org")
        add_subscriber(engine, "leserin@example.org")
        yield root
        dispose_all()


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--project", str(root), *args], catch_exceptions=False)


def test_a_send_refused_for_everyone_is_not_published(project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong-key")
    refused = run(project, "send", "2024-07-02-fuer-alle", "--yes")
    assert refused.exit_code == 1
    listing = run(project, "sends").output
    assert "web archive: not published (no recipient was accepted" in listing, listing
    assert "web archive: published" not in listing
    client = TestClient(create_app(Project.load(project)))
    assert client.get("/issues/fuer-alle").status_code == 404  # what the archive does too


def test_a_scheduled_send_is_published_from_its_time(project) -> None:  # type: ignore[no-untyped-def]
    scheduled = run(project, "send", "2024-07-02-fuer-alle", "--schedule", "in 2h", "--yes")
    assert scheduled.exit_code == 0, scheduled.output
    listing = run(project, "sends").output
    assert "web archive: published (from " in listing, listing
    assert ", when it goes out; sent to the whole list)" in listing
    client = TestClient(create_app(Project.load(project)))
    assert client.get("/issues/fuer-alle").status_code == 404  # not before its time
