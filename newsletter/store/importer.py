"""`subscribers import`: read another service's export (or a spreadsheet) into the list.

The file is read as a stream and written in chunks, each chunk its own transaction, so a
crash or Ctrl-C leaves the old list plus whole chunks of the new one, never half a row;
running the import again finishes the job and changes nothing that was already done.

Rules (see the README, "Subscribers"):
- duplicates (in the file, or against the list) are merged, never doubled: names and
  custom fields from the file fill in and override, tags are added;
- statuses from the file count (Substack's email_disabled, Mailchimp's unsubscribed and
  cleaned exports...), but nobody who is unsubscribed, bounced or complained, in the
  file or in the list, becomes subscribed unless `resubscribe=True`;
- a row that cannot be imported is a reject with its line number and reason.

For speed (a million rows in seconds) new rows go in with driver-level executemany and
ids allocated up front, and addresses take the fast path of `normalize_email`.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import itertools
import json
import multiprocessing
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, func, select, text, update
from sqlalchemy.exc import IntegrityError

from newsletter.errors import ImportFileError, StoreError
from newsletter.store.emails import _fast as _fast_email
from newsletter.store.emails import normalize_email
from newsletter.store.formats import (
    OWN_COLUMNS,
    STATUS_WORDS,
    Format,
    apply_map,
    detect_encoding,
    detect_format,
    sniff_delimiter,
)
from newsletter.store.schema import STATUSES, subscribers
from newsletter.store.subscribers import STOPPED, normalize_tags

#: Rows per transaction: big enough for executemany to pay off, small enough to bound memory.
CHUNK_ROWS = 20_000
#: Rejects kept in memory for the report; all of them go to the rejects file.
REPORT_REJECTS = 1000
#: Bound parameters per IN (...) lookup, under every engine's limit.
LOOKUP_BATCH = 500

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


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
    rejects: list[Reject] = field(default_factory=list)
    dry_run: bool = False

    def reject(self, line: int, email: str, reason: str) -> Reject:
        self.rejected += 1
        item = Reject(line, email, reason)
        if len(self.rejects) < REPORT_REJECTS:
            self.rejects.append(item)
        return item


class _CountingReader(io.RawIOBase):
    """Counts bytes read, so progress can follow the file without seeking."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.count += n or 0
        return n or 0


def parse_time(value: str) -> datetime | None:
    """ISO 8601 or `YYYY-MM-DD HH:MM:SS` (naive means UTC); None if it is not a time."""
    value = value.strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _split_tags(value: str) -> list[str]:
    return [t for t in (part.strip() for part in value.split(",")) if t]


def _quoted_tags(value: str) -> list[str]:
    # Mailchimp writes TAGS as `"Tag A","Tag B"` inside one cell.
    row = next(csv.reader([value]), [])
    return [t.strip() for t in row if t.strip()]


