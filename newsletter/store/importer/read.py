"""`subscribers import`, reading: an import file into `Incoming` rows (or `Reject`s).

CSV with any delimiter and another service's columns (see `formats`), or our own JSON
export; tag, time and status cells. Big files are parsed in a forked process
(`ReaderStream`) that sends each chunk as compact tuples (`model.pack`); the writer
(`write`) uses those tuples as they are.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import multiprocessing
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from newsletter.errors import ImportFileError, StoreError
from newsletter.store.emails import _fast as _fast_email
from newsletter.store.emails import normalize_email
from newsletter.store.importer.formats import (
    OWN_COLUMNS,
    STATUS_WORDS,
    Format,
    apply_map,
    detect_format,
    sniff_delimiter,
)
from newsletter.store.importer.model import ImportResult, Incoming, Reject, pack, unpack
from newsletter.store.schema import STATUSES
from newsletter.store.subscribers import (
    REASON_CHARS,
    STOPPED,
    check_name_lengths,
    normalize_tags,
)

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


class CountingReader(io.RawIOBase):
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
        if target == "first_name" and len(value) <= NAME_CHARS:
            inc.first_name = value
        elif target == "last_name" and len(value) <= NAME_CHARS:
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


SOURCE_CHARS = 100  # subscribers.source
NAME_CHARS = 100  # first_name, last_name: longer ones go through _apply's check


def _apply(inc: Incoming, target: str, value: str) -> None:
    if target in ("first_name", "last_name", "name"):
        check_name_lengths(**{target: value})
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
        inc.reason = value[:REASON_CHARS]
    elif target == "source":
        inc.source = value[:SOURCE_CHARS]
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


def _unclosed_quote(lines: list[str], delimiter: str) -> bool:
    """Did this record (several lines) end at the end of the file inside a quoted value?
    csv's lenient mode reads the rest of the file into that value without a word."""
    try:
        for _ in csv.reader(lines, delimiter=delimiter, strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def csv_rows(
    handle: io.TextIOWrapper, path: Path, result: ImportResult, mapping: list[tuple[str, str]]
) -> tuple[list[str], Format, Iterator[tuple[int, Incoming | Reject, list[str]]]]:
    first = handle.readline()
    while first and not first.strip():
        first = handle.readline()
    if not first:
        raise ImportFileError(f"{path}: the file is empty; export the list again")
    delimiter = sniff_delimiter(first)
    result.delimiter = delimiter
    record: list[str] = []  # the lines of the record being read, to check its quotes
    nul: list[bool] = []  # set when the record holds a NUL, which PostgreSQL refuses

    def lines() -> Iterator[str]:
        for text in itertools.chain([first], handle):
            record.append(text)
            if "\x00" in text:
                nul.append(True)
            yield text

    reader = csv.reader(lines(), delimiter=delimiter)
    headings = [h.strip() for h in next(reader)]
    if reader.line_num > 1 and _unclosed_quote(record, delimiter):
        raise ImportFileError(
            f"{path}: a quote in the header row is never closed; close it and import again"
        )
    record.clear()
    fmt = detect_format(headings)
    apply_map(fmt, mapping, path)
    if "email" not in fmt.targets.values():
        raise ImportFileError(
            f"{path}: no email column among {', '.join(h for h in headings if h)[:200]}; "
            "name it 'email' or use --map COLUMN=email"
        )
    plan = _plan(fmt, headings)
    width = len(headings)

    def reject(line: int, row: list[str], reason: str) -> Reject:
        """A rejected row, named by its address cell (as far as the row has one)."""
        email = row[plan[0][0]].strip().replace("\x00", "") if plan[0][0] < len(row) else ""
        return Reject(line, email, reason)

    def rows() -> Iterator[tuple[int, Incoming | Reject, list[str]]]:
        last = reader.line_num
        for row in reader:
            line = last + 1
            last = reader.line_num
            raw = record[:] if last > line else None
            record.clear()
            if nul:
                nul.clear()
                reason = "contains a NUL character; remove it (the file may be damaged)"
                yield line, reject(line, row, reason), row
                continue
            if raw is not None and _unclosed_quote(raw, delimiter):
                reason = (
                    f"a quote opened here is never closed, so lines {line}-{last} were "
                    "read as one row; close the quote and import again"
                )
                yield line, reject(line, row, reason), row
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) > width and any(cell.strip() for cell in row[width:]):
                reason = (
                    f"{len(row)} columns but the header has {width}; "
                    "quote values that contain the delimiter"
                )
                yield line, reject(line, row, reason), row
                continue
            yield line, _incoming_from_row(line, row, plan, fmt), row

    return headings, fmt, rows()


def json_rows(
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


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


class ReaderStream:
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
                    send.send(("chunk", pack(chunk), position()))
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
                    yield unpack(payload), rest[0]
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
