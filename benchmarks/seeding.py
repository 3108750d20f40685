"""Shared by the benchmarks that write a project's SQLite database directly (bulk inserts
instead of the CLI, so that what is timed is the query, not the seeding): the project's
config is the tests' one (tests/conftest.py), as in the other benchmarks."""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import CONFIG  # noqa: E402

__all__ = [
    "CONFIG",
    "REPO",
    "arguments",
    "migrated_project",
    "seeded_project",
    "stamp",
    "timed",
]


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


def timed(root: Path, *args: str) -> tuple[float, float, str]:
    """Wall seconds and CPU seconds (user + system) of one `newsletter --project ROOT ARGS`
    process, and its output. On a shared, busy machine the CPU time is the steadier figure;
    wall time includes waiting for a core."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-m", "newsletter", "--project", str(root), *args],
        capture_output=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise SystemExit(f"newsletter {' '.join(args)} failed: {process.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return took, cpu, process.stdout.decode().strip()


def arguments(runs: int) -> argparse.ArgumentParser:
    """The options every seeding benchmark takes: the size of the list it seeds, how many
    runs of each measured command, and --keep to reuse a seeded project."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=200_000)
    parser.add_argument("--issues", type=int, default=100)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--keep", type=Path, help="generate into (or reuse) this folder")
    return parser


@contextmanager
def seeded_project(
    args: argparse.Namespace, generate: Callable[[Path], None], label: str = "generated:"
) -> Iterator[tuple[Path, bool]]:
    """--keep's project folder, or a temporary one; seeded by `generate` unless it already
    has a database (then the bool is False), which is timed and said."""
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "project"
        seeded = not (root / "newsletter.db").exists()
        if seeded:
            start = time.perf_counter()
            generate(root)
            print(
                f"{label} {args.subscribers:,} subscribers, {args.issues} issues, "
                f"{args.events:,} events in {time.perf_counter() - start:.0f} s "
                f"({(root / 'newsletter.db').stat().st_size / 1e6:,.0f} MB SQLite)"
            )
        yield root, seeded
