"""The real CLI on a pseudo-terminal, as a person at a shell: for commands that ask."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def in_terminal(project: Path, answer: str | None, *args: str) -> tuple[int, str]:
    """(exit code, what the terminal showed) of `newsletter --project PROJECT ARGS`, given
    `answer` at its first [y/N] question, or Ctrl-C there (SIGINT) when `answer` is None."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--project", str(project), *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        close_fds=True,
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 30
    while b"[y/N]" not in output and time.monotonic() < deadline:
        output += os.read(controller, 4096)
    if answer is None:
        process.send_signal(signal.SIGINT)
    else:
        os.write(controller, answer.encode() + b"\n")
    code = process.wait(timeout=30)
    try:
        while chunk := os.read(controller, 4096):
            output += chunk
    except OSError:  # the terminal closed with the process
        pass
    os.close(controller)
    return code, output.decode("utf-8", "replace")
