"""Import 1,000,000 subscribers into SQLite and time it; then time `count` and `list | head`.

    python benchmarks/import_1m.py [--rows N] [--keep]

Generates benchmarks/data/subscribers_1m.csv (email, first name, last name, one tag;
gitignored) once, runs the real CLI (`newsletter subscribers import`) in a fresh
project in a child process and reports wall time and the child's peak RSS. Then it
re-runs the import (must change nothing), and times `subscribers count`,
`count --tag`, and `list --tag TAG | head`. Compares with `sqlite3 .import` when the
sqlite3 command is installed. Targets: import <= 10 s and <= 250 MB; queries <= 1 s.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
FIRST = ["Jörg", "Anna", "Zoë", "Jens", "Lea", "Max", "Ümit", "Clara", "Otto", "Ida", "Ben"]
LAST = ["Müller", "Schmidt", "Weiß", "Groß", "Öztürk", "Schäfer", "Becker", "Koch", "Bauer"]
DOMAINS = ["example.de", "example.com", "beispiel.de", "mail.example.org", "web.example.net"]
TAGS = ["leser", "kunde", "presse", "vip"]

CONFIG = """\
[newsletter]
name = "Benchmark"
from_email = "bench@example.com"
from_name = "Bench"
reply_to = "bench@example.com"
postal_address = "Musterstraße 1, 10115 Berlin, Germany"
base_url = "https://news.example.com"
language = "de"

[database]
url = "sqlite:///newsletter.db"
"""


def generate(path: Path, rows: int) -> None:
    rng = random.Random(42)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first name", "last name", "tags"])
        for i in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            local = f"{first.lower()}.{last.lower()}{i}".translate(
                str.maketrans({"ö": "oe", "ä": "ae", "ü": "ue", "ß": "ss", "ë": "e", "Ü": "ue"})
            )
            writer.writerow([f"{local}@{rng.choice(DOMAINS)}", first, last, TAGS[i % len(TAGS)]])


def run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return elapsed, done.stdout


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (the import starts a reader process for big files)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return pids


def _memory(pid: int) -> tuple[float, float]:
    """(summed RSS, summed PSS) in MB of a process tree; PSS splits shared pages fairly."""
    rss = pss = 0
    for member in _tree(pid):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


def timed_child(cmd: list[str], cwd: Path) -> tuple[float, float, float, str]:
    """Wall time, and peak summed RSS and PSS (MB) of the command's process tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0.0
    while proc.poll() is None:
        rss, pss = _memory(proc.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{stderr}")
    return elapsed, peak_rss, peak_pss, stdout


def main() -> None:
    from as_installed import compile_package

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the project folder")
    args = parser.parse_args()

    source = DATA / f"subscribers_{args.rows}.csv"
    if not source.exists():
        t = time.perf_counter()
        generate(source, args.rows)
        print(
            f"generated {source.name} ({source.stat().st_size / 1e6:.1f} MB) in "
            f"{time.perf_counter() - t:.1f} s"
        )

    work = Path(tempfile.mkdtemp(prefix="newsletter-bench-", dir=DATA))
    (work / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    (work / "issues").mkdir()
    cli = [sys.executable, "-m", "newsletter", "--project", str(work), "subscribers"]
    print(f"rows: {args.rows:,}  machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")

    elapsed, rss, pss, out = timed_child([*cli, "import", str(source), "--quiet"], work)
    print(
        f"import:            {elapsed:6.2f} s  peak RSS {rss:6.1f} MB (PSS {pss:6.1f} MB), "
        "all processes summed   (targets 10 s, 250 MB)"
    )
    print("                   " + out.strip().replace("\n", "\n                   "))
    elapsed, rss, pss, out = timed_child([*cli, "import", str(source), "--quiet"], work)
    print(f"re-import (no-op): {elapsed:6.2f} s  peak RSS {rss:6.1f} MB (PSS {pss:6.1f} MB)")
    print("                   " + out.strip().splitlines()[-1])

    elapsed, _ = run([*cli, "--help"], work)
    print(f"CLI start-up:      {elapsed:6.2f} s  (included in each figure below)")
    for label, extra in (
        ("count", ["count"]),
        ("count --status", ["count", "--status", "subscribed"]),
        ("count --tag vip", ["count", "--tag", "vip"]),
    ):
        elapsed, out = run([*cli, *extra], work)
        print(f"{label + ':':<19}{elapsed:6.2f} s  -> {out.strip()}   (target 1 s)")
    start = time.perf_counter()
    shell = f"{' '.join(cli)} list --tag vip | head -n 20 > /dev/null"
    subprocess.run(shell, shell=True, cwd=work, check=True)
    print(f"list --tag | head: {time.perf_counter() - start:6.2f} s   (target 1 s)")
    start = time.perf_counter()
    shell = f"{' '.join(cli)} list --tag vip --status subscribed | tail -n 1 > /dev/null"
    subprocess.run(shell, shell=True, cwd=work, check=True)
    print(f"list --tag (all 250k rows, streamed): {time.perf_counter() - start:6.2f} s")

    sqlite3 = shutil.which("sqlite3")
    if sqlite3:
        db = work / "plain.db"
        start = time.perf_counter()
        subprocess.run(
            [sqlite3, str(db), "-cmd", ".mode csv", f".import {source} plain"],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        print(f"sqlite3 .import:   {time.perf_counter() - start:6.2f} s  (no validation, no index)")
    else:
        print("sqlite3 .import:   (sqlite3 not installed: apt-get install -y sqlite3)")
    print(f"database size:     {(work / 'newsletter.db').stat().st_size / 1e6:.0f} MB")
    if not args.keep:
        shutil.rmtree(work)
    else:
        print(f"kept {work}")


if __name__ == "__main__":
    main()