def _list_tags(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        with contextlib.suppress(ValueError):
            parsed = json.loads(value)
            if isinstance(parsed, list):
                return [str(t).strip() for t in parsed if str(t).strip()]
        # Python-style ['a', 'b']
        return [t for t in re.findall(r"'([^']*)'|\"([^\"]*)\"", value) for t in t if t]
    return _split_tags(value)


_TRUE = {"true", "yes", "1", "ja", "y", "t"}


def _unquote(value: str) -> str:
    if len(value) > 1 and value[0] == "'" and value[1] in _FORMULA_START:
        return value[1:]
    return value


def _status_word(value: str) -> str:
    word = value.strip().lower()
    status = STATUS_WORDS.get(word)
    if status is None:
        raise ValueError(
            f"unknown status {value.strip()!r}; use one of {', '.join(STATUSES)} "
            "or --map COLUMN=ignore"
        )
    return status


def _plan(fmt: Format, headings: list[str]) -> list[tuple[int, str]]:
    """(column index, target) for every column that matters, email first."""
    plan: list[tuple[int, str]] = []
    have_email = False
    for index, heading in enumerate(headings):
        target = fmt.targets.get(heading, "ignore")
        if target == "ignore":
            continue
        if target == "email":
            if have_email:
                target = "field:" + heading.strip()
            else:
                have_email = True
                plan.insert(0, (index, target))
                continue
        plan.append((index, target))
    return plan


def _incoming_from_values(
    line: int, values: list[tuple[str, str]], fmt: Format
) -> Incoming | Reject:
    """Build an Incoming from (target, value) pairs, email first (JSON rows)."""
    plan = [(i, target) for i, (target, _) in enumerate(values)]
    return _incoming_from_row(line, [v for _, v in values], plan, fmt)


def _incoming_from_row(
    line: int, row: list[str], plan: list[tuple[int, str]], fmt: Format
) -> Incoming | Reject:
    """Build an Incoming from a CSV row; `plan[0]` is the email column. This is the hot
    loop of a large import, so the common targets are handled inline."""
    n = len(row)
    index, target = plan[0]
    if target != "email":
        return Reject(line, "", "the file has no email column")
    unquote = fmt.unquote_formulas
    value = row[index].strip() if index < n else ""
    if unquote:
        value = _unquote(value)
    if not value:
        return Reject(line, "", "no email address in this row")
    address = _fast_email(value)
    if address is None:
        try:
            address = normalize_email(value)
        except StoreError as exc:
            return Reject(line, value, str(exc))
    inc = Incoming(line, address, address.lower(), status=fmt.file_status)
    for index, target in plan[1:]:
        if index >= n:
            continue
        value = row[index].strip()
        if not value:
            continue
        if unquote:
            value = _unquote(value)
        if target == "first_name":
            inc.first_name = value
        elif target == "last_name":
            inc.last_name = value
        elif target == "tags" and "," not in value:
            if len(value) > 100:
                return Reject(line, address, f"tag {value[:20]!r}... is longer than 100 characters")
            inc.tags.add(value)
        else:
            if target != "tags":
                inc.simple = False
            try:
                _apply(inc, target, value)
            except (ValueError, StoreError) as exc:
                return Reject(line, address, str(exc))
    return inc


def _apply(inc: Incoming, target: str, value: str) -> None:
    if target == "first_name":
        inc.first_name = value
    elif target == "last_name":
        inc.last_name = value
    elif target == "name":
        inc.name = value
    elif target == "tags":
        inc.tags.update(_split_tags(value))
    elif target.startswith("field:"):
        inc.fields[target[6:]] = value
    elif target == "status":
        status = _status_word(value)
        # A file-level status (Mailchimp's unsubscribed export) is not overruled by a column.
        if inc.status not in STOPPED:
            inc.status = status
    elif target == "tags_quoted":
        inc.tags.update(_quoted_tags(value))
    elif target == "tags_list":
        inc.tags.update(_list_tags(value))
    elif target == "created_at":
        inc.created_at = parse_time(value)
    elif target == "confirmed_at":
        inc.confirmed_at = parse_time(value)
    elif target == "unsubscribed_at":
        inc.unsubscribed_at = parse_time(value)
    elif target == "unsubscribe_reason":
        inc.reason = value
    elif target == "source":
        inc.source = value
    elif target == "stopped_if_true":
        if value.lower() in _TRUE:
            inc.status = "unsubscribed"
    elif target == "stopped_if_false":
        if value.lower() not in _TRUE:
            inc.status = "unsubscribed"
    elif target == "stopped_if_set":
        inc.status = "unsubscribed"
        inc.unsubscribed_at = inc.unsubscribed_at or parse_time(value)
    elif target == "fields_json":
        try:
            parsed = json.loads(value)
        except ValueError:
            raise ValueError(f"{value[:40]!r} is not a JSON object") from None
        if isinstance(parsed, dict):
            inc.fields.update(parsed)
    if target in ("tags", "tags_quoted", "tags_list") and inc.tags:
        # Validate lengths once the cell is read.
        normalize_tags(inc.tags)


def _merge(into: Incoming, other: Incoming) -> None:
    """Fold a later duplicate row into an earlier one: later values win, tags add up,
    and a stop (unsubscribed, bounced, complained) always wins over a subscribe."""
    for attr in ("name", "first_name", "last_name", "reason", "source"):
        value = getattr(other, attr)
        if value:
            setattr(into, attr, value)
    into.tags |= other.tags
    into.fields.update(other.fields)
    into.simple = into.simple and other.simple
    if other.status is not None and into.status not in STOPPED:
        into.status = other.status
    into.created_at = into.created_at or other.created_at
    into.confirmed_at = into.confirmed_at or other.confirmed_at
    into.unsubscribed_at = other.unsubscribed_at or into.unsubscribed_at


# --- reading ------------------------------------------------------------------------


def _csv_rows(
    handle: io.TextIOWrapper, path: Path, result: ImportResult, mapping: list[tuple[str, str]]
) -> tuple[list[str], Format, Iterator[tuple[int, Incoming | Reject, list[str]]]]:
    first = handle.readline()
    while first and not first.strip():
        first = handle.readline()
    if not first:
        raise ImportFileError(f"{path}: the file is empty; export the list again")
    delimiter = sniff_delimiter(first)
    result.delimiter = delimiter
    reader = csv.reader(itertools.chain([first], handle), delimiter=delimiter)
    headings = [h.strip() for h in next(reader)]
    fmt = detect_format(headings)
    apply_map(fmt, mapping, path)
    if "email" not in fmt.targets.values():
        raise ImportFileError(
            f"{path}: no email column among {', '.join(h for h in headings if h)[:200]}; "
            "name it 'email' or use --map COLUMN=email"
        )
    plan = _plan(fmt, headings)
    width = len(headings)

    def rows() -> Iterator[tuple[int, Incoming | Reject, list[str]]]:
        last = reader.line_num
        for row in reader:
            line = last + 1
            last = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) > width and any(cell.strip() for cell in row[width:]):
                yield (
                    line,
                    Reject(
                        line,
                        row[plan[0][0]].strip() if plan[0][0] < len(row) else "",
                        f"{len(row)} columns but the header has {width}; "
                        "quote values that contain the delimiter",
                    ),
                    row,
                )
                continue
            yield line, _incoming_from_row(line, row, plan, fmt), row

    return headings, fmt, rows()


