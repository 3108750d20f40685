"""The fake SendGrid in its own process, slow on purpose, for tests that stop a sender
mid-send (kill -9, cancel): the sender is a real process and so is its server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import REPO, TEST_SECRET


def logged(log: Path) -> list[dict[str, Any]]:
    """The requests (or messages) the server logged, one JSON object a line. Only complete
    lines: a test polls while the server may be writing one, and a long line reaches the file
    in more than one write. (Lines as the file has them: splitlines would also split at a
    U+2028 inside a name.)"""
    if not log.exists():
        return []
    with open(log, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def logged_recipients(log: Path) -> list[str]:
    """Every address the fake SendGrid accepted, in order."""
    return [p["to"][0]["email"] for entry in logged(log) for p in entry["personalizations"]]


@contextmanager
def slow_sendgrid(
    log: Path, key: str, delay: float = 0.3, recipients_only: bool = True
) -> Iterator[str]:
    """`python -m tests.sendgrid_server`, answering each mail request after `delay` seconds
    and logging it to `log` (its recipients only, or the whole request with the subject);
    yield its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.sendgrid_server", "--port", "0", "--log", str(log),
         "--key", key, "--delay", str(delay),
         *(["--log-recipients-only"] if recipients_only else [])],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.kill()
        proc.wait()


def set_delay(url: str, seconds: float) -> None:
    """Make the running fake SendGrid pause this long before answering each mail request."""
    body = json.dumps({"seconds": seconds}).encode()
    request = urllib.request.Request(f"{url}/__fake__/delay", data=body, method="POST")
    urllib.request.urlopen(request, timeout=5).read()


def sender_env(url: str, key: str, database_url: str) -> dict[str, str]:
    """The environment of a `newsletter` child process that sends to the fake SendGrid at
    `url` from the project's database at `database_url`."""
    return {
        **os.environ,
        "SENDGRID_API_KEY": key,
        "SENDGRID_API_HOST": url,
        "NEWSLETTER_SECRET_KEY": TEST_SECRET,
        "NEWSLETTER_DATABASE_URL": database_url,
    }


def kill_when_in_flight(
    child: subprocess.Popen[str],
    url: str,
    *,
    sent_enough: Callable[[], bool],
    in_flight: Callable[[], bool],
    settle: float,
    what: str,
) -> None:
    """kill -9 `child` once the server has accepted enough (`sent_enough`) and a batch is in
    flight: the server holds the next requests (10 s) so that the batch seen in flight is
    still in flight when the kill comes; `settle` seconds let the requests already at the
    server get their answers. Then the server answers at once again."""
    deadline = time.monotonic() + 30
    while not sent_enough() and time.monotonic() < deadline:
        time.sleep(0.02)
    set_delay(url, 10)
    time.sleep(settle)
    while not in_flight() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert child.poll() is None, f"{what} finished before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    set_delay(url, 0)
