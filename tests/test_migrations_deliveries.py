"""m010: the unused index on `deliveries.message_id` goes (a bulk send kept it up to date
for nothing); the ledger's rows stay."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, select

from newsletter.store import migrations, schema
from newsletter.store.engine import open_engine


def _raw_engine(url: str):
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url)


def delivery_indexes(engine) -> set[str]:
    with engine.connect() as conn:
        return {index["name"] for index in inspect(conn).get_indexes("deliveries")}


@pytest.mark.slow
def test_an_older_database_loses_the_index_and_keeps_its_deliveries(database_url, monkeypatch):
    old = _raw_engine(database_url)
    monkeypatch.setattr(migrations, "STEPS", migrations.STEPS[:9])
    migrations.migrate(old)
    with old.begin() as conn:
        # As m001 made it before m010.
        conn.exec_driver_sql("CREATE INDEX ix_deliveries_message_id ON deliveries (message_id)")
        conn.exec_driver_sql(
            "INSERT INTO issues (slug, title, subject, language, created_at) "
            "VALUES ('meta-ki-creator', 'Meta', 'Meta', 'de', CURRENT_TIMESTAMP)"
        )
    assert "ix_deliveries_message_id" in delivery_indexes(old)
    old.dispose()
    monkeypatch.undo()

    engine = open_engine(database_url)
    indexes = delivery_indexes(engine)
    assert "ix_deliveries_message_id" not in indexes
    # (m020 made the unique key per round: issue, subscriber, round.)
    assert {"ix_deliveries_send_state", "uq_deliveries_issue_subscriber_round"} <= indexes | {
        c["name"] for c in inspect(engine).get_unique_constraints("deliveries")
    }
    with engine.connect() as conn:
        assert conn.execute(select(schema.issues.c.slug)).scalars().all() == ["meta-ki-creator"]
    assert migrations.migrate(engine) == []


def test_a_new_database_never_has_it(database_url):
    assert "ix_deliveries_message_id" not in delivery_indexes(open_engine(database_url))
