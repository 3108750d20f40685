"""Counting segments with engagement terms on a big list, as whole processes.

    python benchmarks/segments.py [--subscribers 200000] [--issues 100] [--events 5000000]
        [--runs 5] [--keep DIR]

Writes a SQLite project straight into the database with bulk inserts: 200,000 subscribers,
100 weekly issues each sent to a growing part of the list (about 14.5 million ledger rows),
5,000,000 webhook events (opens, a third of them machine opens, clicks, deliveries, ...)
and 5,000 replies; then fills `reader_activity` from them as migration m019 does (timed),
and times `newsletter subscribers count --where EXPR` for a few expressions: the median of
`--runs` processes each. Target: <= 0.5 s for a count with an engagement condition.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from seeding import CONFIG as BASE_CONFIG
from seeding import arguments, migrated_project, seeded_project, stamp, timed

CONFIG = BASE_CONFIG + "\n[tracking]\nopens = true\nclicks = true\n"
EXPRESSIONS = [
    "clicked:last-5",
    "status:subscribed (clicked:last-5 OR replied:30d)",
    "opened:30d -clicked:ever",
    "received:>=3",
    "status:subscribed -clicked:last-10 -replied:last-10 -opened:last-10 -joined:30d received:>=3",
    "tag:leser",
]
#: webhook events by kind (sums to 1.0)
MIX = [("delivered", 0.35), ("open", 0.35), ("click", 0.2), ("processed", 0.1)]


def generate(root: Path, subscribers: int, issues: int, events: int) -> None:
    db = migrated_project(root, CONFIG)
    rng = random.Random(24)
    now = datetime.now(UTC)
    start = now - timedelta(days=7 * issues + 60)
    for trigger in ("list_counters_insert", "list_counters_update"):
        db.execute(f"DROP TRIGGER IF EXISTS {trigger}")  # growth is not what is measured here
    # The ledger's secondary indexes are built once at the end (sorted: much faster than
    # 14 million scattered inserts); their definitions are read back from the schema.
    ledger_indexes = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries'"
        " AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in ledger_indexes:
        db.execute(f"DROP INDEX {name}")
    span = (now - start).total_seconds()

    def people() -> Iterator[tuple[object, ...]]:
        for i in range(1, subscribers + 1):
            created = start + timedelta(seconds=span * (i / subscribers) ** 0.7)
            status = "subscribed" if rng.random() < 0.9 else "unsubscribed"
            yield (
                f"leser{i}@example.de",
                f"leser{i}@example.de",
                status,
                "{}",
                "form",
                stamp(created),
                stamp(created),
                f"p{i:011d}",
            )

    db.executemany(
        "INSERT INTO subscribers (email, email_key, status, fields, source, created_at,"
        " updated_at, public_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        people(),
    )
    db.executemany(
        "INSERT INTO subscriber_tags (subscriber_id, tag) VALUES (?, 'leser')",
        ((i,) for i in range(1, subscribers + 1, 3)),
    )
    db.commit()
    per_issue = events // issues
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    event_no = 0
    for n in range(1, issues + 1):
        sent = start + timedelta(days=7 * n)
        db.execute(
            "INSERT INTO issues (id, slug, title, subject, language, created_at, public_id)"
            " VALUES (?, ?, ?, ?, 'de', ?, ?)",
            (n, f"ausgabe-{n:03d}", f"Ausgabe {n}", f"Ausgabe {n}", stamp(sent), f"i{n:011d}"),
        )
        db.execute(
            "INSERT INTO sends (id, issue_id, status, transport, segment, dry_run, started_at,"
            " finished_at) VALUES (?, ?, 'done', 'sendgrid', '[]', 0, ?, ?)",
            (n, n, stamp(sent), stamp(sent)),
        )
        recipients = int(subscribers * (0.5 + 0.45 * n / issues))
        when = stamp(sent)
        db.executemany(
            "INSERT INTO deliveries (issue_id, subscriber_id, send_id, state, batch_no,"
            " updated_at) VALUES (?, ?, ?, 'delivered', 0, ?)",
            ((n, sid, n, when) for sid in range(1, recipients + 1)),
        )
        batch = []
        for sid in sorted(rng.randrange(1, recipients + 1) for _ in range(per_issue)):
            event_no += 1
            kind = rng.choices(kinds, weights)[0]
            detail: dict[str, object] = {}
            if kind == "click":
                detail["url"] = "https://example.com/artikel"
            elif kind == "open":
                detail["sg_machine_open"] = rng.random() < 0.35
            at = sent + timedelta(seconds=rng.expovariate(1 / 86400))
            batch.append(
                (f"bench{event_no:010d}", kind, sid, n, stamp(at), stamp(at), json.dumps(detail))
            )
        db.executemany(
            "INSERT INTO events (sg_event_id, event, subscriber_id, issue_id, occurred_at,"
            " received_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            batch,
        )
        db.executemany(
            "INSERT INTO replies (subscriber_id, issue_id, from_email, subject, text,"
            " attachments, received_at, automatic) VALUES (?, ?, ?, ?, 'Danke!', '[]', ?, 0)",
            [
                (
                    sid,
                    n,
                    f"leser{sid}@example.de",
                    f"Re: Ausgabe {n}",
                    stamp(sent + timedelta(hours=rng.randint(1, 72))),
                )
                for sid in (rng.randrange(1, recipients + 1) for _ in range(50))
            ],
        )
        db.commit()
    for _, sql in ledger_indexes:
        db.execute(sql)
    db.execute("ANALYZE")
    db.commit()
    db.close()


def backfill(root: Path) -> float:
    """Fill `reader_activity` from the stored events and replies, as m019 does."""
    from newsletter.project import Project
    from newsletter.segments.activity import backfill as fill
    from newsletter.store.engine import open_engine

    engine = open_engine(Project.load(root).database_url)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM reader_activity")
        fill(conn)
    took = time.perf_counter() - t0
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return took


def count(root: Path, where: str) -> tuple[float, float, str]:
    """Wall and CPU seconds of one `newsletter subscribers count --where` process, and its
    answer."""
    return timed(root, "subscribers", "count", *(["--where", where] if where else []))


def main() -> None:
    from as_installed import compile_package

    compile_package()
    args = arguments(runs=5).parse_args()

    def seed(root: Path) -> None:
        generate(root, args.subscribers, args.issues, args.events)

    with seeded_project(args, seed) as (root, seeded):
        if seeded:
            print(f"reader_activity filled (as m019 does) in {backfill(root):.1f} s")
        count(root, "tag:leser")  # warm the page cache
        print(f"  wall     cpu     count  (medians of {args.runs} processes)")
        for where in ["", *EXPRESSIONS]:
            runs = [count(root, where) for _ in range(args.runs)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            what = f"--where {where!r}" if where else "(no condition: the process alone)"
            print(f"{wall:6.3f} s {cpu:6.3f} s {runs[0][2]:>8}  subscribers count {what}")


if __name__ == "__main__":
    main()
