"""`subscribers export`: every field, formula-safe CSV, and a round trip through import."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from newsletter.store.engine import open_engine
from newsletter.store.exporter import neutralize, write_csv, write_json
from newsletter.store.importer import import_file
from newsletter.store.subscribers import (
    add_subscriber,
    find_subscriber,
    iter_subscribers,
    set_status,
)


@pytest.fixture
def engine(database_url: str):
    return open_engine(database_url)


def fill(engine, *, typed_fields: bool) -> None:
    add_subscriber(
        engine,
        "Jörg.Müller@example.de",
        name="Jörg „der Große“ Müller",
        first_name="Jörg",
        last_name="Müller",
        tags=["leser", "früh dabei"],
        fields={"stadt": "Köln", "zitat": "‚Moin‘ – …", **({"kunde": True, "n": 3} if typed_fields else {})},
        source="import:mailchimp",
    )  # fmt: skip
    add_subscriber(
        engine, "=1+2@example.com", name="@SUM(A1)", first_name="-Minus", last_name="+Plus"
    )
    add_subscriber(engine, "quote@example.com", name="'zitiert", fields={"formel": "=HYPERLINK(1)"})
    add_subscriber(engine, "neu@example.com", status="unconfirmed", source="form")
    for address, status, reason in (
        ("weg@example.com", "unsubscribed", "zu viele Mails"),
        ("bounce@example.com", "bounced", "550 5.1.1 unknown user"),
        ("spam@example.com", "complained", None),
    ):
        person = add_subscriber(engine, address, tags=["alt"])
        set_status(engine, person.id, status, reason=reason)


def listed(engine) -> list[dict]:
    return [{k: v for k, v in s.to_dict().items() if k != "id"} for s in iter_subscribers(engine)]


def test_neutralize() -> None:
    assert [neutralize(v) for v in ["=1", "+1", "-1", "@x", "\tx", "'x", "x=1", ""]] == [
        "'=1",
        "'+1",
        "'-1",
        "'@x",
        "'\tx",
        "''x",
        "x=1",
        "",
    ]


@pytest.mark.slow
def test_csv_has_every_field_and_no_live_formulas(engine) -> None:
    fill(engine, typed_fields=False)
    out = io.StringIO()
    assert write_csv(out, engine) == 7
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == [
        "email",
        "name",
        "first_name",
        "last_name",
        "status",
        "tags",
        "source",
        "created_at",
        "confirmed_at",
        "unsubscribed_at",
        "unsubscribe_reason",
        "consent",
        "fields.formel",
        "fields.stadt",
        "fields.zitat",
    ]
    jörg = rows[0]
    assert jörg["name"] == "Jörg „der Große“ Müller"
    assert jörg["tags"] == "früh dabei, leser"
    assert jörg["fields.zitat"] == "‚Moin‘ – …"
    evil = rows[1]
    assert (evil["email"], evil["name"], evil["first_name"], evil["last_name"]) == (
        "'=1+2@example.com",
        "'@SUM(A1)",
        "'-Minus",
        "'+Plus",
    )
    assert rows[2]["fields.formel"] == "'=HYPERLINK(1)"
    for row in rows:
        for value in row.values():
            assert not value or value[0] not in "=+-@\t\r", value
    weg = rows[4]
    assert (weg["status"], weg["unsubscribe_reason"]) == ("unsubscribed", "zu viele Mails")
    assert datetime.fromisoformat(weg["unsubscribed_at"]).tzinfo is not None


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_then_import_into_an_empty_list_gives_the_same_list(
    engine, tmp_path, fmt, database_url
) -> None:
    fill(engine, typed_fields=fmt == "json")  # CSV cells are text; JSON keeps types
    path = tmp_path / f"list.{fmt}"
    with path.open("w", encoding="utf-8", newline="") as handle:
        (write_csv if fmt == "csv" else write_json)(handle, engine)
    original = listed(engine)

    other = open_engine(f"sqlite:///{tmp_path / 'other.db'}")
    result = import_file(other, path)
    assert (result.new, result.rejected, result.kept_stopped) == (7, 0, 0)
    assert listed(other) == original
    assert find_subscriber(other, "=1+2@example.com").name == "@SUM(A1)"
    # And importing the export into the list it came from changes nothing.
    again = import_file(engine, path)
    assert (again.new, again.updated, again.unchanged) == (0, 0, 7)


def test_json_is_a_streamed_array(engine) -> None:
    out = io.StringIO()
    assert write_json(out, engine) == 0
    assert json.loads(out.getvalue()) == []
    fill(engine, typed_fields=True)
    out = io.StringIO()
    assert write_json(out, engine, status="subscribed") == 3
    data = json.loads(out.getvalue())
    assert [d["email"] for d in data] == [
        "Jörg.Müller@example.de",
        "=1+2@example.com",
        "quote@example.com",
    ]
    assert all(d["status"] == "subscribed" for d in data)
    assert data[0]["fields"]["kunde"] is True
    created = datetime.fromisoformat(data[0]["created_at"])
    assert created.tzinfo is not None and created <= datetime.now(UTC)


@pytest.mark.parametrize("excel", [False, True])
def test_tags_holding_a_comma_or_a_quote_come_back_as_they_were(database_url, tmp_path, excel):
    """A Mailchimp tag "Köln, Innenstadt" was exported as `Köln, Innenstadt, Messe` and came
    back from the re-import as two tags."""
    engine = open_engine(database_url)
    tags = ["Köln, Innenstadt", 'Messe "2024"', "früh dabei"]
    add_subscriber(engine, "anna@example.de", tags=tags)
    add_subscriber(engine, "ben@example.de", tags=["schlicht", "zwei"])
    out = io.StringIO()
    write_csv(out, engine, delimiter=";" if excel else ",", bom=excel)
    cells = [
        row["tags"]
        for row in csv.DictReader(
            io.StringIO(out.getvalue().lstrip("\ufeff")), delimiter=";" if excel else ","
        )
    ]
    assert "schlicht, zwei" in cells  # plain tags stay as people write them

    path = tmp_path / "export.csv"
    path.write_text(out.getvalue(), "utf-8")
    other = open_engine(f"sqlite:///{tmp_path / 'other.db'}")
    assert import_file(other, path).new == 2
    assert sorted(find_subscriber(other, "anna@example.de").tags) == sorted(tags)
    assert sorted(find_subscriber(other, "ben@example.de").tags) == ["schlicht", "zwei"]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_the_proof_of_opt_in_moves_with_an_export_to_another_database(database_url, tmp_path, fmt):
    """Moving the list (say from SQLite to PostgreSQL) by export and import lost every
    consent record: everyone came back "without consent evidence", the proof the law asks a
    German sender to keep. The export now carries each person's records, and the import
    keeps them."""
    from datetime import timedelta

    from newsletter.store import consent
    from newsletter.store.subscribers import add_subscriber as add

    engine = open_engine(database_url)
    signed_up = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    text = "Ja, ich möchte „Jens' Briefing“ per E-Mail erhalten."
    lea = add(engine, "lea@example.de", first_name="Lea")
    with engine.begin() as conn:
        for kind, when, proves in (
            (consent.SIGNUP, signed_up, False),
            (consent.CONFIRMATION, signed_up + timedelta(minutes=4), True),
        ):
            consent.record(
                conn, lea.id, kind, occurred_at=when, ip="203.0.113.0",
                user_agent="Mozilla/5.0 (Jörgs Rechner)", page_url="https://jens.example.com/",
                consent_text_hash=consent.remember_text(conn, text), source="form",
                proves_consent=proves, details={"double_opt_in": True},
            )  # fmt: skip
    add(engine, "ohne@example.de")

    path = tmp_path / f"export.{fmt}"
    with path.open("w", encoding="utf-8", newline="") as out:
        (write_csv if fmt == "csv" else write_json)(out, engine)
    other = open_engine(f"sqlite:///{tmp_path / 'other.db'}")
    result = import_file(other, path)
    assert (result.new, result.rejected, result.without_evidence) == (2, 0, 1)

    moved = find_subscriber(other, "lea@example.de")
    with other.connect() as conn:
        records = [r for r in consent.records_for(conn, moved.id) if r.kind != consent.IMPORT]
    assert [(r.kind, r.occurred_at, r.proves_consent) for r in records] == [
        ("signup", signed_up, False),
        ("confirmation", signed_up + timedelta(minutes=4), True),
    ]
    assert {r.ip for r in records} == {"203.0.113.0"}
    assert {r.consent_text for r in records} == {text}
    assert {r.user_agent for r in records} == {"Mozilla/5.0 (Jörgs Rechner)"}
    assert records[0].details == {"double_opt_in": True}
    with other.connect() as conn:
        assert [p.email for p in iter_subscribers(other, without_consent_evidence=True)] == [
            "ohne@example.de"
        ]


def test_a_consent_cell_that_is_not_an_exports_rejects_its_row(database_url, tmp_path):
    engine = open_engine(database_url)
    path = tmp_path / "x.csv"
    path.write_text(
        "email,status,tags,source,created_at,consent\n"
        'a@example.de,subscribed,,import,2024-01-01,"[{""kind"": ""gefälscht"", '
        '""occurred_at"": ""2024-01-01""}]"\n'
        'b@example.de,subscribed,,import,2024-01-01,"[kein json"\n'
        "c@example.de,subscribed,,import,2024-01-01,\n",
        "utf-8",
    )
    result = import_file(engine, path)
    assert (result.new, result.rejected) == (1, 2)
    assert [r.reason for r in result.rejects] == [
        "its consent cell holds an unknown kind 'gefälscht'",
        "its consent cell is not the JSON `subscribers export` writes",
    ]


def test_the_importer_reads_every_kind_of_consent_record_the_store_writes():
    """An export's consent cell is checked in the reader process, which has no SQLAlchemy
    and so keeps its own list of kinds: a new kind (`resubscribe`) missing there rejected
    every reader who had one."""
    from newsletter.store import consent
    from newsletter.store.importer.read import CONSENT_KINDS

    assert set(CONSENT_KINDS) == set(consent.KINDS)


def test_another_tools_consent_column_is_a_custom_field(database_url, tmp_path):
    """A CRM file with our columns and a yes/no `consent` column of its own had every row
    rejected ("its consent cell is not the JSON `subscribers export` writes")."""
    engine = open_engine(database_url)
    path = tmp_path / "crm.csv"
    path.write_text(
        "email,status,tags,source,created_at,consent\na@example.de,subscribed,,crm,2024-01-01,ja\n",
        "utf-8",
    )
    result = import_file(engine, path)
    assert (result.new, result.rejected) == (1, 0)
    assert find_subscriber(engine, "a@example.de").fields == {"consent": "ja"}
