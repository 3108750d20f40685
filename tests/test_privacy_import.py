"""Imports and consent: the export's own opt-in data is kept as evidence, and addresses
erased on request stay out, until the person opts in again through the form. SQLite and
PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.consent import NO_EVIDENCE, ConsentRecord, records_for
from newsletter.store.engine import open_engine
from newsletter.store.importer import import_file
from newsletter.store.subscribers import add_subscriber, find_subscriber
from newsletter.web import create_app
from tests.conftest import CONFIG
from tests.support.mail import confirm_link

MAILCHIMP = (
    '"Email Address","First Name","Last Name",MEMBER_RATING,OPTIN_TIME,OPTIN_IP,'
    "CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,"
    "LAST_CHANGED,LEID,EUID,NOTES,TAGS\n"
    'jens.mueller@example.de,Jens,Müller,2,"2023-02-05 19:28:23",198.51.100.23,'
    '"2023-02-05 19:30:01",203.0.113.77,,,,,,DE,BE,"2024-01-10 10:00:00",123456,ab12cd,,\n'
    'anna@example.de,Anna,Schmidt,4,"2023-03-01 08:00:00",,,2001:db8:85a3:8d3:1319:8a2e:370:7348'
    ',,,,,,,,"2024-02-01 09:00:00",123457,ab12ce,,\n'
    'ohne@example.de,Otto,,1,,,,,,,,,,,,"2024-02-01 09:00:00",123458,ab12cf,,\n'
)


@pytest.fixture
def proj(make_project, database_url: str) -> Project:
    config = CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    return Project.load(make_project(config))


def records(engine: Any, email: str) -> list[ConsentRecord]:
    """The person's consent records, as `subscribers show` and their export list them."""
    person = find_subscriber(engine, email)
    assert person is not None, email
    with engine.connect() as conn:
        return records_for(conn, person.id)


def test_a_mailchimp_export_keeps_optin_and_confirm_time_and_ip(proj, cli, tmp_path) -> None:
    path = tmp_path / "subscribed_members_export.csv"
    path.write_text(MAILCHIMP, encoding="utf-8")
    result = cli(proj.root, "subscribers", "import", str(path))
    assert result.exit_code == 0, result.output
    engine = open_engine(proj.database_url)

    [jens] = records(engine, "jens.mueller@example.de")
    assert jens.kind == "import" and jens.proves_consent
    assert jens.source == "import:mailchimp"
    assert jens.ip == "203.0.113.0"  # CONFIRM_IP, last octet zeroed like every IP we keep
    assert jens.details == {
        "file": "subscribed_members_export.csv",
        "format": "mailchimp",
        "optin_time": "2023-02-05T19:28:23+00:00",
        "optin_ip": "198.51.100.0",
        "confirm_time": "2023-02-05T19:30:01+00:00",
        "confirm_ip": "203.0.113.0",
    }
    [anna] = records(engine, "anna@example.de")
    assert anna.proves_consent and anna.details["confirm_ip"] == "2001:db8:85a3::"
    assert anna.details["optin_time"] == "2023-03-01T08:00:00+00:00"
    [otto] = records(engine, "ohne@example.de")
    assert not otto.proves_consent
    assert otto.details == {
        "file": "subscribed_members_export.csv",
        "format": "mailchimp",
        "evidence": "imported, no evidence",
    }
    shown = cli(proj.root, "subscribers", "show", "jens.mueller@example.de").output
    assert "consent:             proven" in shown and "optin_ip:        198.51.100.0" in shown
    missing = cli(proj.root, "subscribers", "list", "--no-consent-evidence").output
    assert "ohne@example.de" in missing and "jens" not in missing and "anna" not in missing


def test_full_ips_with_store_full_ip(make_project, cli, tmp_path) -> None:
    root = make_project(CONFIG + "\n[privacy]\nstore_full_ip = true\n")
    path = tmp_path / "mc.csv"
    path.write_text(MAILCHIMP, encoding="utf-8")
    assert cli(root, "subscribers", "import", str(path)).exit_code == 0
    [jens] = records(open_engine(Project.load(root).database_url), "jens.mueller@example.de")
    assert jens.ip == "203.0.113.77" and jens.details["optin_ip"] == "198.51.100.23"


def test_substack_created_at_is_evidence_and_a_sheet_is_not(proj, cli, tmp_path) -> None:
    fixtures = Path(__file__).parent / "fixtures" / "imports"
    assert cli(proj.root, "subscribers", "import", str(fixtures / "substack.csv")).exit_code == 0
    sheet = tmp_path / "liste.csv"
    sheet.write_text("E-Mail;Vorname\nkarl@example.de;Karl\n", encoding="utf-8")
    assert cli(proj.root, "subscribers", "import", str(sheet)).exit_code == 0
    engine = open_engine(proj.database_url)
    [lea] = records(engine, "lea@example.de")
    assert lea.proves_consent and lea.details["format"] == "substack"
    assert lea.details["created_at"] == "2024-01-10T08:00:00+00:00"
    [karl] = records(engine, "karl@example.de")
    assert not karl.proves_consent and karl.details["evidence"] == "imported, no evidence"
    assert karl.details["file"] == "liste.csv" and karl.source == "import:generic"


