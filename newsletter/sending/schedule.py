"""`--schedule WHEN`: an ISO 8601 time with a timezone, or "in 2h" / "in 30m" / "in 1d"."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from newsletter.errors import SendError

#: SendGrid accepts send_at at most 72 hours ahead.
MAX_AHEAD = timedelta(hours=72)
_RELATIVE = re.compile(r"^\s*in\s+(\d+)\s*(m|min|mins|minutes?|h|hours?|d|days?)\s*$", re.I)


def parse_when(when: str, *, now: datetime | None = None) -> datetime:
    """The moment `when` names, in UTC; must be in the future and at most 72 h ahead."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(when)
    if match:
        amount, unit = int(match.group(1)), match.group(2).lower()
        unit_delta = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
        moment = now + amount * unit_delta[unit[0]]
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
    moment = moment.astimezone(UTC)
    if moment <= now:
        raise SendError(f"--schedule {when!r} is in the past; give a time in the future")
    if moment - now > MAX_AHEAD:
        raise SendError(
            f"--schedule {when!r} is more than 72 hours ahead; SendGrid cannot schedule that far"
        )
    return moment
