"""`newsletter stats ISSUE`: what happened to an issue, from the ledger, events and replies.

Counts are unique subscribers per kind of event (ten opens by one reader count once).
Delivered, bounced and dropped are rated over the recipients the issue was sent to;
opened, clicked, unsubscribed, complained and replied over those it was delivered to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, distinct, func, select

from newsletter.errors import NewsletterError, StoreError
from newsletter.store import schema

if TYPE_CHECKING:
    from newsletter.project import Project

#: stat -> event names that count for it
EVENTS_FOR = {
    "delivered": ("delivered",),
    "bounced": ("bounce",),
    "dropped": ("dropped",),
    "opened": ("open",),
    "clicked": ("click",),
    "unsubscribed": ("unsubscribe", "group_unsubscribe"),
    "complained": ("spamreport",),
}
OVER_RECIPIENTS = ("delivered", "bounced", "dropped")
OVER_DELIVERED = ("opened", "clicked", "unsubscribed", "complained", "replied")
SENT_STATES = ("accepted", "delivered", "bounced", "dropped", "uncertain")


@dataclass(frozen=True)
class IssueRef:
    id: int
    slug: str
    title: str


def find_issue(project: Project, engine: Engine, name: str) -> IssueRef:
    """An issue that has a row in the database, by slug, file name or path (the one
    resolver every command uses)."""
    from newsletter.store.issues import find_issue as issue_row
    from newsletter.store.issues import resolve_issue

    try:
        slug = resolve_issue(project, name, engine).slug
    except NewsletterError:
        raise StoreError(f"{name}: no such issue; give its slug, file name or path") from None
    row = issue_row(engine, slug)
    if row is None:
        raise StoreError(f"{name}: issue {slug!r} has not been sent yet; send it first")
    return IssueRef(id=row.id, slug=row.slug, title=row.title)


def handed_over_without_ledger(conn: Any, issue_id: int) -> int:
    """Recipients of sends through a transport that keeps no ledger (the outbox): their
    totals, as `sends` shows them (dry runs and cancelled sends reached nobody)."""
    t, s = schema.send_totals, schema.sends
    return int(
        conn.execute(
            select(func.coalesce(func.sum(t.c.accepted), 0))
            .join(s, s.c.id == t.c.send_id)
            .where(s.c.issue_id == issue_id, s.c.dry_run.is_(False), s.c.status != "cancelled")
        ).scalar_one()
    )


def issue_stats(engine: Engine, issue_id: int) -> dict[str, Any]:
    """Counts and rates for one issue (see the module docstring for the bases)."""
    e, d, r = schema.events, schema.deliveries, schema.replies
    with engine.connect() as conn:
        recipients = conn.execute(
            select(func.count()).where(d.c.issue_id == issue_id, d.c.state.in_(SENT_STATES))
        ).scalar_one()
        if not recipients:
            recipients = handed_over_without_ledger(conn, issue_id)
        per_event: dict[str, int] = dict(
            conn.execute(
                select(e.c.event, func.count(distinct(e.c.subscriber_id)))
                .where(e.c.issue_id == issue_id, e.c.subscriber_id.is_not(None))
                .group_by(e.c.event)
            ).all()
        )
        unsubscribed = conn.execute(
            select(func.count(distinct(e.c.subscriber_id))).where(
                e.c.issue_id == issue_id,
                e.c.event.in_(EVENTS_FOR["unsubscribed"]),
                e.c.subscriber_id.is_not(None),
            )
        ).scalar_one()
        replied = conn.execute(
            select(func.count(distinct(func.lower(r.c.from_email)))).where(
                r.c.issue_id == issue_id,
                r.c.automatic.is_not(True),  # auto-replies don't count
            )
        ).scalar_one()
    counts: dict[str, int] = {"recipients": int(recipients)}
    for stat, names in EVENTS_FOR.items():
        counts[stat] = 0
        for name in names:
            counts[stat] += int(per_event.get(name, 0))
    counts["unsubscribed"] = int(unsubscribed)
    counts["replied"] = int(replied)
    delivered = counts["delivered"]
    rates: dict[str, float | None] = {}
    for stat in OVER_RECIPIENTS:
        rates[stat] = counts[stat] / recipients if recipients else None
    for stat in OVER_DELIVERED:
        rates[stat] = counts[stat] / delivered if delivered else None
    return {
        "counts": counts,
        "rates": rates,
        "rate_bases": {
            **{stat: "recipients" for stat in OVER_RECIPIENTS},
            **{stat: "delivered" for stat in OVER_DELIVERED},
        },
    }
