"""`stats`, `stats --list`, `report` and `stats --rebuild` on a big history, as whole processes.

    python benchmarks/stats_history.py [--issues 100] [--subscribers 200000]
        [--events 5000000] [--runs 3] [--keep DIR]

Writes a SQLite project (100 weekly issues over two years, 200,000 subscribers, 5,000,000
events, 5,000 replies, the issue files) straight into the database, then times each command
`--runs` times and prints the median, and each process's peak RSS.
Targets: `stats` <= 0.5 s, `report` <= 2 s.
"""

from __future__ import annotations

import json
import random
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

from seeding import arguments, migrated_project, seeded_project, stamp, timed

CONFIG = """\
[newsletter]
name = "Jens' Briefing"
from_email = "jens@example.com"
postal_address = "Musterstraße 1, 10115 Berlin"
base_url = "https://news.example.com"
language = "de"
timezone = "Europe/Berlin"

[tracking]
opens = true
"""
LINKS = [f"https://example.com/artikel-{n}" for n in range(12)]
#: events per issue by kind (sums to 1.0)
MIX = [
    ("processed", 0.20),
    ("delivered", 0.30),
    ("open", 0.25),
    ("click", 0.12),
    ("deferred", 0.05),
    ("bounce", 0.04),
    ("dropped", 0.01),
    ("unsubscribe", 0.02),
    ("spamreport", 0.01),
]


