"""`newsletter sequences run` with 100,000 subscribers in the welcome sequence, 10,000 of them
due, sending to the fake SendGrid server (a separate process on 127.0.0.1).

    python benchmarks/sequences_run.py                       # SQLite, median of 3
    python benchmarks/sequences_run.py --database-url postgresql://postgres@127.0.0.1:5433/x

Prints, per repetition and as the median of 3: the wall time of the whole `sequences run`
process (start-up, finding the due people, rendering the step, claiming, HTTP, ledger) and of
`run_due` alone inside it, recipients/s, recipients per CPU second (the figure a loaded machine
does not distort), the process's peak RSS, and the same for a second run when nothing is due
any more. Targets: >= 5,000 recipients/s; nothing due <= 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import CONFIG  # noqa: E402
from tests.support.sequences import SEQUENCE, STEP1, STEP2  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from send_throughput import KEY, start_server  # noqa: E402  (the same fake SendGrid)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

# Runs inside the measured process: the CLI's own code path, timed around run_due alone too.
RUNNER = """
import sys, time, json
from newsletter.cli import main
import newsletter.sequences.runner as runner
inner = {}
original = runner.run_due
def timed(*a, **k):
    t, c = time.perf_counter(), time.process_time()
    try:
        return original(*a, **k)
    finally:
        inner["run_due_s"] = time.perf_counter() - t
        inner["run_due_cpu_s"] = time.process_time() - c
