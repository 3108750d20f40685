"""The real CLI on a pseudo-terminal, as a person at a shell: for commands that ask."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def in_terminal(args: list[str], answer: str | None, cwd: Path | None = None) -> tuple[int, str]:
    """(exit code, everything the terminal showed) of `newsletter ARGS`, given `answer` at
    its first question (a prompt ending in "]: "), or Ctrl-C there (SIGINT) when `answer`
    is None."""
    main_fd, terminal = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=cwd,
        env=env,
        close_fds=True,
    )
    os.close(terminal)
    output = b""
    answered = False
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main_fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main_fd, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if not answered and b"]: " in output:
                if answer is None:
                    # As a person would: a moment after the question shows. (A signal that
                    # lands before Python is in its read of the terminal waits for that read.)
                    time.sleep(0.3)
                    process.send_signal(signal.SIGINT)
                else:
                    os.write(main_fd, answer.encode() + b"\n")
                answered = True
            if process.poll() is not None and not ready:
                break
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(main_fd)
    return code, output.decode("utf-8", "replace")