def _json_rows(
    path: Path, encoding: str
) -> tuple[list[str], Format, Iterator[tuple[int, Incoming | Reject, list[str]]]]:
    """Our own JSON export (an array of objects). Read whole: JSON has no line structure."""
    try:
        data = json.loads(path.read_text(encoding=encoding))
    except ValueError as exc:
        raise ImportFileError(f"{path}: is not valid JSON ({exc}); export it again") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ImportFileError(
            f"{path}: JSON must be an array of subscriber objects, as `subscribers export "
            "--format json` writes"
        )
    fmt = Format("newsletter-json", {})
    headings = ["email", "reason"]

    def rows() -> Iterator[tuple[int, Incoming | Reject, list[str]]]:
        for number, item in enumerate(data, start=1):
            values: list[tuple[str, str]] = [("email", str(item.get("email") or ""))]
            for column in OWN_COLUMNS[1:]:
                value = item.get(column)
                if value is None or column == "tags":
                    continue
                values.append((column, str(value)))
            result = _incoming_from_values(number, values, fmt)
            if isinstance(result, Incoming):
                tags = item.get("tags") or []
                if isinstance(tags, str):
                    tags = _split_tags(tags)
                result.tags.update(normalize_tags(str(t) for t in tags))
                fields = item.get("fields") or {}
                if isinstance(fields, dict) and fields:
                    result.fields.update(fields)
                    result.simple = False
            yield number, result, [str(item.get("email") or "")]

    return headings, fmt, rows()


# --- writing ------------------------------------------------------------------------


def _sqlite_time(value: datetime | None) -> str | None:
    # The text format SQLAlchemy's SQLite DateTime reads back (naive UTC).
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


class _Writer:
    """Dialect-aware bulk writes on one connection."""

    COLUMNS = (
        "id",
        "email",
        "email_key",
        "name",
        "first_name",
        "last_name",
        "status",
        "fields",
        "source",
        "created_at",
        "updated_at",
        "confirmed_at",
        "unsubscribed_at",
        "unsubscribe_reason",
    )
    OPTIONAL = ("name", "unsubscribed_at", "unsubscribe_reason")

    def __init__(self, conn: Connection):
        self.conn = conn
        self.dialect = conn.dialect.name
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        self.insert_subscribers = (
            f"INSERT INTO subscribers ({', '.join(self.COLUMNS)}) "
            f"VALUES ({', '.join([mark] * len(self.COLUMNS))})"
        )
        # Most imported rows have no full name and no unsubscribe: a shorter INSERT
        # without those three columns saves SQLite work on every row.
        short = [c for c in self.COLUMNS if c not in self.OPTIONAL]
        self.insert_short = (
            f"INSERT INTO subscribers ({', '.join(short)}) "
            f"VALUES ({', '.join([mark] * len(short))})"
        )
        self.insert_tags = (
            f"INSERT INTO subscriber_tags (subscriber_id, tag) VALUES ({mark}, {mark})"
        )

    def time(self, value: datetime | None) -> Any:
        return _sqlite_time(value) if self.dialect == "sqlite" else value

    def allocate_ids(self, n: int) -> list[int]:
        if self.dialect == "postgresql":
            rows = self.conn.execute(
                text(
                    "SELECT nextval(pg_get_serial_sequence('subscribers', 'id')) "
                    "FROM generate_series(1, :n)"
                ),
                {"n": n},
            ).scalars()
            return sorted(rows)
        # SQLite (and others): ids follow the largest one; the chunk's transaction holds
        # the write lock from its first insert, and a clash would roll the chunk back.
        start = self.conn.execute(select(func.coalesce(func.max(subscribers.c.id), 0))).scalar_one()
        return list(range(start + 1, start + 1 + n))

    def insert(
        self,
        rows: list[tuple[Any, ...]],
        tags: list[tuple[int, str]],
        short_rows: list[tuple[Any, ...]] | None = None,
    ) -> None:
        if rows:
            self.conn.exec_driver_sql(self.insert_subscribers, rows)  # type: ignore[arg-type]
        if short_rows:
            self.conn.exec_driver_sql(self.insert_short, short_rows)  # type: ignore[arg-type]
        if tags:
            self.conn.exec_driver_sql(self.insert_tags, tags)  # type: ignore[arg-type]