runner.run_due = timed
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print("INNER " + json.dumps(inner), file=sys.stderr)
"""


def make_project(root: Path, url: str, total: int, due: int) -> None:
    from sqlalchemy import insert, select

    from newsletter.project import Project
    from newsletter.sequences.state import ensure_step_issue
    from newsletter.step import fingerprint, load_sequence
    from newsletter.store.engine import dispose_all, open_engine
    from newsletter.store.schema import sequence_enrollments, sequence_state, subscribers

    (root / "issues").mkdir(parents=True)
    (root / "newsletter.toml").write_text(CONFIG + SEQUENCE, "utf-8")
    folder = root / "sequences" / "welcome"
    folder.mkdir(parents=True)
    (folder / "01-willkommen.md").write_text(STEP1, "utf-8")
    (folder / "02-tipps.md").write_text(STEP2, "utf-8")
    os.environ["NEWSLETTER_DATABASE_URL"] = url
    project = Project.load(root)
    engine = open_engine(url)
    steps = load_sequence(project, "welcome")
    ensure_step_issue(engine, steps[0], steps[0].issue.subject)
    stamp = NOW - timedelta(days=1)
    chunk = 10000
    with engine.begin() as conn:
        for start in range(0, total, chunk):
            conn.execute(insert(subscribers), [
                {"email": f"leser{i}@example.org", "email_key": f"leser{i}@example.org",
                 "name": f"Leser Nummer {i}", "first_name": "Jörg" if i % 2 else "Anna",
                 "last_name": "Müller", "status": "subscribed", "fields": {},
                 "source": "benchmark", "created_at": stamp, "updated_at": stamp,
                 "confirmed_at": stamp}
                for i in range(start, min(start + chunk, total))
            ])  # fmt: skip
        ids = list(conn.execute(select(subscribers.c.id).order_by(subscribers.c.id)).scalars())
        # Every tenth person is due now (spread over the list), the rest later.
        for start in range(0, total, chunk):
            conn.execute(insert(sequence_enrollments), [
                {"sequence": "welcome", "subscriber_id": sid, "state": "active",
                 "reason": "subscribed", "started_at": stamp, "next_step": "willkommen",
                 "next_due_at": NOW - timedelta(minutes=1) if n % (total // due) == 0
                 else NOW + timedelta(days=2),
                 "updated_at": stamp}
                for n, sid in enumerate(ids[start : start + chunk], start=start)
            ])  # fmt: skip
        conn.execute(
            insert(sequence_state).values(
                sequence="welcome", fingerprint=fingerprint(steps), updated_at=stamp
            )
        )
    dispose_all()


def timed_run(root: Path, env: dict[str, str]) -> dict[str, float]:
    t = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", RUNNER, "--project", str(root), "sequences", "run",
         "--now", NOW.isoformat(), "--quiet"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = child.stdout.read(), child.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"sequences run failed:\n{out}\n{err}")
    inner = json.loads(err.split("INNER ", 1)[1].splitlines()[0])
    return {
        "seconds": seconds,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "run_due_s": inner.get("run_due_s", 0.0),
        "run_due_cpu_s": inner.get("run_due_cpu_s", 0.0),
        "rss_mb": usage.ru_maxrss / 1024,
    }


def count_logged(log: Path) -> int:
    if not log.exists():
        return 0
    with open(log, encoding="utf-8") as f:
        entries = [json.loads(line) for line in f]
    assert all(e["repeated"] == 0 for e in entries), "someone got a step twice"
    return sum(e["recipients"] for e in entries)


def reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def once(total: int, due: int, database_url: str | None) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="sequences-bench-"))
    try:
        root = tmp / "project"
        url = database_url or f"sqlite:///{tmp / 'newsletter.db'}"
        if database_url:
            reset_postgres(database_url)
        make_project(root, url, total, due)
        log = tmp / "sendgrid.log"
        server, host = start_server(log)
        env = {**os.environ, "SENDGRID_API_KEY": KEY, "SENDGRID_API_HOST": host,
               "NEWSLETTER_SECRET_KEY": "benchmark-secret", "NEWSLETTER_DATABASE_URL": url,
               "PYTHONPATH": str(REPO)}  # fmt: skip
        try:
            busy = timed_run(root, env)
            sent = count_logged(log)
            idle = timed_run(root, env)
        finally:
            server.terminate()
            server.wait()
        assert sent == due, (sent, due)
        assert count_logged(log) == due, "the idle run sent something"
        return {
            "seconds": busy["seconds"],
            "per_second": due / busy["seconds"],
            "run_due_s": busy["run_due_s"],
            "per_second_run_due": due / busy["run_due_s"],
            "per_cpu_second": due / busy["run_due_cpu_s"],
            "cpu_s": busy["cpu_s"],
            "rss_mb": busy["rss_mb"],
            "idle_s": idle["seconds"],
            "idle_cpu_s": idle["cpu_s"],
            "idle_run_due_s": idle["run_due_s"],
            "idle_run_due_cpu_s": idle["run_due_cpu_s"],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    from as_installed import compile_package

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", help="a PostgreSQL URL (its schema is dropped!)")
    args = parser.parse_args()
    header = (
        f"{'due':>7} {'run s':>6} {'rcpt/s':>7} {'run_due s':>9} {'rcpt/s':>7} "
        f"{'rcpt/CPU s':>10} {'CPU s':>6} {'RSS MB':>6} | {'idle s':>6} {'idle CPU s':>10} "
        f"{'run_due s':>9} {'run_due CPU s':>13}"
    )
    print(f"{args.subscribers:,} subscribers in the sequence, {args.due:,} due; "
          f"{'PostgreSQL' if args.database_url else 'SQLite'}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    print(header)
    results = []
    for _ in range(args.repeat):
        r = once(args.subscribers, args.due, args.database_url)
        results.append(r)
        print(
            f"{args.due:>7,} {r['seconds']:>6.2f} {r['per_second']:>7,.0f} {r['run_due_s']:>9.2f} "
            f"{r['per_second_run_due']:>7,.0f} {r['per_cpu_second']:>10,.0f} {r['cpu_s']:>6.2f} "
            f"{r['rss_mb']:>6.1f} | {r['idle_s']:>6.2f} {r['idle_cpu_s']:>10.2f} "
            f"{r['idle_run_due_s']:>9.3f} {r['idle_run_due_cpu_s']:>13.3f}",
            flush=True,
        )
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(
        f"median of {len(results)}: {med['per_second']:,.0f} recipients/s for the whole process, "
        f"{med['per_second_run_due']:,.0f}/s in run_due, {med['per_cpu_second']:,.0f} per CPU "
        f"second of run_due; nothing due: {med['idle_s']:.2f} s for the whole process "
        f"({med['idle_cpu_s']:.2f} CPU s), {med['idle_run_due_s']:.3f} s in run_due "
        f"({med['idle_run_due_cpu_s']:.3f} CPU s); peak RSS {med['rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
