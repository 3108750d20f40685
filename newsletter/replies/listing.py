"""Stored replies as `newsletter replies` lists and shows them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, select, true

from newsletter.errors import StoreError
from newsletter.store import schema
from newsletter.store.times import as_utc

#: How `replies` shows a reply that asks to unsubscribe.
UNSUBSCRIBE_LABELS = {
    "verified": "unsubscribed by reply",
    "unverified": "asks to unsubscribe (unverified)",
}


@dataclass
class ReplyRow:
    id: int
    received_at: datetime
    from_email: str
    from_name: str | None
    subject: str
    text: str
    issue_slug: str | None
    subscriber_id: int | None
    attachments: list[dict[str, Any]]
    spam_score: str | None
    automatic: bool = False
    unsubscribe_request: str | None = None
    #: The address on the list of the subscriber it was matched to (may differ from From).
    subscriber_email: str | None = None

    @property
    def note(self) -> str:
        """What `replies` shows beside the subject: an unsubscribe request, an auto-reply."""
        notes = []
        if self.automatic:
            notes.append("auto-reply")
        if self.unsubscribe_request:
            notes.append(UNSUBSCRIBE_LABELS[self.unsubscribe_request])
        return ", ".join(notes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "received_at": self.received_at.isoformat(),
            "from_email": self.from_email,
            "from_name": self.from_name,
            "subject": self.subject,
            "issue": self.issue_slug,
            "subscriber_id": self.subscriber_id,
            "text": self.text,
            "attachments": self.attachments,
            "spam_score": self.spam_score,
            "automatic": self.automatic,
            "unsubscribe_request": self.unsubscribe_request,
        }


def _rows(engine: Engine, where: Any = None) -> list[ReplyRow]:
    r, i, s = schema.replies, schema.issues, schema.subscribers
    query = (
        select(r, i.c.slug, s.c.email.label("subscriber_email"))
        .select_from(
            r.outerjoin(i, r.c.issue_id == i.c.id).outerjoin(s, r.c.subscriber_id == s.c.id)
        )
        .order_by(r.c.received_at, r.c.id)
    )
    if where is not None:
        query = query.where(where)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        ReplyRow(
            id=row.id,
            received_at=as_utc(row.received_at),
            from_email=row.from_email,
            from_name=row.from_name,
            subject=row.subject,
            text=row.text,
            issue_slug=row.slug,
            subscriber_id=row.subscriber_id,
            attachments=list(row.attachments or []),
            spam_score=row.spam_score,
            automatic=bool(row.automatic),
            unsubscribe_request=row.unsubscribe_request,
            subscriber_email=row.subscriber_email,
        )
        for row in rows
    ]


def list_replies(
    engine: Engine, issue_id: int | None = None, *, include_automatic: bool = False
) -> list[ReplyRow]:
    """Replies, oldest first; auto-replies only with `include_automatic`."""
    r = schema.replies
    conditions = [] if issue_id is None else [r.c.issue_id == issue_id]
    if not include_automatic:
        conditions.append(r.c.automatic.is_(False))
    return _rows(engine, and_(true(), *conditions))


def get_reply(engine: Engine, reply_id: int) -> ReplyRow:
    # An id no database column can hold is no reply (not an overflow in the driver).
    rows = _rows(engine, schema.replies.c.id == reply_id) if 1 <= reply_id < 2**31 else []
    if not rows:
        raise StoreError(f"no reply with id {reply_id}; list them with `newsletter replies`")
    return rows[0]
