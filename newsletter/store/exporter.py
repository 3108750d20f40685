"""`subscribers export` and `list`: stream the list as CSV or JSON in constant memory.

CSV has one column per custom field (`fields.NAME`), found by a first streaming pass;
a cell that a spreadsheet would run as a formula (starting with = + - @, tab or CR)
gets a leading apostrophe, and so does a cell that starts with an apostrophe, so
`subscribers import` can undo it exactly. JSON is an array written one object at a time.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

from sqlalchemy import Engine, select

from newsletter.store import consent
from newsletter.store.importer.formats import FIELD_PREFIX, OWN_COLUMNS
from newsletter.store.schema import subscribers
from newsletter.store.subscribers import Subscriber, iter_subscribers

_DANGEROUS = ("=", "+", "-", "@", "\t", "\r", "'")


def neutralize(value: str) -> str:
    """Defuse spreadsheet formula injection (OWASP): prefix an apostrophe."""
    if value and value[0] in _DANGEROUS:
        return "'" + value
    return value


def field_names(
    engine: Engine,
    *,
    status: str | None = None,
    tags: Iterable[str] = (),
    where: Sequence[Any] = (),
) -> list[str]:
    """Every custom field name in use, sorted (a streaming pass over the fields column)."""
    names: set[str] = set()
    if status is None and not tuple(tags) and not where:
        with engine.connect() as conn:
            result = conn.execution_options(yield_per=2000).execute(select(subscribers.c.fields))
            for (fields,) in result:
                if fields:
                    names.update(fields)
        return sorted(names)
    for subscriber in iter_subscribers(engine, status=status, tags=tags, where=where):
        names.update(subscriber.fields)
    return sorted(names)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


#: People whose consent records are read at once (`_with_consent`).
CONSENT_BATCH = 500


def csv_header(fields: list[str], *, consent: bool = True) -> list[str]:
    """The columns; `consent`: with the consent records (an export, not `list`)."""
    own = OWN_COLUMNS if consent else tuple(c for c in OWN_COLUMNS if c != "consent")
    return [*own, *(FIELD_PREFIX + name for name in fields)]


def _with_consent(
    engine: Engine, people: Iterable[Subscriber]
) -> Iterator[tuple[Subscriber, list[dict[str, Any]]]]:
    """Each person with their own consent records (read for CONSENT_BATCH people at once),
    so that an import of the export keeps the proof of their opt-in."""
    batch: list[Subscriber] = []

    def flush() -> Iterator[tuple[Subscriber, list[dict[str, Any]]]]:
        with engine.connect() as conn:
            records = consent.exported_records(conn, [person.id for person in batch])
        for person in batch:
            yield person, records.get(person.id, [])

    for person in people:
        batch.append(person)
        if len(batch) == CONSENT_BATCH:
            yield from flush()
            batch = []
    if batch:
        yield from flush()


def _tags_cell(tags: Sequence[str]) -> str:
    """Comma-separated, as people write them; in CSV's quoted form (`"Köln, Innenstadt",
    Messe`) when a tag holds a comma or a quote, which `subscribers import` reads back as
    the same tags. (Joined plainly, "Köln, Innenstadt" came back as two tags.)"""
    if not any("," in tag or '"' in tag for tag in tags):
        return ", ".join(tags)
    cell = io.StringIO()
    csv.writer(cell, lineterminator="").writerow(tags)
    return cell.getvalue()


def csv_row(
    subscriber: Subscriber, fields: list[str], consent: list[dict[str, Any]] | None = None
) -> list[str]:
    """One person's cells (`csv_header`'s order); `consent`: their consent records, for an
    export (None: no such column)."""
    data = subscriber.to_dict()
    row = [_cell(data[column]) for column in OWN_COLUMNS if column not in ("tags", "consent")]
    row.insert(OWN_COLUMNS.index("tags"), _tags_cell(subscriber.tags))
    if consent is not None:
        row.append(json.dumps(consent, ensure_ascii=False) if consent else "")
    row += [_cell(subscriber.fields.get(name)) for name in fields]
    return [neutralize(cell) for cell in row]


#: `--excel`: what German Excel opens by double-click with umlauts intact (its list
#: separator is the semicolon; the BOM tells it the file is UTF-8).
EXCEL_DELIMITER = ";"
BOM = "\ufeff"


def write_csv(
    out: TextIO,
    engine: Engine,
    *,
    status: str | None = None,
    tags: Iterable[str] = (),
    delimiter: str = ",",
    bom: bool = False,
    where: Sequence[Any] = (),
    consent: bool = True,
) -> int:
    """Write the (filtered) list as CSV; returns the number of subscribers written.
    `where`: more conditions on `subscribers` (a segment's); `consent`: with each person's
    consent records (an export; `list` shows the people only)."""
    tags = tuple(tags)
    fields = field_names(engine, status=status, tags=tags, where=where)
    if bom:
        out.write(BOM)
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(csv_header(fields, consent=consent))
    count = 0
    people = iter_subscribers(engine, status=status, tags=tags, where=where)
    if not consent:
        for subscriber in people:
            writer.writerow(csv_row(subscriber, fields))
            count += 1
        return count
    for subscriber, records in _with_consent(engine, people):
        writer.writerow(csv_row(subscriber, fields, records))
        count += 1
    return count


def json_chunks(people: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A JSON array of `people` (each `Subscriber.to_dict()`, perhaps with more), one object
    per line, produced lazily."""
    yield "["
    first = True
    for person in people:
        yield ("\n" if first else ",\n") + json.dumps(person, ensure_ascii=False)
        first = False
    yield "\n]\n" if not first else "]\n"


def write_json(
    out: TextIO,
    engine: Engine,
    *,
    status: str | None = None,
    tags: Iterable[str] = (),
    where: Sequence[Any] = (),
) -> int:
    count = 0

    def counted() -> Iterator[dict[str, Any]]:
        nonlocal count
        people = iter_subscribers(engine, status=status, tags=tags, where=where)
        for subscriber, records in _with_consent(engine, people):
            count += 1
            yield {**subscriber.to_dict(), "consent": records}

    for chunk in json_chunks(counted()):
        out.write(chunk)
    return count
