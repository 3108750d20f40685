"""Sign-up limits in the database, so every `serve` worker and process shares them (owns
`signup_attempts`).

An attempt is one row: its scope ("network": an IPv4 address or an IPv6 /64; "address":
the address a confirmation mail goes to), a keyed hash of what is limited, and its time.
`allow` counts the rows in each window and adds one only when every window has room, so
blocked attempts never extend a block and a flood adds no rows. Rows older than the
longest window anyone asks for (a day) are deleted as attempts come in.

Only HMAC-SHA256 hashes keyed with NEWSLETTER_SECRET_KEY are stored: the table says
nothing about who signed up, even to someone with the database.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import Connection, delete, func, insert, select, text

from newsletter.store.schema import signup_attempts

#: The longest window kept; older rows are deleted.
KEEP = timedelta(days=1)

#: Namespace of the PostgreSQL advisory locks that serialize attempts on one key.
LOCK_NAMESPACE = 7_140_026


class Scope(StrEnum):
    NETWORK = "network"  # an IPv4 address or an IPv6 /64
    ADDRESS = "address"  # the address a confirmation mail goes to


@dataclass(frozen=True)
class Limit:
    """At most `count` attempts per `window`."""

    count: int
    window: timedelta


def key_hash(scope: Scope, value: str, secret: str) -> str:
    """The stored form of `value`: an HMAC, useless without the key."""
    message = f"{scope.value}:{value}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def allow(
    conn: Connection,
    scope: Scope,
    value: str,
    limits: Sequence[Limit],
    *,
    secret: str,
    now: datetime | None = None,
) -> bool:
    """Whether one more attempt on `value` fits every limit; if so it is recorded.

    Call inside a transaction: the attempt counts once it commits. Attempts on one key are
    serialized (an advisory lock on PostgreSQL; SQLite's write lock, taken by the delete
    that comes first), so two workers cannot both take the last free place."""
    now = now or datetime.now(UTC)
    hashed = key_hash(scope, value, secret)
    table = signup_attempts
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:namespace, hashtext(:key))"),
            {"namespace": LOCK_NAMESPACE, "key": hashed},
        )
    conn.execute(delete(table).where(table.c.attempted_at < now - KEEP))
    longest = max((limit.window for limit in limits), default=timedelta(0))
    times = list(
        conn.execute(
            select(table.c.attempted_at).where(
                table.c.scope == scope.value,
                table.c.key_hash == hashed,
                table.c.attempted_at >= now - longest,
            )
        ).scalars()
    )
    times = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in times]
    for limit in limits:
        if sum(1 for t in times if t > now - limit.window) >= limit.count:
            return False
    conn.execute(insert(table).values(scope=scope.value, key_hash=hashed, attempted_at=now))
    return True


def forget(conn: Connection, scope: Scope, value: str, *, secret: str) -> None:
    """Drop the attempts on `value` (a confirmed address: its mails were wanted)."""
    hashed = key_hash(scope, value, secret)
    table = signup_attempts
    conn.execute(delete(table).where(table.c.scope == scope.value, table.c.key_hash == hashed))


def give_back(conn: Connection, scope: Scope, value: str, *, secret: str) -> None:
    """Take back the newest attempt on `value`: what it was counted for did not happen (the
    confirmation mail could not be sent), so the person's next try may mail them."""
    hashed = key_hash(scope, value, secret)
    table = signup_attempts
    mine = (table.c.scope == scope.value, table.c.key_hash == hashed)
    newest = select(func.max(table.c.attempted_at)).where(*mine).scalar_subquery()
    conn.execute(delete(table).where(*mine, table.c.attempted_at == newest))
