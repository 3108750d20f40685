"""`subscribers import`, the reader process: big files are parsed in a child process.

Parsing (Python) and SQLite's inserts then run on two cores instead of taking turns.
The child is a fresh interpreter (`reader.main`) that loads only what reading needs: a
forked one carried the importing process's memory (SQLAlchemy, the CLI) a second time.
It must never outlive the import: it asks the kernel for SIGKILL when its parent dies
(Linux's parent-death signal), and it holds only the pipe's writing end, so that a send
to a dead parent fails instead of blocking forever.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO

import newsletter
from newsletter.errors import StoreError
from newsletter.store.importer.model import Incoming, ReadSummary, unpack
from newsletter.store.importer.reader import ReaderPlan


def can_fork() -> bool:
    """Can a reader process be started (and passed the open file)? On POSIX systems."""
    return os.name == "posix"


class ReaderStream:
    """Chunks parsed by the reader process, sent through a pipe.

    The pipe holds at most about one chunk, so memory stays bounded. The child is given
    the open file (it reads it again from the start, header and all) and what the header
    told this process (`ReaderPlan`), and sends back compact tuples, not objects: the
    simple rows (`pack`) as one `marshal` buffer, several times cheaper to write than a
    pickle (both ends are this program, so nothing foreign is ever loaded), the few
    other rows pickled. Each chunk comes with the keys that an earlier chunk may have
    had (`KeyFilter`, kept there, so the writing process does not hash every address).
    """

    def __init__(self, plan: ReaderPlan, raw: IO[bytes]):
        self.path = plan.path
        self.summary: ReadSummary | None = None
        plan.parent = os.getpid()
        receive_fd, send_fd = os.pipe()
        package_root = str(Path(newsletter.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "newsletter.store.importer.reader",
                    str(raw.fileno()),
                    str(send_fd),
                ],
                stdin=subprocess.PIPE,
                pass_fds=(raw.fileno(), send_fd),
                env=env,
                # Its own process group: Ctrl-C is for this process, which ends the child.
                process_group=0,
            )
        finally:
            os.close(send_fd)  # the child's end alone: its exit means end of file here
        self.receive = Connection(receive_fd, writable=False)
        assert self.process.stdin is not None
        # A child that died at once is reported by the empty pipe (see `__iter__`).
        with contextlib.suppress(BrokenPipeError), self.process.stdin as plan_pipe:
            plan_pipe.write(pickle.dumps(plan))

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
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait()
