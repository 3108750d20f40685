"""SendGrid Event Webhook ingest: verify, dedupe, store, and apply to subscribers and the ledger.

One POST carries up to ~1,000 events. Everything for one POST happens in one transaction
with a handful of bulk statements (not one round trip per event), so ingest keeps up with
SendGrid's bursts on SQLite as well as PostgreSQL.
"""

from __future__ import annotations

import binascii
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from newsletter import counters
from newsletter.errors import NewsletterError
from newsletter.store import schema

PUBLIC_KEY_ENV = "SENDGRID_WEBHOOK_PUBLIC_KEY"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
#: A signed request older than this is refused, so a captured one cannot be replayed later.
MAX_AGE_SECONDS = 600

#: Subscriber status an event leads to, and the statuses it may replace (never a "stronger" one:
#: a complaint is not turned back into a mere unsubscribe).
STATUS_FOR_EVENT = {
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
    "bounce": "bounced",
    "spamreport": "complained",
}
REPLACEABLE = {
    "unsubscribed": ("subscribed", "unconfirmed"),
    "bounced": ("subscribed", "unconfirmed", "unsubscribed"),
    "complained": ("subscribed", "unconfirmed", "unsubscribed", "bounced"),
}
#: Ledger state an event leads to, and the states it may replace.
LEDGER_FOR_EVENT = {"delivered": "delivered", "bounce": "bounced", "dropped": "dropped"}
LEDGER_REPLACEABLE = {
    "delivered": ("pending", "in_flight", "accepted", "uncertain", "failed"),
    "bounced": ("pending", "in_flight", "accepted", "uncertain", "failed", "delivered"),
    "dropped": ("pending", "in_flight", "accepted", "uncertain", "failed"),
}

# Event fields worth keeping. Never the address, IP or user agent (personal data).
DETAIL_KEYS = (
    "type",
    "reason",
    "status",
    "response",
    "attempt",
    "url",
    "category",
    "bounce_classification",
    "asm_group_id",
    "sg_machine_open",
    "tls",
)
_ADDRESS = re.compile(r"[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+")


class WebhookError(NewsletterError):
    """The request is not a valid Event Webhook post."""


class SignatureError(WebhookError):
    """Missing, malformed, wrong or stale signature (HTTP 403)."""


class PayloadError(WebhookError):
    """The body is not a JSON array of events (HTTP 400)."""


@lru_cache(maxsize=4)
def _verifier(public_key: str) -> Any:
    from sendgrid.helpers.eventwebhook import EventWebhook

    return EventWebhook(public_key)


def verify(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    public_key: str | None,
    *,
    now: float | None = None,
) -> None:
    """Raise SignatureError unless `body` was signed by SendGrid's key in the last 10 minutes."""
    if not public_key:
        raise SignatureError(f"{PUBLIC_KEY_ENV} is not set; the Event Webhook refuses every post")
    if not signature or not timestamp:
        raise SignatureError("missing signature headers")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureError("malformed timestamp") from None
    if abs((now if now is not None else time.time()) - sent_at) > MAX_AGE_SECONDS:
        raise SignatureError("stale timestamp")
    try:
        verifier = _verifier(public_key)
    except (ValueError, TypeError):
        raise SignatureError(f"{PUBLIC_KEY_ENV} is not a valid public key") from None
    try:
        text = body.decode("utf-8")
        ok = verifier.verify_signature(text, signature, timestamp)
    # The helper raises instead of answering False for signatures that are not base64/DER.
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        ok = False
    if not ok:
        raise SignatureError("bad signature")


