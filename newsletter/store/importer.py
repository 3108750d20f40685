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

The work is split in three: `import_read` turns the file into `Incoming` rows,
`import_changes` decides what they change in the list, `import_write` writes each chunk.
This module runs them, and every public name stays importable from here.
"""

from __future__ import annotations

import csv
import gc
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sqlalchemy import Engine, select

from newsletter.errors import ImportFileError
from newsletter.store.formats import detect_encoding
from newsletter.store.import_changes import LOOKUP_BATCH, _KeyFilter
from newsletter.store.import_read import (
    Incoming,
    Reject,
    _can_fork,
    _CountingReader,
    _csv_rows,
    _json_rows,
    _merge,
    _ReaderStream,
    parse_time,
)
from newsletter.store.import_write import _write_chunk
from newsletter.store.import_write import _Writer as _Writer  # tests patch its methods here
from newsletter.store.schema import subscribers
from newsletter.store.subscribers import normalize_tags

__all__ = [
    "CHUNK_ROWS",
    "LOOKUP_BATCH",
    "PARALLEL_BYTES",
    "REPORT_REJECTS",
    "ImportResult",
    "Incoming",
    "Reject",
    "import_file",
    "parse_time",
]

#: Rows per transaction: big enough for executemany to pay off, small enough to bound memory.
CHUNK_ROWS = 20_000


#: Rejects kept in memory for the report; all of them go to the rejects file.
REPORT_REJECTS = 1000


#: Files at least this big are parsed in a forked reader process while this one writes.
PARALLEL_BYTES = 8 << 20


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
            try:
                reject_file = Path(rejects_path).open("w", encoding="utf-8", newline="")  # noqa: SIM115
            except OSError as exc:
                raise ImportFileError(
                    f"{rejects_path}: cannot write ({exc.strerror}); choose another --rejects FILE"
                ) from None
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
