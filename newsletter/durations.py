"""Delays as authors write them: `30m`, `2h`, `3d`, `1w` (a step's `delay:`, `[serve]
fetch_replies`)."""

from __future__ import annotations

import re
from datetime import timedelta

DELAY_RE = re.compile(r"^(\d+)\s*(m|min|h|d|w)$")
UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: The longest delay a step may have: ten years (a larger one overflows the date arithmetic).
MAX_DELAY = timedelta(weeks=520)


def parse_delay(value: object) -> timedelta | None:
    """`0`, `30m`, `2h`, `3d`, `1w` -> timedelta; None if not understood."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return timedelta(0) if value == 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text == "0":
        return timedelta(0)
    found = DELAY_RE.match(text)
    if found is None or len(found.group(1)) > 9:
        return None
    delay = timedelta(**{UNITS[found.group(2)]: int(found.group(1))})
    return delay if delay <= MAX_DELAY else None


def format_delay(delay: timedelta) -> str:
    seconds = int(delay.total_seconds())
    if seconds == 0:
        return "0"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
