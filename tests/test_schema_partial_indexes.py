"""The schema's partial indexes are partial on both databases, and a process on SQLite never
loads SQLAlchemy's PostgreSQL dialect for them (about 30 ms of every command's start)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from newsletter.store.engine import dispose_all, open_engine

REPO = Path(__file__).resolve().parent.parent
PARTIAL = {
    "uq_subscribers_public_id": "public_id IS NOT NULL",
    "ix_deliveries_smtp_message_id": "message_id",
    "ix_events_issue_clickers": "event",
}


def test_a_send_on_sqlite_loads_no_postgresql_dialect(tmp_path: Path) -> None:
    """What `newsletter send` imports, and a SQLite database opened and migrated: the
    PostgreSQL dialect stays unloaded."""
    script = (
        "import sys\n"
        "import newsletter.cli.sending\n"
        "from newsletter.store.engine import open_engine\n"
        f"open_engine('sqlite:///{tmp_path / 'fresh.db'}')\n"
        "print(sorted(m for m in sys.modules if m.startswith('sqlalchemy.dialects.postgresql')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_partial_indexes_have_their_condition(database_url: str) -> None:
    """A new database (SQLite and PostgreSQL) gets each partial index with its WHERE."""
    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                found = dict(
                    conn.execute(
                        text("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
                    ).all()
                )
            else:
                found = dict(conn.execute(text("SELECT indexname, indexdef FROM pg_indexes")).all())
    finally:
        dispose_all()
    for name, condition in PARTIAL.items():
        definition = found[name]
        assert " WHERE " in definition.upper(), definition
        assert condition in definition.split("WHERE", 1)[1], definition
