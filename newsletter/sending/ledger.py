"""The per-recipient send ledger (`deliveries`) and the per-issue send lease.

The rules that make a send crash-safe:
- A batch's rows are committed as `in_flight` BEFORE its request goes out, then become
  `accepted` (with the X-Message-Id), `failed` (SendGrid said no) or `uncertain` (the answer
  was lost). UNIQUE(issue_id, subscriber_id, send_round) means a person can never get a
  second row for the same copy: one first copy, and at most one per resend kind.
- Only the process holding the issue's lease sends it. A lease whose process is gone (same host
  and pid dead, or no heartbeat for LEASE_STALE_SECONDS) may be taken over; its leftover
  `in_flight` rows then become `uncertain`, because nobody knows whether SendGrid took them.
- A run of due work (a sequence run) holds the same kind of lease, one row per send it makes
  and no issue (`RunLease`), so runs may go side by side; the next run reaps a dead one's
  sends the same way (`Ledger.reap_gone_runs`).
- Writes others need in their own transaction are offered on the caller's connection
  (`claim_on`, `create_send_on`, ...; event ingest's `apply_event_states`): the SQL stays here.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from newsletter.errors import SendCancelled, SendError
from newsletter.sending.transports import outcome_runs
from newsletter.store.issues import ensure_issue, find_issue_id  # noqa: F401  (moved there)
from newsletter.store.raw import binder, execute_in, marks, placeholder
from newsletter.store.schema import (
    FIRST_ROUND,
    DeliveryState,
    SubscriberStatus,
    deliveries,
    issues,
    send_leases,
    send_totals,
    sends,
    subscribers,
)
from newsletter.store.times import as_utc

LEASE_STALE_SECONDS = 120
HEARTBEAT_SECONDS = 10
#: States a plain `--resume` sends to again (SendGrid refused them; nothing went out).
RETRYABLE = (DeliveryState.FAILED,)


def now() -> datetime:
    return datetime.now(UTC)


# --- the lease ------------------------------------------------------------------------------


def process_alive(pid: int) -> bool:
    """Is a process with this id running on this machine?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_gone(heartbeat_at: datetime | None, holder_host: str, holder_pid: int) -> bool:
    """Is the process behind a lease (or a sequence run) gone? No heartbeat for
    LEASE_STALE_SECONDS (another host's pid cannot be checked), or the same host and its pid
    dead. This process is never gone to itself."""
    heartbeat = as_utc(heartbeat_at)
    if heartbeat is None or now() - heartbeat > timedelta(seconds=LEASE_STALE_SECONDS):
        return True
    if holder_host != socket.gethostname() or holder_pid == os.getpid():
        return False
    return not process_alive(holder_pid)


class Heartbeat:
    """A daemon thread that runs `beat` (one small UPDATE in its own transaction) every
    HEARTBEAT_SECONDS until `stop()`: what keeps a lease, or a sequence run, from looking
    gone while its process works."""

    def __init__(
        self, engine: Engine, beat: Callable[[Connection], Any], name: str = "send-heartbeat"
    ) -> None:
        self.engine = engine
        self.beat = beat
        self.interval: float = HEARTBEAT_SECONDS
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self, interval: float = HEARTBEAT_SECONDS) -> Heartbeat:
        self.interval = interval
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.engine.begin() as conn:
                    self.beat(conn)
            except SQLAlchemyError:
                # A dropped connection or a busy database: beat again next time rather
                # than die silently and let the lease go stale mid-send.
                continue

    def stop(self) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)