def _fetch_current(conn: Connection, keys: list[str]) -> dict[str, dict[str, Any]]:
    """What the merge needs of the current rows (and tags) of these keys, by key.

    Driver-level SQL without result processing: a re-import looks up every row, and
    parsing times and JSON nobody compares would double its cost. `fields` stays raw
    (JSON text on SQLite) until a row from the file actually brings fields.
    """
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(keys), LOOKUP_BATCH):
        batch = keys[start : start + LOOKUP_BATCH]
        marks = ", ".join([mark] * len(batch))
        rows = conn.exec_driver_sql(
            "SELECT id, email_key, name, first_name, last_name, status, fields, "
            f"confirmed_at IS NULL FROM subscribers WHERE email_key IN ({marks})",
            tuple(batch),
        ).all()
        by_id: dict[int, dict[str, Any]] = {}
        for sid, key, name, first, last, status, fields, unconfirmed in rows:
            record = {
                "id": sid,
                "name": name,
                "first_name": first,
                "last_name": last,
                "status": status,
                "fields": fields,
                "unconfirmed": bool(unconfirmed),
                "tags": set(),
            }
            found[key] = record
            by_id[sid] = record
        if by_id:
            marks = ", ".join([mark] * len(by_id))
            tag_rows = conn.exec_driver_sql(
                f"SELECT subscriber_id, tag FROM subscriber_tags WHERE subscriber_id IN ({marks})",
                tuple(by_id),
            )
            for sid, tag in tag_rows:
                by_id[sid]["tags"].add(tag)
    return found


def _json_object(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value) if value else {}
    return dict(value or {})


def _resolve_status(current: str | None, incoming: str | None, resubscribe: bool) -> str:
    if resubscribe:
        return "subscribed"
    if current is None:
        return incoming or "subscribed"
    if current in STOPPED or incoming is None:
        return current
    if current == "subscribed" and incoming == "unconfirmed":
        return current
    return incoming


def _changes(
    current: dict[str, Any], inc: Incoming, resubscribe: bool, stamp: datetime
) -> tuple[dict[str, Any], set[str], bool]:
    """Column changes and new tags for an existing subscriber; and whether a stop was kept."""
    values: dict[str, Any] = {}
    for column in ("name", "first_name", "last_name"):
        value = getattr(inc, column)
        if value and value != current[column]:
            values[column] = value
    if inc.fields:
        have = _json_object(current["fields"])
        merged = {**have, **inc.fields}
        if merged != have:
            values["fields"] = merged
    status = _resolve_status(current["status"], inc.status, resubscribe)
    kept_stop = current["status"] in STOPPED and inc.status not in STOPPED and not resubscribe
    if status != current["status"]:
        values["status"] = status
        if status == "subscribed":
            values["unsubscribed_at"] = None
            values["unsubscribe_reason"] = None
            if current["unconfirmed"]:
                values["confirmed_at"] = inc.confirmed_at or stamp
        elif status in STOPPED:
            values["unsubscribed_at"] = inc.unsubscribed_at or stamp
            values["unsubscribe_reason"] = inc.reason
    new_tags = inc.tags - current["tags"]
    return values, new_tags, kept_stop


