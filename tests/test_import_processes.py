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


def _bytes_written(pid: int) -> int:
    try:
        io = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return 0
    return int(io.split("wchar:")[1].split()[0])


@pytest.mark.slow
def test_kill_9_of_an_import_takes_its_reader_process_along(project, tmp_path) -> None:
    """Issue 15.5: the forked reader must not outlive a killed import."""
    source = big_csv(tmp_path / "big.csv", 160_000)
    assert source.stat().st_size >= PARALLEL_BYTES  # the size that forks a reader
    importing = newsletter(project, "subscribers", "import", str(source), "--quiet")
    reader = wait_for(lambda: children(importing.pid), 60, "the reader process")
    assert isinstance(reader, list) and len(reader) == 1
    # Let it write more than a pipe holds (64 KiB), so that it is blocked sending.
    wait_for(lambda: _bytes_written(reader[0]) > 65_536, 60, "the reader to fill the pipe")
    os.kill(importing.pid, signal.SIGKILL)
    importing.wait(timeout=10)
    try:
        wait_for(lambda: not alive(reader[0]), 10, f"reader process {reader[0]} to end")
    finally:
        if alive(reader[0]):
            os.kill(reader[0], signal.SIGKILL)


# --- an import next to a real `serve` ----------------------------------------------------


@pytest.fixture
def served(make_project, database_url):
    """A project on `database_url` with five readers, and its `serve` process on a port."""
    from newsletter.store.engine import open_engine
    from newsletter.store.subscribers import add_subscriber
    from tests.support.serve_processes import serve_process

    from .conftest import CONFIG, TEST_SECRET

    project = make_project(
        config=CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    )
    engine = open_engine(database_url)
    ids = [add_subscriber(engine, f"leserin{i}@example.de").id for i in range(5)]
    env = environment()
    env["NEWSLETTER_SECRET_KEY"] = TEST_SECRET
    with serve_process(project, env) as base:
        yield project, engine, ids, base


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["first import", "re-import tagging everyone"])
def test_one_click_unsubscribes_during_a_big_import_are_all_stored(served, tmp_path, kind):
    """Issue 15.2: every POST /unsubscribe/<token> during an import is stored, never a 500.

    A re-import that changes every row is the hard case: each of its chunks updates
    20,000 rows, which used to hold SQLite's write lock longer than the 10 s busy timeout.
    """
    import httpx

    from newsletter import tokens
    from newsletter.store.importer import import_file
    from newsletter.store.subscribers import get_subscriber

    from .conftest import TEST_SECRET

    project, engine, ids, base = served
    # (Big enough that the import is still writing after the five POSTs on a quiet,
    # fast machine too: a re-import of 60,000 rows could end after the first.)
    rows = 400_000 if kind == "first import" else 150_000
    source = big_csv(tmp_path / "big.csv", rows)
    extra: list[str] = []
    if kind != "first import":
        import_file(engine, source)
        extra = ["--tag", "neu"]
    importing = newsletter(project, "subscribers", "import", str(source), "--quiet", *extra)
    answers: list[tuple[int, float, str]] = []
    during: list[bool] = []
    try:
        # Chunks are being written now: the first one has landed.
        wait_for(lambda: _imported_rows(engine, kind) > 0, 120, "the import's first chunk")
        for subscriber_id in ids:
            token = tokens.make_token(tokens.UNSUBSCRIBE, subscriber_id, None, key=TEST_SECRET)
            start = time.monotonic()
            answer = httpx.post(f"{base}/unsubscribe/{token}", timeout=60)
            answers.append((answer.status_code, time.monotonic() - start, answer.text[:80]))
            # Answered while the import was still writing? (On a loaded machine each POST may
            # wait out a chunk's write lock, and the import can end before the fifth.)
            during.append(importing.poll() is None)
            time.sleep(0.1)
        out, err = importing.communicate(timeout=600)
    finally:
        if importing.poll() is None:
            importing.kill()
    assert importing.returncode == 0, err
    assert (f"new: {rows}" if kind == "first import" else f"updated: {rows}") in out
    assert during[0] and any(during[1:]), during  # the unsubscribes did meet the import
    assert [code for code, _, _ in answers] == [200] * 5, answers
    assert [get_subscriber(engine, i).status for i in ids] == ["unsubscribed"] * 5