def parse(body: bytes) -> list[dict[str, Any]]:
    """The events of a webhook body; PayloadError for anything but a list of event objects."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PayloadError("body is not JSON") from None
    if not isinstance(data, list):
        raise PayloadError("body is not a JSON array of events")
    for item in data:
        if not isinstance(item, dict):
            raise PayloadError("an event is not a JSON object")
        if not isinstance(item.get("event"), str) or not isinstance(item.get("sg_event_id"), str):
            raise PayloadError("an event lacks `event` or `sg_event_id`")
        if not item["sg_event_id"] or len(item["sg_event_id"]) > 100:
            raise PayloadError("an event has an unusable `sg_event_id`")
    return data


@dataclass
class IngestResult:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    status_changes: dict[str, int] = field(default_factory=dict)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 12:
        return int(value)
    return None


def _occurred(value: Any, fallback: datetime) -> datetime:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return fallback
    return fallback


def _detail(event: dict[str, Any]) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    for key in DETAIL_KEYS:
        value = event.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            value = _ADDRESS.sub("<address>", value)[:1000]
        elif not isinstance(value, (int, float, bool)):
            value = _ADDRESS.sub("<address>", json.dumps(value, ensure_ascii=False))[:1000]
        detail[key] = value
    return detail


def _existing_ids(conn: Connection, column: Any, wanted: Iterable[int]) -> set[int]:
    wanted = list(set(wanted))
    found: set[int] = set()
    # Chunks keep under every database's bound-parameter limit.
    for start in range(0, len(wanted), 900):
        chunk = wanted[start : start + 900]
        found.update(conn.execute(select(column).where(column.in_(chunk))).scalars())
    return found


def _insert_ignoring_duplicates(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert the rows a concurrent POST has not stored meanwhile, count them for `stats`
    (counters.py) and return how many were new."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    # A concurrent POST of the same events may have won the race since we looked; RETURNING
    # names the rows really inserted, so only those are counted.
    stmt = (
        insert(schema.events)
        .on_conflict_do_nothing(index_elements=["sg_event_id"])
        .returning(schema.events.c.id, schema.events.c.sg_event_id)
    )
    inserted = conn.execute(stmt, rows).all()
    by_key = {row["sg_event_id"]: row for row in rows}
    counters.count_events(conn, ({**by_key[key], "id": id_} for id_, key in inserted))
    return len(inserted)


def apply_status(
    conn: Connection, subscriber_ids: Iterable[int], status: str, reason: str, now: datetime
) -> int:
    """Move subscribers to `status` unless they already have it or a stronger one."""
    ids = sorted(set(subscriber_ids))
    changed = 0
    for start in range(0, len(ids), 900):
        chunk = ids[start : start + 900]
        result = conn.execute(
            update(schema.subscribers)
            .where(schema.subscribers.c.id.in_(chunk))
            .where(schema.subscribers.c.status.in_(REPLACEABLE[status]))
            .values(
                status=status,
                updated_at=now,
                unsubscribed_at=now,
                unsubscribe_reason=reason[:200],
            )
        )
        changed += result.rowcount or 0
    return changed


def ingest(engine: Engine, events: list[dict[str, Any]]) -> IngestResult:
    """Store new events (deduped on sg_event_id) and apply them, in one transaction."""
    result = IngestResult(received=len(events))
    now = datetime.now(UTC)
    # Dedupe within the post first: SendGrid may repeat an event in the same batch.
    unique: dict[str, dict[str, Any]] = {}
    for event in events:
        unique.setdefault(event["sg_event_id"], event)
    with engine.begin() as conn:
        counters.serialize_ingest(conn)
        ids = list(unique)
        seen: set[str] = set()
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            seen.update(
                conn.execute(
                    select(schema.events.c.sg_event_id).where(
                        schema.events.c.sg_event_id.in_(chunk)
                    )
                ).scalars()
            )
        new = [event for key, event in unique.items() if key not in seen]
        result.duplicates = len(events) - len(new)
        if not new:
            return result

        subscriber_of = {
            key: _int(event.get(schema.CUSTOM_ARG_SUBSCRIBER)) for key, event in unique.items()
        }
        issue_of = {key: _int(event.get(schema.CUSTOM_ARG_ISSUE)) for key, event in unique.items()}
        # Events without our custom_args (e.g. sent before they existed): match by address.
        unmatched = {
            str(event.get("email", "")).strip().lower()
            for event in new
            if subscriber_of[event["sg_event_id"]] is None and isinstance(event.get("email"), str)
        }
        by_address: dict[str, int] = {}
        unmatched_list = [a for a in unmatched if a]
        for start in range(0, len(unmatched_list), 900):
            chunk = unmatched_list[start : start + 900]
            by_address.update(
                conn.execute(
                    select(schema.subscribers.c.email_key, schema.subscribers.c.id).where(
                        schema.subscribers.c.email_key.in_(chunk)
                    )
                ).all()
            )
        for event in new:
            key = event["sg_event_id"]
            if subscriber_of[key] is None and isinstance(event.get("email"), str):
                subscriber_of[key] = by_address.get(event["email"].strip().lower())
        # Ids that point at forgotten people or deleted issues must not break the foreign keys.
        live_subscribers = _existing_ids(
            conn, schema.subscribers.c.id, (i for i in subscriber_of.values() if i is not None)
        )
        live_issues = _existing_ids(
            conn, schema.issues.c.id, (i for i in issue_of.values() if i is not None)
        )

        rows = []
        to_status: dict[str, set[int]] = {status: set() for status in REPLACEABLE}
        ledger: dict[str, set[tuple[int, int]]] = {state: set() for state in LEDGER_REPLACEABLE}
        for event in new:
            key = event["sg_event_id"]
            name = event["event"][:32]
            subscriber_id = subscriber_of[key] if subscriber_of[key] in live_subscribers else None
            issue_id = issue_of[key] if issue_of[key] in live_issues else None
            message_id = event.get("sg_message_id")
            rows.append(
                {
                    "sg_event_id": key,
                    "event": name,
                    "subscriber_id": subscriber_id,
                    "issue_id": issue_id,
                    "sg_message_id": message_id[:200] if isinstance(message_id, str) else None,
                    "occurred_at": _occurred(event.get("timestamp"), now),
                    "received_at": now,
                    "detail": _detail(event),
                }
            )
            if subscriber_id is None:
                continue
            status = STATUS_FOR_EVENT.get(name)
            # A "blocked" bounce is the receiving server refusing for now, not a dead address.
            if status and not (name == "bounce" and event.get("type") == "blocked"):
                to_status[status].add(subscriber_id)
            state = LEDGER_FOR_EVENT.get(name)
            if state and issue_id is not None:
                ledger[state].add((issue_id, subscriber_id))

        result.stored = _insert_ignoring_duplicates(conn, rows)
        for status in ("unsubscribed", "bounced", "complained"):
            if to_status[status]:
                result.status_changes[status] = apply_status(
                    conn, to_status[status], status, f"sendgrid:{status}", now
                )
        for state in ("delivered", "dropped", "bounced"):
            pairs = ledger[state]
            if not pairs:
                continue
            by_issue: dict[int, list[int]] = {}
            for issue_id, subscriber_id in pairs:
                by_issue.setdefault(issue_id, []).append(subscriber_id)
            for issue_id, subscriber_ids in sorted(by_issue.items()):
                for start in range(0, len(subscriber_ids), 900):
                    conn.execute(
                        update(schema.deliveries)
                        .where(schema.deliveries.c.issue_id == issue_id)
                        .where(
                            schema.deliveries.c.subscriber_id.in_(
                                sorted(subscriber_ids)[start : start + 900]
                            )
                        )
                        .where(schema.deliveries.c.state.in_(LEDGER_REPLACEABLE[state]))
                        .values(state=state, updated_at=now)
                    )
    return result


def record(
    conn: Connection,
    sg_event_id: str,
    event: str,
    *,
    subscriber_id: int | None,
    issue_id: int | None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Store one event of our own (a web unsubscribe), ignoring a repeat of the same id."""
    now = datetime.now(UTC)
    counters.serialize_ingest(conn)
    if issue_id is not None and not _existing_ids(conn, schema.issues.c.id, [issue_id]):
        issue_id = None
    _insert_ignoring_duplicates(
        conn,
        [
            {
                "sg_event_id": sg_event_id[:100],
                "event": event,
                "subscriber_id": subscriber_id,
                "issue_id": issue_id,
                "sg_message_id": None,
                "occurred_at": now,
                "received_at": now,
                "detail": detail or {},
            }
        ],
    )
