"""What German law asks of a list: consent the author can prove, erasure that lasts, and
data kept no longer than needed.

- `add_by_author`: `subscribers add`, with who added the person and the consent text.
- `erase`: `subscribers remove --forget` (GDPR Art. 17): deletes every row about the person,
  rewrites the rows that name them without a key, compacts the SQLite file and deletes the
  outbox files about them; keeps only a keyed hash of the address in the suppression list,
  so no import brings the person back.
- `purge`: `newsletter privacy purge` and `serve`'s daily run: webhook events and
  automatic replies older than `[privacy] keep_events_days` (and whom the purged events
  counted in `issue_readers`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.parser import HeaderParser
from email.policy import default
from email.utils import getaddresses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from newsletter import tokens
from newsletter.errors import StoreError
from newsletter.events import delete_received_before
from newsletter.insights.counters import forget_purged_readers, scrub_links
from newsletter.person import PersonalData, rows_naming
from newsletter.replies.store import forget_replies, purge_automatic_replies, replies_written_by
from newsletter.replies.threads import forget_threads
from newsletter.sending.execute import remove_dead_handoffs
from newsletter.sending.ledger import Ledger
from newsletter.store import consent, signup_limits, suppressions
from newsletter.store.emails import address_key, normalize_email
from newsletter.store.subscribers import (
    STOPPED,
    Subscriber,
    add_subscriber,
    find_subscriber,
    forget_subscriber,
    lookup_key,
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
    #: Files the tool wrote about the person (outbox copies), deleted.
    deleted_files: tuple[Path, ...] = ()
    #: Files about the person that could not be deleted: the user must remove them.
    kept_files: tuple[Path, ...] = ()
    #: SQLite only: whether the file was checkpointed and vacuumed, so no copy of the
    #: deleted rows is left in `-wal` or free pages (None: not SQLite).
    compacted: bool | None = None


def forget_person(conn: Connection, email: str) -> bool:
    """Delete the person's row with every row that references it (`forget_subscriber`), and
    the replies from their address that no row links to them (sent before they subscribed,
    or after they left). True if anything was deleted."""
    removed = forget_subscriber(conn, email)
    written = replies_written_by(conn, lookup_key(email), email)
    return forget_replies(conn, written) > 0 or removed


def erase(engine: Engine, email: str, *, outboxes: Sequence[Path] = ()) -> Erasure:
    """Delete the person and everything linked to them, rewrite the rows that name them
    without a key (a send's error, a clicked link's URL: `person.rows_naming`), and
    suppress the address (its keyed hash, the date and "erased on request"), all in one
    transaction. Then, on SQLite, checkpoint and vacuum the file, and delete the `.eml`
    files in each of `outboxes` written to or about the address. A ConfigError before anything is
    deleted if NEWSLETTER_SECRET_KEY (for the hash) is not set, or is not the key of the
    erasures before."""

    with engine.connect() as conn:
        suppressions.checked_key(conn, erasing=True)  # (the same key as earlier erasures)
    try:
        address = normalize_email(email)
    except StoreError:
        address = email.strip()
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            # Deleted rows' bytes are overwritten, not just marked free.
            conn.exec_driver_sql("PRAGMA secure_delete = ON")
        subscriber = find_subscriber(conn, email)
        person = PersonalData.of(email, subscriber)
        named = rows_naming(conn, person)
        removed = forget_person(conn, email)
        removed = forget_replies(conn, [row.id for row in named.get("replies", [])]) > 0 or removed
        forget_threads(conn, named)
        Ledger.scrub_errors(conn, person.spellings, person.names_text, person.redact_text)
        scrub_links(conn, person.names_url, person.redact_url)
        # An import's record stays for the others it added; their address leaves it.
        consent.scrub_runs(conn, person.names_text, person.redact_text)
        status = subscriber.status if subscriber else None
        reason = suppressions.ERASED
        if status in STOPPED and status != "unsubscribed":
            reason += f" (address had {status})"
        suppressions.suppress(conn, address, reason)
        # The sign-up limit's keyed hash of the address goes too (it names them, a day long).
        signup_limits.forget(
            conn, signup_limits.Scope.ADDRESS, person.key, secret=tokens.secret_key()
        )
    compacted = compact_sqlite(engine) if engine.dialect.name == "sqlite" else None
    remove_dead_handoffs()  # a killed send's prepared requests may name them
    deleted: list[Path] = []
    kept: list[Path] = []
    for outbox in dict.fromkeys(outboxes):  # a folder named twice is searched once
        for path in files_about(outbox, person.key):
            try:
                path.unlink()
                deleted.append(path)
            except OSError:
                kept.append(path)
    return Erasure(
        email=subscriber.email if subscriber else address,
        was_stored=removed or bool(named),
        status=status,
        deleted_files=tuple(deleted),
        kept_files=tuple(kept),
        compacted=compacted,
    )


#: How long compaction waits for another program's read of the SQLite file.
COMPACT_WAIT_MS = 2000


def compact_sqlite(engine: Engine) -> bool:
    """Move the WAL into the file and truncate it, then VACUUM (which rebuilds the file
    without free pages) and truncate the WAL it wrote: no copy of a deleted row is left in
    `newsletter.db`, `-wal` or `-shm`. False if another process kept the WAL busy."""

    engine.dispose()  # our own pooled connections would hold the WAL open
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # A reader (serve) holds the WAL only for a moment; one that holds it longer
            # gets a warning, not an erasure that hangs.
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {COMPACT_WAIT_MS}")
            busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
            if busy is None or busy[0] != 0:
                return False
            conn.exec_driver_sql("VACUUM")
            busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
    except OperationalError:
        return False
    finally:
        engine.dispose()
    return busy is not None and busy[0] == 0


#: How much of an .eml file is read for its headers.
_HEADER_BYTES = 64 * 1024


def files_about(directory: Path, key: str) -> list[Path]:
    """The `.eml` files in `directory` (the outbox) addressed to the address `key` in To or
    Cc (`transactional-<address>.eml`, `test-<address>.eml`, a send's `<id>-<address>.eml`)
    or Reply-To (the author's copy of their reply). Read from the headers, not the file
    name: a name keeps only the ASCII of an address, so it cannot tell `jörg@` from `jürg@`."""

    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.eml")):
        try:
            with path.open("rb") as file:
                head = file.read(_HEADER_BYTES)
        except OSError:
            continue
        block = re.split(rb"\r?\n\r?\n", head, maxsplit=1)[0].decode("utf-8", "replace")
        headers = HeaderParser(policy=default).parsestr(block, headersonly=True)
        values = [str(v) for name in ("To", "Cc", "Reply-To") for v in headers.get_all(name, [])]
        if any(address_key(address) == key for _, address in getaddresses(values) if address):
            found.append(path)
    return found


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
    removed_events, touched = delete_received_before(engine, cutoff)
    if touched:
        # Whom those events counted goes with them (the counts themselves stay).
        with engine.begin() as conn:
            forget_purged_readers(conn, touched)
    removed_replies = purge_automatic_replies(engine, cutoff)
    return PurgeResult(events=removed_events, automatic_replies=removed_replies, cutoff=cutoff)