@dataclass
class Lease:
    """This process's right to send an issue; keeps itself alive with a heartbeat thread."""

    engine: Engine
    issue_id: int
    send_id: int
    owner: str
    taken_over_send: int | None = None  # the dead sender's send id, if any
    _heartbeat: Heartbeat | None = None

    def start_heartbeat(self, interval: float = HEARTBEAT_SECONDS) -> None:
        def beat(conn: Connection) -> None:
            conn.execute(
                update(send_leases)
                .where(send_leases.c.owner == self.owner)
                .values(heartbeat_at=now())
            )

        self._heartbeat = Heartbeat(self.engine, beat, "send-lease-heartbeat").start(interval)

    @property
    def _thread(self) -> threading.Thread | None:
        """The heartbeat's thread (a test checks it outlives a dropped connection)."""
        return self._heartbeat.thread if self._heartbeat is not None else None

    def release(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
        with self.engine.begin() as conn:
            conn.execute(delete(send_leases).where(send_leases.c.owner == self.owner))


class RunLease:
    """The lease of a run of due work (a sequence run): a `send_leases` row without an issue
    for each send the run makes (one per sequence step it sends), all with this run's owner,
    with the same heartbeat and the same rule for "gone" as a send of an issue. Runs may go
    side by side (each claims other people). A run whose process died is reaped by the next
    (`Ledger.reap_gone_runs`): its in-flight rows become uncertain."""

    def __init__(self, engine: Engine, source: str, clock: Callable[[], datetime] = now) -> None:
        self.engine = engine
        self.source = source
        self.clock = clock  # (the run's own clock, for its sends' times; liveness is `now`)
        self.owner = uuid.uuid4().hex
        self.sends: dict[int, int] = {}  # issue id -> this run's send of it
        self._heartbeat = Heartbeat(engine, self.touch, f"{source}-heartbeat").start()

    def touch(self, conn: Connection) -> None:
        """A heartbeat, on the caller's connection: a claim's first statement, so that on
        SQLite it takes the write lock before the claim reads."""
        conn.execute(
            update(send_leases).where(send_leases.c.owner == self.owner).values(heartbeat_at=now())
        )

    def send_for(self, conn: Connection, issue_id: int, transport: str) -> int:
        """This run's send of `issue_id` and its lease row, made on its first claim (in the
        claim's transaction)."""
        if issue_id not in self.sends:
            send_id = create_send_on(conn, issue_id, transport=transport, started_at=self.clock())
            conn.execute(
                insert(send_leases).values(
                    send_id=send_id,
                    issue_id=None,
                    owner=self.owner,
                    source=self.source,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    heartbeat_at=now(),
                )
            )
            self.sends[issue_id] = send_id
        return self.sends[issue_id]

    def finish(self, error: str | None) -> None:
        """The run's end: its sends are done (or stopped, with `error`), the lease let go."""
        self._heartbeat.stop()
        with self.engine.begin() as conn:
            status = "stopped" if error else "done"
            finish_sends_on(conn, list(self.sends.values()), status, error, self.clock())
            conn.execute(delete(send_leases).where(send_leases.c.owner == self.owner))


#: Per SQLite database, this process's writer of the sender threads' claims and answers.
_sqlite_writers: weakref.WeakKeyDictionary[Engine, _GroupWriter] = weakref.WeakKeyDictionary()
_writers_made = threading.Lock()


@dataclass
class _Write:
    """One thread's claim or answers, waiting for a `_GroupWriter` to run and commit it."""

    work: Callable[[Connection], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class _GroupWriter:
    """The sender threads' claims and answers on one SQLite database, several in one
    transaction. SQLite lets one writer in at a time, so the threads take turns on a lock
    (a thread that found the database locked slept and polled, 1, 2, 5, 10 ms ...); whoever
    gets it runs every write queued meanwhile, its own among them, and commits once (group
    commit): each thread still returns only once its write is committed, so a claim is in
    the database before its request goes out, and answers before they are counted. A write
    that fails (a lost lease, a cancel, a unique-key clash) rolls the group back; each write
    is then run again in a transaction of its own, so the others are kept and the failing
    one raises as it would alone. Other processes still meet SQLite's own lock."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.turn = threading.Lock()  # held by the thread that writes for the group
        self.queued: list[_Write] = []
        self.queue_lock = threading.Lock()
        #: Sending loops running (`session`), and their connection (see `_transaction`).
        self.sessions = 0
        self.conn: Connection | None = None

    @contextmanager
    def session(self) -> Iterator[None]:
        """Within (a sending loop): the writes go through one connection of their own,
        opened at the first and given back to the pool when the last loop ends."""
        with self.turn:
            self.sessions += 1
        try:
            yield
        finally:
            with self.turn:
                self.sessions -= 1
                if not self.sessions:
                    self._let_go()

    def _let_go(self) -> None:
        """The session's connection back to the pool, with its foreign keys on again."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            _driver(conn).execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.invalidate()  # (closed, not pooled: a new one gets the engine's pragmas)
            raise
        finally:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A transaction for a group. In a session, on the session's connection with
        SQLite's foreign-key lookups off: each row a claim writes points at this send, its
        issue (neither is ever deleted) and a subscriber the same statement has just read
        holding the write lock, and the answers change no key, so looking three parents up
        for every new row was a quarter of a claim's time (0.05 of 0.2 CPU s per 100,000
        readers). The setting cannot change inside a transaction, and each change makes
        SQLite prepare its statements anew, so it stays off on that connection for the
        session (which nothing else uses) and is set back before the pool gets it again."""
        if not self.sessions:
            with self.engine.begin() as conn:
                yield conn
            return
        if self.conn is None:
            conn = self.engine.connect()
            try:
                _driver(conn).execute("PRAGMA foreign_keys = OFF")
            except BaseException:
                conn.close()
                raise
            self.conn = conn
        try:
            with self.conn.begin():
                yield self.conn
        except BaseException:
            if self.conn.invalidated:  # (a dropped connection: the next group opens another)
                self.conn.close()
                self.conn = None
            raise

    def run(self, work: Callable[[Connection], Any]) -> Any:
        mine = _Write(work)
        with self.queue_lock:
            self.queued.append(mine)
        with self.turn:
            if not mine.done:  # (else the thread before this one wrote it)
                with self.queue_lock:
                    group, self.queued = self.queued, []
                try:
                    self._commit(group)
                except BaseException as exc:  # (Ctrl-C midway) what was not settled is lost
                    for write in group:
                        if not write.done:
                            write.error, write.done = exc, True
                    raise
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _commit(self, group: list[_Write]) -> None:
        if len(group) > 1:
            try:
                with self._transaction() as conn:
                    results = [write.work(conn) for write in group]
            except Exception:  # (rolled back) each alone below, to raise only its own error
                pass
            else:
                for write, result in zip(group, results, strict=True):
                    write.result, write.done = result, True
                return
        for write in group:
            try:
                with self._transaction() as conn:
                    write.result = write.work(conn)
            except BaseException as exc:
                write.error = exc
                if not isinstance(exc, Exception):
                    raise
            finally:
                write.done = True


def _driver(conn: Connection) -> Any:
    """The driver's own connection under `conn` (a PRAGMA through SQLAlchemy would begin
    SQLAlchemy's transaction first)."""
    return conn.connection.driver_connection


