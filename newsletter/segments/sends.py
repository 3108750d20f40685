"""Which segment a send went to, and its definition when the send was planned
(`send_segments`, one row per send; `sends.segment` keeps the --tag values as before).

The send's membership itself is frozen in the plan (`SendPlan.planned`); this is the record
of what the author chose, for `sends` and `stats ISSUE`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select

from newsletter.segments.syntax import Node, parse, where_label
from newsletter.store import schema


@dataclass(frozen=True)
class SendSegment:
    send_id: int
    name: str | None  # None: an ad-hoc --where
    definition: str

    @property
    def tree(self) -> Node:
        """The definition parsed (as `Segment.tree`): a resume or a resend of the send goes
        to the same segment."""
        return parse(self.definition, where_label(self.name))

    @property
    def shown(self) -> str:
        """`segment aktive (status:subscribed clicked:last-5)` or `--where tag:x`."""
        if self.name:
            return f"segment {self.name} ({self.definition})"
        return f"--where {self.definition}"


def recorder(name: str | None, definition: str) -> Callable[[Connection, int], None]:
    """What a send records about its segment, on the connection that creates the send (the
    ledger calls it in the same transaction: a send is never without its segment)."""

    def record(conn: Connection, send_id: int) -> None:
        conn.execute(
            schema.send_segments.insert().values(send_id=send_id, name=name, definition=definition)
        )

    return record


def for_sends(engine: Engine, send_ids: Iterable[int]) -> dict[int, SendSegment]:
    ids = sorted(set(send_ids))
    if not ids:
        return {}
    t = schema.send_segments
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.send_id, t.c.name, t.c.definition).where(t.c.send_id.in_(ids))
        )
        return {row.send_id: SendSegment(row.send_id, row.name, row.definition) for row in rows}


def for_issue(engine: Engine, issue_id: int) -> list[SendSegment]:
    """The segments of an issue's sends, oldest send first."""
    s, t = schema.sends, schema.send_segments
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.send_id, t.c.name, t.c.definition)
            .join(s, s.c.id == t.c.send_id)
            .where(s.c.issue_id == issue_id)
            .order_by(t.c.send_id)
        )
        return [SendSegment(row.send_id, row.name, row.definition) for row in rows]
