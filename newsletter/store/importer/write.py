"""`subscribers import`, writing: one chunk into the database, fast, in one transaction.

New rows go in through the subscriber store's `BulkWriter` (driver-level executemany, or
COPY on PostgreSQL, with ids allocated up front) and their consent records through the
consent store: this module decides what to write, the tables' owners write it. A clash
with another writer rolls the chunk back and counts it again. `Pacer` cuts chunks into
transactions short enough that other writers (unsubscribes, sign-ups) get their turn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from newsletter.errors import StoreError
from newsletter.insights.counters import BulkInsertTally
from newsletter.store.consent import IMPORT, carried_records, record_imported
from newsletter.store.consent import record_values as consent_values
from newsletter.store.engine import others_have_it_open
from newsletter.store.importer.decide import (
    LOOKUP_BATCH,
    KeyFilter,
    changes,
    fetch_current,
    packed_changes,
    resolve_status,
)
from newsletter.store.importer.evidence import (
    ImportConsent,
    drop_suppressed,
    record_with_evidence,
    run_record,
)
from newsletter.store.importer.formats import Format
from newsletter.store.importer.model import (
    ImportResult,
    Incoming,
    as_incoming,
    is_simple,
    simple_tuple,
)
from newsletter.store.subscribers import STOPPED, BulkWriter, PlainRows


class Pacer:
    """Keeps the import's write transactions short, so other writers are never shut out.

    A one-click unsubscribe or a sign-up must be stored during a big import. SQLite has
    one write lock and no queue: a waiting writer sleeps up to 100 ms between tries, for
    up to its busy timeout (10 s), and a writer that commits and begins again at once
    can keep it out until it gives up. So a transaction is committed once it has held the
    lock about TARGET seconds (a chunk that alone would take longer is cut into parts sized
    from the rows per second so far), and on SQLite the import pauses PAUSE seconds (longer
    than a waiter's longest sleep) after every SHARE seconds of writing, when another process
    has the database open (alone, nobody could be waiting). On PostgreSQL short
    transactions keep row locks short.

    A transaction holds several chunks when they are quick: each commit writes every page
    the chunk touched in the address index (spread all over it) to SQLite's log again, so at
    a million rows ten thousand rows a commit spent a sixth of the import committing.
    """

    TARGET = 0.5
    SHARE = 2.0
    PAUSE = 0.15
    FIRST_ROWS = 2000
    MIN_ROWS = 100

    def __init__(self, engine: Engine, max_rows: int):
        self.engine = engine
        self.max_rows = max_rows
        self.rows = min(self.FIRST_ROWS, max_rows)
        self.pauses = engine.dialect.name == "sqlite"
        self.writing = 0.0  # seconds written since the last pause

    def parts(self, chunk: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The chunk in pieces of at most one transaction each (sized anew before each)."""
        if len(chunk) <= self.rows:
            yield chunk
            return
        items = list(chunk.items())
        start = 0
        while start < len(items):
            end = start + self.rows
            yield dict(items[start:end])
            start = end

    def wrote(self, rows: int, seconds: float) -> None:
        """A part of `rows` took `seconds` to write: size the next one."""
        if seconds > 0:
            fitting = int(rows / seconds * self.TARGET)
            self.rows = max(self.MIN_ROWS, min(self.max_rows, fitting))

    def commit_due(self, transaction: ImportTransaction) -> bool:
        """Whether the open transaction has held the lock long enough."""
        return transaction.open and transaction.age() >= self.TARGET

    def committed(self, seconds: float) -> None:
        """A transaction held the lock `seconds`: pause if others are due a turn."""
        self.writing += seconds
        if self.pauses and self.writing >= self.SHARE:
            # Nobody to give a turn to (no other process has the database open: a sign-up
            # or a send would): the pause would only make the import longer.
            if others_have_it_open(self.engine):
                time.sleep(self.PAUSE)
            self.writing = 0.0


class ImportTransaction:
    """The import's open write transaction: one connection holding the write lock across
    several chunks, each written inside a savepoint of it (`chunk`), so that a chunk that
    clashes with another writer is rolled back alone and written again.

    `line` is the last line of the file whose rows are all written in it; `committed_line`
    what the database keeps for sure. The result's counters are taken back to what they
    were at `begin` by `rollback`: only committed rows count as written.
    """

    COUNTERS = (
        "new",
        "updated",
        "unchanged",
        "duplicates",
        "kept_stopped",
        "suppressed",
        "without_evidence",
    )

    def __init__(self, engine: Engine, result: ImportResult):
        self.engine = engine
        self.result = result
        self.writer: BulkWriter | None = None  # (its connection holds the transaction)
        self.line = 1
        self.committed_line = 1
        self.started = 0.0
        self.broken = False
        self._counted: list[int] = []

    @property
    def open(self) -> bool:
        return self.writer is not None

    def age(self) -> float:
        return time.perf_counter() - self.started if self.open else 0.0

    def begin(self) -> BulkWriter:
        """The open transaction's writer, beginning one (and taking the lock) if none is."""
        if self.writer is not None:
            return self.writer
        self.started = time.perf_counter()
        self._counted = [getattr(self.result, name) for name in self.COUNTERS]
        conn = self.engine.connect()
        try:
            conn.begin()
            writer = BulkWriter(conn)
            # Holding the write lock from the lookups to the commit, no other writer can
            # add one of these addresses (or take an id) in between.
            writer.lock()
        except BaseException:
            conn.close()  # (`lock` put the connection's settings back)
            raise
        self.writer, self.broken = writer, False
        return writer

    @contextmanager
    def chunk(self) -> Iterator[BulkWriter]:
        """A savepoint for one chunk: rolled back to (alone) if the block raises."""
        writer = self.begin()
        writer.savepoint()
        try:
            yield writer
        except BaseException:
            try:
                writer.rollback_savepoint()
            except BaseException:
                self.broken = True  # what the transaction holds is unknown now
                raise
            raise
        writer.release_savepoint()

    def keep(self) -> None:
        """After a failure or Ctrl-C between parts: commit the whole parts written so far,
        or, if even that fails, roll back (`committed_line` says which it was)."""
        if self.broken:
            self.rollback()
            return
        with suppress(OSError, DBAPIError):  # then it rolled back
            self.commit()

    def commit(self) -> float:
        """Commit (a dry run: roll back) what is written; the seconds the lock was held."""
        if self.writer is None:  # nothing is waiting: every line read so far is done
            self.committed_line = self.line
            return 0.0
        held = self.age()
        try:
            if self.result.dry_run:
                self.writer.conn.rollback()
            else:
                self.writer.conn.commit()
        except BaseException:
            self.rollback()
            raise
        self.committed_line = self.line
        self._close()
        return held

    def rollback(self) -> None:
        """Forget what the open transaction wrote, counters included."""
        if self.writer is None:
            return
        for name, value in zip(self.COUNTERS, self._counted, strict=True):
            setattr(self.result, name, value)
        self.line = self.committed_line
        try:
            self.writer.conn.rollback()
        finally:
            self._close()

    def _close(self) -> None:
        writer, self.writer = self.writer, None
        assert writer is not None
        conn = writer.conn
        try:
            writer.unlock()
        except BaseException:
            conn.invalidate()  # a connection whose settings could not be put back
            raise
        finally:
            conn.close()


def write_chunk(
    transaction: ImportTransaction,
    chunk: dict[str, Incoming],
    result: ImportResult,
    new_keys: KeyFilter,
    initially_empty: bool,
    resubscribe: bool,
    source_name: str,
    fmt: Format,
    policy: ImportConsent | None = None,
) -> None:
    """Merge one chunk into the database within the open import transaction (a savepoint of
    it), or only count it (dry run).

    With a consent `policy`, suppressed addresses are dropped (and counted) first, and each
    new subscriber gets its `import` consent record.

    `new_keys` knows (by hash) every address this run added; for a list that was empty
    at the start, the chunk's addresses that an earlier chunk may have had (the reading
    side keeps the bit set of all of them). It is only a hint: a hit is checked against
    the database (a real run), so a hash collision can cost a lookup but never a wrong
    merge. With a list that was empty at the start, misses need no lookup at all, which
    is what makes a first big import fast.
    """
    literal_times = fmt.name.startswith("newsletter")
    if policy is not None and policy.check_suppressed:
        with transaction.engine.connect() as conn:
            drop_suppressed(conn, chunk, result, policy)
    counters = ImportTransaction.COUNTERS
    before = [getattr(result, name) for name in counters]
    found_before = -1
    attempt = 0
    while True:
        attempt += 1
        added: list[str] = []
        found: list[int] = []  # how many of the chunk's addresses the lookups found
        try:
            with transaction.chunk() as writer:
                # After a clash, look every key up: someone else added some meanwhile.
                _write_chunk_once(
                    writer, chunk, result, new_keys, added, found,
                    initially_empty and attempt == 1, resubscribe, source_name, literal_times,
                    policy,
                )  # fmt: skip
        except IntegrityError:
            # Another program (the subscribe form, say) added one of these addresses
            # before this transaction took the write lock, and the lookups were skipped
            # (a first import). The chunk was rolled back; count it again from scratch.
            for name, value in zip(counters, before, strict=True):
                setattr(result, name, value)
            # Others adding rows is no reason to give up: each try finds more of them.
            # A clash that finding more does not explain is.
            if found and found[0] <= found_before:
                raise StoreError(
                    f"{result.path}: a row of this chunk clashes with the list in a way the "
                    "import cannot merge; run the same import again (it continues where it "
                    "stopped)"
                ) from None
            found_before = found[0] if found else found_before
            continue
        except BaseException:
            # The chunk was rolled back: it counts for nothing.
            for name, value in zip(counters, before, strict=True):
                setattr(result, name, value)
            raise
        new_keys.update(added)
        return


def _write_chunk_once(
    writer: BulkWriter,
    chunk: dict[str, Any],
    result: ImportResult,
    new_keys: KeyFilter,
    added: list[str],
    found_count: list[int],
    skip_lookups: bool,
    resubscribe: bool,
    source_name: str,
    literal_times: bool,
    policy: ImportConsent | None,
) -> None:
    stamp = datetime.now(UTC)
    dry_run = result.dry_run
    conn = writer.conn
    lookup = new_keys.among(chunk) if skip_lookups else list(chunk)
    if dry_run:
        # Nothing of this run is in the database; repeats of new rows are duplicates.
        repeats = {k for k in lookup if k in new_keys}
        result.duplicates += len(repeats)
        lookup = [k for k in lookup if k not in repeats]
    else:
        repeats = set()
    found: set[str] = set()
    for start in range(0, len(lookup), LOOKUP_BATCH):
        current = fetch_current(conn, lookup[start : start + LOOKUP_BATCH])
        found.update(current)
        _update_existing(
            conn, writer, chunk, current, result, new_keys, resubscribe, stamp,
            None if policy is None else (policy, source_name),
        )  # fmt: skip

    found_count.append(len(found))
    if found or repeats:
        fresh = [inc for key, inc in chunk.items() if key not in found and key not in repeats]
    else:  # (a first import's usual chunk)
        fresh = list(chunk.values())
    if fresh:
        _insert_fresh(
            writer, fresh, result, added, resubscribe, source_name, stamp, literal_times,
            policy,
        )  # fmt: skip


def _insert_fresh(
    writer: BulkWriter,
    fresh: list[Any],
    result: ImportResult,
    added: list[str],
    resubscribe: bool,
    source_name: str,
    stamp: datetime,
    literal_times: bool,
    policy: ImportConsent | None = None,
) -> None:
    ids = [0] * len(fresh) if result.dry_run else writer.allocate_ids(len(fresh))
    # List growth is added up for the chunk, not counted by a trigger per inserted row.
    tally = BulkInsertTally(writer.conn)
    if not result.dry_run:
        tally.pause()
    stamp_db = writer.time(stamp)
    time = writer.time
    # "Imported, no evidence" is one record for the whole run, made when first needed (not
    # for a file whose new rows all carry their opt-in).
    no_evidence_run: int | None = None

    def no_evidence() -> int | None:
        nonlocal no_evidence_run
        if no_evidence_run is None and policy is not None and not result.dry_run:
            no_evidence_run = run_record(writer.conn, policy, source_name, stamp)
        return no_evidence_run

    rows: list[tuple[Any, ...]] = []
    tag_rows: list[tuple[int, str]] = []
    short_rows: list[tuple[Any, ...]] = []
    # The common case (address, names, tags; nothing else) goes column-wise: zip builds
    # the rows in C, several times faster than a Python loop over a million rows. Such
    # rows come as packed tuples (line, email, key, first, last, tags) from the reader
    # process, or as Incoming objects marked simple.
    packed = [
        item if type(item) is tuple else simple_tuple(item)  # type: ignore[arg-type]
        for item in fresh
        if type(item) is tuple or item.simple
    ]
    if len(packed) == len(fresh):
        simple_ids, rest = ids, []
    else:
        simple_ids = [sid for sid, inc in zip(ids, fresh, strict=True) if is_simple(inc)]
        rest = [(sid, inc) for sid, inc in zip(ids, fresh, strict=True) if not is_simple(inc)]
    plain = None
    if packed:
        plain = PlainRows(
            list(
                zip(
                    simple_ids,
                    [item[1] for item in packed],
                    [item[2] for item in packed],
                    [item[3] for item in packed],
                    [item[4] for item in packed],
                    strict=True,
                )
            ),
            source_name,
            stamp_db,
            no_evidence(),
        )
        tag_rows = [
            (sid, tag) for sid, item in zip(simple_ids, packed, strict=True) for tag in item[5]
        ]
        added.extend([item[2] for item in packed])
        tally.add(source_name, "subscribed", len(packed))
    with_evidence: list[dict[str, Any]] = []
    proven = 0  # new people whose rows carried proof of their opt-in
    for sid, inc in rest:
        record = None
        carried: list[dict[str, Any]] = []
        if policy is not None:
            record = record_with_evidence(sid, inc, policy, inc.source or source_name, stamp)
            if record is not None:
                with_evidence.append(record)
            if inc.consent:  # our own export's records: the proof moves with the person
                carried = carried_records(None if result.dry_run else writer.conn, sid, inc.consent)
                with_evidence += carried
        has_proof = record is not None or any(r["proves_consent"] for r in carried)
        proven += has_proof
        run_id = None if has_proof else no_evidence()
        status = resolve_status(None, inc.status, resubscribe)
        tally.add(inc.source or source_name, status)
        stopped = status in STOPPED
        created = inc.created_at or stamp
        if literal_times:  # (our export: an unconfirmed person has no confirmed_at)
            confirmed = inc.confirmed_at
        else:
            confirmed = inc.confirmed_at or (created if status == "subscribed" else None)
        # Whoever comes in stopped without a time of it stopped now, as far as the list knows
        # (as `remove`, and as an existing subscriber's row the import stops).
        unsubscribed = inc.unsubscribed_at or (stamp if stopped else None)
        created_db = stamp_db if created is stamp else time(created)
        fields = json.dumps(inc.fields, ensure_ascii=False) if inc.fields else "{}"
        confirmed_db = created_db if confirmed is created else time(confirmed)
        if inc.name is None and unsubscribed is None and not stopped:
            short_rows.append(
                (
                    sid,
                    inc.email,
                    inc.key,
                    inc.first_name,
                    inc.last_name,
                    status,
                    fields,
                    inc.source or source_name,
                    created_db,
                    stamp_db,
                    confirmed_db,
                    run_id,
                )
            )
        else:
            rows.append(
                (
                    sid,
                    inc.email,
                    inc.key,
                    inc.name,
                    inc.first_name,
                    inc.last_name,
                    status,
                    fields,
                    inc.source or source_name,
                    created_db,
                    stamp_db,
                    confirmed_db,
                    stamp_db if unsubscribed is stamp else time(unsubscribed),
                    inc.reason if stopped else None,
                    run_id,
                )
            )
        for tag in inc.tags:
            tag_rows.append((sid, tag))
        added.append(inc.key)
    result.new += len(fresh)
    if policy is not None:
        result.without_evidence += len(fresh) - proven
    if not result.dry_run:
        writer.insert(rows, tag_rows, short_rows, plain)
        tally.finish()
        if policy is not None:
            # (the others point at the run's record)
            record_imported(writer.conn, with_evidence)


def _update_existing(
    conn: Connection,
    writer: BulkWriter,
    chunk: dict[str, Incoming],
    current: dict[str, dict[str, Any]],
    result: ImportResult,
    new_keys: KeyFilter,
    resubscribe: bool,
    stamp: datetime,
    consent_of: tuple[ImportConsent, str] | None = None,
) -> None:
    """Merge the chunk into the people already on the list. `consent_of` (the run's consent
    policy and source): a person `--resubscribe` brings back gets an `import` consent record
    of it, so the renewed consent the author vouches for leaves a trace."""
    updates: list[tuple[int, dict[str, Any]]] = []
    more: list[tuple[int, str]] = []
    renewed: list[dict[str, Any]] = []
    for key, record in current.items():
        item = chunk[key]
        if type(item) is tuple and not resubscribe:
            values, more_tags, kept_stop = packed_changes(record, item)
        else:
            values, more_tags, kept_stop = changes(record, as_incoming(item), resubscribe, stamp)
        # An address this run added earlier (a duplicate further down the file).
        repeat = key in new_keys
        if repeat:
            result.duplicates += 1
        elif values or more_tags:
            result.updated += 1
        else:
            result.unchanged += 1
        if kept_stop and not repeat:
            result.kept_stopped += 1
        if result.dry_run or not (values or more_tags):
            continue
        values["updated_at"] = stamp
        updates.append((record["id"], values))
        more.extend((record["id"], tag) for tag in sorted(more_tags))
        if consent_of is not None and record["status"] in STOPPED and "status" in values:
            policy, source = consent_of
            renewed.append(
                consent_values(
                    record["id"],
                    IMPORT,
                    occurred_at=stamp,
                    source=source,
                    details={**policy.details(), "resubscribed_from": record["status"]},
                )
            )
    # The batch's changes at once (the writer makes them set-based where it can).
    writer.update_many(updates)
    if more:
        writer.insert([], more)
    record_imported(conn, renewed)