def _imported_rows(engine, kind: str) -> int:
    """Rows the import under way has written: new people, or the re-import's new tag."""
    from sqlalchemy import func, select

    from newsletter.store import schema

    with engine.connect() as conn:
        if kind == "first import":
            query = select(func.count()).select_from(schema.subscribers)
            return conn.execute(query).scalar() - 5  # the five readers served
        query = select(func.count()).where(schema.subscriber_tags.c.tag == "neu")
        return conn.execute(query).scalar()


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_answers_503_with_retry_after_when_the_database_stays_locked(served) -> None:
    """What still cannot be stored gets 503 + Retry-After (a retry), never a 500."""
    import sqlite3

    import httpx

    from newsletter import tokens
    from newsletter.store.subscribers import get_subscriber

    from .conftest import TEST_SECRET

    project, engine, ids, base = served
    token = tokens.make_token(tokens.UNSUBSCRIBE, ids[0], None, key=TEST_SECRET)
    holder = sqlite3.connect(engine.url.database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program holds the write lock, for too long
    try:
        answer = httpx.post(f"{base}/unsubscribe/{token}", timeout=60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) > 0
    assert "try again" in answer.text
    assert get_subscriber(engine, ids[0]).status == "subscribed"
    assert httpx.post(f"{base}/unsubscribe/{token}", timeout=60).status_code == 200
    assert get_subscriber(engine, ids[0]).status == "unsubscribed"


# --- an import next to a steady stream of sign-ups ---------------------------------------

SIGNUPS = """
import sys, time
from pathlib import Path
from sqlalchemy import text
from newsletter.errors import StoreError
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber

engine, stop, log = open_engine(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
added, i = [], 0
while not stop.exists():
    # Every other sign-up is someone in the file, a little ahead of the import.
    if i % 2:
        with engine.connect() as conn:
            done = conn.execute(text("SELECT count(*) FROM subscribers")).scalar()
        address = f"p{done + 2000 + i}.leserin@example.com"
    else:
        address = f"signup{i}@example.org"
    try:
        add_subscriber(engine, address, status="unconfirmed", source="form")
        added.append(f"{address} {time.time()}")
    except StoreError:
        pass  # the import was quicker
    i += 1
    time.sleep(1 / 7)
log.write_text("\\n".join(added))
"""


def _form_signups(engine) -> int:
    from sqlalchemy import func, select

    from newsletter.store import schema

    query = select(func.count()).where(schema.subscribers.c.source == "form")
    with engine.connect() as conn:
        return conn.execute(query).scalar()


@pytest.mark.slow
def test_an_import_succeeds_alongside_a_steady_stream_of_sign_ups(
    make_project, database_url, tmp_path
):
    """Issue 15.11: 120,000 rows imported while people sign up (about 7 a second)."""
    from sqlalchemy import func, select

    from newsletter.store import schema
    from newsletter.store.engine import open_engine
    from newsletter.store.subscribers import add_subscriber, find_subscriber

    from .conftest import CONFIG

    project = make_project(
        config=CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    )
    engine = open_engine(database_url)
    add_subscriber(engine, "schon-da@example.de")  # a list that is not empty: merge mode
    rows = 120_000
    source = big_csv(tmp_path / "big.csv", rows)
    stop, log = tmp_path / "stop", tmp_path / "signed-up.txt"
    signups = subprocess.Popen(
        [sys.executable, "-c", SIGNUPS, database_url, str(stop), str(log)], env=environment()
    )
    try:
        # The stream is under way before the import starts (about a second of it, 7 a second).
        wait_for(lambda: _form_signups(engine) >= 7, 60, "the first sign-ups (about a second)")
        started = time.time()
        importing = newsletter(project, "subscribers", "import", str(source), "--quiet")
        out, err = importing.communicate(timeout=900)
        ended = time.time()
    finally:
        stop.touch()
        signups.wait(timeout=60)
    assert importing.returncode == 0, err
    stored = [line.split() for line in log.read_text().splitlines()]
    signed_up = [address for address, _ in stored]
    from_file = [a for a in signed_up if a.startswith("p") and int(a[1:].split(".")[0]) < rows]
    # The stream ran on during the import (sign-ups stored while it ran), and met it.
    assert any(started < float(at) < ended for _, at in stored), (started, ended, stored)
    assert from_file
    assert f"{rows} rows" in out
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(schema.subscribers)).scalar()
    assert total == 1 + rows + (len(signed_up) - len(from_file))
    # Someone who signed up through the form and is in the file: one person, the file's name.
    person = find_subscriber(engine, from_file[0])
    assert (person.source, person.first_name) == ("form", f"Jörg{from_file[0][1:].split('.')[0]}")


