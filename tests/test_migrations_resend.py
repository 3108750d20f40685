"""m020: an existing ledger gains `send_round` in its unique key. Every row it had becomes a
first copy; the guard still refuses a second first copy, and now lets a resend be its own."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, insert, inspect, select
from sqlalchemy.exc import IntegrityError

from newsletter.store import migrations, schema
from newsletter.store.engine import open_engine

OLD_DELIVERIES = """
CREATE TABLE deliveries (
    id {id_type} PRIMARY KEY,
    issue_id INTEGER NOT NULL REFERENCES issues (id) ON DELETE CASCADE,
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    send_id INTEGER NOT NULL REFERENCES sends (id) ON DELETE CASCADE,
    state VARCHAR(16) NOT NULL,
    batch_no INTEGER,
    message_id VARCHAR(200),
    error TEXT,
    updated_at {time_type} NOT NULL,
    CONSTRAINT uq_deliveries_issue_subscriber UNIQUE (issue_id, subscriber_id)
)
"""


def _raw_engine(url: str):
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url)


def _old_database(url: str, monkeypatch) -> None:
    """A database as it was before m020: the ledger's key (issue, subscriber), and sends
    without resend, subject and track_opens; one issue sent to two readers."""
    old = _raw_engine(url)
    monkeypatch.setattr(
        migrations, "STEPS", [s for s in migrations.STEPS if s[0] != "m020_resend_rounds"]
    )
    migrations.migrate(old)
    postgres = old.dialect.name == "postgresql"
    with old.begin() as conn:
        conn.exec_driver_sql("DROP TABLE deliveries")
        conn.exec_driver_sql(
            OLD_DELIVERIES.format(
                id_type="SERIAL" if postgres else "INTEGER",
                time_type="TIMESTAMP WITH TIME ZONE" if postgres else "DATETIME",
            )
        )
        conn.exec_driver_sql("CREATE INDEX ix_deliveries_send_state ON deliveries (send_id, state)")
        conn.exec_driver_sql(  # (m016's)
            "CREATE INDEX ix_deliveries_smtp_message_id ON deliveries (message_id) "
            "WHERE message_id LIKE '<%%'"
            if postgres
            else "CREATE INDEX ix_deliveries_smtp_message_id ON deliveries (message_id) "
            "WHERE message_id LIKE '<%'"
        )
        for column in ("resend", "subject", "track_opens"):
            conn.exec_driver_sql(f"ALTER TABLE sends DROP COLUMN {column}")
        now = datetime.now(UTC)
        issue = conn.execute(
            insert(schema.issues).values(
                slug="meta-ki-creator", title="Meta", subject="Meta", language="de", created_at=now
            )
        ).inserted_primary_key[0]
        people = [
            conn.execute(
                insert(schema.subscribers).values(
                    email=f"leser{i}@example.de",
                    email_key=f"leser{i}@example.de",
                    status="subscribed",
                    fields={},
                    created_at=now,
                    updated_at=now,
                )
            ).inserted_primary_key[0]
            for i in range(2)
        ]
        send = conn.exec_driver_sql(
            "INSERT INTO sends (issue_id, status, transport, segment, dry_run, started_at) "
            "VALUES (%s, 'done', 'smtp', '[]', false, %s) RETURNING id"
            if postgres
            else "INSERT INTO sends (issue_id, status, transport, segment, dry_run, started_at) "
            "VALUES (?, 'done', 'smtp', '[]', 0, ?) RETURNING id",
            (issue, now if postgres else now.isoformat(" ")),
        ).scalar_one()
        for person in people:
            conn.exec_driver_sql(
                "INSERT INTO deliveries (issue_id, subscriber_id, send_id, state, message_id, "
                + (
                    "updated_at) VALUES (%s, %s, %s, 'accepted', '<m@x>', %s)"
                    if postgres
                    else "updated_at) VALUES (?, ?, ?, 'accepted', '<m@x>', ?)"
                ),
                (issue, person, send, now if postgres else now.isoformat(" ")),
            )
    old.dispose()
    monkeypatch.undo()


@pytest.mark.slow
def test_an_older_ledger_keeps_its_rows_as_first_copies_under_the_new_key(
    database_url, monkeypatch
):
    _old_database(database_url, monkeypatch)
    engine = open_engine(database_url)
    d = schema.deliveries
    with engine.connect() as conn:
        rows = conn.execute(
            select(d.c.subscriber_id, d.c.state, d.c.send_round, d.c.message_id).order_by(d.c.id)
        ).all()
        sends = conn.execute(select(schema.sends.c.resend, schema.sends.c.track_opens)).all()
    assert [(r.state, r.send_round, r.message_id) for r in rows] == [
        ("accepted", "first", "<m@x>")
    ] * 2
    assert sends == [(None, None)]
    inspector = inspect(engine)
    keys = {tuple(c["column_names"]) for c in inspector.get_unique_constraints("deliveries")}
    keys |= {tuple(i["column_names"]) for i in inspector.get_indexes("deliveries") if i["unique"]}
    assert ("issue_id", "subscriber_id", "send_round") in keys
    assert ("issue_id", "subscriber_id") not in keys
    names = {i["name"] for i in inspector.get_indexes("deliveries")}
    assert {"ix_deliveries_send_state", "ix_deliveries_smtp_message_id"} <= names

    first = rows[0]
    row = {
        "issue_id": 1,
        "subscriber_id": first.subscriber_id,
        "send_id": 1,
        "state": "in_flight",
        "updated_at": datetime.now(UTC),
    }
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(d).values(**row))  # a second first copy: refused, as before
    with engine.begin() as conn:
        conn.execute(insert(d).values(**row, send_round="non-clickers"))  # a resend's own
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(d).values(**row, send_round="non-clickers"))  # but only one
    assert migrations.migrate(engine) == []
