"""What German law asks of a list: consent the author can prove, erasure that lasts, and
data kept no longer than needed.

- `add_by_author`: `subscribers add`, with who added the person and the consent text.
- `erase`: `subscribers remove --forget` (GDPR Art. 17); keeps only a keyed hash of the
  address in the suppression list, so no import brings the person back.
- `purge`: `newsletter privacy purge` and `serve`'s daily run: webhook events and
  automatic replies older than `[privacy] keep_events_days`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete

from newsletter.errors import StoreError
from newsletter.store import consent, suppressions
from newsletter.store.emails import normalize_email
from newsletter.store.schema import events, replies
from newsletter.store.subscribers import (
    STOPPED,
    Subscriber,
    add_subscriber,
    find_subscriber,
    forget_subscriber,
)

if TYPE_CHECKING:
    from newsletter.project import Config


def store_full_ip(config: Config) -> bool:
    return bool(config.section("privacy")["store_full_ip"])


def add_by_author(
    engine: Engine,
    email: str,
    *,
    source: str,
    consent_text: str | None = None,
    **columns: Any,
) -> Subscriber:
    """`add_subscriber` plus a consent record naming who added the person and when, and
    the consent text they agreed to (which makes it proof). Refuses a suppressed address."""
    with engine.begin() as conn:
        subscriber = add_subscriber(conn, email, source=source, **columns)
        text = (consent_text or "").strip()
        consent.record(
            conn,
            subscriber.id,
            consent.ADDED,
            source=source,
            consent_text_hash=consent.remember_text(conn, text) if text else None,
            proves_consent=bool(text),
            details={"added_by": source, "status": subscriber.status},
        )
    return subscriber


@dataclass(frozen=True)
class Erasure:
    email: str
    was_stored: bool  # False: nothing was held, the address is only suppressed
    status: str | None  # the status the person had


def erase(engine: Engine, email: str) -> Erasure:
    """Delete the person and everything linked to them, and suppress the address (its
    keyed hash, the date and "erased on request"), all in one transaction. A ConfigError
    before anything is deleted if NEWSLETTER_SECRET_KEY (for the hash) is not set."""
    suppressions.hashing_key(erasing=True)
    try:
        address = normalize_email(email)
    except StoreError:
        address = email.strip()
    with engine.begin() as conn:
        subscriber = find_subscriber(conn, email)
        removed = forget_subscriber(conn, email)
        status = subscriber.status if subscriber else None
        reason = suppressions.ERASED
        if status in STOPPED and status != "unsubscribed":
            reason += f" (address had {status})"
        suppressions.suppress(conn, address, reason)
    return Erasure(
        email=subscriber.email if subscriber else address, was_stored=removed, status=status
    )


@dataclass(frozen=True)
class PurgeResult:
    events: int
    automatic_replies: int
    cutoff: datetime


def purge(engine: Engine, keep_days: int, *, now: datetime | None = None) -> PurgeResult:
    """Delete webhook events and automatic replies received more than `keep_days` ago.

    Only raw rows go: the counts `stats` shows are kept as aggregates of their own.
    Deleting in chunks keeps each transaction short next to a running server."""
    if keep_days < 1:
        raise StoreError("[privacy] keep_events_days must be at least 1")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    removed_events = _delete_older(engine, events, events.c.received_at < cutoff)
    removed_replies = 0
    automatic = replies.c.get("automatic")
    if automatic is not None:  # the column arrives with the replies work (m008)
        removed_replies = _delete_older(
            engine, replies, automatic.is_(True) & (replies.c.received_at < cutoff)
        )
    return PurgeResult(events=removed_events, automatic_replies=removed_replies, cutoff=cutoff)


PURGE_CHUNK = 5000


def _delete_older(engine: Engine, table: Any, condition: Any) -> int:
    from sqlalchemy import select

    total = 0
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(select(table.c.id).where(condition).limit(PURGE_CHUNK)).scalars()
            )
            if not ids:
                return total
            total += conn.execute(delete(table).where(table.c.id.in_(ids))).rowcount
