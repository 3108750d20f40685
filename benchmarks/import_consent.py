"""What the import's consent records cost: a plain import (address, names, one tag) into a
fresh SQLite list, with and without its `import` consent record (since m025 one row in
`import_runs` for the import, which each new person points at, instead of a row per person).

    python benchmarks/import_consent.py [--rows 200000] [--runs 3]

Runs in one process (no forked reader), alternating the two variants, and prints the
median CPU and wall time of each. Writes benchmarks/data/plain_N.csv (gitignored) once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("NEWSLETTER_SECRET_KEY", "benchmark-only")

    import newsletter.store.importer.write as write_module
    from newsletter.store.engine import dispose_all, open_engine
    from newsletter.store.importer import import_file

    data = HERE / "data" / f"plain_{args.rows}.csv"
    if not data.exists():
        data.parent.mkdir(exist_ok=True)
        with data.open("w", encoding="utf-8") as f:
            f.write("email,first name,last name,tags\n")
            for i in range(args.rows):
                f.write(f"leser{i}@example.de,Anna,Müller,leser\n")

    real = (write_module.record_imported, write_module.run_record)
    nothing = (lambda *a, **k: None, lambda *a, **k: None)  # no record, nobody points at one
    variants = {"with records": real, "without": nothing}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, (writer, run) in variants.items():
            write_module.record_imported = writer  # type: ignore[assignment]
            write_module.run_record = run  # type: ignore[assignment]
            with tempfile.TemporaryDirectory() as folder:
                engine = open_engine(f"sqlite:///{folder}/bench.db")
                cpu, wall = time.process_time(), time.perf_counter()
                result = import_file(engine, data, parallel=False)
                figures[name].append((time.process_time() - cpu, time.perf_counter() - wall))
                assert result.new == args.rows
                dispose_all()
    write_module.record_imported, write_module.run_record = real
    print(f"{args.rows:,} rows, median of {args.runs}, load average {os.getloadavg()[0]:.1f}")
    for name, values in figures.items():
        cpu = statistics.median(v[0] for v in values)
        wall = statistics.median(v[1] for v in values)
        print(f"  {name:13} CPU {cpu:6.2f} s   wall {wall:6.2f} s")


if __name__ == "__main__":
    main()
