"""m011: `sends.cancel_requested_at`, where `newsletter cancel` asks a live sender to stop;
an older database gains it and keeps its sends."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect, select

from newsletter.store import migrations, schema
from newsletter.store.engine import open_engine


def _raw_engine(url: str):
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url)


def send_columns(engine) -> set[str]:
    with engine.connect() as conn:
        return {column["name"] for column in inspect(conn).get_columns("sends")}


def test_an_older_database_gains_the_column_and_keeps_its_sends(database_url, monkeypatch):
    old = _raw_engine(database_url)
    monkeypatch.setattr(migrations, "STEPS", migrations.STEPS[:10])
    migrations.migrate(old)
    with old.begin() as conn:
        # As the sends table was before m011 (m001 makes today's table).
        conn.exec_driver_sql("ALTER TABLE sends DROP COLUMN cancel_requested_at")
        conn.exec_driver_sql(
            "INSERT INTO issues (slug, title, subject, language, created_at) "
            "VALUES ('meta-ki-creator', 'Meta', 'Meta', 'de', CURRENT_TIMESTAMP)"
        )
        conn.exec_driver_sql(
            "INSERT INTO sends (issue_id, status, transport, segment, dry_run, batch_id, "
            "started_at) VALUES (1, 'scheduled', 'sendgrid', '[]', false, 'b1', "
            "CURRENT_TIMESTAMP)"
        )
    assert "cancel_requested_at" not in send_columns(old)
    old.dispose()
    monkeypatch.undo()

    engine = open_engine(database_url)
    assert "cancel_requested_at" in send_columns(engine)
    with engine.connect() as conn:
        row = conn.execute(select(schema.sends)).one()
    assert (row.status, row.batch_id, row.cancel_requested_at) == ("scheduled", "b1", None)
    assert migrations.migrate(engine) == []
