"""`subscribers import`, the reader process: big files are parsed in a forked child.

Parsing (Python) and SQLite's inserts then run on two cores instead of taking turns.
The child must never outlive the import: it asks the kernel for SIGKILL when its parent
dies (Linux's parent-death signal), and it closes its inherited copy of the pipe's
reading end, so that a send to a dead parent fails instead of blocking forever.
"""

from __future__ import annotations

import contextlib
import marshal
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

from newsletter.errors import StoreError
from newsletter.processes import die_with_parent
from newsletter.store.importer.model import Incoming, ReadSummary, pack, unpack


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


class ReaderStream:
    """Chunks parsed by a forked child process, sent through a pipe.

    The pipe holds at most about one chunk, so memory stays bounded. The child inherits
    the open file and the parser by fork, and sends back compact tuples, not objects: the
    simple rows (`pack`) as one `marshal` buffer, several times cheaper to write than a
    pickle (both ends are this program, so nothing foreign is ever loaded), the few
    other rows pickled. Each chunk comes with the keys that an earlier chunk may have
    had (`KeyFilter`, kept here, so the writing process does not hash every address).
    """

    def __init__(
        self,
        chunks: Callable[[], Iterator[tuple[dict[str, Incoming], int, list[str] | None]]],
        position: Callable[[], int],
        finish: Callable[[], ReadSummary],
        path: Path,
    ):
        self.path = path
        self.summary: ReadSummary | None = None
        context = multiprocessing.get_context("fork")
        self.receive, send = context.Pipe(duplex=False)
        parent = os.getpid()

        def run() -> None:
            # Ctrl-C reaches the whole process group: the parent handles it (and ends this
            # process); here it would only print a traceback.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            die_with_parent(parent)
            # The reading end is the parent's alone: with a copy open here, a send to a
            # dead parent would wait for a reader forever.
            self.receive.close()
            try:
                for chunk, line, seen in chunks():
                    simple, others = pack(chunk)
                    rows = marshal.dumps(simple)  # before the header: both or neither go
                    send.send(("chunk", others, position(), line, seen))
                    send.send_bytes(rows)
                    # Not kept alive while the next chunk is read: one chunk at a time.
                    del chunk, simple, others, rows
                send.send(("done", finish()))
            except BaseException as exc:  # handed to the parent, which raises it
                with contextlib.suppress(Exception):
                    send.send(("error", exc))
            finally:
                send.close()

        self.process = context.Process(target=run, name="newsletter-import-reader", daemon=True)
        self.process.start()
        send.close()

    def __iter__(self) -> Iterator[tuple[dict[str, Incoming], int, int, list[str] | None]]:
        """(chunk, bytes read, last line read, keys maybe seen before) for each chunk, then
        `summary` is set."""
        try:
            while True:
                try:
                    kind, payload, *rest = self.receive.recv()
                    simple = marshal.loads(self.receive.recv_bytes()) if kind == "chunk" else []
                except EOFError:
                    raise StoreError(
                        f"{self.path}: the import's reader process stopped unexpectedly; "
                        "run the same import again (it continues where it stopped)"
                    ) from None
                if kind == "chunk":
                    chunk = unpack((simple, payload))
                    del simple, payload
                    yield chunk, rest[0], rest[1], rest[2]
                    del chunk  # the caller is done with it: gone before the next arrives
                elif kind == "done":
                    self.summary = payload
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
