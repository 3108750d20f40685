"""What the database's own work for an import costs, table by table, with nothing of ours
around it.

    python benchmarks/import_schema_cost.py [--rows 1000000] [--runs 3]
    python benchmarks/import_schema_cost.py --postgres postgresql://user@host/db [--rows 200000]

Issue 27 asks for 1,000,000 rows in <= 10 s and <= 5x `sqlite3 .import`, and for >= 100,000
rows/s on PostgreSQL. This script shows how much of that the database alone takes for the rows
a first import must write: the rows are built in memory beforehand (no CSV, no validation, no
Python row by row while the clock runs) and go into the real schema of a fresh project (its
migrations), each variant timed separately.

SQLite (the driver's `executemany`, the import's statements):
- "as the import writes": subscribers (five values bound a row, what they share in the
  statement) and their tags, 50,000 rows a transaction (about the half second the import's
  pacer allows), foreign-key lookups off, the list-growth insert triggers dropped (the import
  adds the counts up itself);
- "one transaction, 400 MB cache": the same in a single transaction with a page cache that
  holds the whole database: the best SQLite can do with this schema, a lower bound;
- "... with a consent record per person": what the import wrote before m025 stored its
  "imported, no evidence" record once per import;
- "... without tags": what the tags cost;
- the floor: `sqlite3 .import` of the same file into a table keyed by the address.

PostgreSQL (`COPY` of text prepared beforehand, one write per 10,000 rows, a transaction per
50,000; the import's table lock and `synchronous_commit = off`):
- "as the import writes": subscribers and their tags;
- "... without the tags' foreign key": PostgreSQL checks it row by row (a lookup and a lock of
  the subscriber's row);
- "... without tags";
- the floor: `psql \\copy` of the same file into a table with a unique index on the address.

Prints the median of `--runs` runs of each, in seconds (and rows/s on PostgreSQL), and its
ratio to the floor.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from import_1m import DATA, generate
from import_vs_floor import floor_postgres, floor_sqlite, reset_postgres

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.store.engine import dispose_all, open_engine  # noqa: E402

STAMP = "2026-12-07 16:59:08.652112"
DETAILS = '{"file": "subscribers.csv", "format": "generic", "evidence": "imported, no evidence"}'
INSERT_TRIGGERS = ("list_counters_insert", "list_counters_insert_unconfirmed")
PER_TRANSACTION = 50_000
PER_COPY = 10_000


def fresh_schema(path: Path) -> None:
    """The project's real tables, indexes and triggers, as the migrations make them."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    open_engine(f"sqlite:///{path}")
    dispose_all()


