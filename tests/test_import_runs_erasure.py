"""An import's one "imported, no evidence" record (`import_runs`) outlives the people it
added; when its source or file name holds an address, that person's export shows it and
their erasure takes the address out of it (as it does from a send's error). SQLite and
PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.consent import records_for
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import find_subscriber
from tests.conftest import CONFIG

ANNA = "anna.schmidt@example.com"


@pytest.fixture
def proj(make_project, database_url: str) -> Project:
    config = CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    return Project.load(make_project(config))


def _address_anywhere(proj: Project) -> list[str]:
    """The tables that still hold Anna's address somewhere."""
    with open_engine(proj.database_url).connect() as conn:
        return [
            table.name
            for table in schema.metadata.sorted_tables
            if any(ANNA in repr(values).lower() for values in conn.execute(select(table)))
        ]


def test_erasing_the_one_person_of_an_import_named_after_her_leaves_no_address(
    proj, cli, tmp_path
) -> None:
    """A business card as a file of one: before import runs, erasing Anna deleted her import
    record with its file name and source; the run's record must not keep them."""
    card = tmp_path / f"{ANNA}.csv"
    card.write_text(f"email,first name\n{ANNA},Anna\n", "utf-8")
    imported = cli(proj.root, "subscribers", "import", str(card), "--source", f"Karte {ANNA}")
    assert imported.exit_code == 0, imported.output
    assert "import_runs" in _address_anywhere(proj)

    erased = cli(proj.root, "subscribers", "remove", ANNA, "--forget", "--yes")
    assert erased.exit_code == 0, erased.output
    assert _address_anywhere(proj) == []
    gone = cli(proj.root, "subscribers", "export-person", ANNA)
    assert gone.exit_code == 1 and "nothing is held about them" in gone.output


def test_a_run_naming_someone_is_in_their_export_and_loses_the_address_at_erasure(
    proj, cli, tmp_path
) -> None:
    """Anna was on the list already; the file named after her added Karl only. Her export
    (Art. 15) shows the run that names her; erasing her rewrites the file name in Karl's
    record and keeps the rest of it."""
    assert cli(proj.root, "subscribers", "add", "Anna.Schmidt@Example.com").exit_code == 0
    sheet = tmp_path / f"Kontakte von {ANNA}.csv"
    sheet.write_text(f"email;Vorname\n{ANNA};Anna\nkarl@example.de;Karl\n", "utf-8")
    assert cli(proj.root, "subscribers", "import", str(sheet)).exit_code == 0

    exported = json.loads(cli(proj.root, "subscribers", "export-person", ANNA).output)
    [run] = exported["tables"]["import_runs"]
    assert run["details"]["file"] == f"Kontakte von {ANNA}.csv"
    assert exported["tables"]["consent_records"][0]["kind"] == "added"  # not the import's

    erased = cli(proj.root, "subscribers", "remove", ANNA, "--forget", "--yes")
    assert erased.exit_code == 0, erased.output
    assert _address_anywhere(proj) == []
    engine = open_engine(proj.database_url)
    karl = find_subscriber(engine, "karl@example.de")
    assert karl is not None
    with engine.connect() as conn:
        [kept] = records_for(conn, karl.id)
    assert (kept.kind, kept.proves_consent, kept.source) == ("import", False, "import:generic")
    assert kept.details == {
        "file": "Kontakte von <erased>.csv",
        "format": "generic",
        "evidence": "imported, no evidence",
    }
