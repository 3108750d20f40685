"""Event Webhook ingest: a real `newsletter serve` process on loopback, SQLite, signed POSTs
of 1,000 events each (as SendGrid sends them), the `stats` counters maintained as they
arrive. Prints events/s, events per CPU-second of the server, per-POST latency, peak RSS.

    python benchmarks/webhook_ingest.py [--posts 30] [--subscribers 20000] [--profile]

Target: >= 20,000 events/s with the counters. On a shared, busy machine the wall-clock rate
is mostly waiting for a core; events per server CPU-second is the steadier figure.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.store import schema  # noqa: E402
from tests.test_web_support import sent_issue, sign_events  # noqa: E402

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


def main() -> None:
    from as_installed import compile_package

    compile_package()
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=30)
    parser.add_argument("--subscribers", type=int, default=20000)
    parser.add_argument("--profile", action="store_true", help="profile in-process ingest instead")
    args = parser.parse_args()

    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "issues").mkdir()
        (root / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
        os.environ.setdefault("NEWSLETTER_SECRET_KEY", "benchmark-secret-key-0123456789")
        issue_id = seed(root, args.subscribers)
        bodies = batches(args.posts, args.subscribers, issue_id)

        if args.profile:
            import cProfile
            import pstats

            from newsletter.events import ingest, parse
            from newsletter.project import Project
            from newsletter.store.engine import open_engine

            engine = open_engine(Project.load(root).database_url)
            profiler = cProfile.Profile()
            start = time.perf_counter()
            profiler.enable()
            for body in bodies:
                ingest(engine, parse(body))
            profiler.disable()
            took = time.perf_counter() - start
            print(f"in-process ingest: {len(bodies) * 1000 / took:,.0f} events/s")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(20)
            return

        with httpx.Client() as probe:
            port_sock = __import__("socket").socket()
            port_sock.bind(("127.0.0.1", 0))
            port = port_sock.getsockname()[1]
            port_sock.close()
            env = {**os.environ, "SENDGRID_WEBHOOK_PUBLIC_KEY": public}
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "newsletter",
                    "--project",
                    str(root),
                    "serve",
                    "--port",
                    str(port),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            base = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    probe.get(base + "/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            try:
                latencies = []
                url = base + "/webhooks/sendgrid/events"
                cpu_before = cpu_seconds(server.pid)
                start = time.perf_counter()
                for body in bodies:
                    ts = str(int(time.time()))
                    headers = {
                        "Content-Type": "application/json",
                        "X-Twilio-Email-Event-Webhook-Signature": sign_events(key, body, ts),
                        "X-Twilio-Email-Event-Webhook-Timestamp": ts,
                    }
                    t0 = time.perf_counter()
                    response = probe.post(url, content=body, headers=headers)
                    latencies.append(time.perf_counter() - t0)
                    assert response.status_code == 200, response.text
                took = time.perf_counter() - start
                server_cpu = cpu_seconds(server.pid) - cpu_before
                rss = peak_rss_mb(server.pid)
                # A replay of everything: all duplicates, nothing stored twice.
                t0 = time.perf_counter()
                for body in bodies[:5]:
                    ts = str(int(time.time()))
                    probe.post(
                        url,
                        content=body,
                        headers={
                            "X-Twilio-Email-Event-Webhook-Signature": sign_events(key, body, ts),
                            "X-Twilio-Email-Event-Webhook-Timestamp": ts,
                        },
                    )
                replay = time.perf_counter() - t0
            finally:
                server.terminate()
                server.wait(timeout=20)

    events = len(bodies) * 1000
    latencies.sort()
    print(
        f"events:           {events:,} in {len(bodies)} signed POSTs of 1,000 (SQLite, one server process)"
    )
    print(f"throughput:       {events / took:,.0f} events/s  (target >= 20,000)")
    print(
        f"server CPU:       {server_cpu:.2f} s = {events / server_cpu:,.0f} events per CPU-second"
    )
    print(
        f"POST latency:     median {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {latencies[int(len(latencies) * 0.95) - 1] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    print(f"replayed POSTs:   {5000 / replay:,.0f} events/s (all duplicates)")
    print(f"server peak RSS:  {rss:.0f} MB")


if __name__ == "__main__":
    main()
