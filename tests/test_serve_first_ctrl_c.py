"""The first Ctrl-C to `serve` prints its line at once, even while a request is still open
(the graceful shutdown waits for it, which used to happen in silence). A real process,
stopped with a real SIGINT."""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_SECRET
from tests.support.serve_processes import start_serve

pytestmark = pytest.mark.slow

LINE = (
    "Stopped (Ctrl-C). Everything received so far is stored; "
    "start `newsletter serve` again to go on."
)


def test_first_ctrl_c_prints_the_line_while_a_request_is_open(project: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENDGRID_", "NEWSLETTER_"))}
    env.update(NEWSLETTER_SECRET_KEY=TEST_SECRET, PYTHONPATH=str(REPO))
    process, base = start_serve(project, env)
    port = int(base.rsplit(":", 1)[1])
    try:
        # A sign-up whose body has not all arrived yet: the request stays open.
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(
            b"POST /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nemail="
        )
        time.sleep(0.5)  # the behaviour under test: a request held open when Ctrl-C comes
        process.send_signal(signal.SIGINT)
        # Raw reads from the pipe's descriptor: a text-mode readline would buffer the line
        # after the one it returns, where select() can no longer see it.
        assert process.stderr is not None
        fd = process.stderr.fileno()
        received = b""
        until = time.monotonic() + 5
        while LINE.encode() not in received and time.monotonic() < until:
            if select.select([fd], [], [], 0.2)[0]:
                received += os.read(fd, 65536)
        seen = received.decode().splitlines()
        assert LINE in seen, seen
        assert process.poll() is None  # still waiting for the open request
        slow.close()
        _, rest = process.communicate(timeout=30)
        assert process.returncode == 130
        assert LINE not in rest and "Traceback" not in rest  # said once
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