def _writer(engine: Engine) -> _GroupWriter:
    """This process's `_GroupWriter` of a SQLite database."""
    with _writers_made:
        writer = _sqlite_writers.get(engine)
        if writer is None:
            writer = _sqlite_writers[engine] = _GroupWriter(engine)
    return writer


def _writing(engine: Engine, work: Callable[[Connection], Any]) -> Any:
    """`work(conn)` in a transaction, committed when this returns: a batch's claim or its
    answers. On SQLite through the database's `_GroupWriter` (one commit for the writes of
    several sender threads); on PostgreSQL, which lets writers in side by side, in a
    transaction of its own."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            return work(conn)
    return _writer(engine).run(work)


def _stale(row: Any) -> bool:
    """A lease row whose holder is gone (see `holder_gone`)."""
    return holder_gone(row.heartbeat_at, row.host, row.pid)


def _bound_time(conn: Any, stamp: datetime) -> Any:
    """`stamp` as SQLAlchemy would bind it to `deliveries.updated_at` on this database."""
    return binder(conn, deliveries.c.updated_at)(stamp)


def _state_counts(outcomes: Sequence[Any]) -> dict[str, int]:
    """How many outcomes end in each state."""
    counts: dict[str, int] = {}
    for outcome, times in outcome_runs(outcomes):
        counts[outcome.state] = counts.get(outcome.state, 0) + times
    return counts


def _add_to_totals(conn: Any, send_id: int, counts: dict[str, int]) -> None:
    """Add `_state_counts` to the send's totals (every state but accepted and failed is
    uncertain)."""
    accepted = counts.get(DeliveryState.ACCEPTED, 0)
    failed = counts.get(DeliveryState.FAILED, 0)
    uncertain = sum(counts.values()) - accepted - failed
    # Plain driver SQL: once per batch, where SQLAlchemy's building and compiling of the
    # statement cost five times the database's work.
    mark = placeholder(conn)
    conn.exec_driver_sql(
        f"UPDATE send_totals SET accepted = accepted + {mark}, failed = failed + {mark}, "
        f"uncertain = uncertain + {mark}, updated_at = {mark} WHERE send_id = {mark}",
        (accepted, failed, uncertain, binder(conn, send_totals.c.updated_at)(now()), send_id),
    )


def _record(
    conn: Any,
    issue_id: int,
    ids: Sequence[int],
    state: str,
    message_id: str | None,
    error: str | None,
    send_id: int | None,
) -> None:
    """A batch's outcome onto its rows. Only rows still in flight take the state and error:
    an event (delivered, bounced, dropped) may have arrived before the provider's answer was
    settled, and a takeover may have made them uncertain; both say more than "accepted".
    With `send_id`: rows a later send has claimed since (after a takeover) are not ours;
    `send_id + 0` keeps that test out of index choice (on `send_id` alone SQLite would walk
    every row of the send for each batch, quadratic in the list, not the unique
    (issue_id, subscriber_id) index)."""
    if not ids:
        return
    mark = placeholder(conn)
    flying = str(DeliveryState.IN_FLIGHT)
    mine = f" AND send_id + 0 = {mark}" if send_id is not None else ""
    conn.exec_driver_sql(
        f"UPDATE deliveries SET "
        f"state = CASE WHEN state = {mark} THEN {mark} ELSE state END, "
        f"error = CASE WHEN state = {mark} THEN {mark} ELSE error END, "
        f"message_id = {mark}, updated_at = {mark} "
        f"WHERE issue_id = {mark} AND subscriber_id IN ({', '.join([mark] * len(ids))}){mine}",
        (
            flying,
            str(state),
            flying,
            error,
            message_id,
            _bound_time(conn, now()),
            issue_id,
            *ids,
            *([send_id] if send_id is not None else []),
        ),
    )


#: The ledger states a provider's event (delivered, bounced, dropped) may replace.
EVENT_REPLACEABLE = {
    "delivered": ("pending", "in_flight", "accepted", "uncertain", "failed"),
    "bounced": ("pending", "in_flight", "accepted", "uncertain", "failed", "delivered"),
    "dropped": ("pending", "in_flight", "accepted", "uncertain", "failed"),
}


def apply_event_states(
    conn: Connection, state: str, pairs: set[tuple[int, int]], now: datetime
) -> None:
    """Event ingest: (issue id, subscriber id) rows move to `state` unless they hold a state
    it may not replace (see `EVENT_REPLACEABLE`). On the caller's connection, in its
    transaction; plain driver SQL, one statement per issue and chunk of ids."""
    by_issue: dict[int, list[int]] = {}
    for issue_id, subscriber_id in pairs:
        by_issue.setdefault(issue_id, []).append(subscriber_id)
    replaceable = EVENT_REPLACEABLE[state]
    mark = placeholder(conn)
    sql = (
        f"UPDATE deliveries SET state = {mark}, updated_at = {mark} "
        f"WHERE issue_id = {mark} AND subscriber_id IN ({{}}) "
        f"AND state IN ({marks(conn, len(replaceable))})"
    )
    bound_now = _bound_time(conn, now)
    for issue_id, subscriber_ids in sorted(by_issue.items()):
        execute_in(
            conn,
            sql,
            sorted(subscriber_ids),
            before=(state, bound_now, issue_id),
            after=replaceable,
        )


def claim_on(
    conn: Connection,
    issue_id: int,
    send_id: int,
    batch_no: int,
    new_ids: Sequence[int],
    again_ids: Sequence[int],
    stamp: datetime,
    slug: str = "the issue",
    send_round: str = FIRST_ROUND,
) -> set[int]:
    """The claim itself, on the caller's connection and in its transaction (`Ledger.claim`
    adds the lease and cancel checks; a sequence run adds the move of each reader to their
    next step, under its row lock). Returns the ids claimed: those still subscribed.
    `new_ids` get new `in_flight` rows; `again_ids` (failed before, or uncertain on request)
    are moved to this send. A unique-key clash means someone else recorded the person: stop."""
    mark = placeholder(conn)
    subscribed = str(SubscriberStatus.SUBSCRIBED)
    kept: set[int] = set()
    if new_ids:
        # One statement checks who is still subscribed and records them.
        when = _bound_time(conn, stamp)
        flying = str(DeliveryState.IN_FLIGHT)
        listed = ", ".join([mark] * len(new_ids))
        try:
            # (No savepoint: a clash ends the whole transaction, rolled back below.)
            inserted = conn.exec_driver_sql(
                "INSERT INTO deliveries (issue_id, subscriber_id, send_id, state, "
                f"batch_no, updated_at, send_round) SELECT {mark}, id, {mark}, {mark}, {mark}, "
                f"{mark}, {mark} FROM subscribers WHERE status = {mark} AND id IN ({listed})",
                (issue_id, send_id, flying, batch_no, when, send_round, subscribed, *new_ids),
            ).rowcount
        except IntegrityError:
            raise SendError(
                f"another send of {slug} recorded some of this batch's recipients first; "
                f"this one stops, see `newsletter sends {slug}`"
            ) from None
        if inserted == len(new_ids):
            kept.update(new_ids)
        else:  # some left since they were read: ours are the rows this batch made
            kept.update(
                row[0]
                for row in conn.exec_driver_sql(
                    f"SELECT subscriber_id FROM deliveries WHERE issue_id = {mark} AND "
                    f"subscriber_id IN ({listed}) AND send_id + 0 = {mark} AND "
                    f"batch_no + 0 = {mark}",
                    (issue_id, *new_ids, send_id, batch_no),
                )
            )
    if again_ids:
        kept.update(
            row[0]
            for row in conn.exec_driver_sql(
                f"SELECT id FROM subscribers WHERE status = {mark} AND id IN "
                f"({', '.join([mark] * len(again_ids))})",
                (subscribed, *again_ids),
            )
        )
        again_ids = [sid for sid in again_ids if sid in kept]
    if again_ids:
        conn.execute(
            update(deliveries)
            .where(
                deliveries.c.issue_id == issue_id,
                deliveries.c.subscriber_id.in_(list(again_ids)),
                deliveries.c.send_round == send_round,
            )
            .values(
                state=DeliveryState.IN_FLIGHT,
                send_id=send_id,
                batch_no=batch_no,
                error=None,
                message_id=None,
                updated_at=stamp,
            )
        )
    return kept


def create_send_on(
    conn: Connection,
    issue_id: int,
    *,
    transport: str,
    segment: Sequence[str] = (),
    dry_run: bool = False,
    status: str = "sending",
    batch_id: str | None = None,
    send_at: datetime | None = None,
    up_to_subscriber: int | None = None,
    started_at: datetime | None = None,
    resend: str | None = None,
    subject: str | None = None,
    track_opens: bool | None = None,
) -> int:
    """A new `sends` row on the caller's connection (a sequence run makes one per step on its
    first claim of it); its id."""
    result = conn.execute(
        insert(sends).values(
            issue_id=issue_id,
            status=status,
            transport=transport,
            segment=list(segment),
            dry_run=dry_run,
            batch_id=batch_id,
            send_at=send_at,
            up_to_subscriber=up_to_subscriber,
            resend=resend,
            subject=subject,
            track_opens=track_opens,
            started_at=started_at or now(),
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def finish_sends_on(
    conn: Connection, send_ids: Sequence[int], status: str, error: str | None, at: datetime
) -> None:
    """Several sends end at once (a sequence run's, one per step it sent)."""
    if send_ids:
        conn.execute(
            update(sends)
            .where(sends.c.id.in_(list(send_ids)))
            .values(status=status, error=error, finished_at=at)
        )


def reap_sends_on(
    conn: Connection, send_ids: Any, *, row_error: str, send_error: str, at: datetime
) -> int:
    """The sends of a process that is gone (`send_ids`: ids, or a subquery of them): their
    in-flight rows become `uncertain` (nobody knows whether the transport took them), the
    sends still `sending` are `stopped`. How many rows became uncertain."""
    reaped = conn.execute(
        update(deliveries)
        .where(deliveries.c.send_id.in_(send_ids), deliveries.c.state == DeliveryState.IN_FLIGHT)
        .values(state=DeliveryState.UNCERTAIN, error=row_error, updated_at=at)
    ).rowcount
    conn.execute(
        update(sends)
        .where(sends.c.id.in_(send_ids), sends.c.status == "sending")
        .values(status="stopped", error=send_error, finished_at=at)
    )
    return int(reaped or 0)


def uncertain_to_failed_on(
    conn: Connection,
    issue_ids: Sequence[int],
    subscriber_ids: Sequence[int],
    *,
    error: str,
    at: datetime,
) -> None:
    """Uncertain rows to send again on purpose (`--include-uncertain`): `failed`, i.e. known
    not sent, so the next claim takes them again. Chunked: SQLite's limit on bound values."""
    for start in range(0, len(subscriber_ids), 900):
        conn.execute(
            update(deliveries)
            .where(
                deliveries.c.issue_id.in_(list(issue_ids)),
                deliveries.c.subscriber_id.in_(list(subscriber_ids[start : start + 900])),
                deliveries.c.state == DeliveryState.UNCERTAIN,
            )
            .values(state=DeliveryState.FAILED, error=error, updated_at=at)
        )


class Ledger:
    """Owns `sends`, `send_totals`, `send_leases` and `deliveries`: every read and write of them
    goes through here. `Ledger(engine)`; cheap to create."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def writing(self) -> AbstractContextManager[None]:
        """Within (a sending loop): on SQLite, this process's claims and answers go through
        a connection of their own that skips the foreign-key lookups (see
        `_GroupWriter._transaction`); nothing changes on PostgreSQL."""
        if self.engine.dialect.name != "sqlite":
            return nullcontext()
        return _writer(self.engine).session()

    def create_send(
        self,
        issue_id: int,
        *,
        also: Callable[[Connection, int], None] | None = None,
        **fields: Any,
    ) -> int:
        """A new `sends` row (`fields` as `create_send_on` takes them); its id.
        `also(conn, send_id)` runs in the same transaction, for what other owners keep about
        the send (the segment it went to)."""
        with self.engine.begin() as conn:
            send_id = create_send_on(conn, issue_id, **fields)
            if also is not None:
                also(conn, send_id)
            return send_id

    def finish_send(self, send_id: int, status: str, error: str | None = None) -> None:
        """The send's end. A cancelled send stays cancelled: its sender, stopped by `cancel`,
        may come to say how it ended after `cancel` has finished."""
        with self.engine.begin() as conn:
            conn.execute(
                update(sends)
                .where(sends.c.id == send_id, sends.c.status != "cancelled")
                .values(status=status, error=error, finished_at=now())
            )

    def discard_send(self, send_id: int) -> None:
        """A send that never began (another send of the issue took the lease first): its
        row goes, with its totals and segment record (ON DELETE CASCADE), so `sends` lists
        only what ran; the refusal is the command's one line."""
        with self.engine.begin() as conn:
            conn.execute(
                delete(sends).where(
                    sends.c.id == send_id,
                    ~exists().where(deliveries.c.send_id == send_id),  # (never claimed)
                )
            )

    def request_cancel(self, send_ids: Sequence[int]) -> None:
        """Ask the sends' senders to stop: `claim` refuses every further batch of them."""
        with self.engine.begin() as conn:
            conn.execute(
                update(sends)
                .where(sends.c.id.in_(list(send_ids)), sends.c.cancel_requested_at.is_(None))
                .values(cancel_requested_at=now())
            )

    def start_totals(self, send_id: int, recipients: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(send_totals).values(send_id=send_id, recipients=recipients, updated_at=now())
            )

    def count_outcomes(self, send_id: int, outcomes: Sequence[Any]) -> None:
        """Add outcomes to the send's totals (a send without ledger rows: the outbox, a dry
        run)."""
        with self.engine.begin() as conn:
            _add_to_totals(conn, send_id, _state_counts(outcomes))

    def totals(self) -> dict[int, Any]:
        with self.engine.connect() as conn:
            return {r.send_id: r for r in conn.execute(select(send_totals))}

    def acquire_lease(self, issue_id: int, send_id: int, slug: str) -> Lease:
        """Take the issue's lease, or raise if a live process holds it."""
        host, pid, owner = socket.gethostname(), os.getpid(), uuid.uuid4().hex
        values = {
            "send_id": send_id,
            "owner": owner,
            "host": host,
            "pid": pid,
            "heartbeat_at": now(),
        }
        for _ in range(5):
            with self.engine.begin() as conn:
                row = conn.execute(
                    select(send_leases).where(send_leases.c.issue_id == issue_id)
                ).first()
                if row is None:
                    try:
                        with conn.begin_nested():
                            conn.execute(insert(send_leases).values(issue_id=issue_id, **values))
                        return Lease(self.engine, issue_id, send_id, owner)
                    except IntegrityError:
                        continue  # someone else just took it: look again
                if not _stale(row):
                    seen = int((now() - as_utc(row.heartbeat_at)).total_seconds())  # type: ignore[operator]
                    raise SendError(
                        f"another send of {slug} is running (send {row.send_id}, pid {row.pid} on "
                        f"{row.host}, last heartbeat {seen}s ago); wait for it to finish, or check "
                        f"`newsletter sends {slug}`"
                    )
                # Compare-and-swap on the old owner: of two resumers, exactly one wins.
                result = conn.execute(
                    update(send_leases)
                    .where(send_leases.c.issue_id == issue_id, send_leases.c.owner == row.owner)
                    .values(**values)
                )
                if result.rowcount == 1:
                    conn.execute(
                        update(sends)
                        .where(sends.c.id == row.send_id, sends.c.status == "sending")
                        .values(
                            status="stopped", error="the sending process died", finished_at=now()
                        )
                    )
                    return Lease(self.engine, issue_id, send_id, owner, taken_over_send=row.send_id)
        raise SendError(f"could not take the send lease of {slug}; try again")

    def running(self, issue_id: int) -> Any:
        """The lease row of a live sender of this issue (host, pid, send_id), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(send_leases).where(send_leases.c.issue_id == issue_id)
            ).first()
        if row is None or _stale(row):
            return None
        return row

    def live_sends(self) -> set[int]:
        """Ids of sends whose process still holds its lease (alive, heartbeat fresh)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(send_leases)).all()
        return {r.send_id for r in rows if not _stale(r)}

    def run_sends_unfinished(self) -> set[int]:
        """Sends of runs of due work (sequence runs) still `sending`, alive or not: `sends`
        must not call them dead and suggest `send --resume`; the next run reaps a dead one."""
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    select(sends.c.id)
                    .join(send_leases, send_leases.c.send_id == sends.c.id)
                    .where(send_leases.c.issue_id.is_(None), sends.c.status == "sending")
                ).scalars()
            )

    def start_run(self, source: str, clock: Callable[[], datetime] = now) -> RunLease:
        """A lease for a run of due work (see `RunLease`)."""
        return RunLease(self.engine, source, clock)

    def reap_gone_runs(self, source: str, at: datetime, *, row_error: str, send_error: str) -> int:
        """The leases of runs of `source` whose process is gone (see `holder_gone`): their
        in-flight rows become `uncertain`, their sends `stopped`, the lease rows go. How
        many rows became uncertain. Of two reapers, one reaps each run."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(send_leases).where(
                    send_leases.c.issue_id.is_(None), send_leases.c.source == source
                )
            ).all()
        runs: dict[str, list[Any]] = {}
        for row in rows:
            runs.setdefault(row.owner, []).append(row)
        reaped = 0
        for owner, held in runs.items():
            if not _stale(held[0]):
                continue
            send_ids = [row.send_id for row in held]
            with self.engine.begin() as conn:
                # Compare-and-delete on the heartbeat read: a second reaper, or a run that
                # beat meanwhile (alive after all), deletes nothing.
                taken = conn.execute(
                    delete(send_leases).where(
                        send_leases.c.owner == owner,
                        send_leases.c.send_id.in_(send_ids),
                        send_leases.c.heartbeat_at == held[0].heartbeat_at,
                    )
                ).rowcount
                if not taken:
                    continue
                reaped += reap_sends_on(
                    conn, send_ids, row_error=row_error, send_error=send_error, at=at
                )
        return reaped

    def in_flight_to_uncertain(self, issue_id: int) -> int:
        """After taking over from a dead sender: its in-flight rows may or may not have gone out."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.issue_id == issue_id, deliveries.c.state == DeliveryState.IN_FLIGHT
                )
                .values(
                    state=DeliveryState.UNCERTAIN,
                    error="the sending process stopped while this request was in flight",
                    updated_at=now(),
                )
            )
            return int(result.rowcount or 0)

    def has_rows(self, issue_id: int, send_round: str | None = None) -> bool:
        """Does the issue have ledger rows (of this round)?"""
        query = select(deliveries.c.id).where(deliveries.c.issue_id == issue_id)
        if send_round is not None:
            query = query.where(deliveries.c.send_round == send_round)
        with self.engine.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def claim(
        self,
        issue_id: int,
        send_id: int,
        batch_no: int,
        new_ids: Sequence[int],
        again_ids: Sequence[int],
        *,
        owner: str | None = None,
        slug: str = "the issue",
        send_round: str = FIRST_ROUND,
    ) -> set[int]:
        """Record a batch as in flight, in one transaction, before its request goes out.
        Returns the ids claimed: those still subscribed (people read ahead of their batch may
        have unsubscribed or been forgotten since; they get no row and no mail).

        `new_ids` get new rows; `again_ids` (failed, or uncertain on --include-uncertain) are moved
        to this send. With `owner`, the lease is checked (and its row locked) in the same
        transaction: a sender that stalled and was taken over must not send alongside the new
        owner. A unique-key clash means someone else recorded the person: stop.
        `send_round`: the copy the rows are about (a resend's kind; see `deliveries`)."""
        stamp = now()

        def claim(conn: Connection) -> set[int]:
            # Plain driver SQL on the per-batch path: SQLAlchemy's compiling of a 1000-item IN
            # and its per-row parameter processing cost more than the database work.
            mark = placeholder(conn)
            if owner is not None:
                held = conn.exec_driver_sql(
                    f"UPDATE send_leases SET heartbeat_at = {mark} "
                    f"WHERE issue_id = {mark} AND owner = {mark}",
                    (binder(conn, send_leases.c.heartbeat_at)(stamp), issue_id, owner),
                )
                if held.rowcount != 1:
                    raise SendError(
                        f"another process took over the send of {slug} (this one stalled for over "
                        f"{LEASE_STALE_SECONDS}s); this one stops, see `newsletter sends {slug}`"
                    )
            # In the same transaction as the claim: once `cancel` has asked, no batch of this
            # send goes out (one that was claimed before is settled; `cancel` waits for it).
            if conn.exec_driver_sql(
                f"SELECT 1 FROM sends WHERE id = {mark} AND "
                f"(cancel_requested_at IS NOT NULL OR status = {mark})",
                (send_id, "cancelled"),
            ).first():
                raise SendCancelled(
                    f"send {send_id} of {slug} was cancelled (`newsletter cancel`); nothing more "
                    f"goes out, see `newsletter sends {slug}`"
                )
            return claim_on(
                conn, issue_id, send_id, batch_no, new_ids, again_ids, stamp, slug, send_round
            )

        return cast("set[int]", _writing(self.engine, claim))

    def record(
        self,
        issue_id: int,
        ids: Sequence[int],
        state: str,
        *,
        message_id: str | None = None,
        error: str | None = None,
        send_id: int | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            _record(conn, issue_id, ids, state, message_id, error, send_id)

    def record_outcomes(
        self,
        issue_id: int,
        send_id: int,
        ids: Sequence[int],
        outcomes: Sequence[Any],
        *,
        count: bool = False,
    ) -> None:
        """One outcome per id, all in one transaction: a SendGrid batch (one answer for all)
        is one UPDATE; per-recipient answers (SMTP: a Message-ID each) one executemany.
        With `count`, they are added to the send's totals in the same transaction, so what
        `sends` and `stats` count agrees with the rows, whenever the sender stops."""
        if len(ids) != len(outcomes):
            raise ValueError("one outcome per id")
        groups: dict[tuple[str, str | None, str | None], list[int]] = {}
        start = 0
        for outcome, times in outcome_runs(outcomes):  # (a SendGrid batch: one run)
            key = (outcome.state, outcome.message_id, outcome.error)
            groups.setdefault(key, []).extend(ids[start : start + times])
            start += times

        def record(conn: Connection) -> None:
            if count:
                counts: dict[str, int] = {}
                for (state, _, _), group in groups.items():
                    counts[state] = counts.get(state, 0) + len(group)
                _add_to_totals(conn, send_id, counts)
            if len(groups) <= 2:
                for (state, message_id, error), group in groups.items():
                    _record(conn, issue_id, group, state, message_id, error, send_id)
                return
            pending = deliveries.c.state == DeliveryState.IN_FLIGHT
            conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.issue_id == issue_id,
                    deliveries.c.subscriber_id == bindparam("sid"),
                    deliveries.c.send_id + 0 == send_id,
                )
                .values(
                    state=case((pending, bindparam("new_state")), else_=deliveries.c.state),
                    error=case((pending, bindparam("new_error")), else_=deliveries.c.error),
                    message_id=bindparam("new_message_id"),
                    updated_at=now(),
                ),
                [
                    {
                        "sid": sid,
                        "new_state": str(outcome.state),
                        "new_error": outcome.error,
                        "new_message_id": outcome.message_id,
                    }
                    for sid, outcome in zip(ids, outcomes, strict=True)
                ],
            )

        _writing(self.engine, record)

    def remove_send_rows(self, send_id: int) -> int:
        """A cancelled scheduled send: its people never got the issue, so a later send may go."""
        with self.engine.begin() as conn:
            result = conn.execute(delete(deliveries).where(deliveries.c.send_id == send_id))
            return int(result.rowcount or 0)

    def counts_by_state(self, *, issue_id: int | None = None) -> dict[int, dict[str, int]]:
        """send id -> state -> rows, for `sends`."""
        query = select(deliveries.c.send_id, deliveries.c.state, func.count()).group_by(
            deliveries.c.send_id, deliveries.c.state
        )
        if issue_id is not None:
            query = query.where(deliveries.c.issue_id == issue_id)
        result: dict[int, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for send_id, state, n in conn.execute(query):
                result.setdefault(send_id, {})[state] = n
        return result

    def issue_counts(self, issue_id: int, send_round: str | None = None) -> dict[str, int]:
        """state -> rows of the issue (of this round)."""
        query = select(deliveries.c.state, func.count()).where(deliveries.c.issue_id == issue_id)
        if send_round is not None:
            query = query.where(deliveries.c.send_round == send_round)
        with self.engine.connect() as conn:
            rows = conn.execute(query.group_by(deliveries.c.state)).all()
        return {state: n for state, n in rows}

    def list_sends(self, issue_id: int | None = None) -> list[Any]:
        query = (
            select(sends, issues.c.slug)
            .join(issues, issues.c.id == sends.c.issue_id)
            .order_by(sends.c.id)
        )
        if issue_id is not None:
            query = query.where(sends.c.issue_id == issue_id)
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def latest_scheduled(self, issue_id: int) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(
                select(sends)
                .where(sends.c.issue_id == issue_id, sends.c.status == "scheduled")
                .order_by(sends.c.id.desc())
            ).first()

    def iter_deliveries(self, issue_id: int, page_size: int = 1000) -> Iterator[Any]:
        """Every ledger row of an issue with the address, by subscriber id, then row id (a
        reader resent to has a row per round): keyset, streamed."""
        last, last_row = 0, 0
        d = deliveries.c
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(
                        d.subscriber_id,
                        subscribers.c.email,
                        d.state,
                        d.send_id,
                        d.message_id,
                        d.error,
                        d.updated_at,
                        d.send_round,
                        d.id,
                    )
                    .join(subscribers, subscribers.c.id == d.subscriber_id)
                    .where(
                        d.issue_id == issue_id,
                        or_(
                            d.subscriber_id > last,
                            and_(d.subscriber_id == last, d.id > last_row),
                        ),
                    )
                    .order_by(d.subscriber_id, d.id)
                    .limit(page_size)
                ).all()
            if not rows:
                return
            yield from rows
            last, last_row = rows[-1].subscriber_id, rows[-1].id

    # --- erasure (GDPR Art. 17): an error may name the recipient it stopped at ----------

    @staticmethod
    def errors_naming(
        conn: Connection, spellings: Sequence[str], names: Callable[[str], bool]
    ) -> dict[str, list[Any]]:
        """The `sends` and `deliveries` rows whose error names the person (`names(error)`),
        by table, for export-person and erasure. `u42@example.com: cannot reach the SMTP
        server` is a send's error, and the error of every row its batch had left.
        `spellings`: the forms a transport wrote the address in (the stored one), which
        narrow the search of `deliveries` in SQL."""
        found: dict[str, list[Any]] = {}
        error = sends.c.error
        rows = conn.execute(
            select(sends)
            .where(
                or_(error.contains("@", autoescape=True), error.contains("%40", autoescape=True))
            )
            .order_by(sends.c.id)
        ).all()
        if named := [row for row in rows if names(row.error)]:
            found["sends"] = named
        error = deliveries.c.error
        rows = conn.execute(
            select(deliveries)
            .where(or_(*(error.contains(s, autoescape=True) for s in dict.fromkeys(spellings))))
            .order_by(deliveries.c.id)
        ).all()
        if named := [row for row in rows if names(row.error)]:
            found["deliveries"] = named
        return found

    @staticmethod
    def scrub_errors(
        conn: Connection,
        spellings: Sequence[str],
        names: Callable[[str], bool],
        redact: Callable[[str], str],
    ) -> int:
        """Rewrite each error that names the person with `redact(error)`; how many rows."""
        found = Ledger.errors_naming(conn, spellings, names)
        for table, rows in (
            (sends, found.get("sends", [])),
            (deliveries, found.get("deliveries", [])),
        ):
            for row in rows:
                conn.execute(
                    update(table).where(table.c.id == row.id).values(error=redact(row.error))
                )
        return sum(len(rows) for rows in found.values())
