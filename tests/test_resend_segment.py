"""`send --resend new` after a send to a segment goes to the readers who joined the segment
since, not to everyone who joined the list since."""

from __future__ import annotations

import json

import pytest

from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.sendgrid_server import FakeSendGrid

KEY = "SG.test-key-resend-segment"
ISSUE = EXAMPLE_ISSUE.stem
SEGMENT = 'field:stadt="Köln"'


@pytest.fixture
def sendgrid(monkeypatch):
    with FakeSendGrid(api_key=KEY, verified_senders=["jens@example.com"]) as server:
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", server.url)
        yield server


def test_resend_new_keeps_to_the_first_sends_segment(
    make_project, database_url, monkeypatch, cli, sendgrid
):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    config = CONFIG + "\n[sending]\nresend_after = 0\n"
    config += f'\n[segments."köln"]\nwhere = {json.dumps(SEGMENT, ensure_ascii=False)}\n'
    root = make_project(config=config)
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    engine = open_engine(database_url)
    add_subscriber(engine, "jörg@example.de", fields={"stadt": "Köln"})
    add_subscriber(engine, "bert@example.de", fields={"stadt": "Bad Tölz"})
    first = cli(root, "send", ISSUE, "--segment", "köln", "--yes")
    assert first.exit_code == 0, first.output
    assert sendgrid.recipients() == ["jörg@example.de"]

    add_subscriber(engine, "neu-köln@example.de", fields={"stadt": "Köln"})
    add_subscriber(engine, "neu-tölz@example.de", fields={"stadt": "Bad Tölz"})
    again = cli(root, "send", ISSUE, "--resend", "new", "--yes")
    assert again.exit_code == 0, again.output
    assert sendgrid.recipients() == ["jörg@example.de", "neu-köln@example.de"]
