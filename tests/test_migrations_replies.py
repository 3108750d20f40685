"""m008: replies gain `automatic`, `unsubscribe_request` and a unique `message_id`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from newsletter.store import migrations, schema
from newsletter.store.engine import open_engine


def _raw_engine(url: str):
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url)


@pytest.mark.slow
def test_an_older_replies_table_gains_the_flags_and_keeps_its_rows(database_url, monkeypatch):
    old = _raw_engine(database_url)
    monkeypatch.setattr(migrations, "STEPS", migrations.STEPS[:4])
    migrations.migrate(old)
    now = datetime(2024, 7, 2, 9, 0, tzinfo=UTC)
    with old.begin() as conn:
        # The replies table as m001 made it before m008: without the three columns.
        conn.exec_driver_sql("DROP INDEX uq_replies_message_id")
        for column in ("automatic", "unsubscribe_request", "message_id"):
            conn.exec_driver_sql(f"ALTER TABLE replies DROP COLUMN {column}")
        conn.execute(
            text(
                "INSERT INTO replies (from_email, subject, text, attachments, received_at) "
                "VALUES ('anna@example.de', 'Re: KI', 'Danke!', '[]', :at)"
            ),
            {"at": now},
        )
    old.dispose()
    monkeypatch.undo()

    engine = open_engine(database_url)
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("replies")}
        row = conn.execute(select(schema.replies)).one()
    assert {"automatic", "unsubscribe_request", "message_id"} <= columns
    assert (row.text, row.automatic, row.unsubscribe_request, row.message_id) == (
        "Danke!",
        False,
        None,
        None,
    )
    values = dict(from_email="b@example.de", subject="", text="", attachments=[], received_at=now)
    with engine.begin() as conn:
        # Many replies without a Message-ID are fine ...
        conn.execute(insert(schema.replies).values(**values))
        conn.execute(insert(schema.replies).values(**values, message_id="<a@mail.example>"))
    # ... one Message-ID is stored once.
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(schema.replies).values(**values, message_id="<a@mail.example>"))
    assert migrations.migrate(engine) == []
