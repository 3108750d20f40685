"""`subscribers import`, the reading side: rows into chunks, and the reader process.

`Chunks` parses the file's rows into chunks (rejects written, duplicates within a chunk
merged), in this process for small files. For big files `main` does the same in a
reader process of its own (`python -m newsletter.store.importer.reader`, started by
`process.ReaderStream`): a fresh interpreter that loads only what reading needs, not
SQLAlchemy or the CLI, so that it does not carry a second copy of the importing
process's memory (a forked one counted about 50 MB of it again).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import marshal
import os
import pickle
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

from newsletter.processes import die_with_parent
from newsletter.store.importer.keys import KeyFilter
from newsletter.store.importer.lines import FALLBACK, LineDecoder
from newsletter.store.importer.model import (
    FieldNames,
    ImportResult,
    Incoming,
    ReadSummary,
    Reject,
    merge,
    pack,
)
from newsletter.store.importer.read import csv_rows


class Chunks:
    """The file's rows in chunks of `chunk_rows` subscribers: (chunk, last line read for
    it, its keys that an earlier chunk may have had, or None without `read_keys`).
    Rejects are counted in `result` and written by `reject_writer`; `finish` tells what
    reading the whole file found."""

    def __init__(
        self,
        rows: Iterator[tuple[int, Incoming | Reject, list[str]]],
        result: ImportResult,
        lines: LineDecoder,
        *,
        chunk_rows: int,
        extra_tags: set[str],
        read_keys: KeyFilter | None,
        reject_writer: Any = None,
        reject_file: IO[str] | None = None,
        is_json: bool = False,
    ):
        self.rows, self.result, self.lines = rows, result, lines
        self.chunk_rows, self.extra_tags, self.read_keys = chunk_rows, extra_tags, read_keys
        self.reject_writer, self.reject_file, self.is_json = reject_writer, reject_file, is_json
        self.merged = 0  # rows merged into an earlier row of the same chunk

    def __iter__(self) -> Iterator[tuple[dict[str, Incoming], int, list[str] | None]]:
        result, reject_writer, extra_tags = self.result, self.reject_writer, self.extra_tags
        chunk_rows = self.chunk_rows
        chunk: dict[str, Incoming] = {}
        line = 1
        for line, item, row in self.rows:
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
                self.merged += 1
            else:
                chunk[item.key] = item
            if len(chunk) >= chunk_rows:
                yield chunk, line, self._seen_before(chunk)
                chunk = {}
        if chunk:
            yield chunk, line, self._seen_before(chunk)

    def _seen_before(self, chunk: dict[str, Incoming]) -> list[str] | None:
        """The chunk's keys that an earlier chunk may have had (None: no `read_keys`)."""
        if self.read_keys is None:
            return None
        keys = list(chunk)
        maybe = self.read_keys.among(keys)
        self.read_keys.update(keys)
        return maybe

    def finish(self) -> ReadSummary:
        result, lines = self.result, self.lines
        if self.reject_file is not None:
            self.reject_file.flush()
        encoding = result.encoding if self.is_json else lines.encoding()
        mixed = encoding != FALLBACK
        return ReadSummary(
            rows=result.rows,
            rejected=result.rejected,
            rejects=result.rejects,
            merged=self.merged,
            encoding=encoding,
            fallback_lines=lines.fallback_lines if mixed else [],
            fallback_count=lines.fallback_count if mixed else 0,
        )


@dataclass
class ReaderPlan:
    """What the reader process needs to read the file as the importing process would."""

    path: Path
    encoding: str
    mapping: list[tuple[str, str]]
    chunk_rows: int
    extra_tags: set[str]
    field_spellings: dict[str, str] = field(default_factory=dict)
    #: The bit set's size (a power of two) when the reader keeps it, else None.
    key_bits: int | None = None
    #: The reject file, opened for appending after the header the importer wrote.
    rejects_path: Path | None = None
    rejects_encoding: str = "utf-8"
    parent: int = 0


def read_into(plan: ReaderPlan, raw: IO[bytes], send: Connection) -> None:
    """Read the file (from its start) into chunks and send them, then the summary."""
    lines = LineDecoder(raw)
    result = ImportResult(path=plan.path)
    result.encoding = plan.encoding
    names = FieldNames()
    names.spelling.update(plan.field_spellings)
    _headings, _fmt, rows = csv_rows(lines, plan.path, result, plan.mapping, names)
    reject_file: IO[str] | None = None
    reject_writer = None
    if plan.rejects_path is not None:
        reject_file = plan.rejects_path.open("a", encoding=plan.rejects_encoding, newline="")  # noqa: SIM115
        reject_writer = csv.writer(reject_file, delimiter=result.delimiter or ",")
    read_keys = None if plan.key_bits is None else KeyFilter(exact=False, bits=plan.key_bits)
    chunks = Chunks(
        rows,
        result,
        lines,
        chunk_rows=plan.chunk_rows,
        extra_tags=plan.extra_tags,
        read_keys=read_keys,
        reject_writer=reject_writer,
        reject_file=reject_file,
    )
    try:
        for chunk, line, seen in chunks:
            simple, others = pack(chunk)
            buffer = marshal.dumps(simple)  # before the header: both or neither go
            send.send(("chunk", others, lines.bytes_read, line, seen))
            send.send_bytes(buffer)
            # Not kept alive while the next chunk is read: one chunk at a time.
            del chunk, simple, others, buffer
        send.send(("done", chunks.finish()))
    finally:
        if reject_file is not None:
            reject_file.close()


def main(argv: list[str]) -> None:
    """`python -m newsletter.store.importer.reader INPUT_FD PIPE_FD`, the plan on stdin."""
    # Ctrl-C is the importing process's to handle (it ends this one); here it would only
    # print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Millions of small acyclic objects: the cyclic collector would only rescan them (as
    # in the importing process, see `run.import_file`).
    gc.disable()
    input_fd, pipe_fd = int(argv[0]), int(argv[1])
    # Both ends are this program (the plan comes from the process that started this one).
    plan: ReaderPlan = pickle.loads(sys.stdin.buffer.read())
    die_with_parent(plan.parent)
    send = Connection(pipe_fd, readable=False)
    try:
        with os.fdopen(input_fd, "rb") as raw:
            raw.seek(0)
            read_into(plan, raw, send)
    except BaseException as exc:  # handed to the importing process, which raises it
        with contextlib.suppress(Exception):
            send.send(("error", exc))
    finally:
        with contextlib.suppress(OSError):
            send.close()


if __name__ == "__main__":
    main(sys.argv[1:])
