"""A real `newsletter subscribers import` process, killed with kill -9 once it has written
some rows: crash-safety tests then run the same import again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def import_command(project: Path, source: Path) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the import of `source` into `project`."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "newsletter", "--project", str(project)]
    return [*command, "subscribers", "import", str(source), "--quiet"], env


def kill_import_after(
    project: Path, source: Path, written: Callable[[], int], rows: int = 10_000, within: int = 120
) -> tuple[list[str], dict[str, str]]:
    """Start the import, kill -9 it once `written()` reaches `rows` (some chunks in, so that
    it dies in the middle of another); the command and environment to run it again."""
    command, env = import_command(project, source)
    importing = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + within
        while written() < rows and importing.poll() is None:
            assert time.monotonic() < deadline, f"the import wrote nothing in {within} s"
            time.sleep(0.02)
        os.kill(importing.pid, signal.SIGKILL)
    finally:
        importing.wait(timeout=30)
    return command, env
