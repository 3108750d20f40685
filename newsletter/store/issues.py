"""The `issues` table: one row per issue that has been sent (or scheduled, or tried).

# --- publish rule (archive) --------------------------------------------------------------
When is an issue public (its web version, the archive, the feeds)? Only once it has really
gone out to readers: at the scheduled `send_at` of a send, or, for an immediate send, once
the provider accepted a first recipient. Never for drafts, test copies (they record no
send), dry runs, sends that only wrote the outbox, cancelled sends, or sends that the
provider rejected for every recipient.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, and_, exists, func, select

from newsletter.store.schema import deliveries, issues, sends

# --- publish rule (archive) --------------------------------------------------------------

#: Delivery states that mean the provider took the message (later events included: a
#: bounce or a drop happens only after SendGrid accepted it). `failed` is a rejection;
#: `uncertain` and `in_flight` are not known to have gone out.
ACCEPTED_STATES = ("accepted", "delivered", "bounced", "dropped")

#: Transports whose sends reach readers. An outbox send only writes .eml files here.
_PRIVATE_TRANSPORTS = ("outbox",)


@dataclass(frozen=True)
class PublishedIssue:
    """An issue that readers may see on the web, and since when."""

    issue_id: int
    slug: str
    title: str
    language: str
    published_at: datetime  # send_at of a scheduled send, else when the send started


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _published_query(now: datetime):  # type: ignore[no-untyped-def]
    """(issue id, slug, title, language, publication time) per public issue."""
    accepted = exists().where(
        deliveries.c.send_id == sends.c.id,
        deliveries.c.state.in_(ACCEPTED_STATES),
    )
    goes_out_at = func.coalesce(sends.c.send_at, sends.c.started_at)
    published_at = func.min(goes_out_at).label("published_at")
    return (
        select(issues.c.id, issues.c.slug, issues.c.title, issues.c.language, published_at)
        .join(sends, sends.c.issue_id == issues.c.id)
        .where(
            and_(
                sends.c.dry_run.is_(False),
                sends.c.transport.not_in(_PRIVATE_TRANSPORTS),
                sends.c.status != "cancelled",
                goes_out_at <= now,
                accepted,
            )
        )
        .group_by(issues.c.id, issues.c.slug, issues.c.title, issues.c.language)
        .order_by(published_at.desc(), issues.c.slug)
    )


def published_issues(engine: Engine, now: datetime | None = None) -> list[PublishedIssue]:
    """Every public issue, newest first (ties: by slug, so the order is stable)."""
    moment = _as_utc(now or datetime.now(UTC))
    with engine.connect() as conn:
        rows = conn.execute(_published_query(moment)).all()
    return [
        PublishedIssue(int(issue_id), slug, title, language, _as_utc(published_at))
        for issue_id, slug, title, language, published_at in rows
    ]


def is_published(engine: Engine, slug: str, now: datetime | None = None) -> bool:
    """Is the issue with this slug public (see the module docstring for the rule)?"""
    query = _published_query(_as_utc(now or datetime.now(UTC))).where(issues.c.slug == slug)
    with engine.connect() as conn:
        return conn.execute(query).first() is not None


# --- end of publish rule -------------------------------------------------------------------