def generate(root: Path, issues: int, subscribers: int, events: int) -> None:
    from newsletter.insights import counters
    from newsletter.project import Project
    from newsletter.store.engine import open_engine

    db = migrated_project(root, CONFIG)
    rng = random.Random(14)
    now = datetime.now(UTC)
    start = now - timedelta(days=7 * issues + 30)
    # Back-dated growth: the insert trigger would count every row "now"; the subscriber rows
    # are seeded into the counters instead, as m007 does for an existing database.
    db.execute("DROP TRIGGER list_counters_insert")
    db.execute("DROP TRIGGER list_counters_update")
    span = (now - start).total_seconds()
    rows = []
    for i in range(1, subscribers + 1):
        created = start + timedelta(seconds=span * (i / subscribers) ** 0.7)
        source = rng.choices(["form", "import:mailchimp", "cli"], [60, 30, 10])[0]
        status = rng.choices(
            ["subscribed", "unsubscribed", "bounced", "complained", "unconfirmed"],
            [83, 10, 3, 1, 3],
        )[0]
        confirmed = (
            created + timedelta(minutes=5) if source == "form" and status != "unconfirmed" else None
        )
        gone = (
            created + timedelta(days=rng.randint(1, 300))
            if status in ("unsubscribed", "bounced", "complained")
            else None
        )
        if gone and gone > now:  # leaves in the future: still here today
            status, gone = "subscribed", None
        rows.append(
            (
                f"leser{i}@example.de",
                f"leser{i}@example.de",
                status,
                "{}",
                source,
                stamp(created),
                stamp(created),
                stamp(confirmed) if confirmed else None,
                stamp(gone) if gone else None,
            )
        )
    db.executemany(
        "INSERT INTO subscribers (email, email_key, status, fields, source, created_at, updated_at,"
        " confirmed_at, unsubscribed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.commit()
    engine = open_engine(Project.load(root).database_url)
    with engine.begin() as conn:
        counters.seed_list_counters(conn)
        counters.install_list_triggers(conn)
    engine.dispose()

    per_issue = events // issues
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    event_no = 0
    for n in range(1, issues + 1):
        sent = start + timedelta(days=7 * n)
        slug = f"ausgabe-{n:03d}"
        links = rng.sample(LINKS, 5)
        body = "\n\n".join(f"Lies [Artikel {j} über „KI“]({url})." for j, url in enumerate(links))
        (root / "issues" / f"{sent:%Y-%m-%d}-{slug}.md").write_text(
            f"---\ntitle: Ausgabe {n}: Neues über KI\nslug: {slug}\nlanguage: de\n---\n\n{body}\n",
            encoding="utf-8",
        )
        db.execute(
            "INSERT INTO issues (id, slug, title, subject, language, created_at) VALUES (?, ?, ?, ?, 'de', ?)",
            (n, slug, f"Ausgabe {n}: Neues über KI", f"Ausgabe {n}", stamp(sent)),
        )
        db.execute(
            "INSERT INTO sends (id, issue_id, status, transport, segment, dry_run, started_at, finished_at)"
            " VALUES (?, ?, 'done', 'sendgrid', '[]', 0, ?, ?)",
            (n, n, stamp(sent), stamp(sent + timedelta(minutes=20))),
        )
        recipients = int(subscribers * (0.5 + 0.45 * n / issues))
        db.execute(
            "INSERT INTO send_totals (send_id, recipients, accepted, failed, uncertain, updated_at)"
            " VALUES (?, ?, ?, 0, 0, ?)",
            (n, recipients, recipients, stamp(sent)),
        )
        # A send counts by an accepted delivery (insights.metrics.reached_readers): one row
        # stands in for its `recipients` (the rule's EXISTS stops at the first anyway).
        db.execute(
            "INSERT INTO deliveries (issue_id, subscriber_id, send_id, state, updated_at)"
            " VALUES (?, 1, ?, 'delivered', ?)",
            (n, n, stamp(sent)),
        )
        batch = []
        readers = sorted(rng.randrange(1, recipients + 1) for _ in range(per_issue))
        for sid in readers:
            event_no += 1
            kind = rng.choices(kinds, weights)[0]
            detail: dict[str, object] = {}
            if kind == "click":
                detail["url"] = rng.choice(links)
            elif kind == "open":
                detail["sg_machine_open"] = rng.random() < 0.4
            elif kind == "bounce":
                detail = {"type": "bounce", "reason": "550 5.1.1 unknown"}
            when = sent + timedelta(seconds=rng.expovariate(1 / 86400))
            batch.append(
                (
                    f"bench{event_no:010d}",
                    kind,
                    sid,
                    n,
                    stamp(when),
                    stamp(when),
                    json.dumps(detail),
                )
            )
        db.executemany(
            "INSERT INTO events (sg_event_id, event, subscriber_id, issue_id, occurred_at,"
            " received_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            batch,
        )
        replies = [
            (
                rng.randrange(1, subscribers),
                n,
                f"leser{rng.randrange(1, subscribers)}@example.de",
                "Leserin",
                f"Re: Ausgabe {n}",
                "Danke für die Ausgabe!\nViele Grüße",
                "[]",
                stamp(sent + timedelta(hours=rng.randint(1, 72))),
            )
            for _ in range(50)
        ]
        db.executemany(
            "INSERT INTO replies (subscriber_id, issue_id, from_email, from_name, subject, text,"
            " attachments, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            replies,
        )
        db.commit()
    db.execute("ANALYZE")
    db.commit()
    db.close()


def _peak_rss() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    from as_installed import compile_package

    compile_package()
    parser = arguments(runs=3)
    parser.add_argument("--skip-rebuild", action="store_true", help="reuse --keep's counters")
    args = parser.parse_args()

    def seed(root: Path) -> None:
        generate(root, args.issues, args.subscribers, args.events)

    with seeded_project(args, seed, label="generated:       ") as (root, _):
        commands = [
            ("stats --rebuild", ["stats", "--rebuild", "--format", "csv"], None),
            ("stats", ["stats"], 0.5),
            ("stats --format json", ["stats", "--format", "json"], 0.5),
            ("stats ISSUE", ["stats", f"ausgabe-{args.issues:03d}"], None),
            ("stats --list --by week", ["stats", "--list", "--by", "week"], None),
            ("report", ["report", "-o", str(root / "report.html")], 2.0),
            ("newsletter --version", ["--version"], None),
        ]
        if args.skip_rebuild:
            commands = commands[1:]
        for label, argv, target in commands:
            walls, cpus = [], []
            for _ in range(args.runs):
                wall, cpu, _ = timed(root, *argv)
                walls.append(wall)
                cpus.append(cpu)
            goal = f"  (target <= {target} s)" if target else ""
            print(
                f"{label:24}wall median {statistics.median(walls):6.2f} s "
                f"[{', '.join(f'{t:.2f}' for t in walls)}]  "
                f"cpu median {statistics.median(cpus):5.2f} s{goal}"
            )
        print(f"peak RSS of any command: {_peak_rss():.0f} MB")
        print(f"report size:      {(root / 'report.html').stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
