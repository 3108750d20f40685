"""`subscribers import` side by side with the database's own bulk loader (the floor).

    python benchmarks/import_vs_floor.py [--rows 1000000] [--runs 3]
    python benchmarks/import_vs_floor.py --postgres postgresql://user@host/db [--rows N]

SQLite: each run times the whole `newsletter subscribers import FILE --quiet` process (fresh
project, empty list) and, right before or after it (the order alternates), `sqlite3 .import` of
the same file into a table whose primary key is the address, COLLATE NOCASE (the least a
subscriber table needs: one row per address). Prints both medians, their ratio and the load
average. Targets (issue 27): 1,000,000 rows <= 10 s, <= 5x the floor, peak RSS <= 150 MB.

PostgreSQL: the import into the database given (its tables are dropped first: use a scratch
database) against `psql \\copy` of the same file into a table with a primary key on
lower(email). Target: >= 100,000 rows/s.

The file (email, first name, last name, one tag; umlauts in the names) is made once by
benchmarks/import_1m.py's generator and kept in benchmarks/data/ (gitignored).
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from import_1m import CONFIG, DATA, generate, timed_child

REPO = Path(__file__).resolve().parent.parent


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def children_cpu() -> float:
    """CPU seconds (user + system) of all finished child processes and theirs, so far: on a
    busy machine steadier than wall time, which is mostly waiting for a core."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def floor_sqlite(source: Path, work: Path) -> float:
    """`sqlite3 .import` into a table keyed by the address, case-insensitively."""
    db = work / "floor.db"
    db.unlink(missing_ok=True)
    schema = (
        "CREATE TABLE plain (email TEXT PRIMARY KEY COLLATE NOCASE, first TEXT, last TEXT, "
        "tags TEXT) WITHOUT ROWID"
    )
    sqlite3 = shutil.which("sqlite3")
    if sqlite3 is None:
        sys.exit("sqlite3 is not installed: apt-get install -y sqlite3")
    start = time.perf_counter()
    subprocess.run(
        [sqlite3, str(db), schema, ".mode csv", f".import --skip 1 {source} plain"],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    took = time.perf_counter() - start
    db.unlink()
    return took


def floor_postgres(source: Path, url: str) -> float:
    """`psql \\copy` into a table keyed by the lower-cased address."""
    psql = shutil.which("psql")
    if psql is None:
        sys.exit("psql is not installed: apt-get install -y postgresql-client")
    setup = (
        "DROP TABLE IF EXISTS floor_plain; CREATE TABLE floor_plain (email text, first text, "
        "last text, tags text); CREATE UNIQUE INDEX ON floor_plain (lower(email));"
    )
    subprocess.run([psql, url, "-qc", setup], check=True, capture_output=True)
    start = time.perf_counter()
    subprocess.run(
        [psql, url, "-qc", f"\\copy floor_plain FROM '{source}' WITH (FORMAT csv, HEADER)"],
        check=True,
        capture_output=True,
    )
    took = time.perf_counter() - start
    subprocess.run([psql, url, "-qc", "DROP TABLE floor_plain"], check=True, capture_output=True)
    return took


def reset_postgres(url: str) -> None:
    """An empty scratch database for the next import."""
    sql = "DROP SCHEMA public CASCADE; CREATE SCHEMA public;"
    subprocess.run(["psql", url, "-qc", sql], check=True, capture_output=True)


def ours(
    source: Path, work: Path, url: str | None, checkout: Path = REPO
) -> tuple[float, float, float, str]:
    project = work / "project"
    shutil.rmtree(project, ignore_errors=True)
    (project / "issues").mkdir(parents=True)
    (project / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    if url is not None:
        reset_postgres(url)
    cmd = [sys.executable, "-m", "newsletter", "--project", str(project)]
    cmd += ["subscribers", "import", str(source), "--quiet"]
    os.environ["PYTHONPATH"] = str(checkout)
    took, rss, pss, out = timed_child(cmd, project)
    return took, rss, pss, out.strip().splitlines()[-1] if out.strip() else ""


def main() -> None:
    from as_installed import compile_package

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", metavar="URL", help="a scratch PostgreSQL database")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        type=Path,
        help="another checkout (e.g. `git archive main | tar -x -C DIR`), timed in the same runs",
    )
    args = parser.parse_args()
    if args.baseline:
        # As the package itself (see as_installed): compiled once, not on every run.
        compileall.compile_dir(args.baseline / "newsletter", quiet=1)

    source = DATA / f"subscribers_{args.rows}.csv"
    if not source.exists():
        generate(source, args.rows)
    if args.postgres:
        os.environ["NEWSLETTER_DATABASE_URL"] = args.postgres
    work = Path(tempfile.mkdtemp(prefix="newsletter-import-", dir=DATA))
    mine: list[float] = []
    floor: list[float] = []
    mine_cpu: list[float] = []
    floor_cpu: list[float] = []
    base: list[float] = []
    base_cpu: list[float] = []
    peak = peak_pss = base_peak = base_pss = 0.0
    loads = []
    try:
        for run in range(args.runs):
            loads.append(load())
            steps = ["ours", "floor"] + (["baseline"] if args.baseline else [])
            steps = steps[run % len(steps) :] + steps[: run % len(steps)]
            for step in steps:
                cpu = children_cpu()
                if step == "ours":
                    took, rss, pss, out = ours(source, work, args.postgres)
                    mine.append(took)
                    peak, peak_pss = max(peak, rss), max(peak_pss, pss)
                elif step == "baseline":
                    took, rss, pss, _ = ours(source, work, args.postgres, args.baseline)
                    base.append(took)
                    base_peak, base_pss = max(base_peak, rss), max(base_pss, pss)
                else:
                    if args.postgres:
                        floor.append(floor_postgres(source, args.postgres))
                    else:
                        floor.append(floor_sqlite(source, work))
                spent = {"ours": mine_cpu, "floor": floor_cpu, "baseline": base_cpu}[step]
                spent.append(children_cpu() - cpu)
            print(
                f"run {run + 1}: import {mine[-1]:.2f} s ({mine_cpu[-1]:.2f} s CPU), "
                f"floor {floor[-1]:.2f} s ({floor_cpu[-1]:.2f} s CPU), "
                + (f"baseline {base[-1]:.2f} s ({base_cpu[-1]:.2f} s CPU), " if base else "")
                + f"load {loads[-1]}   ({out})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours_med, floor_med = statistics.median(mine), statistics.median(floor)
    database = "PostgreSQL" if args.postgres else "SQLite"
    floor_name = "psql \\copy" if args.postgres else "sqlite3 .import (NOCASE key)"
    print(f"{database}, {args.rows:,} rows, medians of {args.runs} interleaved runs:")
    print(
        f"  newsletter subscribers import: {ours_med:6.2f} s  ({args.rows / ours_med:,.0f} rows/s)"
    )
    print(f"  floor, {floor_name}: {floor_med:6.2f} s  ({args.rows / floor_med:,.0f} rows/s)")
    print(
        f"  ratio import/floor: {ours_med / floor_med:.2f}x   peak RSS {peak:.0f} MB "
        f"(PSS {peak_pss:.0f} MB; both summed over the import and its reader process, RSS "
        "counting pages they share, such as the interpreter's, twice)"
    )
    cpu_ours, cpu_floor = statistics.median(mine_cpu), statistics.median(floor_cpu)
    print(
        f"  CPU seconds: import {cpu_ours:.2f}, floor {cpu_floor:.2f} "
        f"(client side only on PostgreSQL), ratio {cpu_ours / cpu_floor:.2f}x"
    )
    if args.postgres:
        print("  targets: >= 100,000 rows/s")
    else:
        print("  targets: 1,000,000 rows <= 10 s, ratio <= 5x, peak RSS <= 150 MB")
    if base:
        base_med, base_cpu_med = statistics.median(base), statistics.median(base_cpu)
        print(
            f"  baseline {args.baseline}: {base_med:.2f} s ({base_med / floor_med:.2f}x the "
            f"floor), {base_cpu_med:.2f} CPU seconds ({base_cpu_med / cpu_floor:.2f}x), "
            f"peak RSS {base_peak:.0f} MB (PSS {base_pss:.0f} MB)"
        )
    print(f"  load average during the runs: {'; '.join(loads)}")


if __name__ == "__main__":
    main()
