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

from sqlalchemy import Connection, case, func, select
from sqlalchemy.dialects import postgresql, sqlite

from newsletter.store import schema
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
    if kind == "opened" and detail.get("sg_machine_open") in (True, 1, "true", "1"):
        return None
    return kind


def note(conn: Connection, activities: Iterable[Activity]) -> int:
    """Fold these into `reader_activity` (latest time and newest issue per reader and kind),
    one statement for the lot; returns the readers touched."""
    merged: dict[int, dict[str, Any]] = {}
    for activity in activities:
        row = merged.setdefault(activity.subscriber_id, {"subscriber_id": activity.subscriber_id})
        at_key, issue_key = f"{activity.kind}_at", f"{activity.kind}_issue"
        at = as_utc(activity.at)
        if row.get(at_key) is None or at > row[at_key]:  # type: ignore[operator]
            row[at_key] = at
        if activity.issue_id is not None and (row.get(issue_key) or 0) < activity.issue_id:
            row[issue_key] = activity.issue_id
    if not merged:
        return 0
    rows = [
        {
            "subscriber_id": sid,
            **{f"{k}_at": row.get(f"{k}_at") for k in KINDS},
            **{f"{k}_issue": row.get(f"{k}_issue") for k in KINDS},
        }
        for sid, row in sorted(merged.items())
    ]
    table = schema.reader_activity
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    later: dict[str, Any] = {}
    for name in (*(f"{k}_at" for k in KINDS), *(f"{k}_issue" for k in KINDS)):
        mine, theirs = table.c[name], statement.excluded[name]
        # The newer (or larger) of the two; a null on either side keeps the other.
        later[name] = case((mine.is_(None), theirs), (theirs > mine, theirs), else_=mine)
    per_statement = 500  # 7 values a row: within SQLite's and psycopg's parameter limits
    for start in range(0, len(rows), per_statement):
        conn.execute(
            statement.values(rows[start : start + per_statement]).on_conflict_do_update(
                index_elements=["subscriber_id"], set_=later
            )
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
    machine = _human_open(conn)
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


def _human_open(conn: Connection) -> Any:
    """A condition on `events`: SendGrid did not flag the open as a machine's."""
    from sqlalchemy import text

    if conn.dialect.name == "sqlite":
        flag = "json_extract(events.detail, '$.sg_machine_open') IN (1, 'true', '1')"
        return text(f"NOT coalesce({flag}, 0)")
    return text("NOT coalesce((events.detail->>'sg_machine_open') IN ('true', '1'), false)")
