"""`subscribers import`, reading: an import file into `Incoming` rows (or `Reject`s).

CSV with any delimiter and another service's columns (see `formats`), or our own JSON
export; tag, time and status cells. The lines come decoded from `lines`; big files are
read in a reader process (see `process`), which must not load SQLAlchemy: the rules of
`store.subscribers` are imported where a cell needs them, not at the top.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from newsletter.consent_kinds import KINDS
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
from newsletter.store.importer.lines import LineDecoder
from newsletter.store.importer.model import (
    FieldNames,
    ImportResult,
    Incoming,
    Reject,
)
from newsletter.store.names import clean_name
from newsletter.subscriber_status import STATUSES, STOPPED
from newsletter.wording import plural

#: csv's own limit on one cell; a longer cell is a rejected row.
FIELD_CHARS = csv.field_size_limit()
#: The most columns a header may have (exports have tens): each is planned and mapped.
MAX_COLUMNS = 1000

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


#: The earliest time a subscriber's dates may hold: before it is a typo (0202 for 2020).
#: Years of fewer than four digits were stored as such, and the row could then be read,
#: exported or erased no more.
EARLIEST_YEAR = 1900


#: `31.12.2023`, `5.1.2023 10:11` or `05.01.2023 10:11:00`: how Excel in German (and most of
#: Europe) writes a date and time it re-saves, Mailchimp's OPTIN_TIME included.
_DOTTED = re.compile(
    r"(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})"
    r"(?:[ T,]+(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?)?"
)
#: What a database or a service writes for "no time" (MySQL's zero date, say).
_NO_TIME = re.compile(r"0{4}-0{2}-0{2}([ T]0{2}:0{2}(:0{2})?)?|-|n/?a|null|none", re.IGNORECASE)


def parse_time(value: str) -> datetime | None:
    """ISO 8601 (`YYYY-MM-DD HH:MM:SS`, naive means UTC), `DD.MM.YYYY [HH:MM[:SS]]` or an
    email's date (`Thu, 05 Jan 2023 10:11:00 +0000`); None for an empty cell or a "no time"
    one. ValueError (the row is rejected, saying why) for anything else, since an import
    must not drop an opt-in time and write its own in its place, and for a time before
    `EARLIEST_YEAR`."""
    value = value.strip()
    if not value or _NO_TIME.fullmatch(value):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = _other_time(value)
    if parsed.year < EARLIEST_YEAR:
        raise ValueError(f"{value[:40]!r} is before {EARLIEST_YEAR}: a typo in the year?")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _other_time(value: str) -> datetime:
    dotted = _DOTTED.fullmatch(value)
    try:
        if dotted:
            parts = {k: int(v) for k, v in dotted.groupdict().items() if v is not None}
            return datetime(
                parts["y"], parts["m"], parts["d"], parts.get("H", 0), parts.get("M", 0),
                parts.get("S", 0),
            )  # fmt: skip
        if value[:1].isalpha():
            return parsedate_to_datetime(value)
    except (ValueError, TypeError, IndexError):
        pass
    raise ValueError(
        f"{value[:40]!r} is not a time this import reads; write it as 2023-01-31 10:15 "
        "(or 31.01.2023 10:15), or leave the cell empty"
    )


def _split_tags(value: str) -> list[str]:
    if '"' in value:
        # Mailchimp's quoted form in a file of one's own (a column copied over): the tags,
        # not `"KI"` with its quotes.
        return _quoted_tags(value)
    return [t for t in (part.strip() for part in value.split(",")) if t]


def _quoted_tags(value: str) -> list[str]:
    # Mailchimp writes TAGS as `"Tag A","Tag B"` inside one cell.
    row = next(csv.reader([value], skipinitialspace=True), [])
    return [t.strip() for t in row if t.strip()]


def normalize_tags(tags: Iterable[str]) -> tuple[str, ...]:
    from newsletter.store.subscribers import normalize_tags  # deferred: SQLAlchemy, 30 MB

    return normalize_tags(tags)


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


def _plan(fmt: Format, headings: list[str], names: FieldNames) -> list[tuple[int, str]]:
    """(column index, target) for every column that matters, email first; custom fields
    under their one spelling (`Stadt` and `stadt` are one field)."""
    plan: list[tuple[int, str]] = []
    have_email = False
    for index, heading in enumerate(headings):
        target = fmt.targets.get(heading, "ignore")
        if target == "ignore":
            continue
        if target.startswith("field:"):
            target = "field:" + names.canonical(target[6:])
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
    line: int, values: list[tuple[str, str]], fmt: Format, names: FieldNames
) -> Incoming | Reject:
    """Build an Incoming from (target, value) pairs, email first (JSON rows)."""
    plan = [(i, target) for i, (target, _) in enumerate(values)]
    return _incoming_from_row(line, [v for _, v in values], plan, fmt, names)


def _incoming_from_row(
    line: int, row: list[str], plan: list[tuple[int, str]], fmt: Format, names: FieldNames
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
            inc.first_name = value if value.isprintable() else (clean_name(value) or None)
        elif target == "last_name" and len(value) <= NAME_CHARS:
            inc.last_name = value if value.isprintable() else (clean_name(value) or None)
        elif target == "tags" and "," not in value:
            if len(value) > 100:
                return Reject(line, address, f"tag {value[:20]!r}... is longer than 100 characters")
            inc.tags.add(value)
        else:
            if target != "tags":
                inc.simple = False
            try:
                _apply(inc, target, value, names)
            except (ValueError, StoreError) as exc:
                return Reject(line, address, str(exc))
    return inc


SOURCE_CHARS = 100  # subscribers.source
NAME_CHARS = 100  # first_name, last_name: longer ones go through _apply's check


def _apply(inc: Incoming, target: str, value: str, names: FieldNames) -> None:
    if target in ("first_name", "last_name", "name"):
        value = clean_name(value) or ""
        if not value:
            return  # nothing but control characters
        from newsletter.store.subscribers import check_name_lengths  # deferred: SQLAlchemy

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
    elif target == "optin_ip":
        inc.optin_ip = value[:64]
    elif target == "confirm_ip":
        inc.confirm_ip = value[:64]
    elif target == "unsubscribed_at":
        inc.unsubscribed_at = parse_time(value)
    elif target == "unsubscribe_reason":
        from newsletter.store.subscribers import REASON_CHARS  # deferred: SQLAlchemy

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
        # (Ghost's deleted_at; a cell that says "yes" still stops them, at the import's time.)
        with contextlib.suppress(ValueError):
            inc.unsubscribed_at = inc.unsubscribed_at or parse_time(value)
    elif target == "consent":
        if value.startswith("["):  # our export's records
            inc.consent = _consent_records(value)
        else:  # another tool's own "consent" column (yes/no, a date): a custom field
            inc.fields[names.canonical("consent")] = value
    elif target == "fields_json":
        try:
            parsed = json.loads(value)
        except ValueError:
            raise ValueError(f"{value[:40]!r} is not a JSON object") from None
        if isinstance(parsed, dict):
            inc.fields.update((names.canonical(str(k)), v) for k, v in parsed.items())
    if target in ("tags", "tags_quoted", "tags_list") and inc.tags:
        # Validate lengths once the cell is read.
        normalize_tags(inc.tags)


#: What a record of an export's consent cell may be (`store.consent` writes them).
CONSENT_KINDS = KINDS


def _consent_records(value: str) -> list[dict[str, Any]]:
    """The consent records of our own export's `consent` cell, checked (ValueError: the row
    is rejected, saying why): the proof of opt-in moves with the person."""
    try:
        records = json.loads(value)
    except (ValueError, RecursionError):
        raise ValueError("its consent cell is not the JSON `subscribers export` writes") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(
            "its consent cell is not a list of records, as `subscribers export` writes"
        )
    checked = []
    for record in records:
        if record.get("kind") not in CONSENT_KINDS:
            raise ValueError(f"its consent cell holds an unknown kind {record.get('kind')!r}")
        occurred = parse_time(str(record.get("occurred_at") or ""))
        if occurred is None:
            raise ValueError("a consent record in its consent cell has no time (occurred_at)")
        texts = {
            k: record.get(k) for k in ("ip", "user_agent", "page_url", "consent_text", "source")
        }
        if not all(v is None or isinstance(v, str) for v in texts.values()):
            raise ValueError("a consent record in its consent cell has a value that is no text")
        details = record.get("details") or {}
        if not isinstance(details, dict):
            raise ValueError("a consent record's details in its consent cell are no object")
        checked.append(
            {
                "kind": record["kind"],
                "occurred_at": occurred,
                **{k: v for k, v in texts.items() if v},
                "proves_consent": record.get("proves_consent") is True,
                "details": details,
            }
        )
    return checked


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
    lines: LineDecoder,
    path: Path,
    result: ImportResult,
    mapping: list[tuple[str, str]],
    names: FieldNames,
) -> tuple[list[str], Format, Iterator[tuple[int, Incoming | Reject, list[str]]]]:
    lines_read = iter(lines)
    first = next(lines_read, "")
    while first and not first.strip():
        first = next(lines_read, "")
    if not first:
        raise ImportFileError(f"{path}: the file is empty; export the list again")
    delimiter = sniff_delimiter(first)
    result.delimiter = delimiter
    record: list[str] = []  # the lines of the record being read, to check its quotes
    # Set when the record holds a NUL (which PostgreSQL refuses) or a line in no known
    # encoding: such a row is rejected.
    damage: list[str] = []

    def numbered_lines() -> Iterator[str]:
        for text in itertools.chain([first], lines_read):
            record.append(text)
            if lines.last_undecodable:
                damage.append("is neither UTF-8 nor Windows-1252 text; save the file as CSV UTF-8")
            if "\x00" in text:
                damage.append("contains a NUL character; remove it (the file may be damaged)")
            yield text

    reader = csv.reader(numbered_lines(), delimiter=delimiter)
    try:
        headings = [h.strip() for h in next(reader)]
    except csv.Error as exc:
        raise ImportFileError(f"{path}: the header row is not readable CSV ({exc})") from None
    if reader.line_num > 1 and _unclosed_quote(record, delimiter):
        raise ImportFileError(
            f"{path}: a quote in the header row is never closed; close it and import again"
        )
    if damage:
        raise ImportFileError(f"{path}:1: the header row {damage[0]}")
    if len(headings) > MAX_COLUMNS:
        raise ImportFileError(
            f"{path}:1: the header row has {len(headings):,} columns; at most {MAX_COLUMNS:,} "
            "are read: delete the columns you do not import and try again"
        )
    record.clear()
    fmt = detect_format(headings)
    apply_map(fmt, mapping, path)
    if "email" not in fmt.targets.values():
        raise ImportFileError(
            f"{path}: no email column among {', '.join(h for h in headings if h)[:200]}; "
            "name it 'email' or use --map COLUMN=email"
        )
    if any(t.startswith("field:") or t == "fields_json" for t in fmt.targets.values()):
        names.load()  # now, before a reader process is forked: it cannot use the database
    plan = _plan(fmt, headings, names)
    width = len(headings)

    def reject(line: int, row: list[str], reason: str) -> Reject:
        """A rejected row, named by its address cell (as far as the row has one)."""
        email = row[plan[0][0]].strip().replace("\x00", "") if plan[0][0] < len(row) else ""
        return Reject(line, email, reason)

    def unreadable(line: int, error: csv.Error) -> tuple[int, Reject, list[str]]:
        """A record csv gave up on (a cell over its field limit): its first cells, cut."""
        cells: list[str] = []
        with contextlib.suppress(csv.Error):
            cells = next(csv.reader([record[0][:FIELD_CHARS]], delimiter=delimiter), [])
        cells = [cell[:200] for cell in cells]
        if "field larger than field limit" in str(error):
            reason = (
                f"a cell is longer than {FIELD_CHARS:,} characters (or a quote opened here is "
                "never closed); shorten it or close the quote"
            )
        else:
            reason = f"not readable CSV ({error}); fix the row"
        return line, reject(line, cells, reason), cells

    def rows() -> Iterator[tuple[int, Incoming | Reject, list[str]]]:
        last = reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                line = last + 1
                last = reader.line_num
                yield unreadable(line, exc)
                record.clear()
                damage.clear()
                continue
            line = last + 1
            last = reader.line_num
            raw = record[:] if last > line else None
            record.clear()
            if damage:
                reason = damage[0]
                damage.clear()
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
                    f"{len(row)} columns but the header has {plural(width, 'column')}; "
                    "quote values that contain the delimiter"
                )
                yield line, reject(line, row, reason), row
                continue
            yield line, _incoming_from_row(line, row, plan, fmt, names), row

    return headings, fmt, rows()


#: Keys of our own JSON export that are not columns: `id` is the exporting list's own (a new
#: list numbers people itself), `fields` holds the custom fields.
JSON_OWN_KEYS = frozenset({*OWN_COLUMNS, "id", "fields"})


def json_rows(
    path: Path, names: FieldNames, result: ImportResult, mapping: list[tuple[str, str]]
) -> tuple[list[str], Format, Iterator[tuple[int, Incoming | Reject, list[str]]]]:
    """Our own JSON export (an array of objects). Read whole: JSON has no line structure.

    A key that is neither the export's nor `--map`ped is left out, and named in
    `result.unread_keys` (with how many rows have it) so the author can map it."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ImportFileError(
            f"{path}:{line}: is not UTF-8 text; `subscribers export --format json` writes UTF-8"
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ImportFileError(f"{path}: is not valid JSON ({exc}); export it again") from None
    except RecursionError:
        raise ImportFileError(
            f"{path}: its JSON is nested too deeply to be a subscriber export; "
            "`subscribers export --format json` writes an array of objects"
        ) from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ImportFileError(
            f"{path}: JSON must be an array of subscriber objects, as `subscribers export "
            "--format json` writes"
        )
    fmt = Format("newsletter-json", {})
    headings = ["email", "reason"]
    # The keys beyond the export's, in the order they first come, with how many rows have
    # each; --map reads them like a CSV column (the same spellings: `first_name`, a field).
    others: dict[str, int] = {}
    for item in data:
        for key in item:
            if key not in JSON_OWN_KEYS:
                others[key] = others.get(key, 0) + 1
    mapped = Format("newsletter-json", {key: "" for key in others})
    apply_map(mapped, mapping, path)
    read_as = {key: target for key, target in mapped.targets.items() if target}
    result.unread_keys = {key: n for key, n in others.items() if key not in read_as}

    def rows() -> Iterator[tuple[int, Incoming | Reject, list[str]]]:
        for number, item in enumerate(data, start=1):
            values: list[tuple[str, str]] = [("email", str(item.get("email") or ""))]
            for column in OWN_COLUMNS[1:]:
                value = item.get(column)
                if value is None or column == "tags":
                    continue
                if column == "consent":  # (a list in JSON, a JSON cell in CSV)
                    value = json.dumps(value, ensure_ascii=False)
                values.append((column, str(value)))
            given = item.get("fields")
            fields = dict(given) if isinstance(given, dict) else {}
            for key, target in read_as.items():
                value = item.get(key)
                if value is None or target == "ignore":
                    continue
                if target.startswith("field:"):  # (as it is, like the values under "fields")
                    fields[target[6:]] = value
                    continue
                if isinstance(value, list) and target == "tags":
                    value = ",".join(str(v) for v in value)
                elif isinstance(value, dict | list):
                    value = json.dumps(value, ensure_ascii=False)
                values.append((target, str(value)))
            result_row = _incoming_from_values(number, values, fmt, names)
            if isinstance(result_row, Incoming):
                tags = item.get("tags") or []
                if isinstance(tags, str):
                    tags = _split_tags(tags)
                result_row.tags.update(normalize_tags(str(t) for t in tags))
                if fields:
                    result_row.fields.update(
                        (names.canonical(str(k)), v) for k, v in fields.items()
                    )
                    result_row.simple = False
            yield number, result_row, [str(item.get("email") or "")]

    return headings, fmt, rows()
