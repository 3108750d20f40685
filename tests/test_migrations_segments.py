"""m019: a database from before segments gains `reader_activity`, filled from the events and
replies it already holds (human opens only, no auto-replies), the other segment tables and
the ledger's index by reader; segments work on it at once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, inspect, select

from newsletter.store import migrations, schema
from newsletter.store.engine import open_engine


def _raw_engine(url: str):
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url)


@pytest.mark.slow
def test_an_older_database_gains_reader_activity_from_its_events_and_replies(
    database_url, monkeypatch
):
    old = _raw_engine(database_url)
    monkeypatch.setattr(
        migrations, "STEPS", [step for step in migrations.STEPS if step[0] != "m019_segments"]
    )
    migrations.migrate(old)
    t = [datetime(2026, 1, day, 9, 0, tzinfo=UTC) for day in range(1, 8)]
    with old.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_deliveries_subscriber")
        for n, email in enumerate(["anna@example.de", "bert@example.de", "cleo@example.de"], 1):
            conn.execute(
                schema.subscribers.insert().values(
                    id=n,
                    email=email,
                    email_key=email,
                    status="subscribed",
                    fields={},
                    created_at=t[0],
                    updated_at=t[0],
                    public_id=f"pub{n:09d}",
                )
            )
        for n in (1, 2):
            conn.execute(
                schema.issues.insert().values(
                    id=n,
                    slug=f"a{n}",
                    title="A",
                    subject="A",
                    language="de",
                    created_at=t[0],
                    public_id=f"iss{n:09d}",
                )
            )
        rows = [
            ("e1", "click", 1, 1, t[1], {"url": "https://example.com"}),
            ("e2", "click", 1, 2, t[2], {"url": "https://example.com"}),
            ("e3", "open", 1, 1, t[3], {"sg_machine_open": False}),
            ("e4", "open", 2, 2, t[4], {"sg_machine_open": True}),  # Apple's prefetch
            ("e5", "delivered", 3, 2, t[4], {}),
        ]
        for key, kind, sid, issue, at, detail in rows:
            conn.execute(
                schema.events.insert().values(
                    sg_event_id=key,
                    event=kind,
                    subscriber_id=sid,
                    issue_id=issue,
                    occurred_at=at,
                    received_at=at,
                    detail=detail,
                )
            )
        for sid, issue, at, automatic in [(2, 1, t[5], False), (3, 2, t[6], True)]:
            conn.execute(
                schema.replies.insert().values(
                    subscriber_id=sid,
                    issue_id=issue,
                    from_email="x@example.de",
                    subject="Re: A",
                    text="Danke",
                    attachments=[],
                    received_at=at,
                    automatic=automatic,
                )
            )
    old.dispose()
    monkeypatch.undo()

    engine = open_engine(database_url)  # runs m019
    with engine.connect() as conn:
        a = schema.reader_activity
        found = {
            row.subscriber_id: row for row in conn.execute(select(a).order_by(a.c.subscriber_id))
        }
        indexes = {index["name"] for index in inspect(conn).get_indexes("deliveries")}
    assert set(found) == {1, 2}  # cleo: a delivery and an auto-reply are no engagement
    anna, bert = found[1], found[2]
    assert (anna.clicked_issue, anna.opened_issue, anna.replied_at) == (2, 1, None)
    assert anna.clicked_at.replace(tzinfo=UTC) == t[2]
    assert anna.opened_at.replace(tzinfo=UTC) == t[3]
    assert (bert.clicked_at, bert.opened_at, bert.replied_issue) == (None, None, 1)
    assert bert.replied_at.replace(tzinfo=UTC) == t[5]
    assert "ix_deliveries_subscriber" in indexes