# --- Ctrl-C ------------------------------------------------------------------------------


def ctrl_c(process: subprocess.Popen) -> None:
    """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
    os.killpg(process.pid, signal.SIGINT)


@pytest.mark.slow
def test_ctrl_c_during_an_import_says_what_is_kept_and_exits_130(project, tmp_path) -> None:
    """Issue 12.10: one line (what is kept, how to go on), exit 130, no reader traceback."""
    import re

    from sqlalchemy import func, select

    from newsletter.project import Project
    from newsletter.store import schema
    from newsletter.store.engine import open_engine

    engine = open_engine(Project.load(project).database_url)
    source = big_csv(tmp_path / "big.csv", 400_000)
    importing = newsletter(
        project, "subscribers", "import", str(source), "--quiet", start_new_session=True
    )

    def written() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(schema.subscribers)).scalar()

    try:
        reader = wait_for(lambda: children(importing.pid), 60, "the reader process")
        wait_for(lambda: written() > 0, 120, "the first rows")
        ctrl_c(importing)
        out, err = importing.communicate(timeout=60)
    finally:
        if importing.poll() is None:
            importing.kill()
    assert importing.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    match = re.search(
        r"interrupted at line (\d+): (\d+) rows written \(lines 2-(\d+)\) are kept", err
    )
    assert match, err
    assert "run the same import again to continue" in err
    line, rows, last = (int(g) for g in match.groups())
    assert rows == written() == last - 1 and line == last + 1
    wait_for(lambda: not alive(reader[0]), 10, "the reader process to end")
    # Going on as told finishes the job.
    again = newsletter(project, "subscribers", "import", str(source), "--quiet")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert written() == 400_000


@pytest.mark.slow
def test_ctrl_c_during_an_export_leaves_no_half_file_and_exits_130(project, tmp_path) -> None:
    from newsletter.project import Project
    from newsletter.store.engine import open_engine
    from newsletter.store.importer import import_file

    engine = open_engine(Project.load(project).database_url)
    import_file(engine, big_csv(tmp_path / "big.csv", 150_000))
    target = tmp_path / "list.csv"
    exporting = newsletter(
        project, "subscribers", "export", "-o", str(target), start_new_session=True
    )
    partial = target.with_name(target.name + ".partial")
    try:
        wait_for(lambda: partial.exists() and partial.stat().st_size > 0, 60, "the export")
        ctrl_c(exporting)
        out, err = exporting.communicate(timeout=60)
    finally:
        if exporting.poll() is None:
            exporting.kill()
    assert exporting.returncode == 130, err
    assert err.strip() == f"export interrupted; {target} is left as it was; export again"
    assert not target.exists() and not partial.exists()
