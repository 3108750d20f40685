"""Public ids derived from row ids (issue 27, m018): a subscriber's public id costs no column,
no index and no work per inserted row (the random one m015 stored, with its unique index,
was a third of a million-row import), yet tells nobody the list's size; the random public
ids m015 handed out keep working."""

from __future__ import annotations

import secrets

from sqlalchemy import create_engine, select, text
from starlette.testclient import TestClient

from newsletter import tokens
from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber, get_subscriber
from newsletter.web import create_app
from tests.conftest import TEST_SECRET
from tests.support.migrations import migrate_without, raw_engine
from tests.support.tokens import carried


def test_a_public_id_names_its_row_and_only_the_key_reads_it() -> None:
    ids = [1, 2, 3, 41, 999_999, 10**9, 2**40 - 1]
    public = [tokens.public_id(row_id, key=TEST_SECRET) for row_id in ids]
    assert all(p is not None and len(p) == tokens.PUBLIC_ID_LENGTH for p in public)
    assert len(set(public)) == len(ids)
    # Neighbours share no prefix that counts up.
    assert public[0][:4] != public[1][:4] != public[2][:4]
    assert [tokens.row_id_of(p, key=TEST_SECRET) for p in public if p] == ids
    # Another key reads nothing, and neither do random public ids (m015's) or garbage.
    assert {tokens.row_id_of(p, key="another key") for p in public if p} == {None}
    randoms = [secrets.token_urlsafe(9) for _ in range(2000)]
    assert {tokens.row_id_of(r, key=TEST_SECRET) for r in randoms} == {None}
    assert tokens.row_id_of("short", key=TEST_SECRET) is None
    # Beyond what 40 bits cover, a token falls back to naming the row id as such.
    assert tokens.public_id(2**40, key=TEST_SECRET) is None
    assert carried(tokens.make_token(tokens.UNSUBSCRIBE, 2**40, None, key=TEST_SECRET))[0] == 2**40


def _index_sql(conn, dialect: str) -> str:
    if dialect == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE name = 'uq_subscribers_public_id'"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_subscribers_public_id'"
    return str(conn.execute(text(query)).scalar_one())


def test_m018_keeps_the_random_public_ids_already_sent_and_stores_none_for_new_readers(
    database_url, monkeypatch, make_project
) -> None:
    old = raw_engine(database_url)
    migrate_without(old, "m018_derived_public_ids")  # a database as it was before m018
    with old.begin() as conn:
        conn.execute(text("DROP INDEX uq_subscribers_public_id"))
        conn.execute(
            text("CREATE UNIQUE INDEX uq_subscribers_public_id ON subscribers (public_id)")
        )
        conn.execute(
            text(
                "INSERT INTO subscribers (email, email_key, status, fields, created_at, updated_at,"
                " public_id) VALUES ('alt@example.de', 'alt@example.de', 'subscribed', '{}',"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'AltZufall_12')"
            )
        )
    old.dispose()

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    engine = open_engine(database_url)
    with engine.connect() as conn:
        assert "WHERE" in _index_sql(conn, engine.dialect.name).upper()  # partial now
        stored = conn.execute(select(schema.subscribers.c.public_id)).scalar_one()
    assert stored == "AltZufall_12"
    new = add_subscriber(engine, "neu@example.de")
    assert new.public_id is None  # nothing stored: links derive it from the row id

    client = TestClient(create_app(Project.load(make_project()), engine))
    sent_before = tokens.make_token(tokens.UNSUBSCRIBE, "AltZufall_12", None, key=TEST_SECRET)
    assert client.post(f"/unsubscribe/{sent_before}").status_code == 200
    made_now = tokens.make_token(tokens.UNSUBSCRIBE, new.id, None, key=TEST_SECRET)
    assert carried(made_now)[0] == tokens.public_id(new.id, key=TEST_SECRET)
    assert client.post(f"/unsubscribe/{made_now}").status_code == 200
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(select(schema.subscribers.c.email, schema.subscribers.c.status)).all()
        )
    assert statuses == {"alt@example.de": "unsubscribed", "neu@example.de": "unsubscribed"}
    assert get_subscriber(engine, new.id).status == "unsubscribed"


def test_m018_rebuilds_sqlite_tags_without_rowid_keeping_every_tag(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = create_engine(url)
    migrate_without(old, "m018_derived_public_ids")  # a database as it was before m018
    with old.begin() as conn:
        conn.execute(text("DROP TABLE subscriber_tags"))
        conn.execute(
            text(
                "CREATE TABLE subscriber_tags (subscriber_id INTEGER NOT NULL REFERENCES "
                "subscribers (id) ON DELETE CASCADE, tag VARCHAR(100) NOT NULL, "
                "PRIMARY KEY (subscriber_id, tag))"
            )
        )
        conn.execute(
            text("CREATE INDEX ix_subscriber_tags_tag ON subscriber_tags (tag, subscriber_id)")
        )
        for sid, email in ((1, "anna@example.de"), (2, "ben@example.de")):
            conn.execute(
                text(
                    "INSERT INTO subscribers (id, email, email_key, status, fields, created_at,"
                    " updated_at) VALUES (:id, :email, :email, 'subscribed', '{}',"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"id": sid, "email": email},
            )
        conn.execute(
            text("INSERT INTO subscriber_tags VALUES (1, 'vip'), (1, 'leser'), (2, 'leser')")
        )
    old.dispose()

    engine = open_engine(url)
    with engine.connect() as conn:
        table_sql = conn.execute(
            text("SELECT sql FROM sqlite_master WHERE name = 'subscriber_tags'")
        ).scalar_one()
        tags = conn.execute(text("SELECT subscriber_id, tag FROM subscriber_tags")).all()
        index = conn.execute(
            text("SELECT name FROM sqlite_master WHERE name = 'ix_subscriber_tags_tag'")
        ).scalar()
    assert "WITHOUT ROWID" in table_sql.upper() and index == "ix_subscriber_tags_tag"
    assert sorted(tuple(t) for t in tags) == [(1, "leser"), (1, "vip"), (2, "leser")]
    assert get_subscriber(engine, 1).tags == ("leser", "vip")
    # The foreign key still holds: erasing a reader takes their tags along.
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM subscribers WHERE id = 1"))
        left = conn.execute(text("SELECT subscriber_id, tag FROM subscriber_tags")).all()
    assert [tuple(t) for t in left] == [(2, "leser")]