@pytest.mark.parametrize("parallel", [False, True])
def test_each_new_row_gets_exactly_one_record_across_chunks(
    proj, tmp_path, parallel, monkeypatch
) -> None:
    """Plain rows take the bulk path; someone already on the list gets no import record."""
    engine = open_engine(proj.database_url)
    add_subscriber(engine, "p3@example.de")
    path = tmp_path / "plain.csv"
    path.write_text(
        "email,first name,tags\n" + "".join(f"p{i}@example.de,P{i},leser\n" for i in range(9)),
        encoding="utf-8",
    )
    if parallel:
        from newsletter.store.importer.process import can_fork

        if not can_fork():
            pytest.skip("no fork here")
    result = import_file(engine, path, chunk_rows=2, parallel=parallel)
    assert (result.new, result.updated) == (8, 1)
    kept = {f"p{i}@example.de": records(engine, f"p{i}@example.de") for i in range(9)}
    assert {email: len(found) for email, found in kept.items()} == {
        f"p{i}@example.de": (0 if i == 3 else 1) for i in range(9)
    }
    [first] = kept["p0@example.de"]
    assert (first.kind, first.proves_consent, first.source) == ("import", False, "import:generic")
    assert first.details == {"file": "plain.csv", "format": "generic", "evidence": NO_EVIDENCE}
    assert all(found == [first] for email, found in kept.items() if email != "p3@example.de")
    with engine.connect() as conn:  # stored once for the run, not once a person
        assert conn.execute(select(func.count()).select_from(schema.import_runs)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(schema.consent_records)).scalar() == 0


def test_forget_then_reimport_keeps_the_person_out_until_a_new_opt_in(proj, cli, tmp_path) -> None:
    path = tmp_path / "subscribed_members_export.csv"
    path.write_text(MAILCHIMP, encoding="utf-8")
    assert cli(proj.root, "subscribers", "import", str(path)).exit_code == 0
    erased = cli(proj.root, "subscribers", "remove", "anna@example.de", "--forget", "--yes")
    assert erased.exit_code == 0

    for args in (["--dry-run"], []):
        again = cli(proj.root, "subscribers", "import", str(path), *args)
        assert again.exit_code == 0, again.output
        assert (
            "1 row was not imported: its address was erased on request (suppressed); "
            "only a new double opt-in through the sign-up form brings it back"
        ) in again.output
        assert "new: 0, updated: 0, unchanged: 2" in again.output
    engine = open_engine(proj.database_url)
    assert find_subscriber(engine, "anna@example.de") is None
    resubscribed = cli(proj.root, "subscribers", "import", str(path), "--resubscribe")
    assert "1 row was not imported" in resubscribed.output
    assert find_subscriber(engine, "anna@example.de") is None

    # Anna signs up herself and confirms: she is back, and later imports see her again.
    client = TestClient(create_app(proj, engine))
    client.post("/subscribe", data={"email": "Anna@example.de"})
    link = confirm_link(proj.root)
    assert client.post(link).status_code == 200
    assert find_subscriber(engine, "anna@example.de").status == "subscribed"
    final = cli(proj.root, "subscribers", "import", str(path))
    assert "not imported" not in final.output
    assert find_subscriber(engine, "anna@example.de").status == "subscribed"
    kinds = [(r.kind, r.proves_consent) for r in records(engine, "anna@example.de")]
    assert kinds == [("signup", False), ("confirmation", True)]


def test_without_the_key_erasure_add_and_import_stop_before_they_start(
    proj, cli, tmp_path, monkeypatch
) -> None:
    path = tmp_path / "subscribed_members_export.csv"
    path.write_text(MAILCHIMP, encoding="utf-8")
    assert cli(proj.root, "subscribers", "import", str(path)).exit_code == 0
    engine = open_engine(proj.database_url)
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY")

    # Erasure stores a keyed hash: without the key it refuses before deleting anything.
    erased = cli(proj.root, "subscribers", "remove", "anna@example.de", "--forget", "--yes")
    assert erased.exit_code == 1
    assert erased.output == (
        "Error: NEWSLETTER_SECRET_KEY is not set; erasure keeps a keyed hash of the address so "
        "that no import or `add` brings it back, and needs the key: set it to a long random "
        "string (python3 -c 'import secrets; print(secrets.token_urlsafe(32))') and keep it\n"
    )
    assert find_subscriber(engine, "anna@example.de") is not None

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "the-key-anna-was-erased-with")
    assert (
        cli(proj.root, "subscribers", "remove", "anna@example.de", "--forget", "--yes").exit_code
        == 0
    )
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY")

    # Now every new address must be checked against the erased ones' hashes.
    missing_key = (
        "Error: NEWSLETTER_SECRET_KEY is not set; addresses were erased from this list, and "
        "checking an address against them needs the key they were hashed with: set it to the "
        "same key as when they were erased\n"
    )
    added = cli(proj.root, "subscribers", "add", "neu@example.de")
    assert (added.exit_code, added.output) == (1, missing_key)
    rejects = tmp_path / "rejects.csv"
    for args in (["--dry-run"], ["--rejects", str(rejects)]):
        again = cli(proj.root, "subscribers", "import", str(path), *args)
        assert (again.exit_code, again.output) == (1, missing_key)
    assert not rejects.exists()
    assert find_subscriber(engine, "anna@example.de") is None
    assert find_subscriber(engine, "neu@example.de") is None
