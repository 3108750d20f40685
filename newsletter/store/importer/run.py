"""`subscribers import`, running: read the file, decide and write chunk by chunk."""

from __future__ import annotations

import csv
import gc
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError

from newsletter.errors import ImportFileError, NewsletterError, StoreError
from newsletter.store.engine import database_error
from newsletter.store.importer.decide import existing_field_names
from newsletter.store.importer.evidence import consent_policy
from newsletter.store.importer.formats import REJECT_COLUMNS, detect_encoding
from newsletter.store.importer.keys import KeyFilter
from newsletter.store.importer.lines import LineDecoder
from newsletter.store.importer.model import (
    FieldNames,
    ImportInterrupted,
    ImportResult,
    ImportStopped,
    Incoming,
    line_of,
)
from newsletter.store.importer.process import ReaderStream, can_fork
from newsletter.store.importer.read import csv_rows, json_rows
from newsletter.store.importer.reader import Chunks, ReaderPlan
from newsletter.store.importer.write import ImportTransaction, Pacer, write_chunk
from newsletter.store.schema import subscribers
from newsletter.store.subscribers import column_length, normalize_tags
from newsletter.wording import plural

#: Rows per chunk (a transaction holds one or more; `Pacer` cuts slow ones smaller): big
#: enough for executemany to pay off, small enough to bound memory. Both processes hold
#: about one chunk; at 20,000 they took 35 MB more than at 10,000 (at a million rows,
#: where `Pacer` cut most chunks into two transactions of about 10,000 anyway).
CHUNK_ROWS = 10_000


