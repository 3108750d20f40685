"""An import's "imported, no evidence" consent record is stored once for the run
(`import_runs`), and every person it added shows it, exports it and loses it when erased,
as they did a record of their own. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, inspect, select

from newsletter.project import Project
from newsletter.store import migrations, schema
from newsletter.store.consent import NO_EVIDENCE, records_for
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import find_subscriber
from tests.conftest import CONFIG


@pytest.fixture
def proj(make_project, database_url: str) -> Project:
    config = CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    return Project.load(make_project(config))


def test_each_person_shows_and_exports_the_runs_record_until_erased(proj, cli, tmp_path) -> None:
    sheet = tmp_path / "Leserliste Müller.csv"
    sheet.write_text("E-Mail;Vorname\nkarl@example.de;Karl\njoerg@example.de;Jörg\n", "utf-8")
    assert cli(proj.root, "subscribers", "import", str(sheet)).exit_code == 0

    for email in ("karl@example.de", "joerg@example.de"):
        shown = cli(proj.root, "subscribers", "show", email).output
        assert "consent:             NO EVIDENCE (consent cannot be proven)" in shown
        assert "  import\n" in shown and "file:            Leserliste Müller.csv" in shown
        assert f"evidence:        {NO_EVIDENCE}" in shown
    exported = json.loads(cli(proj.root, "subscribers", "export-person", "karl@example.de").output)
    [record] = exported["tables"]["consent_records"]
    assert record["kind"] == "import" and record["proves_consent"] is False
    assert record["subscriber_id"] == exported["subscriber"]["id"]
    assert record["source"] == "import:generic"
    assert record["details"] == {
        "file": "Leserliste Müller.csv",
        "format": "generic",
        "evidence": NO_EVIDENCE,
    }
    assert record["occurred_at"] == exported["subscriber"]["created_at"]

    erased = cli(proj.root, "subscribers", "remove", "karl@example.de", "--forget", "--yes")
    assert erased.exit_code == 0, erased.output
    gone = cli(proj.root, "subscribers", "export-person", "karl@example.de")
    assert gone.exit_code == 1 and "nothing is held about them" in gone.output
    # The run's record names nobody: Jörg still has it, and it holds only the file's name.
    engine = open_engine(proj.database_url)
    joerg = find_subscriber(engine, "joerg@example.de")
    assert joerg is not None
    with engine.connect() as conn:
        [kept] = records_for(conn, joerg.id)
        assert kept.details["file"] == "Leserliste Müller.csv"
        [run] = conn.execute(select(schema.import_runs)).all()
        assert "karl" not in json.dumps(run.details) + (run.source or "")


def test_a_second_import_has_its_own_record(proj, cli, tmp_path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("email\nanna@example.de\n", "utf-8")
    second.write_text("email\nanna@example.de\nben@example.de\n", "utf-8")
    for path in (first, second, second):
        assert cli(proj.root, "subscribers", "import", str(path)).exit_code == 0
    engine = open_engine(proj.database_url)
    with engine.connect() as conn:
        files = {
            email: [r.details["file"] for r in records_for(conn, find_subscriber(conn, email).id)]
            for email in ("anna@example.de", "ben@example.de")
        }
        runs = conn.execute(select(func.count()).select_from(schema.import_runs)).scalar()
    assert files == {"anna@example.de": ["a.csv"], "ben@example.de": ["b.csv"]}
    assert runs == 2  # the third import added nobody, so it made no record


def _raw_engine(url: str):
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url)


def test_m025_keeps_the_records_made_per_person_before(database_url, monkeypatch) -> None:
    old = _raw_engine(database_url)
    with monkeypatch.context() as patched:
        patched.setattr(
            migrations, "STEPS", [step for step in migrations.STEPS if step[0] < "m025"]
        )
        migrations.migrate(old)
    assert "import_runs" not in inspect(old).get_table_names()
    at = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    with old.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO subscribers (id, email, email_key, status, fields, source, created_at, "
            "updated_at) VALUES (7, 'alt@example.de', 'alt@example.de', 'subscribed', '{}', "
            "'import:generic', '2025-03-01 08:00:00', '2025-03-01 08:00:00')"
        )
        conn.execute(
            schema.consent_records.insert().values(
                subscriber_id=7,
                kind="import",
                occurred_at=at,
                source="import:generic",
                proves_consent=False,
                details={"file": "alt.csv", "format": "generic", "evidence": NO_EVIDENCE},
            )
        )
    old.dispose()

    engine = open_engine(database_url)  # runs m025
    with engine.connect() as conn:
        [record] = records_for(conn, 7)
        assert "import_run_id" in {c["name"] for c in inspect(conn).get_columns("subscribers")}
    assert (record.kind, record.occurred_at, record.details["file"]) == ("import", at, "alt.csv")
    person = find_subscriber(engine, "alt@example.de")
    assert person is not None and person.source == "import:generic"


def test_a_dry_run_makes_no_record(proj, cli, tmp_path: Path) -> None:
    sheet = tmp_path / "x.csv"
    sheet.write_text("email\nanna@example.de\n", "utf-8")
    assert cli(proj.root, "subscribers", "import", str(sheet), "--dry-run").exit_code == 0
    with open_engine(proj.database_url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.import_runs)).scalar() == 0
