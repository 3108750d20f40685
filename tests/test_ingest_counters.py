"""Webhook ingest keeps the issue counters exact when readers already have many events stored
(issue 27: the "counted before" lookup stops at a reader's first earlier event).

The oracle is `counters.rebuild`, which recounts everything from the stored events: the
counters ingest kept post by post must equal it, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from newsletter import events
from newsletter.insights import counters
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber


@pytest.fixture
def engine(database_url: str):
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def issue(engine, slug: str) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                schema.issues.insert().values(
                    slug=slug,
                    title="Warum Metas KI Creator verdrängen könnte",
                    subject="Meta, KI und das Ende der Creator?",
                    language="de",
                    created_at=datetime.now(UTC),
                )
            ).inserted_primary_key[0]
        )


def event(kind: str, issue_id: int, subscriber_id: int, when: int, **extra: Any) -> dict:
    return {
        "email": f"leser{subscriber_id}@example.de",
        "timestamp": when,
        "event": kind,
        "sg_event_id": uuid.uuid4().hex,
        schema.CUSTOM_ARG_ISSUE: str(issue_id),
        schema.CUSTOM_ARG_SUBSCRIBER: str(subscriber_id),
        **extra,
    }


def snapshot(engine) -> tuple[list[Any], list[Any]]:
    with engine.connect() as conn:
        days = conn.execute(
            select(schema.issue_day_counters).order_by(*schema.issue_day_counters.c)
        ).all()
        links = conn.execute(
            select(schema.link_day_counters).order_by(*schema.link_day_counters.c)
        ).all()
    return list(days), list(links)


def test_counters_kept_post_by_post_equal_a_rebuild(engine) -> None:
    readers = [add_subscriber(engine, f"leser{i}@example.de").id for i in range(12)]
    issues = [issue(engine, "fruehjahr"), issue(engine, "sommer")]
    rng = random.Random(27)
    now = int(time.time())
    kinds = ["processed", "delivered", "open", "click", "unsubscribe", "group_unsubscribe"]
    kinds += ["spamreport", "bounce", "dropped", "deferred"]
    posted = []
    # Many events per reader and issue, over three days, spread over many small posts, so
    # most candidates were counted in an earlier post (or on an earlier day).
    for _ in range(600):
        kind = rng.choice(kinds)
        extra: dict[str, Any] = {}
        if kind == "open":
            choice = rng.choice([True, False, "true", "1", None])
            if choice is not None:
                extra["sg_machine_open"] = choice
        if kind == "click":
            extra["url"] = rng.choice(["https://example.org/a", "https://example.org/ü"])
        when = now - 86400 * rng.randint(0, 2)
        posted.append(event(kind, rng.choice(issues), rng.choice(readers), when, **extra))
    # In time order, as SendGrid posts them: a reader is then counted on the day of their
    # first event both ways (an event that came in days late would count on its own day).
    posted.sort(key=lambda e: e["timestamp"])
    start = 0
    while start < len(posted):
        size = rng.randint(1, 40)
        events.ingest(engine, posted[start : start + size])
        start += size
    kept = snapshot(engine)
    counters.rebuild(engine)
    assert kept == snapshot(engine)
    # And the counters are not empty: every metric was counted for someone.
    metrics = {row.metric for row in kept[0]}
    assert metrics >= {"delivered", "opened", "machine_opened", "clicked", "unsubscribed"}


def test_a_machine_open_then_a_human_one_counts_one_of_each(engine) -> None:
    reader = add_subscriber(engine, "leser1@example.de").id
    issue_id = issue(engine, "fruehjahr")
    now = int(time.time())
    # Fifty stored events of the reader's first, then the opens in later posts.
    events.ingest(engine, [event("delivered", issue_id, reader, now) for _ in range(50)])
    events.ingest(engine, [event("open", issue_id, reader, now, sg_machine_open=True)])
    events.ingest(engine, [event("open", issue_id, reader, now, sg_machine_open="true")])
    events.ingest(engine, [event("open", issue_id, reader, now)])  # no flag: a person
    events.ingest(engine, [event("open", issue_id, reader, now, sg_machine_open=False)])
    days, _ = snapshot(engine)
    counted = {(row.metric, row.events, row.readers) for row in days}
    assert counted == {("delivered", 50, 1), ("machine_opened", 2, 1), ("opened", 2, 1)}


def test_an_unsubscribe_after_a_group_unsubscribe_is_the_same_reader(engine) -> None:
    """A metric of two events (unsubscribed: unsubscribe and group_unsubscribe) counts a reader
    once, whichever of its events came first, in separate posts."""
    reader = add_subscriber(engine, "leser1@example.de").id
    issue_id = issue(engine, "fruehjahr")
    now = int(time.time())
    events.ingest(engine, [event("group_unsubscribe", issue_id, reader, now)])
    events.ingest(engine, [event("unsubscribe", issue_id, reader, now)])
    events.ingest(engine, [event("group_unsubscribe", issue_id, reader, now)])
    days, _ = snapshot(engine)
    assert {(row.metric, row.events, row.readers) for row in days} == {("unsubscribed", 3, 1)}
    kept = snapshot(engine)
    counters.rebuild(engine)
    assert kept == snapshot(engine)
