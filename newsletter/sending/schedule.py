"""Scheduled sends: `--schedule WHEN` (an ISO 8601 time with a timezone, or "in 2h" / "in 30m" /
"in 1d") and `newsletter cancel`, which also cancels a subject-line test under way.

The schedule (send_at) and the provider's schedule id are stored on the send before its first
request, so a killed scheduled send stays scheduled: `--resume` keeps both, and `cancel`
finds every send of the issue that carries them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import select

from newsletter.errors import SendError
from newsletter.sending.factory import choose_transport
from newsletter.sending.ledger import Ledger
from newsletter.sending.subject_test import (
    ARMS,
    arm_results,
    find_test,
    is_open,
    mark_cancelled,
    planned_sizes,
)
from newsletter.sending.transports import SchedulingTransport
from newsletter.store.engine import project_engine
from newsletter.store.issues import find_issue_id
from newsletter.store.schema import sends
from newsletter.store.times import as_utc

if TYPE_CHECKING:
    from newsletter.project import Project

#: SendGrid accepts send_at at most 72 hours ahead.
MAX_AHEAD = timedelta(hours=72)
#: SendGrid cancels or pauses a scheduled batch only this long before its send_at.
CANCEL_NOTICE = timedelta(minutes=10)
_RELATIVE = re.compile(r"^\s*in\s+(\d+)\s*(m|min|mins|minutes?|h|hours?|d|days?)\s*$", re.I)


def parse_when(when: str, *, now: datetime | None = None) -> datetime:
    """The moment `when` names, in UTC; must be in the future and at most 72 h ahead."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(when)
    if match:
        digits, unit = match.group(1), match.group(2).lower()
        unit_delta = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
        # Checked before multiplying: "in 99999999999999d" overflows a timedelta.
        if len(digits) > 9 or int(digits) * unit_delta[unit[0]] > MAX_AHEAD:
            raise SendError(_too_far(when))
        moment = now + int(digits) * unit_delta[unit[0]]
    else:
        try:
            moment = datetime.fromisoformat(when.strip())
        except ValueError:
            raise SendError(
                f"--schedule {when!r}: not a time; use ISO 8601 with a timezone "
                "(2024-07-02T08:00:00+02:00) or 'in 2h' / 'in 30m'"
            ) from None
        if moment.tzinfo is None:
            raise SendError(
                f"--schedule {when!r} has no timezone; add one, e.g. {when.strip()}+02:00 or Z"
            )
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset
        raise SendError(_too_far(when) if moment.year > 1 else _in_the_past(when)) from None
    if moment <= now:
        raise SendError(_in_the_past(when))
    if moment - now > MAX_AHEAD:
        raise SendError(_too_far(when))
    return moment


def _too_far(when: str) -> str:
    return f"--schedule {when!r} is more than 72 hours ahead; SendGrid cannot schedule that far"


def _in_the_past(when: str) -> str:
    return f"--schedule {when!r} is in the past; give a time in the future"


@dataclass(frozen=True)
class Cancelled:
    send_id: int
    recipients: int
    #: A live sender of it was stopped first (its pid), or None.
    stopped_pid: int | None = None


#: How long `cancel` waits for a live sender to stop after its current batch (a batch's
#: request may be retried for a while: `[sending] max_retries`, `[sendgrid] timeout`).
STOP_WAIT_SECONDS = 120.0