def import_file(
    engine: Engine,
    path: Path | str,
    *,
    tags: Iterable[str] = (),
    dry_run: bool = False,
    mapping: Iterable[tuple[str, str]] = (),
    rejects_path: Path | str | None = None,
    resubscribe: bool = False,
    source: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    parallel: bool | None = None,
) -> ImportResult:
    """Import a CSV (or our JSON export) into the list; see the module docstring.

    `progress(bytes_read, total_bytes)` is called after each chunk.
    Raises ImportFileError if the file cannot be read at all; bad rows are rejects.
    """
    # A big import makes millions of small acyclic objects; the cyclic garbage collector
    # would rescan them over and over (a third of the run time) and find nothing. So it is
    # off, older objects are frozen out of its sight, and every ten chunks end with one
    # collection of the few cycles they left behind (SQLAlchemy makes some).
    collecting = gc.isenabled()
    frozen_before = gc.get_freeze_count() > 0  # someone else (a sender) froze objects
    gc.disable()
    gc.freeze()
    try:
        return _import_file(
            engine,
            Path(path),
            tags=tags,
            dry_run=dry_run,
            mapping=mapping,
            rejects_path=rejects_path,
            resubscribe=resubscribe,
            source=source,
            progress=progress,
            chunk_rows=chunk_rows,
            parallel=parallel,
        )
    finally:
        gc.unfreeze()
        if frozen_before:
            gc.freeze()
        if collecting:
            gc.enable()


def _import_file(
    engine: Engine,
    path: Path,
    *,
    tags: Iterable[str],
    dry_run: bool,
    mapping: Iterable[tuple[str, str]],
    rejects_path: Path | str | None,
    resubscribe: bool,
    source: str | None,
    progress: Callable[[int, int], None] | None,
    chunk_rows: int,
    parallel: bool | None,
) -> ImportResult:
    extra_tags = set(normalize_tags(tags))
    result = ImportResult(path=path, dry_run=dry_run)
    encoding = detect_encoding(path)
    result.encoding = encoding
    total = path.stat().st_size
    mapping = list(mapping)

    with path.open("rb") as peek:
        is_json = peek.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")
    raw = path.open("rb")
    counter = _CountingReader(raw)
    handle = io.TextIOWrapper(io.BufferedReader(counter, 1 << 20), encoding=encoding, newline="")
    reject_file: IO[str] | None = None
    reader: _ReaderStream | None = None
    try:
        if is_json:
            headings, fmt, rows = _json_rows(path, encoding)
            result.delimiter = ""
        else:
            headings, fmt, rows = _csv_rows(handle, path, result, mapping)
        result.format = fmt.name
        source_name = source or f"import:{fmt.name}"
        if fmt.name.startswith("newsletter"):
            source_name = source or "import"
        reject_writer = None
        if rejects_path is not None:
            reject_file = Path(rejects_path).open("w", encoding="utf-8", newline="")  # noqa: SIM115
            reject_writer = csv.writer(reject_file)
            reject_writer.writerow([*headings, "line", "reason"])

        with engine.connect() as probe:
            initially_empty = probe.execute(select(subscribers.c.id).limit(1)).first() is None
        # Exact where counts depend on it; a 16 MB bit set for a first big import.
        new_keys = _KeyFilter(exact=dry_run or not initially_empty)

        merged = 0

        def chunks() -> Iterator[dict[str, Incoming]]:
            # Parse, reject, merge duplicates within a chunk (in the reader process, if any).
            nonlocal merged
            chunk: dict[str, Incoming] = {}
            for line, item, row in rows:
                result.rows += 1
                if isinstance(item, Reject):
                    result.reject(item.line, item.email, item.reason)
                    if reject_writer is not None:
                        reject_writer.writerow([*row, line, item.reason])
                    continue
                if extra_tags:
                    item.tags |= extra_tags
                earlier = chunk.get(item.key)
                if earlier is not None:
                    _merge(earlier, item)
                    merged += 1
                else:
                    chunk[item.key] = item
                if len(chunk) >= chunk_rows:
                    yield chunk
                    chunk = {}
            if chunk:
                yield chunk

        def finish() -> tuple[int, int, list[Reject], int]:
            if reject_file is not None:
                reject_file.flush()
            return result.rows, result.rejected, result.rejects, merged

        if parallel is None:
            parallel = not is_json and total >= PARALLEL_BYTES and _can_fork()
        if parallel:
            if reject_file is not None:
                reject_file.flush()  # the reader process writes the rest
            reader = _ReaderStream(chunks, lambda: counter.count, finish, path)
            stream: Iterator[tuple[dict[str, Incoming], int]] = iter(reader)
        else:
            stream = ((chunk, counter.count) for chunk in chunks())
        for number, (chunk, done) in enumerate(stream, start=1):
            _write_chunk(
                engine, chunk, result, new_keys, initially_empty, resubscribe, source_name, fmt
            )
            del chunk
            if number % 10 == 0:
                gc.collect()
            if progress is not None:
                progress(done if not is_json else total, total)
        if reader is not None:
            assert reader.stats is not None
            result.rows, result.rejected, result.rejects, merged = reader.stats
        result.duplicates += merged
        if progress is not None:
            progress(total, total)
    except UnicodeDecodeError as exc:  # pragma: no cover - detect_encoding checked the file
        raise ImportFileError(f"{path}: cannot decode as {encoding} ({exc.reason})") from None
    except csv.Error as exc:
        raise ImportFileError(f"{path}: not a readable CSV file ({exc}); export it again") from None
    finally:
        if reader is not None:
            reader.close()
        handle.close()
        raw.close()
        if reject_file is not None:
            reject_file.close()
    return result


