"""Event Webhook ingest: a real `newsletter serve` process on loopback, SQLite, signed POSTs
of 1,000 events each (as SendGrid sends them), the `stats` counters maintained as they
arrive. Prints events/s, events per CPU-second of the server, per-POST latency, peak RSS.

Side by side, the same ingest with the counter maintenance switched off (a server started
through benchmarks/serve_without_counters.py, its database copy without the list-growth
triggers): both servers run at once, each on a fresh copy of one seeded database, and get
the same POSTs alternately (one at a time), so load from elsewhere hits both alike; events/s
is over the time the server took to answer, from when both servers have finished their
startup work (the privacy purge reads every stored event). Medians of 3 runs and their
ratio are printed.
Issue 27's target: >= 20,000 events/s with the counters and >= 0.85 of the same ingest without
them, with 1,000,000 events already stored (`--stored 1000000`: stored straight into the
seeded database, 50 per reader of the issue, and the counters rebuilt from them).

    python benchmarks/webhook_ingest.py [--posts 30] [--subscribers 20000] [--runs 3] [--stored N]
    python benchmarks/webhook_ingest.py --profile [--without-counters] [--stored N]

On a shared, busy machine the wall-clock rate is mostly waiting for a core; events per server
CPU-second is the steadier figure, and only figures measured side by side compare.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.store import schema  # noqa: E402
from tests.support.web import sent_issue, sign_events  # noqa: E402

CONFIG = """\
[newsletter]
name = "Benchmark"
from_email = "jens@example.com"
postal_address = "Musterstraße 1, 10115 Berlin"
base_url = "https://news.example.com"
language = "de"
"""
KINDS = [
    "processed",
    "delivered",
    "open",
    "open",
    "click",
    "deferred",
    "bounce",
    "dropped",
    "spamreport",
    "unsubscribe",
]
WEIGHTS = [30, 30, 20, 8, 5, 2, 2, 1, 1, 1]


def seed(root: Path, subscribers: int) -> int:
    from newsletter.project import Project
    from newsletter.store.engine import open_engine

    engine = open_engine(Project.load(root).database_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            schema.subscribers.insert(),
            [
                {
                    "email": f"leser{i}@example.de",
                    "email_key": f"leser{i}@example.de",
                    "status": "subscribed",
                    "fields": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(1, subscribers + 1)
            ],
        )
    issue_id = sent_issue(engine, list(range(1, subscribers + 1)), slug="bench", title="Bench")
    engine.dispose()
    return int(issue_id)


def store_events(root: Path, count: int, subscribers: int, issue_id: int) -> None:
    """`count` events already stored (SendGrid's mix, over the last weeks), as a list that has
    sent for a while has them; then the counters rebuilt from them, as `stats --rebuild`."""
    from newsletter.insights.counters import rebuild
    from newsletter.project import Project
    from newsletter.store.engine import open_engine

    rng = random.Random(11)
    start = int(time.time()) - 30 * 86400
    with sqlite3.connect(root / "newsletter.db") as db:
        for first in range(0, count, 100_000):
            rows = []
            for n in range(first, min(first + 100_000, count)):
                kind = rng.choices(KINDS, WEIGHTS)[0]
                when = datetime.fromtimestamp(start + n * 30 * 86400 // count, UTC)
                stamp = when.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
                detail = {"url": "https://example.com/artikel?x=1"} if kind == "click" else {}
                if kind == "open":
                    detail["sg_machine_open"] = rng.random() < 0.3
                rows.append(
                    (
                        f"stored-{n}",
                        kind,
                        rng.randint(1, subscribers),
                        issue_id,
                        f"{n:022d}.filterdrecv-p3mdw1-1-5F",
                        stamp,
                        stamp,
                        json.dumps(detail),
                    )
                )
            db.executemany(
                "INSERT INTO events (sg_event_id, event, subscriber_id, issue_id, sg_message_id,"
                " occurred_at, received_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
    engine = open_engine(Project.load(root).database_url)
    rebuild(engine)
    engine.dispose()


def batches(posts: int, subscribers: int, issue_id: int) -> list[bytes]:
    rng = random.Random(7)
    out = []
    for _ in range(posts):
        events = []
        for _ in range(1000):
            sid = rng.randint(1, subscribers)
            kind = rng.choices(KINDS, WEIGHTS)[0]
            event = {
                "email": f"leser{sid}@example.de",
                "timestamp": int(time.time()),
                "event": kind,
                "sg_event_id": uuid.uuid4().hex,
                "category": ["newsletter"],
                "sg_message_id": f"{uuid.uuid4().hex[:22]}.filterdrecv-p3mdw1-1-5F",
                schema.CUSTOM_ARG_ISSUE: str(issue_id),
                schema.CUSTOM_ARG_SUBSCRIBER: str(sid),
                "smtp-id": f"<{uuid.uuid4().hex}@example.com>",
            }
            if kind == "bounce":
                event.update(
                    type=rng.choice(["bounce", "blocked"]),
                    reason="550 5.1.1 user unknown",
                    status="5.1.1",
                )
            if kind == "click":
                event["url"] = "https://example.com/artikel?x=1"
            if kind in ("open", "click"):
                event.update(useragent="Mozilla/5.0", ip="203.0.113.7")
            events.append(event)
        out.append(json.dumps(events).encode())
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Run:
    rate: float  # events/s, wall clock
    per_cpu: float  # events per server CPU-second
    median_ms: float
    p95_ms: float
    replay_rate: float
    rss_mb: float


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def signed(key: ec.EllipticCurvePrivateKey, body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": sign_events(key, body, ts),
        "X-Twilio-Email-Event-Webhook-Timestamp": ts,
    }


def drop_list_triggers(database: Path) -> None:
    with sqlite3.connect(database) as db:
        names = [
            row[0]
            for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            if row[0].startswith("list_counters_")
        ]
        for name in names:
            db.execute(f"DROP TRIGGER {name}")


class Server:
    """A `newsletter serve` process (or the baseline's wrapper) on a fresh copy of the seeded
    project."""

    def __init__(self, template: Path, work: Path, public: str, *, with_counters: bool) -> None:
        self.with_counters = with_counters
        root = work / ("with" if with_counters else "without")
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(template, root)
        if not with_counters:
            drop_list_triggers(root / "newsletter.db")
        entry = (
            ["-m", "newsletter"]
            if with_counters
            else [str(Path(__file__).resolve().parent / "serve_without_counters.py")]
        )
        port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, *entry, "--project", str(root), "serve", "--port", str(port)],
            # This checkout's package, wherever the benchmark is started from (a `pip install
            # -e` of another checkout would otherwise answer `-m newsletter`).
            env={**os.environ, "SENDGRID_WEBHOOK_PUBLIC_KEY": public, "PYTHONPATH": str(REPO)},
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{port}"
        self.url = self.base + "/webhooks/sendgrid/events"
        self.latencies: list[float] = []

    def wait_ready(self, client: httpx.Client) -> None:
        for _ in range(400):
            try:
                client.get(self.base + "/healthz")
                return
            except httpx.TransportError:
                time.sleep(0.05)

    def wait_idle(self) -> None:
        """Until the server's startup work (the privacy purge scans every stored event) is
        done, so that it is not timed as ingest: its CPU time stands still for a second."""
        last = cpu_seconds(self.process.pid)
        for _ in range(120):
            time.sleep(1.0)
            now = cpu_seconds(self.process.pid)
            if now - last < 0.02:
                return
            last = now

    def post(self, client: httpx.Client, body: bytes, headers: dict[str, str]) -> str:
        t0 = time.perf_counter()
        response = client.post(self.url, content=body, headers=headers)
        self.latencies.append(time.perf_counter() - t0)
        assert response.status_code == 200, response.text
        return response.text

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def run_pair(
    template: Path,
    work: Path,
    bodies: list[bytes],
    key: ec.EllipticCurvePrivateKey,
    public: str,
) -> tuple[Run, Run]:
    """One run: the same POSTs to a server with counters and one without, interleaved POST by
    POST (which goes first alternates), so both meet the same machine load. The client waits
    for each answer: one server works at a time."""
    servers = [
        Server(template, work, public, with_counters=True),
        Server(template, work, public, with_counters=False),
    ]
    runs = []
    try:
        with httpx.Client() as client:
            for server in servers:
                server.wait_ready(client)
            for server in servers:
                server.wait_idle()
            # Signed beforehand, so the client's signing is not timed (each stays fresh for
            # the ten minutes the server accepts).
            requests = [(body, signed(key, body)) for body in bodies]
            cpu_before = [cpu_seconds(server.process.pid) for server in servers]
            for n, (body, headers) in enumerate(requests):
                for server in servers if n % 2 == 0 else servers[::-1]:
                    server.post(client, body, headers)
            cpu = [
                cpu_seconds(server.process.pid) - before
                for server, before in zip(servers, cpu_before, strict=True)
            ]
            for server, server_cpu in zip(servers, cpu, strict=True):
                rss = peak_rss_mb(server.process.pid)
                latencies = sorted(server.latencies)
                # A replay: all duplicates, nothing stored twice.
                t0 = time.perf_counter()
                for body, headers in requests[:5]:
                    assert server.post(client, body, headers).startswith("ok: 0 stored")
                replay = time.perf_counter() - t0
                events = len(bodies) * 1000
                runs.append(
                    Run(
                        rate=events / sum(latencies),
                        per_cpu=events / server_cpu,
                        median_ms=statistics.median(latencies) * 1000,
                        p95_ms=latencies[max(int(len(latencies) * 0.95) - 1, 0)] * 1000,
                        replay_rate=5000 / replay,
                        rss_mb=rss,
                    )
                )
    finally:
        for server in servers:
            server.stop()
    return runs[0], runs[1]


def profile(root: Path, bodies: list[bytes], *, with_counters: bool) -> None:
    import cProfile
    import pstats

    from newsletter.events import ingest, parse
    from newsletter.insights import counters
    from newsletter.project import Project
    from newsletter.store.engine import open_engine

    if not with_counters:
        drop_list_triggers(root / "newsletter.db")
        counters.count_events = lambda conn, inserted: None
    engine = open_engine(Project.load(root).database_url)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for body in bodies:
        ingest(engine, parse(body))
    profiler.disable()
    took = time.perf_counter() - start
    print(f"in-process ingest: {len(bodies) * 1000 / took:,.0f} events/s (under cProfile)")
    pstats.Stats(profiler).sort_stats(os.environ.get("PROFILE_SORT", "cumulative")).print_stats(25)


def describe(label: str, runs: list[Run]) -> Run:
    med = Run(
        rate=statistics.median(r.rate for r in runs),
        per_cpu=statistics.median(r.per_cpu for r in runs),
        median_ms=statistics.median(r.median_ms for r in runs),
        p95_ms=statistics.median(r.p95_ms for r in runs),
        replay_rate=statistics.median(r.replay_rate for r in runs),
        rss_mb=max(r.rss_mb for r in runs),
    )
    print(f"{label}:")
    print(
        f"  throughput:     {med.rate:,.0f} events/s while answering  "
        f"(runs: {', '.join(f'{r.rate:,.0f}' for r in runs)})"
    )
    print(
        f"  server CPU:     {med.per_cpu:,.0f} events per CPU-second  "
        f"(runs: {', '.join(f'{r.per_cpu:,.0f}' for r in runs)})"
    )
    print(f"  POST latency:   median {med.median_ms:.0f} ms, p95 {med.p95_ms:.0f} ms")
    print(f"  replayed POSTs: {med.replay_rate:,.0f} events/s (all duplicates)")
    print(f"  server peak RSS: {med.rss_mb:.0f} MB")
    return med


def main() -> None:
    from as_installed import compile_package

    compile_package()
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=30)
    parser.add_argument("--subscribers", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind (medians)")
    parser.add_argument(
        "--stored",
        type=int,
        default=0,
        help="events already stored before the run (issue 27: 1000000)",
    )
    parser.add_argument("--profile", action="store_true", help="profile in-process ingest instead")
    parser.add_argument(
        "--without-counters", action="store_true", help="with --profile: the baseline's ingest"
    )
    args = parser.parse_args()

    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "seeded"
        (template / "issues").mkdir(parents=True)
        (template / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
        os.environ.setdefault("NEWSLETTER_SECRET_KEY", "benchmark-secret-key-0123456789")
        issue_id = seed(template, args.subscribers)
        if args.stored:
            t0 = time.perf_counter()
            store_events(template, args.stored, args.subscribers, issue_id)
            print(f"stored {args.stored:,} events first ({time.perf_counter() - t0:.0f} s)")
        bodies = batches(args.posts, args.subscribers, issue_id)

        if args.profile:
            profile(template, bodies, with_counters=not args.without_counters)
            return

        with_runs: list[Run] = []
        without_runs: list[Run] = []
        loads = []
        for _ in range(args.runs):
            loads.append(" ".join(Path("/proc/loadavg").read_text().split()[:3]))
            with_run, without_run = run_pair(template, Path(tmp), bodies, key, public)
            with_runs.append(with_run)
            without_runs.append(without_run)

    print(
        f"events: {len(bodies) * 1000:,} per run in {len(bodies)} signed POSTs of 1,000 "
        f"(SQLite, one server process each, {args.stored:,} events stored before); "
        f"{args.runs} runs, POSTs alternating between the two servers; medians"
    )
    with_med = describe("with counters (newsletter serve)", with_runs)
    without_med = describe("without counters (baseline)", without_runs)
    print(
        f"with/without:     {with_med.rate / without_med.rate:.2f} events/s, "
        f"{with_med.per_cpu / without_med.per_cpu:.2f} per CPU-second  (floor: the same ingest "
        "without counters; target (issue 27): >= 0.85, and >= 20,000 events/s with counters, "
        "with --stored 1000000)"
    )
    print(f"load average at the start of each run: {'; '.join(loads)}")


if __name__ == "__main__":
    main()
