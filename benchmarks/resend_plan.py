"""Planning a resend (`send ISSUE --resend ...`) on a big list with a long history.

    python benchmarks/resend_plan.py [--subscribers 200000] [--issues 100] [--events 5000000]

Builds benchmarks/data/resend_S_I_E.db once, with bulk inserts (SQLite's own INSERT ..
SELECT for the ledger; executemany for events): S subscribers (5 % unsubscribed), I issues
each sent to everyone (S x I ledger rows), E webhook events spread over the issues (the
newest gets a delivered event per reader, 35 % of them an open, a third of those a machine's,
10 % a click) and 2,000 replies to the newest issue. Then times, five times each, the
planning of each resend kind of the newest issue (the refusal checks and the frozen
recipient ids: what `send --resend` does before it asks) and the whole `plan_send` (which
also loads, checks and renders the issue), and prints the medians.
Target: planning a resend <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from seeding import CONFIG as PROJECT  # its [database] url gives way to the env's (below)
from seeding import REPO

DATA = REPO / "benchmarks" / "data"


def build(db: Path, subscribers: int, issues: int, events: int) -> None:
    from newsletter.store.engine import open_engine

    open_engine(f"sqlite:///{db}").dispose()  # the schema, migrated
    rng = random.Random(24)
    then = datetime.now(UTC) - timedelta(days=issues * 7 + 2)
    stamp = then.isoformat(" ")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.executemany(
        "INSERT INTO subscribers (id, email, email_key, status, fields, created_at, updated_at, "
        "public_id) VALUES (?, ?, ?, ?, '{}', ?, ?, ?)",
        (
            (
                i,
                f"leser{i}@example.de",
                f"leser{i}@example.de",
                "unsubscribed" if i % 20 == 0 else "subscribed",
                stamp,
                stamp,
                f"p{i}",
            )
            for i in range(1, subscribers + 1)
        ),
    )
    for n in range(1, issues + 1):
        sent = (then + timedelta(days=7 * n)).isoformat(" ")
        conn.execute(
            "INSERT INTO issues (id, slug, title, subject, language, created_at, public_id) "
            "VALUES (?, ?, ?, ?, 'de', ?, ?)",
            (n, f"ausgabe-{n}", f"Ausgabe {n}", f"Ausgabe {n}", sent, f"i{n}"),
        )
        conn.execute(
            "INSERT INTO sends (id, issue_id, status, transport, segment, dry_run, started_at, "
            "track_opens) VALUES (?, ?, 'done', 'sendgrid', '[]', 0, ?, 1)",
            (n, n, sent),
        )
        conn.execute(
            "INSERT INTO deliveries (issue_id, subscriber_id, send_id, state, updated_at, "
            "send_round) SELECT ?, id, ?, 'delivered', ?, 'first' FROM subscribers",
            (n, n, sent),
        )
    conn.commit()

    def newest() -> list[tuple]:
        rows = []
        for sid in range(1, subscribers + 1):
            rows.append(("delivered", sid, issues, "{}"))
            if rng.random() < 0.35:
                machine = rng.random() < 1 / 3
                rows.append(("open", sid, issues, json.dumps({"sg_machine_open": machine})))
            if rng.random() < 0.10:
                rows.append(("click", sid, issues, '{"url": "https://example.com/a"}'))
        return rows

    recent = newest()
    rest = max(0, events - len(recent))
    kinds = ("delivered", "open", "open", "click", "processed")

    def older():
        for k in range(rest):
            kind = kinds[k % len(kinds)]
            detail = '{"sg_machine_open": false}' if kind == "open" else "{}"
            yield (kind, rng.randint(1, subscribers), rng.randint(1, issues - 1), detail)

    rows = (
        (f"e{k}", kind, sid, issue, stamp, stamp, detail)
        for k, (kind, sid, issue, detail) in enumerate([*recent, *older()])
    )
    conn.executemany(
        "INSERT INTO events (sg_event_id, event, subscriber_id, issue_id, occurred_at, "
        "received_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.executemany(
        "INSERT INTO replies (subscriber_id, issue_id, from_email, subject, text, attachments, "
        "received_at, automatic) VALUES (?, ?, ?, 'Re', 'Danke', '[]', ?, 0)",
        (
            (sid, issues, f"leser{sid}@example.de", stamp)
            for sid in rng.sample(range(1, subscribers + 1), 2000)
        ),
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=200_000)
    parser.add_argument("--issues", type=int, default=100)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    db = DATA / f"resend_{args.subscribers}_{args.issues}_{args.events}.db"
    if not db.exists():
        start = time.perf_counter()
        partial = db.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        build(partial, args.subscribers, args.issues, args.events)
        partial.rename(db)
        print(f"built {db.name} in {time.perf_counter() - start:.0f} s")

    from newsletter.project import Project
    from newsletter.sending.plan import SendRequest, plan_send
    from newsletter.sending.resend import (
        ResendKind,
        resend_after,
        resend_recipients,
        resend_refusal,
    )
    from newsletter.store.engine import open_engine

    engine = open_engine(f"sqlite:///{db}")
    slug = f"ausgabe-{args.issues}"
    print(f"load average {os.getloadavg()[0]:.2f}")
    for kind in ResendKind:
        times, count = [], 0
        for _ in range(args.runs):
            start = time.perf_counter()
            refusal, first, _earlier = resend_refusal(
                engine,
                slug,
                args.issues,
                kind,
                after=timedelta(hours=24),
                now=datetime.now(UTC),
                resume=False,
            )
            assert refusal is None and first is not None, refusal
            count = len(resend_recipients(engine, args.issues, kind, first, ("failed",)))
            times.append(time.perf_counter() - start)
        print(
            f"plan --resend {kind:<13} median {statistics.median(times):6.3f} s "
            f"(of {args.runs})  -> {count} recipients"
        )

    # The whole plan, as `send` makes it: a project whose issue file is the newest issue.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "projekt"
        (root / "issues").mkdir(parents=True)
        (root / "newsletter.toml").write_text(PROJECT, encoding="utf-8")
        issue = root / "issues" / f"{slug}.md"
        issue.write_text(
            f"---\ntitle: Ausgabe {args.issues}\nslug: {slug}\n---\n\nHallo!\n", encoding="utf-8"
        )
        os.environ["NEWSLETTER_DATABASE_URL"] = f"sqlite:///{db}"
        os.environ.setdefault("NEWSLETTER_SECRET_KEY", "benchmark-secret-0123456789abcdef")
        project = Project.load(root)
        resend_after(project)
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            plan = plan_send(
                project, issue, SendRequest(resend="non-clickers", outbox_dir=Path(tmp) / "o")
            )
            times.append(time.perf_counter() - start)
            assert plan.refusal is None, plan.refusal
        print(
            f"plan_send(--resend non-clickers) median {statistics.median(times):6.3f} s "
            f"(loads, checks and renders the issue too) -> {plan.recipients} recipients"
        )


if __name__ == "__main__":
    main()