class _KeyFilter:
    """The addresses this run added, by hash: a set of hashes (exact), or a bit set.

    The bit set (2**27 bits, 16 MB) answers "maybe" for about 1 in 130 unknown keys at a
    million entries; a "maybe" only costs a database lookup, which gives the truth. It is
    used for a first import into an empty list, where every key found in the database
    was added by this run; dry runs and merges into a full list use the exact set.
    """

    BITS = 27

    def __init__(self, exact: bool):
        self.exact: set[int] | None = set() if exact else None
        self.bits = bytearray(0 if exact else 1 << (self.BITS - 3))
        self.mask = (1 << self.BITS) - 1

    def add(self, key: str) -> None:
        if self.exact is not None:
            self.exact.add(hash(key))
        else:
            h = hash(key) & self.mask
            self.bits[h >> 3] |= 1 << (h & 7)

    def update(self, keys: Iterable[str]) -> None:
        if self.exact is not None:
            self.exact.update(map(hash, keys))
            return
        bits, mask = self.bits, self.mask
        for key in keys:
            h = hash(key) & mask
            bits[h >> 3] |= 1 << (h & 7)

    def __contains__(self, key: str) -> bool:
        if self.exact is not None:
            return hash(key) in self.exact
        h = hash(key) & self.mask
        return bool(self.bits[h >> 3] & (1 << (h & 7)))


#: Files at least this big are parsed in a forked reader process while this one writes.
PARALLEL_BYTES = 8 << 20


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


class _ReaderStream:
    """Chunks parsed by a forked child process, sent through a pipe.

    Parsing (Python) and SQLite's inserts then run on two cores instead of taking turns.
    The pipe holds at most about one chunk, so memory stays bounded. The child inherits
    the open file and the parser by fork, and sends back compact tuples, not objects.
    """

    def __init__(
        self,
        chunks: Callable[[], Iterator[dict[str, Incoming]]],
        position: Callable[[], int],
        finish: Callable[[], tuple[int, int, list[Reject], int]],
        path: Path,
    ):
        self.path = path
        self.stats: tuple[int, int, list[Reject], int] | None = None
        context = multiprocessing.get_context("fork")
        self.receive, send = context.Pipe(duplex=False)

        def run() -> None:
            try:
                for chunk in chunks():
                    send.send(("chunk", _pack(chunk), position()))
                send.send(("done", finish()))
            except BaseException as exc:  # handed to the parent, which raises it
                with contextlib.suppress(Exception):
                    send.send(("error", exc))
            finally:
                send.close()

        self.process = context.Process(target=run, name="newsletter-import-reader", daemon=True)
        self.process.start()
        send.close()

    def __iter__(self) -> Iterator[tuple[dict[str, Incoming], int]]:
        try:
            while True:
                try:
                    kind, payload, *rest = self.receive.recv()
                except EOFError:
                    raise StoreError(
                        f"{self.path}: the import's reader process stopped unexpectedly; "
                        "run the same import again (it continues where it stopped)"
                    ) from None
                if kind == "chunk":
                    yield _unpack(payload), rest[0]
                elif kind == "done":
                    self.stats = payload
                    return
                else:
                    raise payload
        finally:
            self.close()

    def close(self) -> None:
        if self.receive.closed:
            return
        self.receive.close()
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()


