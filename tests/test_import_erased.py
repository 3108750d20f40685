"""Imports of addresses erased earlier (issue 28, item 5): they are skipped and counted, and
the rows after them are imported. Through the real CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter.project import Project
from newsletter.store import schema, suppressions
from newsletter.store.engine import open_engine
from tests.conftest import CONFIG


@pytest.fixture
def proj(make_project, database_url: str) -> Project:
    config = CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    return Project.load(make_project(config))


def erase_all(project: Project, addresses: list[str]) -> None:
    """Put the addresses on the suppression list, as `remove --forget` leaves them."""
    engine = open_engine(project.database_url)
    with engine.begin() as conn:
        for address in addresses:
            suppressions.suppress(conn, address)


def subscriber_count(project: Project) -> int:
    with open_engine(project.database_url).connect() as conn:
        return int(conn.execute(select(func.count()).select_from(schema.subscribers)).scalar_one())


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_file_holding_only_an_erased_address(proj, cli, tmp_path: Path, dry_run: bool) -> None:
    erase_all(proj, ["weg@example.de"])
    path = tmp_path / "one.csv"
    path.write_text("email,first_name\nWeg@Example.de,Wilma\n", encoding="utf-8")
    args = ["--dry-run"] if dry_run else []
    result = cli(proj.root, "subscribers", "import", str(path), *args)
    assert result.exit_code == 0, result.output
    assert "new: 0, updated: 0, unchanged: 0, rejected: 0" in result.output
    assert "1 erased earlier, skipped" in result.output
    assert subscriber_count(proj) == 0


@pytest.mark.slow  # erases 2,100 people first
def test_erased_rows_before_new_ones_are_skipped_and_the_new_ones_imported(
    proj, cli, tmp_path: Path
) -> None:
    erased = [f"erased{i}@example.de" for i in range(2100)]
    erase_all(proj, erased)
    path = tmp_path / "list.csv"
    new = [f"neu{i}@example.de" for i in range(500)]
    path.write_text(
        "email,first_name\n" + "".join(f"{a},Jörg\n" for a in erased + new), encoding="utf-8"
    )

    dry = cli(proj.root, "subscribers", "import", str(path), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "dry run, nothing changed: new: 500, updated: 0" in dry.output
    assert "2,100 erased earlier, skipped" in dry.output
    assert subscriber_count(proj) == 0

    for expected in ("new: 500, updated: 0, unchanged: 0", "new: 0, updated: 0, unchanged: 500"):
        result = cli(proj.root, "subscribers", "import", str(path))  # a rerun changes nothing
        assert result.exit_code == 0, result.output
        assert expected in result.output
        assert "2,100 erased earlier, skipped" in result.output
        assert "2100 rows were not imported: their addresses were erased on request" in (
            result.output.replace(",", "")
        )
        assert "Traceback" not in result.output
        assert subscriber_count(proj) == 500
