"""The per-recipient send ledger (`deliveries`) and the per-issue send lease.

The rules that make a send crash-safe:
- A batch's rows are committed as `in_flight` BEFORE its request goes out, then become
  `accepted` (with the X-Message-Id), `failed` (SendGrid said no) or `uncertain` (the answer
  was lost). UNIQUE(issue_id, subscriber_id, send_round) means a person can never get a
  second row for the same copy: one first copy, and at most one per resend kind.
- Only the process holding the issue's lease sends it. A lease whose process is gone (same host
  and pid dead, or no heartbeat for LEASE_STALE_SECONDS) may be taken over; its leftover
  `in_flight` rows then become `uncertain`, because nobody knows whether SendGrid took them.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    delete,
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
from newsletter.store.raw import binder, placeholder
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


@dataclass
class Lease:
    """This process's right to send an issue; keeps itself alive with a heartbeat thread."""

    engine: Engine
    issue_id: int
    send_id: int
    owner: str
    taken_over_send: int | None = None  # the dead sender's send id, if any
    _stop: threading.Event | None = None
    _thread: threading.Thread | None = None

    def start_heartbeat(self, interval: float = HEARTBEAT_SECONDS) -> None:
        self._stop = threading.Event()

        def beat() -> None:
            assert self._stop is not None
            while not self._stop.wait(interval):
                try:
                    with self.engine.begin() as conn:
                        conn.execute(
                            update(send_leases)
                            .where(send_leases.c.owner == self.owner)
                            .values(heartbeat_at=now())
                        )
                except SQLAlchemyError:
                    # A dropped connection or a busy database: beat again next time rather
                    # than die silently and let the lease go stale mid-send.
                    continue

        self._thread = threading.Thread(target=beat, name="send-lease-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self.engine.begin() as conn:
            conn.execute(delete(send_leases).where(send_leases.c.owner == self.owner))


def _stale(row: Any, host: str) -> bool:
    heartbeat = as_utc(row.heartbeat_at)
    if heartbeat is None or now() - heartbeat > timedelta(seconds=LEASE_STALE_SECONDS):
        return True
    return row.host == host and not process_alive(row.pid)


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
    t = send_totals.c
    conn.execute(
        update(send_totals)
        .where(t.send_id == send_id)
        .values(
            accepted=t.accepted + accepted,
            failed=t.failed + failed,
            uncertain=t.uncertain + uncertain,
            updated_at=now(),
        )
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


class Ledger:
    """Owns `sends`, `send_totals`, `send_leases` and `deliveries`: every read and write of them
    goes through here. `Ledger(engine)`; cheap to create."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_send(
        self,
        issue_id: int,
        *,
        transport: str,
        segment: Sequence[str],
        dry_run: bool,
        status: str = "sending",
        batch_id: str | None = None,
        send_at: datetime | None = None,
        up_to_subscriber: int | None = None,
        resend: str | None = None,
        subject: str | None = None,
        track_opens: bool | None = None,
    ) -> int:
        with self.engine.begin() as conn:
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
                    started_at=now(),
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def finish_send(self, send_id: int, status: str, error: str | None = None) -> None:
        """The send's end. A cancelled send stays cancelled: its sender, stopped by `cancel`,
        may come to say how it ended after `cancel` has finished."""
        with self.engine.begin() as conn:
            conn.execute(
                update(sends)
                .where(sends.c.id == send_id, sends.c.status != "cancelled")
                .values(status=status, error=error, finished_at=now())
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
                if not _stale(row, host):
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
        if row is None or _stale(row, socket.gethostname()):
            return None
        return row

    def live_sends(self) -> set[int]:
        """Ids of sends whose process still holds its lease (alive, heartbeat fresh)."""
        host = socket.gethostname()
        with self.engine.connect() as conn:
            rows = conn.execute(select(send_leases)).all()
        return {r.send_id for r in rows if not _stale(r, host)}

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
        with self.engine.begin() as conn:
            if owner is not None:
                held = conn.execute(
                    update(send_leases)
                    .where(send_leases.c.issue_id == issue_id, send_leases.c.owner == owner)
                    .values(heartbeat_at=stamp)
                )
                if held.rowcount != 1:
                    raise SendError(
                        f"another process took over the send of {slug} (this one stalled for over "
                        f"{LEASE_STALE_SECONDS}s); this one stops, see `newsletter sends {slug}`"
                    )
            # Plain driver SQL on the per-batch path: SQLAlchemy's compiling of a 1000-item IN
            # and its per-row parameter processing cost more than the database work.
            mark = placeholder(conn)
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
                        f"batch_no, updated_at, send_round) SELECT {mark}, id, {mark}, {mark}, "
                        f"{mark}, {mark}, {mark} FROM subscribers WHERE status = {mark} AND id "
                        f"IN ({listed})",
                        (
                            issue_id,
                            send_id,
                            flying,
                            batch_no,
                            when,
                            send_round,
                            subscribed,
                            *new_ids,
                        ),
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
        with self.engine.begin() as conn:
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
