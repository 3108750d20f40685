"""The clock: the only place in sequences that reads the wall time.

Everything takes a `Clock`; `sequences run --now ISO` and the tests pass a `FixedClock`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

from newsletter.errors import NewsletterError
from newsletter.store.times import as_utc


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
    return as_utc(value)
