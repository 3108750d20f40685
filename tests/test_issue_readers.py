"""`issue_readers` (m023): whom the issue counters counted, so that webhook ingest tells a
reader's first click (open, bounce...) of an issue from their later ones by key, without an
index of the events by reader (issue 27). On SQLite and PostgreSQL:

- ingest counts a reader once per issue and metric across posts, and records them;
- `privacy purge` takes the rows whose events it purged (such a reader counts again, the
  limit docs/stats.md states), and keeps the others;
- erasure takes the person's rows;
- m023 fills the table from the events an older database holds, and swaps the events' index
  by reader for (issue, event) and a clicks-only one.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, select, update

from newsletter import events, privacy
from newsletter.insights import counters, queries
from newsletter.store import migrations, schema
from newsletter.store.engine import open_engine
from newsletter.store.issues import ensure_issue
from newsletter.store.subscribers import add_subscriber, forget_subscriber


@pytest.fixture
def engine(database_url: str):
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def new_issue(engine, slug: str = "fruehjahr") -> int:
    return ensure_issue(
        engine,
        slug=slug,
        title="Warum Metas KI Creator verdrängen könnte",
        subject="Meta, KI und das Ende der Creator?",
        language="de",
    )


def event(kind: str, issue_id: int, subscriber_id: int, **extra: Any) -> dict[str, Any]:
    return {
        "email": f"leser{subscriber_id}@example.de",
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": uuid.uuid4().hex,
        schema.CUSTOM_ARG_ISSUE: str(issue_id),
        schema.CUSTOM_ARG_SUBSCRIBER: str(subscriber_id),
        **extra,
    }


def counted(engine) -> set[tuple[int, int, str]]:
    r = schema.issue_readers
    with engine.connect() as conn:
        return {
            tuple(row) for row in conn.execute(select(r.c.subscriber_id, r.c.issue_id, r.c.metric))
        }


def clicked(engine, issue_id: int) -> int:
    return queries.issue_summary(engine, issue_id).counts["clicked"]


def test_ingest_counts_each_reader_once_per_issue_and_metric(engine) -> None:
    anna = add_subscriber(engine, "anna@example.de").id
    bert = add_subscriber(engine, "bert@example.de").id
    first, second = new_issue(engine, "fruehjahr"), new_issue(engine, "sommer")
    click = {"url": "https://example.com/artikel"}
    events.ingest(engine, [event("click", first, anna, **click), event("open", first, anna)])
    events.ingest(
        engine, [event("click", first, anna, **click), event("click", first, bert, **click)]
    )
    events.ingest(engine, [event("click", second, anna, **click)] * 2)  # a repeat in one post
    events.ingest(engine, [event("open", first, anna, sg_machine_open=True)])
    assert counted(engine) == {
        (anna, first, "clicked"),
        (anna, first, "opened"),
        (anna, first, "machine_opened"),
        (bert, first, "clicked"),
        (anna, second, "clicked"),
    }
    assert clicked(engine, first) == 2
    assert clicked(engine, second) == 1
    # A rebuild from the events finds the same readers.
    counters.rebuild(engine)
    assert len(counted(engine)) == 5
    assert clicked(engine, first) == 2


def test_purge_forgets_whom_the_purged_events_counted(engine) -> None:
    anna = add_subscriber(engine, "anna@example.de").id  # clicked long ago only
    bert = add_subscriber(engine, "bert@example.de").id  # long ago and lately
    issue_id = new_issue(engine)
    click = {"url": "https://example.com/artikel"}
    old = [event("click", issue_id, anna, **click), event("click", issue_id, bert, **click)]
    events.ingest(engine, old)
    events.ingest(engine, [event("click", issue_id, bert, **click)])
    long_ago = datetime.now(UTC) - timedelta(days=400)
    with engine.begin() as conn:
        conn.execute(
            update(schema.events)
            .where(schema.events.c.sg_event_id.in_([e["sg_event_id"] for e in old]))
            .values(received_at=long_ago, occurred_at=long_ago)
        )
    assert clicked(engine, issue_id) == 2

    result = privacy.purge(engine, 365)

    assert result.events == 2
    assert counted(engine) == {(bert, issue_id, "clicked")}
    assert clicked(engine, issue_id) == 2  # the counts stay
    # Bert's later click still stands for him; Anna, whose events are gone, counts again
    # (the limit docs/stats.md states).
    events.ingest(engine, [event("click", issue_id, bert, **click)])
    assert clicked(engine, issue_id) == 2
    events.ingest(engine, [event("click", issue_id, anna, **click)])
    assert clicked(engine, issue_id) == 3


def test_erasure_takes_the_persons_rows(engine) -> None:
    anna = add_subscriber(engine, "anna@example.de").id
    bert = add_subscriber(engine, "bert@example.de").id
    issue_id = new_issue(engine)
    events.ingest(engine, [event("delivered", issue_id, anna), event("delivered", issue_id, bert)])
    assert forget_subscriber(engine, "anna@example.de")
    assert counted(engine) == {(bert, issue_id, "delivered")}


def _raw_engine(url: str):
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url)


@pytest.mark.slow
def test_m023_fills_issue_readers_from_the_stored_events(database_url, monkeypatch) -> None:
    old = _raw_engine(database_url)
    with monkeypatch.context() as patched:
        patched.setattr(
            migrations,
            "STEPS",
            [step for step in migrations.STEPS if step[0] != "m023_issue_readers"],
        )
        migrations.migrate(old)
    assert "issue_readers" not in inspect(old).get_table_names()
    assert "ix_events_issue_subscriber_event" in {
        index["name"] for index in inspect(old).get_indexes("events")
    }
    at = datetime.now(UTC)
    with old.begin() as conn:
        for n in (1, 2, 3):
            conn.execute(
                schema.subscribers.insert().values(
                    id=n,
                    email=f"leser{n}@example.de",
                    email_key=f"leser{n}@example.de",
                    status="subscribed",
                    fields={},
                    created_at=at,
                    updated_at=at,
                )
            )
        conn.execute(
            schema.issues.insert().values(
                id=1, slug="a1", title="A", subject="A", language="de", created_at=at
            )
        )
        stored = [
            ("e1", "click", 1, {"url": "https://example.com"}),
            ("e2", "click", 1, {"url": "https://example.com"}),
            ("e3", "open", 2, {"sg_machine_open": True}),
            ("e4", "delivered", 2, {}),
            ("e5", "processed", 3, {}),  # no metric: nobody counted
        ]
        for key, kind, sid, detail in stored:
            conn.execute(
                schema.events.insert().values(
                    sg_event_id=key,
                    event=kind,
                    subscriber_id=sid,
                    issue_id=1,
                    occurred_at=at,
                    received_at=at,
                    detail=detail,
                )
            )
        counters.rebuild_in(conn, readers_table=False)  # as ingest kept them before m023
    old.dispose()

    engine = open_engine(database_url)  # runs m023
    try:
        assert counted(engine) == {(1, 1, "clicked"), (2, 1, "machine_opened"), (2, 1, "delivered")}
        indexes = {index["name"] for index in inspect(engine).get_indexes("events")}
        assert "ix_events_issue_subscriber_event" not in indexes
        assert {"ix_events_issue_event", "ix_events_issue_clickers"} <= indexes
        # Reader 1 was counted before the migration; reader 3 clicks for the first time.
        events.ingest(
            engine,
            [
                event("click", 1, 1, url="https://example.com"),
                event("click", 1, 3, url="https://example.com"),
            ],
        )
        assert clicked(engine, 1) == 2
    finally:
        engine.dispose()
