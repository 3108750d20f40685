"""`newsletter sync`: apply SendGrid's suppression lists to the subscriber list.

For authors who never run `serve`: SendGrid keeps global unsubscribes, bounces, spam
reports and invalid emails; we fetch each list page by page and move the matching
subscribers to unsubscribed / bounced / complained / bounced (never to a weaker status).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from sqlalchemy import Connection, Engine, func, select

from newsletter.errors import ConfigError
from newsletter.sending.factory import choose_transport
from newsletter.sending.transports import SuppressionListTransport, kinds_that
from newsletter.store import consent, schema
from newsletter.store.emails import address_key
from newsletter.store.subscribers import apply_status
from newsletter.store.times import as_utc

if TYPE_CHECKING:
    from newsletter.project import Project

#: SendGrid list -> the status it means
LISTS = {
    "unsubscribes": "unsubscribed",
    "bounces": "bounced",
    "spam_reports": "complained",
    "invalid_emails": "bounced",
}
PAGE_SIZE = 500  # the most SendGrid returns per page of these lists


#: The lists of addresses that took no mail: a reader who confirmed their address (or came
#: back by a signed link) after SendGrid listed it took mail since, and stays.
BOUNCE_LISTS = ("bounces", "invalid_emails")


@dataclass
class SyncResult:
    fetched: dict[str, int] = field(default_factory=dict)  # addresses on each SendGrid list
    matched: dict[str, int] = field(default_factory=dict)  # of them, on our list
    changed: dict[str, int] = field(default_factory=dict)  # of them, whose status changed
    #: Of the matched on a bounce list, those left alone: they confirmed after the bounce.
    came_back: dict[str, int] = field(default_factory=dict)


def sync(project: Project, engine: Engine, *, page_size: int = PAGE_SIZE) -> SyncResult:
    chosen = choose_transport(project)
    transport = chosen.transport
    if not transport.capabilities.suppression_lists:
        can = ", ".join(kinds_that(lambda c: c.suppression_lists))
        why = f" ({chosen.note.split(',')[0]})" if chosen.note else ""
        raise ConfigError(
            f"`sync` reads suppression lists, which only {can} keeps; the {transport.kind} "
            f"transport has none{why}"
        )
    result = SyncResult()
    lists = cast(SuppressionListTransport, transport)
    fetched = {name: lists.suppressions(name, page_size) for name in LISTS}
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for name, status in LISTS.items():
            # In the store's one form: SendGrid may list an IDN address in punycode.
            listed: dict[str, datetime | None] = {}
            for address, created in fetched[name].items():
                key = address_key(address) or address.strip().lower()
                listed[key] = _later(listed.get(key), created)
            keys = sorted(listed)
            result.fetched[name] = len(keys)
            found: list[tuple[int, str]] = []
            for start in range(0, len(keys), 900):
                found += [
                    (row.id, row.email_key)
                    for row in conn.execute(
                        select(schema.subscribers.c.id, schema.subscribers.c.email_key).where(
                            schema.subscribers.c.email_key.in_(keys[start : start + 900])
                        )
                    )
                ]
            result.matched[name] = len(found)
            ids = [sid for sid, _ in found]
            if name in BOUNCE_LISTS:
                back = _confirmed_since(conn, found, listed)
                result.came_back[name] = len(back)
                ids = [sid for sid in ids if sid not in back]
            result.changed[name] = apply_status(conn, ids, status, f"sendgrid:{name}", now)
    return result


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _confirmed_since(
    conn: Connection, found: list[tuple[int, str]], listed: dict[str, datetime | None]
) -> set[int]:
    """Of `found` (id, email_key), who confirmed their address or came back by a signed link
    after SendGrid listed it (`listed`: when): their click took mail, so the old entry (one
    `serve` could not lift: an API key without the Suppressions permission) is not theirs now."""
    records = schema.consent_records
    latest: dict[int, datetime] = {}
    ids = [sid for sid, _ in found]
    for start in range(0, len(ids), 900):
        for sid, when in conn.execute(
            select(records.c.subscriber_id, func.max(records.c.occurred_at))
            .where(
                records.c.subscriber_id.in_(ids[start : start + 900]),
                records.c.kind.in_([consent.CONFIRMATION, consent.RESUBSCRIBE]),
            )
            .group_by(records.c.subscriber_id)
        ):
            latest[sid] = as_utc(when)
    back = set()
    for sid, key in found:
        created = listed.get(key)
        if created is not None and sid in latest and latest[sid] > created:
            back.add(sid)
    return back