#: Files at least this big are parsed in a reader process while this one writes.
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
    keep_full_ip: bool = False,
) -> ImportResult:
    """Import a CSV (or our JSON export) into the list; see the package docstring.

    Suppressed addresses (erased on request) are refused and counted; new subscribers get
    an `import` consent record (IPs from the export truncated unless `keep_full_ip`).

    `progress(bytes_read, total_bytes)` is called after each chunk.
    Raises ImportFileError if the file cannot be read at all; bad rows are rejects.
    ImportStopped if the database or disk fails mid-file, ImportInterrupted on Ctrl-C:
    both say how many rows were written, up to which line, and how to go on.
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
            keep_full_ip=keep_full_ip,
        )
    except KeyboardInterrupt as exc:
        if isinstance(exc, ImportInterrupted):
            raise
        raise ImportInterrupted(
            f"{path}: import interrupted before any row was written; run it again"
        ) from None
    finally:
        gc.unfreeze()
        if frozen_before:
            gc.freeze()
        if collecting:
            gc.enable()


def _check_source(source: str) -> None:
    """Refuse, before anything is written, a source no database takes: NUL (PostgreSQL never,
    SQLite not in the statement's text, where a plain row's source goes), what is not
    UTF-8 (an argument from a terminal that is not set to UTF-8), or one longer than its
    column (PostgreSQL stopped at the first row, and so again at every rerun)."""
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:
        unstorable = True
    else:
        unstorable = "\x00" in source
    if unstorable:
        raise StoreError(
            f"--source {source!r} holds a character that cannot be stored (a NUL, or bytes "
            "that are not UTF-8: is the terminal set to UTF-8?); give the source as plain text"
        )
    limit = column_length("source")
    if limit and len(source) > limit:
        raise StoreError(f"--source is longer than {limit} characters; shorten it")
    if source.strip().lower() == "form":
        # "form" means signed up through `serve`'s form: `stats --list` counts those as
        # the form's sign-ups and `--where source:form` finds them; an import is not one.
        raise StoreError(
            '--source "form" is kept for sign-ups through the form; name where the list came '
            'from instead, e.g. --source "form on my old blog"'
        )


def _check_rejects_path(path: Path, rejects_path: Path | str | None) -> None:
    """Refuse a rejects file that is the file being imported: opening it for the rejects
    would empty the list before a row of it was read."""
    if rejects_path is None:
        return
    try:
        same = Path(rejects_path).exists() and Path(rejects_path).samefile(path)
    except OSError:
        return  # (not one we can compare: opening it for writing says what is wrong)
    if same:
        raise ImportFileError(
            f"--rejects {rejects_path} is the file being imported; writing the rejects there "
            "would overwrite it: choose another file, e.g. --rejects rejects.csv"
        )


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
    keep_full_ip: bool = False,
) -> ImportResult:
    extra_tags = set(normalize_tags(tags))
    if source is not None:
        _check_source(source)
    _check_rejects_path(path, rejects_path)
    result = ImportResult(path=path, dry_run=dry_run)
    result.encoding = detect_encoding(path)
    total = path.stat().st_size
    mapping = list(mapping)

    with path.open("rb") as peek:
        is_json = peek.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")
    raw = path.open("rb")
    lines = LineDecoder(raw)
    reject_file: IO[str] | None = None
    reader: ReaderStream | None = None
    try:

        def list_field_names() -> list[str]:
            with engine.connect() as conn:
                return existing_field_names(conn)

        names = FieldNames(list_field_names)
        if is_json:
            headings, fmt, rows = json_rows(path, names, result, mapping)
            result.delimiter = ""
        else:
            headings, fmt, rows = csv_rows(lines, path, result, mapping, names)
        result.format = fmt.name
        source_name = source or f"import:{fmt.name}"
        if fmt.name.startswith("newsletter"):
            source_name = source or "import"
        with engine.connect() as probe:
            initially_empty = probe.execute(select(subscribers.c.id).limit(1)).first() is None
            policy = consent_policy(probe, path.name, fmt.name, keep_full_ip)
        reject_writer = None
        # As the input was written (its delimiter, a BOM if it had one), so the same
        # spreadsheet opens the rejects, fixed rows can be pasted back, and re-imported.
        rejects_encoding = "utf-8-sig" if result.encoding == "utf-8-sig" else "utf-8"
        if rejects_path is not None:
            try:
                reject_file = Path(rejects_path).open("w", encoding=rejects_encoding, newline="")  # noqa: SIM115
            except OSError as exc:
                raise ImportFileError(
                    f"{rejects_path}: cannot write ({exc.strerror}); choose another --rejects FILE"
                ) from None
            reject_writer = csv.writer(reject_file, delimiter=result.delimiter or ",")
            reject_writer.writerow([*headings, *REJECT_COLUMNS])

        # Exact where counts depend on it; a bit set for a first big import, sized for
        # the rows the file can hold (the shortest row worth reading is ~20 bytes: `a@b.de`,
        # a line break, a few empty cells), up to 16 MB.
        new_keys = KeyFilter(exact=dry_run or not initially_empty, rows=total // 20)
        # The bit set is kept by the reading side (the reader process, if any), which has
        # time to spare, not by the writing one: each chunk comes with its keys that an
        # earlier chunk may have had, and only those are looked up.
        read_keys = new_keys if new_keys.exact is None else None

        chunks = Chunks(
            rows,
            result,
            lines,
            chunk_rows=chunk_rows,
            extra_tags=extra_tags,
            read_keys=read_keys,
            reject_writer=reject_writer,
            reject_file=reject_file,
            is_json=is_json,
        )

        if parallel is None:
            parallel = total >= PARALLEL_BYTES and can_fork()
        # JSON is read whole (it has no lines to stream): the reader process reads CSV only.
        if parallel and not is_json:
            if reject_file is not None:
                reject_file.flush()  # the reader process writes the rest
            plan = ReaderPlan(
                path=path,
                encoding=result.encoding,
                mapping=mapping,
                chunk_rows=chunk_rows,
                extra_tags=extra_tags,
                field_spellings=dict(names.spelling),
                key_bits=None if read_keys is None else read_keys.mask.bit_length(),
                rejects_path=None if rejects_path is None else Path(rejects_path),
                rejects_encoding=rejects_encoding,
            )
            reader = ReaderStream(plan, raw)
            stream: Iterator[tuple[dict[str, Incoming], int, int, list[str] | None]] = iter(reader)
        else:
            stream = ((chunk, lines.bytes_read, line, seen) for chunk, line, seen in chunks)
        # Rows are written in a transaction that spans chunks while they are quick (see
        # `Pacer`); its `committed_line` is the line up to which every row is written. Within
        # a chunk, the rows' first lines rise, so a written part of it covers the lines up to
        # its last row's.
        transaction = ImportTransaction(engine, result)
        pacer = Pacer(engine, chunk_rows)
        try:
            for number, (chunk, done, line, seen) in enumerate(stream, start=1):
                # A first import into an empty list: the keys that may be repeats, from
                # the reader; the database tells which are (see `write_chunk`).
                chunk_keys = new_keys if seen is None else KeyFilter.of(seen)
                for part in pacer.parts(chunk):
                    started = time.perf_counter()
                    # Taken first: write_chunk drops erased addresses, which may be all of them.
                    part_line, part_rows = line_of(next(reversed(part.values()))), len(part)
                    with interrupt_deferred():  # a part is written whole or not at all
                        write_chunk(
                            transaction, part, result, chunk_keys, initially_empty,
                            resubscribe, source_name, fmt, policy,
                        )  # fmt: skip
                        transaction.line = part_line
                    pacer.wrote(part_rows, time.perf_counter() - started)
                    del part
                    # (After each part: one of a slow chunk holds the lock about as long as
                    # a transaction may.)
                    if pacer.commit_due(transaction):
                        with interrupt_deferred():  # counted as written exactly when committed
                            pacer.committed(transaction.commit())
                transaction.line = line  # (the next commit covers the chunk's last lines)
                del chunk
                if number % 10 == 0:
                    gc.collect()
                if progress is not None:
                    progress(done if not is_json else total, total)
            with interrupt_deferred():
                transaction.commit()
        except (NewsletterError, OSError, DBAPIError) as exc:
            # The part that failed is rolled back; the whole ones before it are kept.
            with interrupt_deferred():
                transaction.keep()
            raise ImportStopped(
                _stop_message(path, exc, result, transaction.committed_line)
            ) from None
        except KeyboardInterrupt:
            with interrupt_deferred():
                transaction.keep()
            raise ImportInterrupted(
                _interrupted_message(path, result, transaction.committed_line)
            ) from None
        finally:
            transaction.rollback()  # nothing open is left behind (a no-op once committed)
        summary = reader.summary if reader is not None else chunks.finish()
        assert summary is not None
        result.rows, result.rejected, result.rejects = (
            summary.rows,
            summary.rejected,
            summary.rejects,
        )
        result.encoding = summary.encoding
        result.fallback_lines, result.fallback_count = (
            summary.fallback_lines,
            summary.fallback_count,
        )
        result.duplicates += summary.merged
        if progress is not None:
            progress(total, total)
    finally:
        if reader is not None:
            reader.close()
        raw.close()
        if reject_file is not None:
            reject_file.close()
    return result


@contextmanager
def interrupt_deferred() -> Iterator[None]:
    """Hold Ctrl-C back until the block is done (a transaction is short), so that what
    an interrupted import reports as written is what was committed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    if received:
        raise KeyboardInterrupt


