"""The suppression list: addresses erased on request that must not come back (owns
`suppressions`).

Only a keyed hash of the normalized address is kept (HMAC-SHA256 with
NEWSLETTER_SECRET_KEY), so the list cannot be read back as addresses, not even by
guessing common ones without the key. `subscribers add` and imports refuse a suppressed
address; only a new double opt-in through the form lifts it. A new secret key makes the
old hashes unmatchable, so a row of its own (`KEY_CHECK`, the key's own keyed hash, no
address) records which key they were made with, and a command run with another key is
refused instead of letting erased addresses back in.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, func, insert, select

from newsletter import tokens
from newsletter.errors import ConfigError, NewsletterError, StoreError
from newsletter.store.emails import email_key, normalize_email
from newsletter.store.schema import suppressions
from newsletter.store.times import as_utc

ERASED = "erased on request"
#: The reason of the row that records which key the hashes were made with (not an address).
KEY_CHECK = "key check: the key the other rows were hashed with"

#: Hashes looked up per query when checking many addresses (an import chunk).
LOOKUP_CHUNK = 500


@dataclass(frozen=True)
class Suppression:
    reason: str
    created_at: datetime


class SuppressedError(StoreError):
    """The address was erased on request and may not be added back by the author."""


def suppressed_message(address: str) -> str:
    return (
        f"{address} was erased on request and is suppressed; only a new double opt-in "
        "through the sign-up form lifts that"
    )


def hashing_key(*, erasing: bool = False) -> str:
    """NEWSLETTER_SECRET_KEY, which the address hashes are made with; if it is not set, a
    ConfigError saying why this command needs it (`erasing`: to store a hash, else: to
    check addresses against the hashes already stored)."""
    try:
        return tokens.secret_key()
    except NewsletterError:
        if erasing:
            why = (
                "erasure keeps a keyed hash of the address so that no import or `add` "
                "brings it back, and needs the key: set it to a long random string (python3 "
                "-c 'import secrets; print(secrets.token_urlsafe(32))') and keep it"
            )
        else:
            why = (
                "addresses were erased from this list, and checking an address against "
                "them needs the key they were hashed with: set it to the same key as when "
                "they were erased"
            )
        raise ConfigError(f"{tokens.SECRET_ENV} is not set; {why}") from None


def _key_check_hash(key: str) -> str:
    return hmac.new(key.encode("utf-8"), b"suppression key check", hashlib.sha256).hexdigest()


def checked_key(conn: Connection, *, erasing: bool = False) -> str:
    """The hashing key (see `hashing_key`), once it is known to be the one the stored hashes
    were made with; a ConfigError if it is not (with another key no erased address would
    be recognized: imports and `add` would bring them all back)."""
    key = hashing_key(erasing=erasing)
    checks = set(
        conn.execute(
            select(suppressions.c.email_hash).where(suppressions.c.reason == KEY_CHECK)
        ).scalars()
    )
    if checks and _key_check_hash(key) not in checks:
        raise ConfigError(
            f"{tokens.SECRET_ENV} is not the key the erased addresses on this list were hashed "
            "with, so they would not be recognized and could come back: set the key that was "
            "in use when they were erased (docs/privacy.md)"
        )
    return key


def _lookup_key(address: str) -> str:
    try:
        return email_key(normalize_email(address))
    except StoreError:
        return address.strip().lower()


def address_hash(address: str, *, key: str | None = None) -> str:
    """The keyed hash stored for `address` (normalized and lower-cased first)."""
    return key_hash(_lookup_key(address), key=key)


def key_hash(email_key: str, *, key: str | None = None) -> str:
    """The keyed hash of an address already normalized and lower-cased (`email_key`)."""
    secret = (key or hashing_key()).encode("utf-8")
    return hmac.new(
        secret, b"suppression\x00" + email_key.encode("utf-8"), hashlib.sha256
    ).hexdigest()


def suppress(conn: Connection, address: str, reason: str = ERASED) -> None:
    """Add the address (as its hash); one already there keeps its first date and reason."""
    key = checked_key(conn, erasing=True)
    check = _key_check_hash(key)
    if (
        conn.execute(
            select(suppressions.c.email_hash).where(suppressions.c.email_hash == check)
        ).first()
        is None
    ):
        conn.execute(
            insert(suppressions).values(
                email_hash=check, reason=KEY_CHECK, created_at=datetime.now(UTC)
            )
        )
    digest = address_hash(address, key=key)
    if conn.execute(
        select(suppressions.c.email_hash).where(suppressions.c.email_hash == digest)
    ).first():
        return
    conn.execute(
        insert(suppressions).values(
            email_hash=digest, reason=reason[:200], created_at=datetime.now(UTC)
        )
    )


def _empty(conn: Connection) -> bool:
    # Checked first so that a list nobody was ever erased from needs no secret key.
    return (
        conn.execute(
            select(suppressions.c.email_hash).where(suppressions.c.reason != KEY_CHECK).limit(1)
        ).first()
        is None
    )


def find(conn: Connection, address: str) -> Suppression | None:
    if _empty(conn):
        return None
    row = conn.execute(
        select(suppressions.c.reason, suppressions.c.created_at).where(
            suppressions.c.email_hash == address_hash(address, key=checked_key(conn))
        )
    ).first()
    if row is None:
        return None
    return Suppression(reason=row.reason, created_at=as_utc(row.created_at))


def refuse_if_suppressed(conn: Connection, address: str) -> None:
    """SuppressedError naming the address when it is on the suppression list."""
    if find(conn, address) is not None:
        raise SuppressedError(suppressed_message(address))


def any_suppressed(conn: Connection) -> bool:
    """Whether anything is suppressed at all (bulk callers skip the hashing if not)."""
    return not _empty(conn)


def suppressed_among(
    conn: Connection, addresses: Iterable[str], *, normalized: bool = False
) -> set[str]:
    """Which of `addresses` are suppressed (for bulk callers such as the importer);
    `normalized`: they are `email_key`s already (skips normalizing each again)."""
    if _empty(conn):
        return set()
    key = checked_key(conn)
    by_hash: dict[str, list[str]] = {}
    for address in addresses:
        digest = key_hash(address, key=key) if normalized else address_hash(address, key=key)
        by_hash.setdefault(digest, []).append(address)
    found: set[str] = set()
    hashes = list(by_hash)
    for start in range(0, len(hashes), LOOKUP_CHUNK):
        chunk = hashes[start : start + LOOKUP_CHUNK]
        for digest in conn.execute(
            select(suppressions.c.email_hash).where(suppressions.c.email_hash.in_(chunk))
        ).scalars():
            found.update(by_hash[digest])
    return found


def lift(conn: Connection, address: str) -> bool:
    """Remove the address from the list (after a new double opt-in); True if it was there."""
    if _empty(conn):
        return False
    digest = address_hash(address, key=checked_key(conn))
    removed = conn.execute(delete(suppressions).where(suppressions.c.email_hash == digest)).rowcount
    return bool(removed)


def count(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(suppressions).where(suppressions.c.reason != KEY_CHECK)
        ).scalar_one()
    )