def load(path: Path, rows: list[list[str]], *, per_transaction: int, cache_mb: int,
         tags: bool = True, consent: bool = False) -> float:  # fmt: skip
    """Seconds to write `rows` (email, first, last, tag) as a first import would."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=OFF")
    if cache_mb:
        conn.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
    for name in INSERT_TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    subscribers = (
        "INSERT INTO subscribers (id, email, email_key, first_name, last_name, status, fields, "
        f"source, created_at, updated_at, confirmed_at, import_run_id) VALUES (?,?,?,?,?, "
        f"'subscribed', '{{}}', 'import', '{STAMP}', '{STAMP}', '{STAMP}', 1)"
    )
    batches = []
    for start in range(0, len(rows), per_transaction):
        part = rows[start : start + per_transaction]
        ids = range(start + 1, start + 1 + len(part))
        batches.append(
            (
                [(i, r[0], r[0].lower(), r[1], r[2]) for i, r in zip(ids, part, strict=True)],
                [(i, r[3]) for i, r in zip(ids, part, strict=True)],
                [(i, "import", STAMP, "import", 0, DETAILS) for i in ids],
            )
        )
    started = time.perf_counter()
    for people, their_tags, records in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(subscribers, people)
        if tags:
            conn.executemany("INSERT INTO subscriber_tags (subscriber_id, tag) VALUES (?,?)",
                             their_tags)  # fmt: skip
        if consent:
            conn.executemany(
                "INSERT INTO consent_records (subscriber_id, kind, occurred_at, source, "
                "proves_consent, details) VALUES (?,?,?,?,?,?)",
                records,
            )
        conn.execute("COMMIT")
    took = time.perf_counter() - started
    conn.close()
    return took


def _copy_text(rows: list[tuple[Any, ...]]) -> bytes:
    # The rows hold no tab, newline or backslash (the generator's addresses and names).
    return "".join("\t".join(map(str, row)) + "\n" for row in rows).encode("utf-8")


def load_postgres(url: str, rows: list[list[str]], *, tags: bool = True,
                  foreign_key: bool = True) -> float:  # fmt: skip
    """Seconds to COPY `rows` into a fresh project's schema as the import's COPY would."""
    import psycopg

    reset_postgres(url)
    open_engine(url)
    dispose_all()
    stamp = f"{STAMP}+00"
    chunks = []
    for start in range(0, len(rows), PER_COPY):
        part = rows[start : start + PER_COPY]
        ids = range(start + 1, start + 1 + len(part))
        people = [
            (i, r[0], r[0].lower(), r[1], r[2], "subscribed", "{}", "import", stamp, stamp,
             stamp, 1)
            for i, r in zip(ids, part, strict=True)
        ]  # fmt: skip
        their_tags = [(i, r[3]) for i, r in zip(ids, part, strict=True)]
        chunks.append((_copy_text(people), _copy_text(their_tags)))
    with psycopg.connect(url) as conn:
        if not foreign_key:
            conn.execute(
                "ALTER TABLE subscriber_tags DROP CONSTRAINT subscriber_tags_subscriber_id_fkey"
            )
            conn.commit()
        started = time.perf_counter()
        for number, (people_text, tags_text) in enumerate(chunks):
            if number % (PER_TRANSACTION // PER_COPY) == 0:
                conn.execute("LOCK TABLE subscribers IN SHARE ROW EXCLUSIVE MODE")
                conn.execute("SET LOCAL synchronous_commit = off")
            with conn.cursor() as cursor:
                with cursor.copy(
                    "COPY subscribers (id, email, email_key, first_name, last_name, status, "
                    "fields, source, created_at, updated_at, confirmed_at, import_run_id) "
                    "FROM STDIN"
                ) as copy:
                    copy.write(people_text)
                if tags:
                    with cursor.copy(
                        "COPY subscriber_tags (subscriber_id, tag) FROM STDIN"
                    ) as copy:
                        copy.write(tags_text)
            if number % (PER_TRANSACTION // PER_COPY) == PER_TRANSACTION // PER_COPY - 1:
                conn.commit()
        conn.commit()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", metavar="URL", help="a scratch database (emptied)")
    args = parser.parse_args()
    count = args.rows or (200_000 if args.postgres else 1_000_000)
    source = DATA / f"subscribers_{count}.csv"
    if not source.exists():
        generate(source, count)
    with source.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    if args.postgres:
        measure_postgres(args.postgres, source, rows, args.runs)
    else:
        measure_sqlite(source, rows, args.runs)


def _run_line(run: int, times: dict[str, list[float]]) -> None:
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"run {run}: " + ", ".join(f"{t[-1]:.2f} s" for t in times.values())
          + f"; load {loadavg}")  # fmt: skip


def measure_sqlite(source: Path, rows: list[list[str]], runs: int) -> None:
    variants = {
        f"as the import writes ({PER_TRANSACTION:,} rows a transaction)": {
            "per_transaction": PER_TRANSACTION, "cache_mb": 0},
        "one transaction, 400 MB cache": {"per_transaction": len(rows), "cache_mb": 400},
        "as the import writes, with a consent record per person (before m025)": {
            "per_transaction": PER_TRANSACTION, "cache_mb": 0, "consent": True},
        "one transaction, 400 MB cache, without tags": {
            "per_transaction": len(rows), "cache_mb": 400, "tags": False},
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in (*variants, "floor")}
    work = Path(tempfile.mkdtemp(prefix="newsletter-schema-", dir=DATA))
    try:
        for run in range(1, runs + 1):
            for name, options in variants.items():
                fresh_schema(work / "schema.db")
                times[name].append(load(work / "schema.db", rows, **options))  # type: ignore[arg-type]
            times["floor"].append(floor_sqlite(source, work))
            _run_line(run, times)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(times["floor"])
    print(f"SQLite's own work for {len(rows):,} rows, medians of {runs} "
          f"(rows built beforehand; driver executemany; Python {sys.version.split()[0]}, "
          f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores):")  # fmt: skip
    for name, values in times.items():
        median = statistics.median(values)
        label = "floor, sqlite3 .import (NOCASE key)" if name == "floor" else name
        print(f"  {label}: {median:.2f} s ({median / base:.1f}x the floor)")
    print("  issue 27's target for the whole import: <= 10 s and <= 5x the floor")


def measure_postgres(url: str, source: Path, rows: list[list[str]], runs: int) -> None:
    variants = {
        "as the import writes": {},
        "without the tags' foreign key": {"foreign_key": False},
        "without tags": {"tags": False},
    }
    times: dict[str, list[float]] = {name: [] for name in (*variants, "floor")}
    for run in range(1, runs + 1):
        for name, options in variants.items():
            times[name].append(load_postgres(url, rows, **options))  # type: ignore[arg-type]
        times["floor"].append(floor_postgres(source, url))
        _run_line(run, times)
    reset_postgres(url)
    base = statistics.median(times["floor"])
    print(f"PostgreSQL's own work for {len(rows):,} rows, medians of {runs} "
          f"(COPY of text prepared beforehand; {os.cpu_count()} cores):")  # fmt: skip
    for name, values in times.items():
        median = statistics.median(values)
        label = "floor, psql \\copy (unique lower(email))" if name == "floor" else name
        print(f"  {label}: {median:.2f} s, {len(rows) / median:,.0f} rows/s "
              f"({median / base:.1f}x the floor)")  # fmt: skip
    print("  issue 27's target for the whole import: >= 100,000 rows/s")


if __name__ == "__main__":
    main()
