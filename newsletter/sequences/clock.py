"""The clock: the only place in sequences that reads the wall time.

Everything takes a `Clock`; `sequences run --now ISO` and the tests pass a `FixedClock`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from newsletter.errors import NewsletterError
from newsletter.store.times import as_utc

if TYPE_CHECKING:
    from newsletter.step import Step


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that says what it is told (tests, `--now`)."""

    def __init__(self, at: datetime) -> None:
        self.at = as_utc(at)

    def now(self) -> datetime:
        return self.at


SYSTEM = SystemClock()

#: How far the schedule clock (`--now`) may run ahead of the system clock without `--force`.
MAX_AHEAD = timedelta(days=1)


def refuse_far_ahead(now: datetime, wall_now: datetime) -> None:
    """A run (or `sequences start`) at a time far ahead of the system clock, a mistyped
    `--now`, would schedule readers' next steps from that time: refuse it."""
    if now - wall_now <= MAX_AHEAD:
        return
    days = (now - wall_now).days
    raise NewsletterError(
        f"--now {now:%Y-%m-%d %H:%M} UTC is {days} day{'s' if days != 1 else ''} ahead of "
        f"the system clock ({wall_now:%Y-%m-%d %H:%M} UTC): readers' next steps would be "
        "scheduled from then, and nothing would be due for them until that day. Check --now "
        "(or the system clock); to go ahead anyway, add --force"
    )


def parse_now(text: str) -> datetime:
    """`--now`: an ISO 8601 time (`2026-03-01T09:00:00+01:00`; without an offset it is UTC)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise NewsletterError(
            f"--now {text!r} is not an ISO time; write e.g. 2026-03-01T09:00:00+01:00"
        ) from None
    if value.year < 2000:  # (a year of fewer than four digits is stored so, and unreadable)
        raise NewsletterError(f"--now {text!r} is before 2000: a typo in the year?")
    return as_utc(value)


#: The most `send_at_hour` moves a step later: to that hour the next day, an hour more across
#: a change to or from summer time.
SEND_HOUR_SLACK = timedelta(days=1, hours=1)


def latest_due(steps: list[Step], now: datetime) -> datetime:
    """The latest time a next step can be due when the previous one was sent by `now` (or by
    a run up to MAX_AHEAD ahead of it). A next step due later than this was scheduled by a
    run whose clock was far ahead: a forced `--now`, or a system clock that was wrong."""
    longest = max((s.delay for s in steps), default=timedelta(0))
    return now + MAX_AHEAD + longest + SEND_HOUR_SLACK
