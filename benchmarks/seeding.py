"""Shared by the benchmarks that write a project's SQLite database directly (bulk inserts
instead of the CLI, so that what is timed is the query, not the seeding): the project's
config is the tests' one (tests/conftest.py), as in the other benchmarks."""

from __future__ import annotations

import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import CONFIG  # noqa: E402

__all__ = ["CONFIG", "REPO", "migrated_project", "stamp"]


def stamp(value: datetime) -> str:
    """A datetime as SQLAlchemy stores it in SQLite."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def migrated_project(root: Path, config: str) -> sqlite3.Connection:
    """A project folder at `root` with `config`, its SQLite database created and migrated;
    a connection to that database for bulk inserts (not synced: a crash loses a seed that
    is made again anyway)."""
    from newsletter.project import Project
    from newsletter.store.engine import open_engine

    (root / "issues").mkdir(parents=True)
    (root / "newsletter.toml").write_text(config, encoding="utf-8")
    open_engine(Project.load(root).database_url).dispose()  # runs the migrations
    db = sqlite3.connect(root / "newsletter.db")
    db.execute("PRAGMA synchronous = OFF")
    return db
