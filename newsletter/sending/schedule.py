"""Scheduled sends: `--schedule WHEN` (an ISO 8601 time with a timezone, or "in 2h" / "in 30m" /
"in 1d") and `newsletter cancel`.

The schedule (send_at) and the provider's schedule id are stored on the send before its first
request, so a killed scheduled send stays scheduled: `--resume` keeps both, and `cancel`
finds every send of the issue that carries them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

from newsletter.errors import SendError
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


def cancel_scheduled(project: Project, slug: str, *, now: datetime | None = None) -> Cancelled:
    """Cancel the issue's scheduled send at the provider and forget its ledger rows (of every
    send that carries its schedule id: a killed one and its --resume), so the issue can be
    sent again later."""
    from sqlalchemy import select

    from newsletter.sending.factory import choose_transport
    from newsletter.sending.ledger import Ledger
    from newsletter.sending.transports import SchedulingTransport
    from newsletter.store.engine import project_engine
    from newsletter.store.issues import find_issue_id
    from newsletter.store.schema import sends

    engine = project_engine(project)
    ledger = Ledger(engine)
    issue_id = find_issue_id(engine, slug)
    row = ledger.latest_scheduled(issue_id) if issue_id is not None else None
    if row is None:
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
    if row.batch_id:
        chosen = choose_transport(project)
        transport = chosen.transport
        if not transport.capabilities.can_schedule:
            why = f" ({chosen.note})" if chosen.note else ""
            raise SendError(
                f"send {row.id} of {slug} is scheduled with {row.transport}, but the "
                f"{transport.kind} transport cannot cancel it{why}"
            )
        cast(SchedulingTransport, transport).cancel_schedule(row.batch_id)
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
    removed = 0
    for send_id in same:
        removed += ledger.remove_send_rows(send_id)
        ledger.finish_send(send_id, "cancelled")
    return Cancelled(send_id=row.id, recipients=removed)