def cancel_scheduled(
    project: Project,
    slug: str,
    *,
    now: datetime | None = None,
    wait: float = STOP_WAIT_SECONDS,
    waiting: Callable[[Any], None] | None = None,
) -> Cancelled:
    """Cancel the issue's scheduled send at the provider and forget its ledger rows (of every
    send that carries its schedule id: a killed one and its --resume), so the issue can be
    sent again later.

    A process still sending it is stopped first, through the send: it claims no batch after
    the request (`Ledger.claim`), settles those in flight and lets go of its lease. Only then
    is the schedule cancelled at the provider, so nothing is handed over under it afterwards,
    and the ledger, `sends` and the provider agree. `waiting(lease_row)` is called once while
    waiting; if the sender has not stopped within `wait` seconds, SendError, and nothing is
    cancelled yet (the sender still stops at its next batch; run `cancel` again)."""
    engine = project_engine(project)
    ledger = Ledger(engine)
    issue_id = find_issue_id(engine, slug)
    row = ledger.latest_scheduled(issue_id) if issue_id is not None else None
    if issue_id is None or row is None:
        raise SendError(f"{slug} has no scheduled send to cancel (see `newsletter sends {slug}`)")
    if row.send_at is not None:
        send_at = as_utc(row.send_at)
        now = now or datetime.now(UTC)
        if send_at - now < CANCEL_NOTICE:
            when = send_at.strftime("%Y-%m-%d %H:%M UTC")
            raise SendError(
                f"too late to cancel send {row.id} of {slug}: it goes out at {when}, and the "
                "provider cancels only up to 10 minutes before; see `newsletter sends` afterwards"
            )
    transport = None
    if row.batch_id:
        # Before a live sender is stopped: a send that cannot be cancelled keeps going.
        chosen = choose_transport(project)
        transport = chosen.transport
        if not transport.capabilities.can_schedule:
            why = f" ({chosen.note})" if chosen.note else ""
            raise SendError(
                f"send {row.id} of {slug} is scheduled with {row.transport}, but the "
                f"{transport.kind} transport cannot cancel it{why}"
            )
    with engine.connect() as conn:
        same = (
            conn.execute(
                select(sends.c.id).where(
                    sends.c.issue_id == issue_id,
                    sends.c.status == "scheduled",
                    sends.c.batch_id == row.batch_id if row.batch_id else sends.c.id == row.id,
                )
            )
            .scalars()
            .all()
        )
    running = ledger.running(issue_id)
    if running is not None and running.send_id not in same:
        raise SendError(
            f"send {running.send_id} of {slug} is running now (pid {running.pid} on "
            f"{running.host}) and is not the scheduled send {row.id}; wait for it to finish"
        )
    # Asked before looking for a sender: one that starts claiming a moment from now stops too.
    ledger.request_cancel(same)
    if running is not None and not _stopped(ledger, issue_id, running, wait, waiting):
        raise SendError(
            f"send {running.send_id} of {slug} is still sending (pid {running.pid} on "
            f"{running.host}) after {wait:g}s; it stops after its current batch, then run "
            f"`newsletter cancel {slug}` again to cancel it at the provider"
        )
    if transport is not None and row.batch_id:
        cast(SchedulingTransport, transport).cancel_schedule(row.batch_id)
    removed = 0
    for send_id in same:
        removed += ledger.remove_send_rows(send_id)
        ledger.finish_send(send_id, "cancelled")
    return Cancelled(
        send_id=row.id, recipients=removed, stopped_pid=running.pid if running else None
    )


@dataclass(frozen=True)
class CancelledTest:
    """A subject-line test `cancel` stopped: who had a copy by then, who gets none."""

    sample: int  # readers of the sample (A and B) who got their copy
    rest_sent: int  # of the rest, those the winner reached before the cancel
    rest_left: int  # of the rest, those who get nothing now
    #: A live sender of it (an arm, or the rest) was stopped first (its pid), or None.
    stopped_pid: int | None = None


def cancel_subject_test(
    project: Project,
    slug: str,
    *,
    now: datetime | None = None,
    wait: float = STOP_WAIT_SECONDS,
    waiting: Callable[[Any], None] | None = None,
) -> CancelledTest | None:
    """Cancel the issue's subject-line test if it is under way (None if there is none): no
    decision and no arm is sent from now on (`run-due` leaves it alone); a process sending
    an arm or the rest is stopped after its current batch. What went out stays sent."""
    engine = project_engine(project)
    ledger = Ledger(engine)
    issue_id = find_issue_id(engine, slug)
    test = find_test(engine, issue_id) if issue_id is not None else None
    if issue_id is None or not is_open(test):
        return None
    # Marked before looking for a sender: one that takes the lease from now on sees the mark
    # and stops before its first batch (`execute`).
    mark_cancelled(engine, test, now or datetime.now(UTC))
    running = ledger.running(issue_id)
    if running is not None:
        ledger.request_cancel([running.send_id])
        if not _stopped(ledger, issue_id, running, wait, waiting):
            raise SendError(
                f"the subject-line test of {slug} is cancelled, but send {running.send_id} "
                f"(pid {running.pid} on {running.host}) is still sending after {wait:g}s; it "
                f"stops after its current batch: see `newsletter sends {slug}`"
            )
    results = arm_results(engine, test)
    rest = planned_sizes(engine, test).get("rest", 0)
    sent = results["rest"].size
    return CancelledTest(
        sample=sum(results[arm].size for arm in ARMS),
        rest_sent=sent,
        rest_left=int(rest) - sent,
        stopped_pid=running.pid if running else None,
    )


def _stopped(
    ledger: Any,
    issue_id: int,
    running: Any,
    wait: float,
    waiting: Callable[[Any], None] | None,
) -> bool:
    """Whether the issue's sender (`running`, asked to stop; `waiting` is told of it) let go
    of its lease (or died) within `wait` seconds."""
    if waiting is not None:
        waiting(running)
    deadline = time.monotonic() + wait
    while ledger.running(issue_id) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True
