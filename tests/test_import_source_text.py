"""`subscribers import --source`: a source the database cannot store is one line before
anything is written (the plain rows carry it in the INSERT's text on SQLite, where a NUL
ends the statement). SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from tests.conftest import CONFIG


@pytest.fixture
def proj(make_project, database_url: str) -> Project:
    config = CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    return Project.load(make_project(config))


@pytest.mark.parametrize(
    "source",
    [
        "Messe\x002024",  # NUL
        "Caf\udce9",  # "Café" typed in a terminal set to Latin-1 (bytes that are not UTF-8)
    ],
)
def test_a_source_that_cannot_be_stored_is_one_line_and_nothing_is_written(
    proj, cli, tmp_path, source: str
) -> None:
    sheet = tmp_path / "liste.csv"
    sheet.write_text("email,first name\nanna@example.de,Anna\nben@example.de,Ben\n", "utf-8")
    result = cli(proj.root, "subscribers", "import", str(sheet), "--source", source)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: --source {source!r} holds a character that cannot be stored (a NUL, or bytes "
        "that are not UTF-8: is the terminal set to UTF-8?); give the source as plain text\n"
    )
    with open_engine(proj.database_url).connect() as conn:
        for table in (schema.subscribers, schema.import_runs):
            assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 0


def test_quotes_backslashes_emoji_and_line_breaks_in_a_source_come_back_as_given(
    proj, cli, tmp_path
) -> None:
    source = "O'Brien's \"Liste\" \\n 🎉 „Ü“; DROP TABLE subscribers; --\nzweite Zeile ? :x %s"
    sheet = tmp_path / "liste.csv"
    sheet.write_text("email\nanna@example.de\n", "utf-8")
    assert cli(proj.root, "subscribers", "import", str(sheet), "--source", source).exit_code == 0
    with open_engine(proj.database_url).connect() as conn:
        stored = conn.execute(select(schema.subscribers.c.source)).scalar_one()
        run = conn.execute(select(schema.import_runs.c.source)).scalar_one()
    assert stored == run == source


def test_a_source_longer_than_its_column_is_one_line_on_both_databases(proj, cli, tmp_path) -> None:
    """PostgreSQL stopped such an import at its first row ("database error ... run the same
    import again", which failed again every time); SQLite kept it. Both refuse it now, and
    `subscribers add --source` the same way."""
    sheet = tmp_path / "liste.csv"
    sheet.write_text("email\nanna@example.de\n", "utf-8")
    long = "Messe „Übergangslösung“ 2024, " * 4  # 120 characters
    imported = cli(proj.root, "subscribers", "import", str(sheet), "--source", long)
    assert (imported.exit_code, imported.output) == (
        1,
        "Error: --source is longer than 100 characters; shorten it\n",
    )
    added = cli(proj.root, "subscribers", "add", "ben@example.de", "--source", long)
    assert added.exit_code == 1
    assert added.output == "Error: source is longer than 100 characters; shorten it\n"
    just = long[:100]
    assert cli(proj.root, "subscribers", "import", str(sheet), "--source", just).exit_code == 0
    with open_engine(proj.database_url).connect() as conn:
        assert conn.execute(select(schema.subscribers.c.source)).scalars().all() == [just]