def _pack(chunk: dict[str, Incoming]) -> tuple[list[tuple[Any, ...]], list[Incoming]]:
    """Simple subscribers as plain tuples (cheap to pickle); the rest as objects."""
    simple = [
        (inc.line, inc.email, inc.key, inc.first_name, inc.last_name, tuple(inc.tags))
        for inc in chunk.values()
        if inc.simple
    ]
    others = [inc for inc in chunk.values() if not inc.simple]
    return simple, others


def _simple_tuple(inc: Incoming) -> tuple[Any, ...]:
    return (inc.line, inc.email, inc.key, inc.first_name, inc.last_name, tuple(inc.tags))


def _is_simple(item: Any) -> bool:
    return type(item) is tuple or bool(item.simple)


def _as_incoming(item: Any) -> Incoming:
    if type(item) is not tuple:
        return item  # type: ignore[no-any-return]
    line, email, key, first, last, tags = item
    inc = Incoming(line, email, key)
    inc.first_name, inc.last_name, inc.tags = first, last, set(tags)
    return inc


def _unpack(packed: tuple[list[tuple[Any, ...]], list[Incoming]]) -> dict[str, Any]:
    simple, others = packed
    # Simple rows stay tuples: building a million objects here would cost this process
    # (the one that writes) a second; they become Incoming only if a merge needs them.
    chunk: dict[str, Any] = {item[2]: item for item in simple}
    for inc in others:
        chunk[inc.key] = inc
    return chunk


def _write_chunk(
    engine: Engine,
    chunk: dict[str, Incoming],
    result: ImportResult,
    new_keys: _KeyFilter,
    initially_empty: bool,
    resubscribe: bool,
    source_name: str,
    fmt: Format,
) -> None:
    """Merge one chunk into the database in one transaction (or only count it: dry run).

    `new_keys` knows (by hash) every address this run added. It is only a
    hint: a hit is checked against the database (a real run), so a hash collision can
    cost a lookup but never a wrong merge. With a list that was empty at the start,
    misses need no lookup at all, which is what makes a first big import fast.
    """
    literal_times = fmt.name.startswith("newsletter")
    counters = ("new", "updated", "unchanged", "duplicates", "kept_stopped")
    before = [getattr(result, name) for name in counters]
    for attempt in range(1, 4):
        added: list[str] = []
        try:
            # After a clash, look every key up: someone else added some meanwhile.
            _write_chunk_once(
                engine, chunk, result, new_keys, added, initially_empty and attempt == 1,
                resubscribe, source_name, literal_times,
            )  # fmt: skip
        except IntegrityError:
            # Another program (the subscribe form, say) added one of these addresses or
            # took an id between our lookups and our inserts. The chunk was rolled back;
            # count it again from scratch.
            for name, value in zip(counters, before, strict=True):
                setattr(result, name, value)
            if attempt == 3:
                raise StoreError(
                    f"{result.path}: other writers kept changing the list during the import; "
                    "run the same import again (it continues where it stopped)"
                ) from None
            continue
        new_keys.update(added)
        return


def _write_chunk_once(
    engine: Engine,
    chunk: dict[str, Any],
    result: ImportResult,
    new_keys: _KeyFilter,
    added: list[str],
    skip_lookups: bool,
    resubscribe: bool,
    source_name: str,
    literal_times: bool,
) -> None:
    stamp = datetime.now(UTC)
    dry_run = result.dry_run
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            writer = _Writer(conn)
            lookup = list(chunk)
            if skip_lookups:
                lookup = [k for k in lookup if k in new_keys]
            if dry_run:
                # Nothing of this run is in the database; repeats of new rows are duplicates.
                repeats = {k for k in lookup if k in new_keys}
                result.duplicates += len(repeats)
                lookup = [k for k in lookup if k not in repeats]
            else:
                repeats = set()
            found: set[str] = set()
            for start in range(0, len(lookup), LOOKUP_BATCH):
                current = _fetch_current(conn, lookup[start : start + LOOKUP_BATCH])
                found.update(current)
                _update_existing(conn, writer, chunk, current, result, new_keys, resubscribe, stamp)

            fresh = [inc for key, inc in chunk.items() if key not in found and key not in repeats]
            if fresh:
                _insert_fresh(
                    writer, fresh, result, added, resubscribe, source_name, stamp, literal_times
                )
            if dry_run:
                transaction.rollback()
            else:
                transaction.commit()
        except BaseException:
            if transaction.is_active:
                transaction.rollback()
            raise


