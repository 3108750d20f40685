"""A check of `newsletter doctor` and its outcome, shared by the three areas' modules."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


SYMBOL = {Status.OK: "✓", Status.WARN: "!", Status.FAIL: "✗", Status.SKIP: "-"}


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table."""

    area: str  # "dns", "setup" or "list"
    name: str
    status: Status
    found: str
    #: The exact fix (the record to add, the key to set); None when nothing is to do.
    fix: str | None = None
