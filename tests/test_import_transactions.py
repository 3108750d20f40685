"""`subscribers import`'s write transactions: quick chunks share one, a chunk that clashes
with another writer is rolled back alone, and the connection is left as it was found."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from newsletter.errors import StoreError
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.importer import import_file
from newsletter.store.subscribers import (
    BulkWriter,
    add_subscriber,
    count_subscribers,
    find_subscriber,
)


@pytest.fixture
def engine(database_url: str):
    return open_engine(database_url)


def people_csv(path: Path, rows: int) -> Path:
    path.write_text(
        "email,first name\n" + "".join(f"p{i}@example.com,P{i}\n" for i in range(rows)),
        encoding="utf-8",
    )
    return path


def sign_up_p5_before_the_first_lock(engine, monkeypatch) -> list[int]:
    """A sign-up of P5 committed just before the import first takes the write lock; the
    list this returns grows by one for every time the import takes it."""
    real_lock = BulkWriter.lock
    locks: list[int] = []

    def sign_up_then_lock(self):
        if not locks:
            add_subscriber(engine, "P5@example.com", status="unconfirmed", source="form")
        locks.append(1)
        real_lock(self)

    monkeypatch.setattr(BulkWriter, "lock", sign_up_then_lock)
    return locks


def test_a_clash_in_the_third_chunk_of_a_transaction_keeps_the_two_before(
    engine, tmp_path, monkeypatch
) -> None:
    """A sign-up committed before the import took the lock: the chunk holding that address
    clashes, is rolled back alone and merged; the chunks before it in the same transaction
    stay, and the whole file took one transaction."""
    source = people_csv(tmp_path / "x.csv", 8)
    locks = sign_up_p5_before_the_first_lock(engine, monkeypatch)
    result = import_file(engine, source, chunk_rows=2, parallel=False)
    assert (result.new, result.updated, result.rejected) == (7, 1, 0)
    assert count_subscribers(engine) == 8
    assert find_subscriber(engine, "p5@example.com").first_name == "P5"
    assert find_subscriber(engine, "p5@example.com").source == "form"
    assert len(locks) == 1


def test_the_connection_checks_foreign_keys_again_after_an_import(engine, tmp_path) -> None:
    """SQLite skips the foreign-key lookups while the import writes rows whose subscribers it
    has just written; every connection it used checks them again afterwards."""
    import_file(engine, people_csv(tmp_path / "x.csv", 5), chunk_rows=2, parallel=False)
    for _ in range(3):  # the pool's connections, the import's among them
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert(schema.subscriber_tags).values(subscriber_id=10_000, tag="x"))


def test_foreign_keys_are_checked_again_after_an_import_that_failed(
    engine, tmp_path, monkeypatch
) -> None:
    real_insert = BulkWriter.insert

    def failing_insert(self, rows, tags, short_rows=None, plain=None):
        if any(row[1] == "p3@example.com" for row in (plain.rows if plain else [])):
            raise OSError(28, "No space left on device")
        real_insert(self, rows, tags, short_rows, plain)

    monkeypatch.setattr(BulkWriter, "insert", failing_insert)
    with pytest.raises(StoreError, match=r"2 rows written \(lines 2-3\)"):
        import_file(engine, people_csv(tmp_path / "x.csv", 6), chunk_rows=2, parallel=False)
    assert count_subscribers(engine) == 2
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(schema.subscriber_tags).values(subscriber_id=10_000, tag="x"))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_foreign_keys_come_back_when_the_write_lock_is_not_had_in_time(engine, tmp_path) -> None:
    """Another writer holds SQLite's lock past the import's wait: the import stops, and the
    connection it took goes back to the pool checking foreign keys (found in review)."""
    import sqlite3

    from newsletter.store.importer.model import ImportStopped

    with engine.connect() as conn:  # the pooled connection waits 50 ms instead of 10 s
        conn.exec_driver_sql("PRAGMA busy_timeout=50")
    other = sqlite3.connect(engine.url.database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a send or the subscribe form, mid-write
    try:
        with pytest.raises(ImportStopped, match="database is locked"):
            import_file(engine, people_csv(tmp_path / "x.csv", 1), parallel=False)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_the_parts_of_a_slow_chunk_are_committed_each(engine, tmp_path, monkeypatch) -> None:
    """A chunk the pacer cuts into parts (each as long as a transaction may hold the lock)
    is not written in one transaction: other writers get their turn between the parts."""
    from newsletter.store.importer import run as run_module
    from newsletter.store.importer.write import ImportTransaction, Pacer

    monkeypatch.setattr(Pacer, "TARGET", 0.05)
    monkeypatch.setattr(Pacer, "FIRST_ROWS", 10)
    monkeypatch.setattr(Pacer, "PAUSE", 0.0)
    real_write, real_commit = run_module.write_chunk, ImportTransaction.commit
    parts: list[int] = []
    commits: list[int] = []

    def slow_write(transaction, part, *args, **kwargs):  # a slow disk: longer than TARGET
        real_write(transaction, part, *args, **kwargs)
        parts.append(len(part))
        time.sleep(0.06)

    def counted_commit(self):
        if self.open:
            commits.append(len(parts))
        return real_commit(self)

    monkeypatch.setattr(run_module, "write_chunk", slow_write)
    monkeypatch.setattr(ImportTransaction, "commit", counted_commit)
    result = import_file(engine, people_csv(tmp_path / "x.csv", 40), chunk_rows=40, parallel=False)
    assert result.new == 40 and count_subscribers(engine) == 40
    assert len(parts) > 1
    assert commits == list(range(1, len(parts) + 1))  # one transaction per part


def test_people_without_consent_evidence_are_counted_once_after_a_clash(
    engine, tmp_path, monkeypatch
) -> None:
    """The chunk that clashed is rolled back and written again: its new people are counted
    once in "came without consent evidence" (found in review; older than the savepoints)."""
    sign_up_p5_before_the_first_lock(engine, monkeypatch)
    result = import_file(engine, people_csv(tmp_path / "x.csv", 8), chunk_rows=2, parallel=False)
    assert (result.new, result.updated) == (7, 1)
    assert result.without_evidence == 7
