"""`newsletter sync`: apply SendGrid's suppression lists to the subscriber list.

For authors who never run `serve`: SendGrid keeps global unsubscribes, bounces, spam
reports and invalid emails; we fetch each list page by page and move the matching
subscribers to unsubscribed / bounced / complained / bounced (never to a weaker status).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from sqlalchemy import Engine, select

from newsletter.errors import ConfigError
from newsletter.sending.factory import choose_transport
from newsletter.sending.transports import SuppressionListTransport, kinds_that
from newsletter.store import schema
from newsletter.store.emails import address_key
from newsletter.store.subscribers import apply_status

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


@dataclass
class SyncResult:
    fetched: dict[str, int] = field(default_factory=dict)  # addresses on each SendGrid list
    matched: dict[str, int] = field(default_factory=dict)  # of them, on our list
    changed: dict[str, int] = field(default_factory=dict)  # of them, whose status changed


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
            keys = sorted({address_key(a) or a.strip().lower() for a in fetched[name]})
            result.fetched[name] = len(keys)
            ids: list[int] = []
            for start in range(0, len(keys), 900):
                ids += conn.execute(
                    select(schema.subscribers.c.id).where(
                        schema.subscribers.c.email_key.in_(keys[start : start + 900])
                    )
                ).scalars()
            result.matched[name] = len(ids)
            result.changed[name] = apply_status(conn, ids, status, f"sendgrid:{name}", now)
    return result
