"""Each reader's latest click, human open and reply (`reader_activity`): what the segment
terms `clicked:`, `opened:` and `replied:` read, one row per reader.

Ingest keeps it: the Event Webhook (`events.ingest`, one statement per post) and stored
replies (`replies.store`). Migration m019 fills it from the events and replies already
stored. An open that SendGrid marks `sg_machine_open` (Apple Mail's prefetch) is nobody's
open and is left out, as `stats` leaves it out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from newsletter.insights.metrics import human_open, is_machine_open
from newsletter.store import raw, schema
from newsletter.store.times import as_utc

#: Engagement kinds and the event that is each (replies come from the replies table).
KINDS = ("clicked", "opened", "replied")
EVENT_KIND = {"click": "clicked", "open": "opened"}


@dataclass(frozen=True)
class Activity:
    """One reader's engagement of one kind: when, and about which issue (if known)."""

    subscriber_id: int
    kind: str
    at: datetime
    issue_id: int | None = None


def kind_of_event(event: str, detail: dict[str, Any]) -> str | None:
    """`clicked`, `opened` (a human's open only) or None for any other event."""
    kind = EVENT_KIND.get(event)
    if kind == "opened" and is_machine_open(detail):
        return None
    return kind


#: `reader_activity`'s columns after `subscriber_id`, in the order `note` binds them.
_COLUMNS = tuple(f"{kind}_{part}" for kind in KINDS for part in ("at", "issue"))
_AT_INDEX = {kind: 2 * i for i, kind in enumerate(KINDS)}
#: Keep the newer time (the larger issue) of the stored and the new value; a null on either
#: side keeps the other.
_LATER = ", ".join(
    f"{c} = CASE WHEN reader_activity.{c} IS NULL THEN excluded.{c} "
    f"WHEN excluded.{c} > reader_activity.{c} THEN excluded.{c} ELSE reader_activity.{c} END"
    for c in _COLUMNS
)


def note(conn: Connection, activities: Iterable[Activity]) -> int:
    """Fold these into `reader_activity` (latest time and newest issue per reader and kind),
    in one plain-SQL upsert per few hundred readers (`store.raw`: a webhook post's hot path);
    returns the readers touched."""
    merged: dict[int, list[Any]] = {}
    for activity in activities:
        row = merged.get(activity.subscriber_id)
        if row is None:
            row = merged[activity.subscriber_id] = [None] * len(_COLUMNS)
        at_index = _AT_INDEX[activity.kind]
        if row[at_index] is None or activity.at > row[at_index]:
            row[at_index] = activity.at
        issue = activity.issue_id
        if issue is not None and (row[at_index + 1] is None or issue > row[at_index + 1]):
            row[at_index + 1] = issue
    if not merged:
        return 0
    bind_time = raw.binder(conn, schema.reader_activity.c.clicked_at)
    rows = []
    for sid, row in sorted(merged.items()):
        for i in range(0, len(row), 2):
            if row[i] is not None:
                row[i] = bind_time(as_utc(row[i]))
        rows.append((sid, *row))
    width = len(_COLUMNS) + 1
    row_marks = f"({raw.marks(conn, width)})"
    per_statement = max(min(raw.max_parameters(conn) // width, 500), 1)
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        conn.exec_driver_sql(
            f"INSERT INTO reader_activity (subscriber_id, {', '.join(_COLUMNS)}) VALUES "
            f"{', '.join([row_marks] * len(chunk))} "
            f"ON CONFLICT (subscriber_id) DO UPDATE SET {_LATER}",
            tuple(value for row in chunk for value in row),
        )
    return len(rows)


def latest_issue_sent_to(conn: Connection, subscriber_id: int) -> int | None:
    """The newest issue the reader has a ledger row for (the keep link's "issue")."""
    d = schema.deliveries
    return conn.execute(
        select(func.max(d.c.issue_id)).where(d.c.subscriber_id == subscriber_id)
    ).scalar()


def backfill(conn: Connection) -> None:
    """Fill `reader_activity` from the events and replies already stored (migration m019)."""
    e, r = schema.events, schema.replies
    found: list[Activity] = []
    machine = human_open(conn.dialect.name)
    for event, kind in EVENT_KIND.items():
        query = (
            select(e.c.subscriber_id, func.max(e.c.occurred_at), func.max(e.c.issue_id))
            .where(e.c.event == event, e.c.subscriber_id.is_not(None))
            .group_by(e.c.subscriber_id)
        )
        if kind == "opened":
            query = query.where(machine)
        for sid, at, issue in conn.execute(query):
            found.append(Activity(sid, kind, at, issue))
    replies = (
        select(r.c.subscriber_id, func.max(r.c.received_at), func.max(r.c.issue_id))
        .where(r.c.subscriber_id.is_not(None), r.c.automatic.is_not(True))
        .group_by(r.c.subscriber_id)
    )
    for sid, at, issue in conn.execute(replies):
        found.append(Activity(sid, "replied", at, issue))
    note(conn, found)
