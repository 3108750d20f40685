"""SendGrid Event Webhook ingest: verify, dedupe, store, and apply to subscribers and the ledger.

One POST carries up to ~1,000 events. Everything for one POST happens in one transaction
with a handful of bulk statements (not one round trip per event), so ingest keeps up with
SendGrid's bursts on SQLite as well as PostgreSQL.
"""

from __future__ import annotations

import binascii
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from json.encoder import encode_basestring_ascii as _encode_string  # json.dumps's own
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, delete, select

from newsletter.errors import NewsletterError
from newsletter.insights import counters
from newsletter.masking import mask_addresses
from newsletter.segments import activity
from newsletter.segments.activity import Activity
from newsletter.sending.ledger import EVENT_REPLACEABLE, apply_event_states
from newsletter.store import raw, schema
from newsletter.store.emails import address_key
from newsletter.store.subscribers import REPLACEABLE, apply_status

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
#: (Which statuses each may replace: `store.subscribers.REPLACEABLE`.)
#: Ledger state an event leads to (which states it may replace: `ledger.EVENT_REPLACEABLE`).
LEDGER_FOR_EVENT = {"delivered": "delivered", "bounce": "bounced", "dropped": "dropped"}

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


class WebhookError(NewsletterError):
    """The request is not a valid Event Webhook post."""


class SignatureError(WebhookError):
    """Missing, malformed, wrong or stale signature (HTTP 403)."""


class PayloadError(WebhookError):
    """The body is not a JSON array of events (HTTP 400)."""


@lru_cache(maxsize=4)
def _verifier(public_key: str) -> Any:
    # deferred: sendgrid.helpers.eventwebhook costs 19 ms at start-up
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
        data = orjson.loads(body)  # a 1,000-event post: about a fifth of json.loads's time
        suspect = b"\\u0000" in body  # (a NUL, which PostgreSQL's text refuses)
    except orjson.JSONDecodeError:
        # What orjson refuses and json reads (NaN, integers beyond 64 bits, UTF-16, lone
        # surrogates, nesting past 1024): read, then cleaned below. NaN reads as null.
        try:
            data = json.loads(body, parse_constant=lambda _constant: None)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise PayloadError("body is not JSON") from None
        suspect = True
    if not isinstance(data, list):
        raise PayloadError("body is not a JSON array of events")
    if suspect:
        try:
            data = _storable(data)
        except RecursionError:
            raise PayloadError("an event is nested too deeply") from None
    for item in data:
        if not isinstance(item, dict):
            raise PayloadError("an event is not a JSON object")
        if not isinstance(item.get("event"), str) or not isinstance(item.get("sg_event_id"), str):
            raise PayloadError("an event lacks `event` or `sg_event_id`")
        if not item["sg_event_id"] or len(item["sg_event_id"]) > 100:
            raise PayloadError("an event has an unusable `sg_event_id`")
    return data


def _storable(value: Any) -> Any:
    """`value` with every string storable in the database: NULs dropped, lone surrogates
    (which JSON can carry and UTF-8 cannot) replaced. One such field answered the whole
    batch with a 500, and SendGrid retried it a day and then dropped its good events."""
    if isinstance(value, str):
        return raw.storable_text(value)
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    return value


#: The largest id a database integer column holds (SQLite's and PostgreSQL's bigint).
_MAX_ID = (1 << 63) - 1


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
        return value if 0 < value <= _MAX_ID else None  # (beyond: no row has it)
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


def _detail(
    event: dict[str, Any], dumped: dict[str, tuple[str, str]]
) -> tuple[dict[str, Any], str]:
    """The fields of `event` worth keeping, addresses masked, and their JSON text exactly as
    `json.dumps` writes it (SQLAlchemy's JSON type writes that), made from parts: one
    `json.dumps` per event was a tenth of the ingest. `dumped` memoizes the JSON of lists
    and objects (the `category` every event of a send repeats) across one post."""
    detail: dict[str, Any] = {}
    parts: list[str] = []
    for key in DETAIL_KEYS:
        value = event.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            # Plain or percent-encoded (a link carrying `subscriber.email | urlencode`).
            value = mask_addresses(value)[:1000]
            encoded = _encode_string(value)
        elif isinstance(value, bool):
            encoded = "true" if value else "false"
        elif isinstance(value, int):
            encoded = int.__repr__(value)
        elif isinstance(value, float):
            encoded = json.dumps(value)  # NaN and Infinity as json.dumps spells them
        else:
            # Parsed JSON's repr tells its values apart exactly (1, 1.0, True, "1").
            memo_key = repr(value)
            memo = dumped.get(memo_key)
            if memo is None:
                text = mask_addresses(json.dumps(value, ensure_ascii=False))[:1000]
                memo = dumped[memo_key] = (text, _encode_string(text))
            value, encoded = memo
        detail[key] = value
        parts.append(f'"{key}": {encoded}')
    return detail, "{" + ", ".join(parts) + "}"


