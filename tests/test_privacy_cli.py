"""Consent evidence, erasure that lasts and the person export, through the real CLI on
SQLite and PostgreSQL (`database_url`)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    insert,
    select,
)

from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.consent import text_hash, truncate_ip
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import find_subscriber, tables_referencing_subscribers
from newsletter.store.suppressions import KEY_CHECK
from tests.conftest import TEST_SECRET
from tests.support.terminal import in_terminal


@pytest.fixture
def proj(project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    return project


def engine_of(root: Path) -> Any:
    return open_engine(Project.load(root).database_url)


@pytest.mark.slow
def test_add_keeps_who_when_and_the_consent_text_and_show_prints_it(cli, proj) -> None:
    text = "Ja, ich möchte „Jens' Briefing“ per E-Mail erhalten."
    added = cli(
        proj, "subscribers", "add", "jörg@example.de",
        "--source", "Visitenkarte, Messe 2024", "--consent", text,
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert cli(proj, "subscribers", "add", "ohne@example.de").exit_code == 0

    shown = cli(proj, "subscribers", "show", "jörg@example.de")
    assert "consent:             proven" in shown.output
    assert "added (proves consent)" in shown.output
    assert "source:          Visitenkarte, Messe 2024" in shown.output
    assert f"consent text:    {text}" in shown.output
    assert f"text hash:       {text_hash(text)}" in shown.output
    data = json.loads(
        cli(proj, "subscribers", "show", "jörg@example.de", "--format", "json").output
    )
    [record] = data["consent"]
    assert record["kind"] == "added" and record["source"] == "Visitenkarte, Messe 2024"
    assert datetime.fromisoformat(record["occurred_at"]).date() == datetime.now(UTC).date()

    bare = cli(proj, "subscribers", "show", "ohne@example.de").output
    assert "consent:             NO EVIDENCE" in bare and "source:          cli" in bare

    listed = cli(proj, "subscribers", "list", "--no-consent-evidence").output
    assert "ohne@example.de" in listed and "jörg@example.de" not in listed
    as_json = json.loads(
        cli(proj, "subscribers", "list", "--no-consent-evidence", "--format", "json").output
    )
    assert [p["email"] for p in as_json] == ["ohne@example.de"]
    as_csv = cli(proj, "subscribers", "list", "--no-consent-evidence", "--format", "csv").output
    assert "ohne@example.de" in as_csv and "jörg" not in as_csv


@pytest.mark.slow
def test_forget_asks_unless_yes_and_refuses_without_a_terminal(cli, proj) -> None:
    cli(proj, "subscribers", "add", "anna@example.com")
    refused = cli(proj, "subscribers", "remove", "anna@example.com", "--forget")
    assert refused.exit_code == 1
    assert refused.output == (
        "Error: --forget erases anna@example.com for good and cannot be undone; "
        "run it in a terminal to confirm, or add --yes\n"
    )
    assert find_subscriber(engine_of(proj), "anna@example.com") is not None


@pytest.mark.slow
def test_forget_keeps_only_a_keyed_hash_and_add_refuses_the_address(cli, proj) -> None:
    cli(proj, "subscribers", "add", "Anna@Example.com", "--tag", "leser", "--consent", "Ja")
    cli(proj, "subscribers", "add", "ben@example.com")
    erased = cli(proj, "subscribers", "remove", "anna@example.com", "--forget", "--yes")
    assert erased.exit_code == 0, erased.output
    assert erased.output.startswith("erased Anna@example.com and all data about them")

    engine = engine_of(proj)
    with engine.connect() as conn:
        [row] = conn.execute(
            select(schema.suppressions).where(schema.suppressions.c.reason != KEY_CHECK)
        ).all()
        assert row.reason == "erased on request"
        assert row.created_at.date() == datetime.now(UTC).date()
        for table in schema.metadata.sorted_tables:  # the address is nowhere any more
            for values in conn.execute(select(table)).all():
                assert "anna@example.com" not in repr(values).lower()
        assert conn.execute(select(schema.consent_records)).all() != []  # ben's stays

    again = cli(proj, "subscribers", "add", "ANNA@example.com")
    assert again.exit_code == 1
    assert again.output == (
        "Error: ANNA@example.com was erased on request and is suppressed; only a new double "
        "opt-in through the sign-up form lifts that\n"
    )
    assert find_subscriber(engine, "anna@example.com") is None
    assert cli(proj, "subscribers", "add", "carla@example.com").exit_code == 0


@pytest.mark.slow
def test_another_secret_key_cannot_bring_erased_addresses_back(cli, proj, monkeypatch, tmp_path):
    """With a new NEWSLETTER_SECRET_KEY (`secrets init` on a new machine, say) the erased
    addresses' hashes matched nothing: `add` and imports took them back without a word (an
    Art. 17 breach). Now every command that checks them refuses another key, in one line."""
    cli(proj, "subscribers", "add", "anna@example.com")
    cli(proj, "subscribers", "add", "ben@example.com")
    assert (
        cli(proj, "subscribers", "remove", "anna@example.com", "--forget", "--yes").exit_code == 0
    )
    members = tmp_path / "members.csv"
    members.write_text("email\nanna@example.com\ncarla@example.com\n", "utf-8")

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "a-new-key-on-a-new-machine")
    refusal = (
        "Error: NEWSLETTER_SECRET_KEY is not the key the erased addresses on this list were "
        "hashed with, so they would not be recognized and could come back: set the key that "
        "was in use when they were erased (docs/privacy.md)\n"
    )
    for args in (
        ("subscribers", "add", "anna@example.com"),
        ("subscribers", "import", str(members)),
        ("subscribers", "remove", "ben@example.com", "--forget", "--yes"),
    ):
        result = cli(proj, *args)
        assert (result.exit_code, result.output) == (1, refusal), args
    engine = engine_of(proj)
    assert find_subscriber(engine, "anna@example.com") is None
    assert find_subscriber(engine, "carla@example.com") is None
    assert find_subscriber(engine, "ben@example.com") is not None  # not erased either

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    imported = cli(proj, "subscribers", "import", str(members))
    assert imported.exit_code == 0, imported.output
    assert find_subscriber(engine, "anna@example.com") is None  # still suppressed
    assert find_subscriber(engine, "carla@example.com") is not None


@pytest.mark.slow
def test_forgetting_a_bounced_or_unknown_address_suppresses_it_too(cli, proj) -> None:
    cli(proj, "subscribers", "add", "tot@example.de", "--status", "bounced")
    assert cli(proj, "subscribers", "remove", "tot@example.de", "--forget", "--yes").exit_code == 0
    unknown = cli(proj, "subscribers", "remove", "nie@example.de", "--forget", "--yes")
    assert unknown.output.startswith("nothing was stored about nie@example.de; suppressed")
    with engine_of(proj).connect() as conn:
        reasons = sorted(
            conn.execute(
                select(schema.suppressions.c.reason).where(
                    schema.suppressions.c.reason != KEY_CHECK
                )
            ).scalars()
        )
    assert reasons == ["erased on request", "erased on request (address had bounced)"]
    for address in ("tot@example.de", "nie@example.de"):
        assert "is suppressed" in cli(proj, "subscribers", "add", address).output


@pytest.mark.slow
def test_the_hash_is_keyed(cli, proj, monkeypatch) -> None:
    """Without the key nobody can test an address against the list."""
    import hashlib

    from newsletter.store.suppressions import address_hash

    cli(proj, "subscribers", "remove", "anna@example.com", "--forget", "--yes")
    with engine_of(proj).connect() as conn:
        stored = conn.execute(
            select(schema.suppressions.c.email_hash).where(
                schema.suppressions.c.reason != KEY_CHECK
            )
        ).scalar_one()
    assert stored == address_hash("anna@example.com", key=TEST_SECRET)
    assert stored != hashlib.sha256(b"anna@example.com").hexdigest()
    assert stored != address_hash("anna@example.com", key="another key")


_serial: list[int] = []


def _value_for(column: Any, parents: dict[str, Any]) -> Any:
    """A plausible value for a NOT NULL column of any table (for the export walk)."""
    if column.foreign_keys:
        [fk] = column.foreign_keys
        return parents[fk.column.table.name]
    kind = column.type
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, DateTime):
        return datetime(2024, 7, 2, 8, 0, tzinfo=UTC)
    if isinstance(kind, Date):
        return date(2024, 7, 2)
    if isinstance(kind, (Integer, Numeric, Float)):
        return 1
    if isinstance(kind, JSON):
        return {}
    if isinstance(kind, (String, Text)):
        _serial.append(len(_serial))  # unique values for unique columns
        return f"x{len(_serial)}-{column.name}"[: getattr(kind, "length", None) or 100]
    raise AssertionError(f"no test value for {column.table.name}.{column.name} ({kind})")


def _insert_row(conn: Any, table: Table, parents: dict[str, Any]) -> Any:
    """Insert one row into `table`, first making a row in each table it refers to."""
    for fk in table.foreign_keys:
        parent = fk.column.table
        if parent.name not in parents and parent is not table:
            parents[parent.name] = _insert_row(conn, parent, parents)
    values = {}
    for column in table.columns:
        sole_key = list(table.primary_key.columns) == [column]
        if sole_key and not column.foreign_keys and isinstance(column.type, Integer):
            continue  # autoincrement
        if column.nullable and not column.foreign_keys and not column.primary_key:
            continue
        values[column.name] = _value_for(column, parents)
    result = conn.execute(insert(table).values(**values))
    key = result.inserted_primary_key
    return key[0] if key else None


@pytest.mark.slow
def test_export_person_holds_rows_from_every_table_that_references_subscribers(
    cli, proj, tmp_path
) -> None:
    """Walks the schema: a table added later with a foreign key to subscribers fails this
    test until `export-person` (and `--forget`) cover it."""
    cli(proj, "subscribers", "add", "anna@example.com", "--tag", "leser", "--field", "stadt=Köln")
    cli(proj, "subscribers", "add", "ben@example.com", "--tag", "leser")
    engine = engine_of(proj)
    anna = find_subscriber(engine, "anna@example.com")
    ben = find_subscriber(engine, "ben@example.com")
    referencing = tables_referencing_subscribers()
    assert {t.name for t, _ in referencing} >= {
        "subscriber_tags", "deliveries", "events", "replies", "consent_records",
    }  # fmt: skip
    with engine.begin() as conn:
        parents: dict[str, Any] = {}  # one issue, send... for both
        for person in (anna, ben):
            parents["subscribers"] = person.id
            for table, _column in referencing:
                if table.name in ("subscriber_tags", "consent_records"):
                    continue  # made by `add`
                _insert_row(conn, table, parents)

    out = tmp_path / "anna.json"
    result = cli(proj, "subscribers", "export-person", "ANNA@example.com", "-o", str(out))
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["email"] == "anna@example.com"
    assert document["subscriber"]["id"] == anna.id and document["fields"] == {"stadt": "Köln"}
    assert document["tags"] == ["leser"]
    for table, column in referencing:
        rows = document["tables"].get(table.name)
        assert rows, f"export-person misses table {table.name}"
        assert {row[column.name] for row in rows} == {anna.id}, table.name

    erased = cli(proj, "subscribers", "remove", "anna@example.com", "--forget", "--yes")
    assert erased.exit_code == 0
    with engine.connect() as conn:
        for table, column in referencing:
            assert conn.execute(select(table).where(column == anna.id)).all() == [], table.name
            assert conn.execute(select(table).where(column == ben.id)).all() != [], table.name
    gone = cli(proj, "subscribers", "export-person", "anna@example.com")
    assert gone.exit_code == 1 and "nothing is held about them" in gone.output


def test_ip_addresses_lose_their_last_octet_or_80_bits() -> None:
    assert truncate_ip("203.0.113.77") == "203.0.113.0"
    assert truncate_ip("2001:db8:85a3:8d3:1319:8a2e:370:7348") == "2001:db8:85a3::"
    assert truncate_ip("::ffff:198.51.100.9") == "198.51.100.0"
    assert truncate_ip("203.0.113.77", keep_full=True) == "203.0.113.77"
    assert truncate_ip("testclient") is None and truncate_ip(None) is None


@pytest.mark.slow
def test_forget_in_a_terminal_asks_and_no_keeps_everything(cli, proj) -> None:
    cli(proj, "subscribers", "add", "anna@example.com")
    code, output = in_terminal(
        ["--project", str(proj), "subscribers", "remove", "anna@example.com", "--forget"], "n"
    )
    assert (
        "Erase anna@example.com and everything stored about them? This cannot be undone." in output
    )
    assert code == 1 and "Aborted" in output
    assert find_subscriber(engine_of(proj), "anna@example.com") is not None
    code, output = in_terminal(
        ["--project", str(proj), "subscribers", "remove", "anna@example.com", "--forget"], "y"
    )
    assert code == 0 and "erased anna@example.com" in output
    assert find_subscriber(engine_of(proj), "anna@example.com") is None


@pytest.fixture
def future_table() -> Any:
    """A table someone adds later (sequence progress, say), present for one test only."""
    from sqlalchemy import Column, ForeignKey

    table = Table(
        "later_progress",
        schema.metadata,
        Column(
            "subscriber_id",
            Integer,
            ForeignKey("subscribers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("sequence", String(50), primary_key=True),
        Column("step", Integer, nullable=False),
        Column("started_at", DateTime(timezone=True)),
    )
    yield table
    schema.metadata.remove(table)


def test_a_table_added_later_is_exported_and_erased_without_being_named(
    cli, proj, future_table
) -> None:
    cli(proj, "subscribers", "add", "anna@example.com")
    engine = engine_of(proj)
    anna = find_subscriber(engine, "anna@example.com")
    with engine.begin() as conn:
        future_table.create(conn)
        _insert_row(conn, future_table, {"subscribers": anna.id})
    document = json.loads(cli(proj, "subscribers", "export-person", "anna@example.com").output)
    [row] = document["tables"]["later_progress"]
    assert row["subscriber_id"] == anna.id and row["step"] == 1
    assert (
        cli(proj, "subscribers", "remove", "anna@example.com", "--forget", "--yes").exit_code == 0
    )
    with engine.connect() as conn:
        assert conn.execute(select(future_table)).all() == []
