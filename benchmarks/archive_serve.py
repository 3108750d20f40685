"""The web archive under `newsletter serve` with 500 published issues.

    python benchmarks/archive_serve.py [--issues N] [--requests N]

Starts `newsletter serve` as a real process (three times, each fresh) and times GET / (the
index), then GET /issues/<slug> and GET /feed.xml over HTTP on loopback: the first request
(which reads every issue file) and the median of the following ones (served from the caches
of rendered issues, which an edit to a file or a template invalidates). Prints the median of
the three runs and the server's peak RSS. Target: index <= 50 ms per request after the first.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from archive_setup import child_env, make_project, peak_rss_mb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(client: httpx.Client, url: str) -> float:
    start = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, (url, response.status_code)
    return elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(root: Path, requests: int) -> dict[str, float]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "newsletter",
        "--project",
        str(root),
        "serve",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(
        command, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=120) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.get(base + "/healthz")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            figures = {"index_first": timed(client, base + "/")}
            cpu_before = cpu_seconds(process.pid)
            figures["index_after"] = statistics.median(
                timed(client, base + "/") for _ in range(requests)
            )
            figures["index_cpu"] = (cpu_seconds(process.pid) - cpu_before) / requests
            issue = base + "/issues/ausgabe-0250"
            figures["issue_first"] = timed(client, issue)
            figures["issue_after"] = statistics.median(
                timed(client, issue) for _ in range(requests)
            )
            figures["feed_first"] = timed(client, base + "/feed.xml")
            figures["feed_after"] = statistics.median(
                timed(client, base + "/feed.xml") for _ in range(requests)
            )
            figures["rss_mb"] = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=20)
    return figures


def main() -> None:
    from as_installed import compile_package

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=500)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_project(Path(tmp) / "project", args.issues)
        runs = [one_run(root, args.requests) for _ in range(3)]
    print(f"archive under newsletter serve, {args.issues} published issues (median of 3 runs)")
    for key, label in [
        ("index_first", "GET / first request"),
        ("index_after", "GET / after the first (median)"),
        ("index_cpu", "GET / server CPU per request"),
        ("issue_first", "GET /issues/<slug> first"),
        ("issue_after", "GET /issues/<slug> after (median)"),
        ("feed_first", "GET /feed.xml first"),
        ("feed_after", "GET /feed.xml after (median)"),
    ]:
        value = statistics.median(r[key] for r in runs)
        print(f"  {label:38} {value * 1000:8.1f} ms")
    print(f"  {'server peak RSS':38} {statistics.median(r['rss_mb'] for r in runs):8.1f} MB")
    after = statistics.median(r["index_after"] for r in runs)
    print(f"target: index <= 50 ms after the first: {'met' if after <= 0.05 else 'MISSED'}")
    print(f"(load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
