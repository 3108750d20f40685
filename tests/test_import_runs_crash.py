"""An import's "imported, no evidence" record (`import_runs`) is made inside the import's
write transaction: a chunk rolled back to its savepoint (a clash with a sign-up), a disk
error in the middle, or kill -9 take a run they made with them, and a rerun makes its own.
Nobody may point at a run that is not there, nobody the import added may be left without an
import record, and no run may be left that nobody points at. SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import exists, func, select

from newsletter.errors import StoreError
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.importer import import_file
from newsletter.store.subscribers import BulkWriter, add_subscriber, count_subscribers
from tests.conftest import CONFIG
from tests.support.imports import kill_import_after

s, runs, records = schema.subscribers, schema.import_runs, schema.consent_records


@pytest.fixture
def engine(database_url: str):
    return open_engine(database_url)


def people_csv(path: Path, rows: int, every_custom: int = 0) -> Path:
    """Plain rows, and with `every_custom` one row in so many with a custom field (the
    other write path)."""
    with path.open("w", encoding="utf-8") as out:
        out.write("email,first name,stadt\n")
        for i in range(rows):
            city = "Köln" if every_custom and i % every_custom == 0 else ""
            out.write(f"p{i}@example.com,Jörg,{city}\n")
    return path


def import_records(engine) -> dict[str, int]:
    """What the invariants count: dangling pointers, imported people with no record at all,
    runs nobody points at, and the runs."""
    pointed = exists().where(s.c.import_run_id == runs.c.id)
    with engine.connect() as conn:

        def count(query) -> int:
            return int(conn.execute(query).scalar_one())

        return {
            "dangling": count(
                select(func.count())
                .select_from(s)
                .where(
                    s.c.import_run_id.is_not(None), ~exists().where(runs.c.id == s.c.import_run_id)
                )
            ),
            "without": count(
                select(func.count())
                .select_from(s)
                .where(
                    s.c.source.like("import%"),
                    s.c.import_run_id.is_(None),
                    ~exists().where(records.c.subscriber_id == s.c.id),
                )
            ),
            "unused": count(select(func.count()).select_from(runs).where(~pointed)),
            "runs": count(select(func.count()).select_from(runs)),
        }


def test_a_clash_in_the_chunk_that_made_the_run_makes_it_again(
    engine, tmp_path, monkeypatch
) -> None:
    """A sign-up of p1 is committed just before the import first takes the write lock: the
    first chunk (p0, p1), which made the run, clashes, is rolled back with it and written
    again with lookups."""
    real_lock = BulkWriter.lock
    locks: list[int] = []

    def sign_up_then_lock(self):
        if not locks:
            add_subscriber(engine, "p1@example.com", status="unconfirmed", source="form")
        locks.append(1)
        real_lock(self)

    monkeypatch.setattr(BulkWriter, "lock", sign_up_then_lock)
    source = people_csv(tmp_path / "x.csv", 8, every_custom=3)
    result = import_file(engine, source, chunk_rows=2, parallel=False)
    assert (result.new, result.updated, result.without_evidence) == (7, 1, 7)
    assert import_records(engine) == {"dangling": 0, "without": 0, "unused": 0, "runs": 1}
    with engine.connect() as conn:
        pointing = conn.execute(select(func.count()).where(s.c.import_run_id.is_not(None)))
        assert pointing.scalar_one() == 7  # the sign-up is not the import's


@pytest.mark.parametrize("failing", ["p1@example.com", "p5@example.com"])
def test_a_disk_error_mid_import_then_a_rerun_leaves_everyone_one_record(
    engine, tmp_path, monkeypatch, failing: str
) -> None:
    """The disk fails in the first chunk (the one that makes the run) or in the third (the
    run was made two chunks before, in the same transaction): what is kept has its run,
    and the rerun adds the rest with a run of its own."""
    real_insert = BulkWriter.insert

    def failing_insert(self, rows, tags, short_rows=None, plain=None):
        if any(row[1] == failing for row in (plain.rows if plain else [])):
            raise OSError(28, "No space left on device")
        real_insert(self, rows, tags, short_rows, plain)

    source = people_csv(tmp_path / "x.csv", 8)
    with monkeypatch.context() as patched:
        patched.setattr(BulkWriter, "insert", failing_insert)
        with pytest.raises(StoreError, match="No space left on device"):
            import_file(engine, source, chunk_rows=2, parallel=False)
    kept = count_subscribers(engine)
    assert kept == (0 if failing == "p1@example.com" else 4)
    assert import_records(engine) == {
        "dangling": 0,
        "without": 0,
        "unused": 0,
        "runs": 0 if kept == 0 else 1,
    }
    result = import_file(engine, source, chunk_rows=2, parallel=False)
    assert (result.new, result.unchanged) == (8 - kept, kept)
    assert import_records(engine) == {
        "dangling": 0,
        "without": 0,
        "unused": 0,
        "runs": 1 if kept == 0 else 2,
    }


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses kill -9")
def test_kill_9_mid_import_then_rerun_leaves_everyone_one_record(
    make_project, database_url, tmp_path
) -> None:
    project = make_project(
        config=CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    )
    engine = open_engine(database_url)
    rows = 120_000
    source = people_csv(tmp_path / "list.csv", rows, every_custom=7)
    command, env = kill_import_after(project, source, lambda: count_subscribers(engine))
    halfway = count_subscribers(engine)
    assert 0 < halfway < rows, "killed too late to test anything"
    assert import_records(engine) == {"dangling": 0, "without": 0, "unused": 0, "runs": 1}

    done = subprocess.run(command, env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert count_subscribers(engine) == rows
    assert import_records(engine) == {"dangling": 0, "without": 0, "unused": 0, "runs": 2}
    engine.dispose()
