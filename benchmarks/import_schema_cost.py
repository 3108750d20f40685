"""What SQLite's own work for an import costs, table by table, with nothing of ours around it.

    python benchmarks/import_schema_cost.py [--rows 1000000] [--runs 3]

Issue 27 asks for 1,000,000 rows in <= 10 s and <= 5x `sqlite3 .import`. This script shows how
much of that the database alone takes for the rows a first import must write: the rows are
built in memory beforehand (no CSV, no validation, no Python row by row while the clock
runs) and go in through the driver's `executemany`, into the real schema of a fresh project
(its migrations). Each variant is timed separately:

- "as the import writes": subscribers, their tags and their `import` consent records in
  transactions of 50,000 rows (about the half second the import's pacer allows), foreign-key
  lookups off, the list-growth insert triggers dropped (the import adds the counts up itself);
- "one transaction, 400 MB cache": the same in a single transaction with a page cache that
  holds the whole database: the best SQLite can do with this schema, a lower bound;
- "... without consent records" and "... without tags": what each of those costs;
- the floor: `sqlite3 .import` of the same file into a table keyed by the address.

Prints the median of `--runs` runs of each, in seconds, and its ratio to the floor.
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

from import_1m import DATA, generate
from import_vs_floor import floor_sqlite

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.store.engine import dispose_all, open_engine  # noqa: E402

STAMP = "2026-12-07 16:59:08.652112"
DETAILS = '{"file": "subscribers.csv", "format": "generic", "evidence": "imported, no evidence"}'
INSERT_TRIGGERS = ("list_counters_insert", "list_counters_insert_unconfirmed")


def fresh_schema(path: Path) -> None:
    """The project's real tables, indexes and triggers, as the migrations make them."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    open_engine(f"sqlite:///{path}")
    dispose_all()


def load(path: Path, rows: list[list[str]], *, per_transaction: int, cache_mb: int,
         tags: bool = True, consent: bool = True) -> float:  # fmt: skip
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
        "source, created_at, updated_at, confirmed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
    )
    batches = []
    for start in range(0, len(rows), per_transaction):
        part = rows[start : start + per_transaction]
        ids = range(start + 1, start + 1 + len(part))
        batches.append(
            (
                [
                    (
                        i,
                        r[0],
                        r[0].lower(),
                        r[1],
                        r[2],
                        "subscribed",
                        "{}",
                        "import",
                        STAMP,
                        STAMP,
                        STAMP,
                    )
                    for i, r in zip(ids, part, strict=True)
                ],  # fmt: skip
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    source = DATA / f"subscribers_{args.rows}.csv"
    if not source.exists():
        generate(source, args.rows)
    with source.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    variants = {
        "as the import writes (50,000 rows a transaction)": {"per_transaction": 50_000,
                                                             "cache_mb": 0},
        "one transaction, 400 MB cache": {"per_transaction": len(rows), "cache_mb": 400},
        "one transaction, 400 MB cache, without consent records": {
            "per_transaction": len(rows), "cache_mb": 400, "consent": False},
        "one transaction, 400 MB cache, without tags or consent records": {
            "per_transaction": len(rows), "cache_mb": 400, "consent": False, "tags": False},
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in (*variants, "floor")}
    work = Path(tempfile.mkdtemp(prefix="newsletter-schema-", dir=DATA))
    try:
        for run in range(1, args.runs + 1):
            for name, options in variants.items():
                fresh_schema(work / "schema.db")
                times[name].append(load(work / "schema.db", rows, **options))  # type: ignore[arg-type]
            times["floor"].append(floor_sqlite(source, work))
            loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(f"run {run}: " + ", ".join(f"{t[-1]:.2f} s" for t in times.values())
                  + f"; load {loadavg}")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(times["floor"])
    print(f"SQLite's own work for {len(rows):,} rows, medians of {args.runs} "
          f"(rows built beforehand; driver executemany; Python {sys.version.split()[0]}, "
          f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores):")  # fmt: skip
    for name, values in times.items():
        median = statistics.median(values)
        label = "floor, sqlite3 .import (NOCASE key)" if name == "floor" else name
        print(f"  {label}: {median:.2f} s ({median / base:.1f}x the floor)")
    print("  issue 27's target for the whole import: <= 10 s and <= 5x the floor")


if __name__ == "__main__":
    main()