def _existing_ids(conn: Connection, table: str, wanted: Iterable[int]) -> set[int]:
    found = raw.select_in(conn, f"SELECT id FROM {table} WHERE id IN ({{}})", sorted(set(wanted)))
    return {row[0] for row in found}


#: An `events` row as the driver takes it, in this order (detail as JSON text, times bound).
_EVENT_COLUMNS = (
    "sg_event_id, event, subscriber_id, issue_id, sg_message_id, occurred_at, received_at, detail"
)
EventRow = tuple[str, str, int | None, int | None, str | None, Any, Any, str]
#: What the counters need of an event, by sg_event_id: event, issue, subscriber, UTC day, detail.
Countable = tuple[str, int | None, int | None, date, dict[str, Any]]


def _insert_ignoring_duplicates(
    conn: Connection,
    rows: list[EventRow],
    countable: dict[str, Countable],
    engaged: dict[str, Activity] | None = None,
) -> int:
    """Insert the rows a concurrent POST has not stored meanwhile, count them for `stats`
    (counters.py), note the clicks and human opens among them per reader (`engaged`, for the
    segments' engagement terms) and return how many were new."""
    # Multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING: a concurrent POST of the same
    # events may have won the race since we looked; RETURNING names the rows really
    # inserted, so only those are counted.
    mark = raw.placeholder(conn)
    row_marks = f"({', '.join([mark] * 7)}, {raw.json_marker(conn)})"
    per_statement = max(min(raw.max_parameters(conn) // 8, 1000), 1)
    inserted: list[Any] = []
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        inserted.extend(
            conn.exec_driver_sql(
                f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES "
                f"{', '.join([row_marks] * len(chunk))} "
                "ON CONFLICT (sg_event_id) DO NOTHING RETURNING sg_event_id",
                tuple([value for row in chunk for value in row]),
            ).all()
        )
    counters.count_events(conn, (counters.CountedEvent(*countable[key]) for (key,) in inserted))
    if engaged:
        activity.note(conn, (engaged[key] for (key,) in inserted if key in engaged))
    return len(inserted)


def ingest(
    engine: Engine, events: list[dict[str, Any]], *, update_ledger: bool = True
) -> IngestResult:
    """Store new events (deduped on sg_event_id) and apply them, in one transaction.
    `update_ledger=False` leaves the deliveries' states alone (an SMTP 250 counts as
    delivered, but the ledger keeps what the server said: accepted)."""
    result = IngestResult(received=len(events))
    now = datetime.now(UTC)
    # Dedupe within the post first: SendGrid may repeat an event in the same batch.
    unique: dict[str, dict[str, Any]] = {}
    for event in events:
        unique.setdefault(event["sg_event_id"], event)
    with engine.begin() as conn:
        counters.serialize_ingest(conn)
        seen = {
            row[0]
            for row in raw.select_in(
                conn, "SELECT sg_event_id FROM events WHERE sg_event_id IN ({})", list(unique)
            )
        }
        new = [event for key, event in unique.items() if key not in seen]
        result.duplicates = len(events) - len(new)
        if not new:
            return result

        subscriber_of = [_int(event.get(schema.CUSTOM_ARG_SUBSCRIBER)) for event in new]
        issue_of = [_int(event.get(schema.CUSTOM_ARG_ISSUE)) for event in new]
        # Events without our custom_args (e.g. sent before they existed): match by address.
        address_of = [
            (address_key(event["email"]) or event["email"].strip().lower())
            if subscriber_id is None and isinstance(event.get("email"), str)
            else ""
            for event, subscriber_id in zip(new, subscriber_of, strict=True)
        ]
        unmatched = sorted({address for address in address_of if address})
        if unmatched:
            by_address = dict(
                raw.select_in(
                    conn, "SELECT email_key, id FROM subscribers WHERE email_key IN ({})", unmatched
                )
            )
            for i, address in enumerate(address_of):
                if address:
                    subscriber_of[i] = by_address.get(address)
        # Ids that point at forgotten people or deleted issues must not break the foreign keys.
        live_subscribers = _existing_ids(
            conn, "subscribers", (i for i in subscriber_of if i is not None)
        )
        live_issues = _existing_ids(conn, "issues", (i for i in issue_of if i is not None))

        bind_time = raw.binder(conn, schema.events.c.occurred_at)
        received_at = bind_time(now)
        # Events of one post share few timestamps: convert each once.
        times: dict[Any, tuple[Any, date, datetime]] = {}
        dumped: dict[str, tuple[str, str]] = {}
        rows: list[EventRow] = []
        countable: dict[str, Countable] = {}
        engaged: dict[str, Activity] = {}
        to_status: dict[str, set[int]] = {status: set() for status in REPLACEABLE}
        ledger: dict[str, set[tuple[int, int]]] = {state: set() for state in EVENT_REPLACEABLE}
        for event, subscriber_id, issue_id in zip(new, subscriber_of, issue_of, strict=True):
            if subscriber_id not in live_subscribers:
                subscriber_id = None
            if issue_id not in live_issues:
                issue_id = None
            key = event["sg_event_id"]
            name = event["event"][:32]
            stamp = event.get("timestamp")
            # Exact types only: True == 1 as a key, but is no timestamp.
            cacheable = type(stamp) is int or type(stamp) is float
            occurred = times.get(stamp) if cacheable else None
            if occurred is None:
                when = _occurred(stamp, now)
                occurred = (bind_time(when), when.date(), when)
                if cacheable:
                    times[stamp] = occurred
            message_id = event.get("sg_message_id")
            detail, detail_json = _detail(event, dumped)
            rows.append(
                (
                    key,
                    name,
                    subscriber_id,
                    issue_id,
                    message_id[:200] if isinstance(message_id, str) else None,
                    occurred[0],
                    received_at,
                    detail_json,
                )
            )
            countable[key] = (name, issue_id, subscriber_id, occurred[1], detail)
            if subscriber_id is None:
                continue
            kind = activity.kind_of_event(name, detail)
            if kind is not None:
                engaged[key] = Activity(subscriber_id, kind, occurred[2], issue_id)
            status = STATUS_FOR_EVENT.get(name)
            # A "blocked" bounce is the receiving server refusing for now, not a dead address.
            if status and not (name == "bounce" and event.get("type") == "blocked"):
                to_status[status].add(subscriber_id)
            state = LEDGER_FOR_EVENT.get(name) if update_ledger else None
            if state and issue_id is not None:
                ledger[state].add((issue_id, subscriber_id))

        result.stored = _insert_ignoring_duplicates(conn, rows, countable, engaged)
        for status in ("unsubscribed", "bounced", "complained"):
            if to_status[status]:
                result.status_changes[status] = apply_status(
                    conn, to_status[status], status, f"sendgrid:{status}", now
                )
        for state in ("delivered", "dropped", "bounced"):
            if ledger[state]:
                apply_event_states(conn, state, ledger[state], now)
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
    if issue_id is not None and not _existing_ids(conn, "issues", [issue_id]):
        issue_id = None
    bound_now = raw.binder(conn, schema.events.c.occurred_at)(now)
    detail = detail or {}
    key = sg_event_id[:100]
    _insert_ignoring_duplicates(
        conn,
        [(key, event, subscriber_id, issue_id, None, bound_now, bound_now, json.dumps(detail))],
        {key: (event, issue_id, subscriber_id, now.date(), detail)},
    )


PURGE_CHUNK = 5000


def delete_received_before(engine: Engine, cutoff: datetime) -> tuple[int, set[int]]:
    """Delete the events received before `cutoff` (`privacy purge`), in chunks that keep each
    transaction short next to a running server; how many, and the issues they were about."""
    e = schema.events
    total, issues = 0, set[int]()
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                select(e.c.id, e.c.issue_id).where(e.c.received_at < cutoff).limit(PURGE_CHUNK)
            ).all()
            if not rows:
                return total, issues
            issues.update(issue_id for _, issue_id in rows if issue_id is not None)
            ids = [id_ for id_, _ in rows]
            total += conn.execute(delete(e).where(e.c.id.in_(ids))).rowcount
