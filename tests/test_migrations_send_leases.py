"""m017: one lease for every send. An older database's `send_leases` (one row per issue) is
rebuilt with a row per send, a live send's lease carried over; `sequence_runs` and
`sequence_sends` go, and a sequence run that died before the upgrade leaves lease rows, so
the next run still reaps its in-flight emails to `uncertain`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, inspect, select

from newsletter.sending.ledger import Ledger
from newsletter.store import migrations, schema
from newsletter.store.engine import open_engine


def _raw_engine(url: str):
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url)


def test_an_older_database_keeps_its_leases_and_its_dead_run_is_still_reaped(
    database_url, monkeypatch
):
    old = _raw_engine(database_url)
    monkeypatch.setattr(migrations, "STEPS", migrations.STEPS[:16])
    migrations.migrate(old)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with old.begin() as conn:
        # As m002 and m009 made the tables (the schema of today makes others).
        conn.exec_driver_sql("DROP TABLE send_leases")
        conn.exec_driver_sql(
            "CREATE TABLE send_leases (issue_id INTEGER PRIMARY KEY REFERENCES issues (id), "
            "send_id INTEGER NOT NULL REFERENCES sends (id), owner VARCHAR(36) NOT NULL, "
            "host VARCHAR(255) NOT NULL, pid INTEGER NOT NULL, "
            "heartbeat_at TIMESTAMP NOT NULL)"
        )
        for slug in ("an-issue", "sequences/welcome/willkommen"):
            conn.exec_driver_sql(
                "INSERT INTO issues (slug, title, subject, language, created_at) "
                f"VALUES ('{slug}', 't', 's', 'de', CURRENT_TIMESTAMP)"
            )
        for issue in (1, 2):
            conn.exec_driver_sql(
                "INSERT INTO sends (issue_id, status, transport, segment, dry_run, started_at) "
                f"VALUES ({issue}, 'sending', 'sendgrid', '[]', false, CURRENT_TIMESTAMP)"
            )
        conn.exec_driver_sql(
            "INSERT INTO subscribers (email, email_key, status, fields, source, created_at, "
            "updated_at) VALUES ('anna@example.de', 'anna@example.de', 'subscribed', '{}', "
            "'test', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
        conn.exec_driver_sql(
            "INSERT INTO deliveries (issue_id, subscriber_id, send_id, state, batch_no, "
            "updated_at) VALUES (2, 1, 2, 'in_flight', 1, CURRENT_TIMESTAMP)"
        )
        # A send of the issue, alive on another host; a sequence run that died long ago.
        conn.exec_driver_sql(
            "INSERT INTO send_leases (issue_id, send_id, owner, host, pid, heartbeat_at) "
            "VALUES (1, 1, 'a-live-sender', 'elsewhere', 4242, CURRENT_TIMESTAMP)"
        )
        runs, run_sends = migrations._m009_run_tables()
        conn.execute(
            runs.insert().values(
                id=1, owner="a-dead-run", host="elsewhere", pid=4243,
                started_at=long_ago, heartbeat_at=long_ago,
            )
        )  # fmt: skip
        conn.execute(run_sends.insert().values(send_id=2, run_id=1))
    old.dispose()
    monkeypatch.undo()

    engine = open_engine(database_url)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        leases = {row.owner: row for row in conn.execute(select(schema.send_leases)).all()}
    assert "sequence_runs" not in tables and "sequence_sends" not in tables
    assert (leases["a-live-sender"].issue_id, leases["a-live-sender"].send_id) == (1, 1)
    assert (leases["a-dead-run"].issue_id, leases["a-dead-run"].send_id) == (None, 2)
    assert migrations.migrate(engine) == []

    ledger = Ledger(engine)
    assert ledger.running(1) is not None  # the live sender still holds its issue
    assert ledger.run_sends_unfinished() == {2}  # `sends` tells no one to --resume it
    reaped = ledger.reap_gone_runs(
        "sequences", datetime.now(UTC), row_error="stopped", send_error="died"
    )
    assert reaped == 1
    with engine.connect() as conn:
        assert conn.execute(select(schema.deliveries.c.state)).scalar_one() == "uncertain"
        assert (
            conn.execute(select(schema.sends.c.status).where(schema.sends.c.id == 2)).scalar_one()
            == "stopped"
        )
        assert {r.owner for r in conn.execute(select(schema.send_leases)).all()} == {
            "a-live-sender"
        }


def test_the_sequences_precheck_leaves_a_database_before_m017_to_the_full_run(
    make_project, database_url, monkeypatch
):
    """Before m017 a dead run sat in `sequence_runs`, which the precheck no longer reads: it
    must not call such a database idle, or cron's runs would never migrate and reap it."""
    from newsletter.project import Project
    from newsletter.sequences.precheck import nothing_to_do
    from tests.conftest import CONFIG
    from tests.support.sequences import SEQUENCE, STEP1, T0, run, write_steps

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(CONFIG + SEQUENCE)
    write_steps(root, {"01-willkommen.md": STEP1})
    run(root, T0)
    assert nothing_to_do(Project.load(root), T0)
    engine = open_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            schema.schema_migrations.delete().where(
                schema.schema_migrations.c.name == "m017_one_send_lease"
            )
        )
    assert not nothing_to_do(Project.load(root), T0)
