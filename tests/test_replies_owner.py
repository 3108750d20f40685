"""The `replies` table has one writer, the reply store: erasure asks it to delete a person's
replies, and taking back a row that was just added (a confirmation mail that could not go
out) leaves the replies that address wrote before alone (issue 23, one writer per table)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import find_subscriber
from tests.sendgrid_server import FakeSendGrid

ADDRESS = "leserin@example.de"


@pytest.fixture
def engine(project, database_url, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    engine = open_engine(Project.load(project).database_url)
    with engine.begin() as conn:  # a question she sent before she subscribed
        conn.execute(
            insert(schema.replies).values(
                subscriber_id=None,
                from_email="Leserin@Example.de",
                text="Eine Frage vorab: gibt es das auch als Podcast?",
                received_at=datetime.now(UTC),
            )
        )
    return engine


def _replies(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(schema.replies.c.text)).scalars())


def test_a_failed_confirmation_takes_the_row_back_but_keeps_her_earlier_reply(
    project, engine, cli, monkeypatch
) -> None:
    with FakeSendGrid(api_key="SG.the-right-key", verified_senders=["jens@example.com"]) as sg:
        monkeypatch.setenv("SENDGRID_API_KEY", "SG.a-revoked-key")  # SendGrid refuses the mail
        monkeypatch.setenv("SENDGRID_API_HOST", sg.url)
        result = cli(project, "subscribers", "add", ADDRESS, "--confirm")
    assert result.exit_code == 1, result.output
    assert find_subscriber(engine, ADDRESS) is None  # a retry can add her again
    assert _replies(engine) == ["Eine Frage vorab: gibt es das auch als Podcast?"]


def test_forgetting_her_deletes_the_replies_from_her_address(project, engine, cli) -> None:
    assert cli(project, "subscribers", "add", ADDRESS).exit_code == 0
    result = cli(project, "subscribers", "remove", ADDRESS, "--forget", "--yes")
    assert result.exit_code == 0, result.output
    assert find_subscriber(engine, ADDRESS) is None
    assert _replies(engine) == []