def _interrupted_message(path: Path, result: ImportResult, written_line: int) -> str:
    """What Ctrl-C kept of an import, and how to go on."""
    if result.dry_run:
        return f"{path}: dry run interrupted at line {written_line + 1}; nothing was changed"
    return (
        f"{path}: import interrupted at line {written_line + 1}: "
        f"{_written(result, written_line)} are kept; run the same import again to continue "
        "(it changes nothing that is done)"
    )


def _written(result: ImportResult, written_line: int) -> str:
    """'N rows written (lines 2-L)': what an import that stopped has kept."""
    lines = f"lines 2-{written_line}" if written_line > 1 else "no lines"
    return f"{plural(result.new + result.updated, 'row')} written ({lines})"


def _stop_message(path: Path, exc: BaseException, result: ImportResult, written_line: int) -> str:
    """Why an import stopped mid-file, what it wrote, and how to go on."""
    if isinstance(exc, DBAPIError):
        reason = f"database error: {database_error(exc)}"
    elif isinstance(exc, OSError):
        reason = f"{exc.strerror or exc}"
    else:
        reason = str(exc).removeprefix(f"{path}: ")
    if result.dry_run:
        return f"{path}:{written_line + 1}: {reason}; the dry run stopped here"
    return (
        f"{path}:{written_line + 1}: {reason}; the import stopped at line {written_line + 1}: "
        f"{_written(result, written_line)}; run the same import again to continue "
        "(it changes nothing that is done)"
    )
