"""`subscribers import` as real processes: killed with real signals, next to a real `serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.store.importer import PARALLEL_BYTES

from .conftest import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def big_csv(path: Path, rows: int, prefix: str = "p") -> Path:
    """A CSV of `rows` people, about 60 bytes a row."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("email,first name,last name,tags\n")
        for i in range(rows):
            handle.write(f"{prefix}{i}.leserin@example.com,Jörg{i},Müller-Lüdenscheidt,leser\n")
    return path


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def newsletter(project: Path, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--project", str(project), *args],
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_kill_9_of_an_import_takes_its_reader_process_along(project, tmp_path) -> None:
    """Issue 15.5: the forked reader must not outlive a killed import."""
    source = big_csv(tmp_path / "big.csv", 160_000)
    assert source.stat().st_size >= PARALLEL_BYTES  # the size that forks a reader
    importing = newsletter(project, "subscribers", "import", str(source), "--quiet")
    reader = wait_for(lambda: children(importing.pid), 60, "the reader process")
    assert isinstance(reader, list) and len(reader) == 1
    time.sleep(0.5)  # let it fill the pipe, so that it is blocked sending
    os.kill(importing.pid, signal.SIGKILL)
    importing.wait(timeout=10)
    try:
        wait_for(lambda: not alive(reader[0]), 10, f"reader process {reader[0]} to end")
    finally:
        if alive(reader[0]):
            os.kill(reader[0], signal.SIGKILL)
