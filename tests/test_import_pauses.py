"""A big SQLite import pauses every couple of seconds so that other writers get a turn, but
only when another process has the database open: alone, the pauses would only slow it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from newsletter.store import engine as engines
from newsletter.store.engine import open_engine, others_have_it_open
from newsletter.store.importer import import_file
from newsletter.store.importer.write import Pacer

pytestmark = pytest.mark.skipif(
    not Path("/proc/locks").exists(), reason="Linux tells who holds a file's locks"
)

HOLD_OPEN = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT count(*) FROM subscribers").fetchone()
print("open", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@pytest.fixture
def engine(tmp_path: Path):
    made = open_engine(f"sqlite:///{tmp_path / 'newsletter.db'}")
    with made.connect() as conn:  # the import's own connection, open as during an import
        conn.exec_driver_sql("SELECT 1")
        yield made


def other_process(database: str) -> subprocess.Popen[str]:
    neighbour = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, database],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert neighbour.stdout is not None and neighbour.stdout.readline() == "open\n"
    return neighbour


def test_only_another_process_with_the_database_open_counts(engine) -> None:
    assert others_have_it_open(engine) is False
    neighbour = other_process(engine.url.database)
    try:
        assert others_have_it_open(engine) is True
    finally:
        neighbour.communicate("")
    assert others_have_it_open(engine) is False


def test_when_it_cannot_be_told_the_import_pauses(tmp_path: Path, monkeypatch) -> None:
    """No lock of this process's own in /proc/locks (another kind of file system, say):
    behave as if someone were waiting."""
    made = open_engine(f"sqlite:///{tmp_path / 'newsletter.db'}")
    with made.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        monkeypatch.setattr(engines.os, "getpid", lambda: 1)  # (some other process's id)
        assert others_have_it_open(made) is True


@pytest.mark.parametrize("neighbour_open", [False, True])
def test_the_import_pauses_only_for_a_neighbour(engine, tmp_path, monkeypatch, neighbour_open):
    pauses: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(Pacer, "TARGET", 0.0)  # a commit after every chunk,
    monkeypatch.setattr(Pacer, "SHARE", 0.0)  # and a pause due after each
    monkeypatch.setattr("newsletter.store.importer.write.time.sleep", sleep)
    source = tmp_path / "x.csv"
    source.write_text("email\n" + "".join(f"p{i}@example.de\n" for i in range(50)), "utf-8")
    neighbour = other_process(engine.url.database) if neighbour_open else None
    try:
        result = import_file(engine, source, chunk_rows=10, parallel=False)
    finally:
        if neighbour is not None:
            neighbour.communicate("")
    assert result.new == 50
    assert (Pacer.PAUSE in pauses) is neighbour_open
