"""Everything held about one person, as one JSON document (GDPR Art. 15:
`newsletter subscribers export-person`).

The rows come from every table with a foreign key to `subscribers` (found by walking the
schema, so a table added later is exported without anyone remembering it), plus replies
matched only by the sender's address.
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, or_, select

from newsletter.errors import StoreError
from newsletter.store.schema import consent_texts, replies, subscribers
from newsletter.store.subscribers import (
    find_subscriber,
    tables_referencing_subscribers,
)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _rows(conn: Connection, query: Any) -> list[dict[str, Any]]:
    return [
        {key: _json_value(value) for key, value in row._mapping.items()}
        for row in conn.execute(query)
    ]


def export_person(engine: Engine, email: str) -> dict[str, Any]:
    """The subscriber row, then each referencing table's rows under its name
    (`subscriber_tags`, `consent_records`, `deliveries`, `events`, `replies`...)."""
    with engine.connect() as conn:
        subscriber = find_subscriber(conn, email)
        key = email.strip().lower()
        if subscriber is not None:
            key = subscriber.email.lower()
        tables: dict[str, list[dict[str, Any]]] = {}
        if subscriber is not None:
            for table, column in sorted(
                tables_referencing_subscribers(), key=lambda pair: pair[0].name
            ):
                order = list(table.primary_key.columns) or [column]
                tables.setdefault(table.name, []).extend(
                    _rows(conn, select(table).where(column == subscriber.id).order_by(*order))
                )
        # Replies from the address that could not be matched to a subscriber.
        unmatched = _rows(
            conn,
            select(replies)
            .where(
                or_(func.lower(replies.c.from_email) == key, replies.c.from_email == email.strip()),
                replies.c.subscriber_id.is_(None),
            )
            .order_by(replies.c.id),
        )
        if subscriber is None and not unmatched:
            raise StoreError(
                f"{email} is not on the list and sent no replies; nothing is held about them"
            )
        if unmatched:
            tables.setdefault("replies", []).extend(unmatched)
        hashes = {
            r["consent_text_hash"]
            for r in tables.get("consent_records", [])
            if r.get("consent_text_hash")
        }
        texts = (
            _rows(
                conn,
                select(consent_texts).where(consent_texts.c.text_hash.in_(sorted(hashes))),
            )
            if hashes
            else []
        )
        row = (
            _rows(conn, select(subscribers).where(subscribers.c.id == subscriber.id))[0]
            if subscriber is not None
            else None
        )
    if row is not None:
        row.pop("email_key", None)  # the address again, lower-cased
    return {
        "exported_at": datetime.now(UTC).isoformat(),
        "email": subscriber.email if subscriber else email.strip(),
        "subscriber": row,
        "tags": list(subscriber.tags) if subscriber else [],
        "fields": dict(subscriber.fields) if subscriber else {},
        "consent_texts": texts,
        "tables": tables,
    }
