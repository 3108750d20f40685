"""The fake SendGrid in its own process, slow on purpose, for tests that stop a sender
mid-send (kill -9, cancel): the sender is a real process and so is its server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import REPO


@contextmanager
def slow_sendgrid(log: Path, key: str, delay: float = 0.3) -> Iterator[str]:
    """`python -m tests.sendgrid_server`, answering each mail request after `delay` seconds
    and logging its recipients to `log`; yield its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.sendgrid_server", "--port", "0", "--log", str(log),
         "--key", key, "--delay", str(delay), "--log-recipients-only"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.kill()
        proc.wait()
