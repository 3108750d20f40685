"""`ix_subscribers_status` leaves out the subscribed (m026): a big import writes no entry for
each new reader, and the rare statuses are still found through the index, on both databases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import create_engine, event, inspect

from newsletter.segments.query import count_matching
from newsletter.segments.syntax import parse
from newsletter.store import migrations
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import count_subscribers, iter_subscribers

STATUSES = {
    "eins@example.de": "subscribed",
    "zwei@example.de": "subscribed",
    "drei@example.de": "subscribed",
    "jörg@example.de": "bounced",
    "käthe@example.de": "unconfirmed",
    "ulf@example.de": "unsubscribed",
}


def _raw_engine(url: str):
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url)


def _fill(conn: Any) -> None:
    for number, (email, status) in enumerate(STATUSES.items(), start=1):
        conn.exec_driver_sql(
            "INSERT INTO subscribers (id, email, email_key, status, fields, source, created_at, "
            f"updated_at) VALUES ({number}, '{email}', '{email}', '{status}', '{{}}', 'cli', "
            "'2026-03-01 08:00:00', '2026-03-01 08:00:00')"
        )


def _index_sql(conn: Any) -> str:
    if conn.dialect.name == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE name = 'ix_subscribers_status'"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_subscribers_status'"
    return str(conn.exec_driver_sql(query).scalar_one())


def test_m026_leaves_the_subscribed_out_of_an_older_database_s_index(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _raw_engine(database_url)
    with monkeypatch.context() as patched:
        patched.setattr(
            migrations, "STEPS", [step for step in migrations.STEPS if step[0] < "m026"]
        )
        migrations.migrate(old)
    with old.begin() as conn:  # the index as every database made before m026 has it
        conn.exec_driver_sql("DROP INDEX ix_subscribers_status")
        conn.exec_driver_sql("CREATE INDEX ix_subscribers_status ON subscribers (status)")
        _fill(conn)
        assert "WHERE" not in _index_sql(conn).upper()
    old.dispose()

    engine = open_engine(database_url)  # runs m026
    with engine.connect() as conn:
        definition = _index_sql(conn)
        names = {index["name"] for index in inspect(conn).get_indexes("subscribers")}
    assert "ix_subscribers_status" in names
    assert "WHERE" in definition.upper() and "subscribed" in definition, definition
    for status in ("subscribed", "bounced", "unconfirmed", "unsubscribed", "complained"):
        wanted = sorted(e for e, s in STATUSES.items() if s == status)
        assert count_subscribers(engine, status=status) == len(wanted), status
        assert sorted(p.email for p in iter_subscribers(engine, status=status)) == wanted


def _plans(engine: Any, run: Callable[[], Any]) -> list[str]:
    """The query plan of each SELECT on `subscribers` that `run` makes, as the database
    would carry it out (PostgreSQL told to avoid a scan of the whole table, which it would
    rightly prefer for six rows)."""
    seen: list[tuple[str, Any]] = []

    def keep(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "subscribers" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    assert seen, "no query of subscribers was made"
    plans = []
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        for statement, parameters in seen:
            if engine.dialect.name == "sqlite":
                cursor.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
            else:
                cursor.execute("SET enable_seqscan = off")
                cursor.execute(f"EXPLAIN {statement}", parameters)
            plans.append("\n".join(str(row) for row in cursor.fetchall()))
        conn.rollback()
    return plans


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(lambda e: count_subscribers(e, status="bounced"), id="count --status"),
        pytest.param(lambda e: list(iter_subscribers(e, status="unconfirmed")), id="list --status"),
        pytest.param(lambda e: count_matching(e, parse("status:bounced")), id="status: segment"),
    ],
)
def test_a_rare_status_is_looked_up_in_the_index(database_url: str, query) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(database_url)
    with engine.begin() as conn:
        _fill(conn)
        assert "subscribed" in _index_sql(conn)  # a new database's index leaves them out too
    for plan in _plans(engine, lambda: query(engine)):
        assert "ix_subscribers_status" in plan, plan
    assert count_subscribers(engine, status="bounced") == 1
    assert count_matching(engine, parse("status:bounced OR status:unsubscribed")) == 2
    assert count_matching(engine, parse("-status:subscribed")) == 3
