"""`subscribers import`, running: read the file, decide and write chunk by chunk."""

from __future__ import annotations

import csv
import gc
import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from sqlalchemy import Engine, select

from newsletter.errors import ImportFileError
from newsletter.store.importer.decide import KeyFilter
from newsletter.store.importer.formats import detect_encoding
from newsletter.store.importer.model import ImportResult, Incoming, Reject, merge
from newsletter.store.importer.read import (
    CountingReader,
    ReaderStream,
    can_fork,
    csv_rows,
    json_rows,
)
from newsletter.store.importer.write import write_chunk
from newsletter.store.schema import subscribers
from newsletter.store.subscribers import normalize_tags

#: Rows per transaction: big enough for executemany to pay off, small enough to bound memory.
CHUNK_ROWS = 20_000


#: Files at least this big are parsed in a forked reader process while this one writes.
PARALLEL_BYTES = 8 << 20


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
    counter = CountingReader(raw)
    handle = io.TextIOWrapper(io.BufferedReader(counter, 1 << 20), encoding=encoding, newline="")
    reject_file: IO[str] | None = None
    reader: ReaderStream | None = None
    try:
        if is_json:
            headings, fmt, rows = json_rows(path, encoding)
            result.delimiter = ""
        else:
            headings, fmt, rows = csv_rows(handle, path, result, mapping)
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
        new_keys = KeyFilter(exact=dry_run or not initially_empty)

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
                    merge(earlier, item)
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
            parallel = not is_json and total >= PARALLEL_BYTES and can_fork()
        if parallel:
            if reject_file is not None:
                reject_file.flush()  # the reader process writes the rest
            reader = ReaderStream(chunks, lambda: counter.count, finish, path)
            stream: Iterator[tuple[dict[str, Incoming], int]] = iter(reader)
        else:
            stream = ((chunk, counter.count) for chunk in chunks())
        for number, (chunk, done) in enumerate(stream, start=1):
            write_chunk(
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
