"""An old database (only m001 applied) upgrades itself and keeps every subscriber."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, insert, inspect, select

from newsletter.store import migrations, schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import count_subscribers, find_subscriber, iter_subscribers


def _raw_engine(url: str):
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url)


def test_an_m001_database_upgrades_without_losing_data(database_url, monkeypatch) -> None:
    old = _raw_engine(database_url)
    # Build the database as the first release did: only m001.
    monkeypatch.setattr(migrations, "STEPS", migrations.STEPS[:1])
    assert migrations.migrate(old) == ["m001_initial"]
    now = datetime(2024, 7, 2, 8, 30, tzinfo=UTC)
    with old.begin() as conn:
        for i, (email, status) in enumerate(
            [("Jörg@example.de", "subscribed"), ("weg@example.de", "unsubscribed")], start=1
        ):
            conn.execute(
                insert(schema.subscribers).values(
                    id=i,
                    email=email,
                    email_key=email.lower(),
                    first_name="Jörg" if i == 1 else None,
                    status=status,
                    fields={"stadt": "Köln"} if i == 1 else {},
                    source="cli",
                    created_at=now,
                    updated_at=now,
                    confirmed_at=now,
                    unsubscribed_at=now if status != "subscribed" else None,
                    unsubscribe_reason="per Mail" if status != "subscribed" else None,
                )
            )
        conn.execute(insert(schema.subscriber_tags).values(subscriber_id=1, tag="leser"))
    old.dispose()
    monkeypatch.undo()

    engine = open_engine(database_url)  # the current code: runs every later step
    with engine.connect() as conn:
        names = set(conn.execute(select(schema.schema_migrations.c.name)).scalars())
        assert names == {name for name, _ in migrations.STEPS}
        tables = set(inspect(conn).get_table_names())
    assert {t.name for t in schema.metadata.sorted_tables} <= tables
    assert count_subscribers(engine) == 2
    jörg = find_subscriber(engine, "jörg@example.de")
    assert (jörg.first_name, jörg.tags, jörg.fields) == ("Jörg", ("leser",), {"stadt": "Köln"})
    assert jörg.created_at == now
    weg = find_subscriber(engine, "weg@example.de")
    assert (weg.status, weg.unsubscribe_reason) == ("unsubscribed", "per Mail")
    assert [s.email for s in iter_subscribers(engine)] == ["Jörg@example.de", "weg@example.de"]
    # Opening it again runs nothing.
    assert migrations.migrate(engine) == []


@pytest.mark.parametrize("step", [name for name, _ in migrations.STEPS])
def test_steps_are_named_in_order(step) -> None:
    names = [name for name, _ in migrations.STEPS]
    number = int(step[1:4])
    assert names.index(step) == number - 1


def test_processes_opening_a_new_database_at_once_all_succeed(database_url, tmp_path) -> None:
    # `serve` and a cron `sync` may both be first to use a fresh database.
    import subprocess
    import sys

    code = (
        "import sys; from newsletter.store.engine import open_engine; "
        "from newsletter.store.subscribers import count_subscribers; "
        "print(count_subscribers(open_engine(sys.argv[1])))"
    )
    for _ in range(3):
        if database_url.startswith("sqlite"):
            for leftover in tmp_path.glob("test.db*"):
                leftover.unlink()
        else:
            engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
            with engine.begin() as conn:
                from sqlalchemy import text

                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
            engine.dispose()
        runs = [
            subprocess.Popen(
                [sys.executable, "-c", code, database_url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        results = [run.communicate(timeout=60) for run in runs]
        assert [(out, err) for out, err in results] == [("0\n", "")] * 4
        engine = open_engine(database_url)
        with engine.connect() as conn:
            names = list(conn.execute(select(schema.schema_migrations.c.name)).scalars())
        assert sorted(names) == sorted(name for name, _ in migrations.STEPS)
        from newsletter.store.engine import dispose_all

        dispose_all()


def test_open_engine_reuses_one_engine_per_url(database_url) -> None:
    # A postgresql:// URL used to miss the cache every time: a new pool and a migration
    # check on each call.
    first = open_engine(database_url)
    assert open_engine(database_url) is first