def _insert_fresh(
    writer: _Writer,
    fresh: list[Any],
    result: ImportResult,
    added: list[str],
    resubscribe: bool,
    source_name: str,
    stamp: datetime,
    literal_times: bool,
) -> None:
    ids = [0] * len(fresh) if result.dry_run else writer.allocate_ids(len(fresh))
    stamp_db = writer.time(stamp)
    time = writer.time
    rows: list[tuple[Any, ...]] = []
    tag_rows: list[tuple[int, str]] = []
    short_rows: list[tuple[Any, ...]] = []
    # The common case (address, names, tags; nothing else) goes column-wise: zip builds
    # the rows in C, several times faster than a Python loop over a million rows. Such
    # rows come as packed tuples (line, email, key, first, last, tags) from the reader
    # process, or as Incoming objects marked simple.
    packed = [
        item if type(item) is tuple else _simple_tuple(item)  # type: ignore[arg-type]
        for item in fresh
        if type(item) is tuple or item.simple
    ]
    if len(packed) == len(fresh):
        simple_ids, rest = ids, []
    else:
        simple_ids = [sid for sid, inc in zip(ids, fresh, strict=True) if _is_simple(inc)]
        rest = [(sid, inc) for sid, inc in zip(ids, fresh, strict=True) if not _is_simple(inc)]
    if packed:
        short_rows = list(
            zip(
                simple_ids,
                [item[1] for item in packed],
                [item[2] for item in packed],
                [item[3] for item in packed],
                [item[4] for item in packed],
                repeat("subscribed"),
                repeat("{}"),
                repeat(source_name),
                repeat(stamp_db),
                repeat(stamp_db),
                repeat(stamp_db),
                strict=False,
            )
        )
        tag_rows = [
            (sid, tag) for sid, item in zip(simple_ids, packed, strict=True) for tag in item[5]
        ]
        added.extend([item[2] for item in packed])
    for sid, inc in rest:
        status = _resolve_status(None, inc.status, resubscribe)
        stopped = status in STOPPED
        created = inc.created_at or stamp
        if literal_times:
            confirmed, unsubscribed = inc.confirmed_at, inc.unsubscribed_at
        else:
            confirmed = inc.confirmed_at or (created if status == "subscribed" else None)
            unsubscribed = inc.unsubscribed_at or (stamp if stopped else None)
        created_db = stamp_db if created is stamp else time(created)
        fields = json.dumps(inc.fields, ensure_ascii=False) if inc.fields else "{}"
        confirmed_db = created_db if confirmed is created else time(confirmed)
        if inc.name is None and unsubscribed is None and not stopped:
            short_rows.append(
                (
                    sid,
                    inc.email,
                    inc.key,
                    inc.first_name,
                    inc.last_name,
                    status,
                    fields,
                    inc.source or source_name,
                    created_db,
                    stamp_db,
                    confirmed_db,
                )
            )
        else:
            rows.append(
                (
                    sid,
                    inc.email,
                    inc.key,
                    inc.name,
                    inc.first_name,
                    inc.last_name,
                    status,
                    fields,
                    inc.source or source_name,
                    created_db,
                    stamp_db,
                    confirmed_db,
                    stamp_db if unsubscribed is stamp else time(unsubscribed),
                    inc.reason if stopped else None,
                )
            )
        for tag in inc.tags:
            tag_rows.append((sid, tag))
        added.append(inc.key)
    result.new += len(fresh)
    if not result.dry_run:
        writer.insert(rows, tag_rows, short_rows)


def _update_existing(
    conn: Connection,
    writer: _Writer,
    chunk: dict[str, Incoming],
    current: dict[str, dict[str, Any]],
    result: ImportResult,
    new_keys: _KeyFilter,
    resubscribe: bool,
    stamp: datetime,
) -> None:
    for key, record in current.items():
        inc = _as_incoming(chunk[key])
        values, more_tags, kept_stop = _changes(record, inc, resubscribe, stamp)
        # An address this run added earlier (a duplicate further down the file).
        repeat = key in new_keys
        if repeat:
            result.duplicates += 1
        elif values or more_tags:
            result.updated += 1
        else:
            result.unchanged += 1
        if kept_stop and not repeat:
            result.kept_stopped += 1
        if result.dry_run or not (values or more_tags):
            continue
        values["updated_at"] = stamp
        conn.execute(update(subscribers).where(subscribers.c.id == record["id"]).values(**values))
        if more_tags:
            writer.insert([], [(record["id"], tag) for tag in sorted(more_tags)])
