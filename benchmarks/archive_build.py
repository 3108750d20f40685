"""`newsletter archive build` with 500 published issues.

    python benchmarks/archive_build.py [--issues N]

Runs the real CLI in a child process: a cold build into an empty folder, a rebuild with
nothing changed (must write no file), and a rebuild after one more issue was published
(must write only that page, its neighbour, the index, feeds and sitemap). Each three times;
prints the medians (wall time, and CPU time of the build and its worker processes: on a
shared machine the wall time mostly measures the other load), the files written and the
child's peak RSS.
Targets: cold <= 10 s; unchanged <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from archive_setup import SEED, add_issue_file, child_env, make_project, record_sent


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_build(root: Path, out: Path) -> tuple[float, str, float, float]:
    """(wall seconds, the summary line, peak RSS MB, CPU seconds incl. worker processes)."""
    command = [sys.executable, "-m", "newsletter", "--project", str(root), "archive", "build"]
    cpu_before = children_cpu()
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "-q", "-o", str(out)], env=child_env(), capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return elapsed, done.stdout.strip().splitlines()[-1], rss, children_cpu() - cpu_before


def publish_one_more(root: Path, n: int) -> None:
    """One more issue file and the rows of its accepted send."""
    from datetime import UTC, datetime

    from newsletter.project import Project
    from newsletter.store.engine import open_engine

    slug = f"neu-{n}"
    body = SEED.read_text(encoding="utf-8").split("---\n", 2)[2]
    add_issue_file(root, n, slug, f"Neue Ausgabe {n}", body)
    engine = open_engine(Project.load(root).database_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        record_sent(conn, slug, slug, now, 1, message_id=None)
    engine.dispose()


def main() -> None:
    from as_installed import compile_package

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=500)
    args = parser.parse_args()
    cold: list[float] = []
    unchanged: list[float] = []
    added: list[float] = []
    cpu: dict[str, list[float]] = {"cold": [], "unchanged": [], "added": []}
    lines: dict[str, str] = {}
    rss = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        root = make_project(Path(tmp) / "project", args.issues)
        for run in range(3):
            out = Path(tmp) / "site"
            shutil.rmtree(out, ignore_errors=True)
            seconds, lines["cold"], rss, used = run_build(root, out)
            cold.append(seconds)
            cpu["cold"].append(used)
            seconds, lines["unchanged"], rss, used = run_build(root, out)
            unchanged.append(seconds)
            cpu["unchanged"].append(used)
            publish_one_more(root, run)
            seconds, lines["added"], rss, used = run_build(root, out)
            added.append(seconds)
            cpu["added"].append(used)
    print(f"newsletter archive build, {args.issues} published issues (median of 3 runs)")
    for label, key, walls in [
        ("cold build into an empty folder", "cold", cold),
        ("again, nothing changed", "unchanged", unchanged),
        ("after one more issue", "added", added),
    ]:
        print(
            f"  {label:34}{statistics.median(walls):6.2f} s wall, "
            f"{statistics.median(cpu[key]):6.2f} s CPU   ({lines[key]})"
        )
    print(f"  peak RSS of the build             {rss:6.1f} MB")
    ok = statistics.median(cold) <= 10 and statistics.median(unchanged) <= 1
    print(f"targets (cold <= 10 s, unchanged <= 1 s): {'met' if ok else 'MISSED'}")
    print(f"(load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
