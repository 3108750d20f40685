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


@pytest.mark.slow
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
    # Numbers are handed out per feature and may land out of order; they only ever increase.
    numbers = [int(name[1:4]) for name, _ in migrations.STEPS]
    assert numbers == sorted(set(numbers))
    assert step.startswith(f"m{int(step[1:4]):03d}_")


@pytest.mark.slow
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


@pytest.mark.slow
def test_open_engine_reuses_one_engine_per_url(database_url) -> None:
    # A postgresql:// URL used to miss the cache every time: a new pool and a migration
    # check on each call.
    first = open_engine(database_url)
    assert open_engine(database_url) is first


@pytest.mark.slow
def test_a_forgotten_subscribers_id_is_never_given_again(database_url, tmp_path) -> None:
    from newsletter.store.importer import import_file
    from newsletter.store.subscribers import add_subscriber, forget_subscriber

    engine = open_engine(database_url)
    add_subscriber(engine, "anna@example.de")
    newest = add_subscriber(engine, "bernd@example.de")
    assert forget_subscriber(engine, "bernd@example.de")
    # Old unsubscribe links and late SendGrid events name `newest.id`: nobody may get it.
    assert add_subscriber(engine, "carla@example.de").id > newest.id
    assert forget_subscriber(engine, "carla@example.de")
    csv_file = tmp_path / "neu.csv"
    csv_file.write_text("email\ndora@example.de\n", encoding="utf-8")
    import_file(engine, csv_file)
    dora = find_subscriber(engine, "dora@example.de")
    assert dora is not None and dora.id > newest.id + 1


@pytest.mark.slow
def test_an_old_sqlite_database_gets_ids_that_are_never_reused(tmp_path) -> None:
    from sqlalchemy import MetaData, func, text

    from newsletter.store.subscribers import add_subscriber, forget_subscriber

    url = f"sqlite:///{tmp_path / 'old.db'}"
    # The first schema: `subscribers` without AUTOINCREMENT, m001-m003 recorded.
    legacy = MetaData()
    for table in schema.metadata.sorted_tables:
        table.to_metadata(legacy)
    legacy.tables["subscribers"].dialect_options["sqlite"]["autoincrement"] = False
    old = create_engine(url)
    legacy.create_all(old)
    now = datetime(2024, 7, 2, 8, 30, tzinfo=UTC)
    with old.begin() as conn:
        assert (
            "AUTOINCREMENT"
            not in conn.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'subscribers'")
            ).scalar_one()
        )
        for name in ("m001_initial", "m002_send_leases", "m003_send_totals"):
            conn.execute(insert(schema.schema_migrations).values(name=name, applied_at=now))
        for i in (1, 2, 3):
            conn.execute(
                insert(schema.subscribers).values(
                    id=i, email=f"leser{i}@example.de", email_key=f"leser{i}@example.de",
                    first_name="Jürgen", status="subscribed", fields={"stadt": "Köln"},
                    created_at=now, updated_at=now,
                )
            )  # fmt: skip
            conn.execute(insert(schema.subscriber_tags).values(subscriber_id=i, tag="leser"))
        issue_id = conn.execute(
            insert(schema.issues).values(
                slug="x", title="X", subject="X", language="de", created_at=now
            )
        ).inserted_primary_key[0]
        send_id = conn.execute(
            insert(schema.sends).values(
                issue_id=issue_id, status="done", transport="sendgrid", segment=[],
                dry_run=False, started_at=now,
            )
        ).inserted_primary_key[0]  # fmt: skip
        for i in (1, 2, 3):
            conn.execute(
                insert(schema.deliveries).values(
                    issue_id=issue_id, subscriber_id=i, send_id=send_id, state="accepted",
                    updated_at=now,
                )
            )  # fmt: skip
    old.dispose()

    engine = open_engine(url)  # runs m004: the rebuild
    with engine.connect() as conn:
        assert (
            "AUTOINCREMENT"
            in conn.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'subscribers'")
            ).scalar_one()
        )
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        tags = conn.execute(select(func.count()).select_from(schema.subscriber_tags)).scalar()
        rows = conn.execute(select(func.count()).select_from(schema.deliveries)).scalar()
        indexes = {i["name"] for i in inspect(conn).get_indexes("subscribers")}
    assert (tags, rows) == (3, 3), "the rebuild lost rows that point at subscribers"
    assert "ix_subscribers_status" in indexes
    assert find_subscriber(engine, "leser1@example.de").fields == {"stadt": "Köln"}
    # Foreign keys point at the rebuilt table: forgetting cascades, and ids move on.
    assert forget_subscriber(engine, "leser3@example.de")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.deliveries)).scalar() == 2
    assert add_subscriber(engine, "neu@example.de").id == 4
