"""`subscribers import`, the rows: what the file says about one person, a rejected row,
and the result of a run. Shared by reading, deciding and writing.

Simple rows (address, names, tags) travel as plain tuples between the reader process and
the writer: `pack` makes them, `as_incoming` turns one back into an `Incoming` when a
merge needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from newsletter.errors import StoreError
from newsletter.subscriber_status import STOPPED

#: Rejects kept in memory for the report; all of them go to the rejects file.
REPORT_REJECTS = 1000


class Incoming:
    """One subscriber as the file describes them (after merging duplicates).

    A plain slotted class with a hand-written __init__: a million of these are made
    during a big import, and a dataclass's defaults cost measurably more.
    """

    __slots__ = (
        "line",
        "email",
        "key",
        "name",
        "first_name",
        "last_name",
        "status",
        "tags",
        "fields",
        "created_at",
        "confirmed_at",
        "unsubscribed_at",
        "reason",
        "source",
        "optin_ip",
        "confirm_ip",
        "consent",
        "simple",
    )

    def __init__(self, line: int, email: str, key: str, status: str | None = None):
        self.line = line
        self.email = email
        self.key = key
        self.status: str | None = status  # None: the file does not say
        self.name: str | None = None
        self.first_name: str | None = None
        self.last_name: str | None = None
        self.tags: set[str] = set()
        self.fields: dict[str, Any] = {}
        self.created_at: datetime | None = None
        self.confirmed_at: datetime | None = None
        self.unsubscribed_at: datetime | None = None
        self.reason: str | None = None
        self.source: str | None = None
        self.optin_ip: str | None = None  # the export's own opt-in data (consent evidence)
        self.confirm_ip: str | None = None
        #: Consent records our own export carried (`consent.exported_records`), checked.
        self.consent: list[dict[str, Any]] | None = None
        #: Only address, first/last name and tags: the bulk path can insert it column-wise.
        self.simple = status is None


@dataclass(frozen=True)
class Reject:
    line: int
    email: str
    reason: str


@dataclass
class ImportResult:
    path: Path
    format: str = "generic"
    encoding: str = "utf-8"
    delimiter: str = ","
    rows: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    duplicates: int = 0  # rows merged into an earlier row of the same file
    kept_stopped: int = 0  # people left unsubscribed/bounced/complained (no --resubscribe)
    suppressed: int = 0  # rows refused: the address was erased on request
    without_evidence: int = 0  # new subscribers whose row had no opt-in data (time, IP)
    rejects: list[Reject] = field(default_factory=list)
    #: Lines read as Windows-1252 in a UTF-8 file (the first REPORT_LINES of them).
    fallback_lines: list[int] = field(default_factory=list)
    fallback_count: int = 0
    #: JSON keys left out (neither the export's nor --map'ped): key -> how many rows have it.
    unread_keys: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False

    def reject(self, line: int, email: str, reason: str) -> Reject:
        self.rejected += 1
        item = Reject(line, email, reason)
        if len(self.rejects) < REPORT_REJECTS:
            self.rejects.append(item)
        return item


class FieldNames:
    """One spelling per custom field name, whatever its case (`Stadt` and `stadt` are one
    field): the spelling the list already uses, else the first one the file uses.

    `load` gives the list's names; it is called once, when first needed.
    """

    def __init__(self, load: Callable[[], Iterable[str]] = tuple):
        self._load: Callable[[], Iterable[str]] | None = load
        self.spelling: dict[str, str] = {}

    def load(self) -> None:
        if self._load is not None:
            load, self._load = self._load, None
            for name in sorted(load()):  # of two spellings in the list, always the same one
                self.spelling.setdefault(name.casefold(), name)

    def canonical(self, name: str) -> str:
        self.load()
        return self.spelling.setdefault(name.casefold(), name)


def same_field(fields: dict[str, Any], name: str) -> str:
    """The key in `fields` that is `name` but for case, else `name`."""
    if name in fields:
        return name
    folded = name.casefold()
    return next((key for key in fields if key.casefold() == folded), name)


class ImportInterrupted(KeyboardInterrupt):
    """Ctrl-C during an import: the message says what was kept and how to go on."""


class ImportStopped(StoreError):
    """An import stopped mid-file; the message says what it wrote and how to go on."""


@dataclass
class ReadSummary:
    """What reading the whole file found, beyond the chunks (sent back by a reader process)."""

    rows: int
    rejected: int
    rejects: list[Reject]
    merged: int  # rows merged into an earlier row of the same chunk
    encoding: str
    fallback_lines: list[int]
    fallback_count: int


def merge(into: Incoming, other: Incoming) -> None:
    """Fold a later duplicate row into an earlier one: later values win, tags add up,
    and a stop (unsubscribed, bounced, complained) always wins over a subscribe."""
    for attr in ("name", "first_name", "last_name", "reason", "source", "optin_ip", "confirm_ip"):
        value = getattr(other, attr)
        if value:
            setattr(into, attr, value)
    into.tags |= other.tags
    into.fields.update(other.fields)
    into.simple = into.simple and other.simple
    if other.status is not None and into.status not in STOPPED:
        into.status = other.status
    into.created_at = into.created_at or other.created_at
    into.consent = into.consent or other.consent
    into.confirmed_at = into.confirmed_at or other.confirmed_at
    into.unsubscribed_at = other.unsubscribed_at or into.unsubscribed_at


def pack(chunk: dict[str, Incoming]) -> tuple[list[tuple[Any, ...]], list[Incoming]]:
    """Simple subscribers as plain tuples (cheap to pickle); the rest as objects."""
    simple = [
        (inc.line, inc.email, inc.key, inc.first_name, inc.last_name, tuple(inc.tags))
        for inc in chunk.values()
        if inc.simple
    ]
    others = [inc for inc in chunk.values() if not inc.simple]
    return simple, others


def simple_tuple(inc: Incoming) -> tuple[Any, ...]:
    return (inc.line, inc.email, inc.key, inc.first_name, inc.last_name, tuple(inc.tags))


def is_simple(item: Any) -> bool:
    return type(item) is tuple or bool(item.simple)


def line_of(item: Any) -> int:
    """The line of an `Incoming` or of its packed tuple."""
    return item[0] if type(item) is tuple else item.line  # type: ignore[no-any-return]


def as_incoming(item: Any) -> Incoming:
    if type(item) is not tuple:
        return item  # type: ignore[no-any-return]
    line, email, key, first, last, tags = item
    inc = Incoming(line, email, key)
    inc.first_name, inc.last_name, inc.tags = first, last, set(tags)
    return inc


def unpack(packed: tuple[list[tuple[Any, ...]], list[Incoming]]) -> dict[str, Any]:
    simple, others = packed
    # Simple rows stay tuples: building a million objects here would cost this process
    # (the one that writes) a second; they become Incoming only if a merge needs them.
    chunk: dict[str, Any] = {item[2]: item for item in simple}
    for inc in others:
        chunk[inc.key] = inc
    return chunk
