"""Query speed of the store API on a big list (what `send` and `list` rely on).

    python benchmarks/queries.py [--rows N]

Builds benchmarks/data/queries_N.db once (by importing the generated CSV of
import_1m.py), then times count_subscribers, the first page of iter_subscribers
with a status and tag filter (what `list --tag | head` waits for), and streaming
the whole filtered list (what a send walks), with the process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from import_1m import DATA, generate  # noqa: E402

from newsletter.store.engine import open_engine  # noqa: E402
from newsletter.store.importer import import_file  # noqa: E402
from newsletter.store.subscribers import count_subscribers, iter_subscribers  # noqa: E402


def timed(label: str, func) -> object:
    start = time.perf_counter()
    value = func()
    print(f"{label:<44}{time.perf_counter() - start:7.3f} s  -> {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    source = DATA / f"subscribers_{args.rows}.csv"
    if not source.exists():
        generate(source, args.rows)
    db = DATA / f"queries_{args.rows}.db"
    fresh = not db.exists()
    engine = open_engine(f"sqlite:///{db}")
    if fresh:
        start = time.perf_counter()
        import_file(engine, source)
        print(f"built {db.name} in {time.perf_counter() - start:.1f} s")

    timed("count_subscribers()", lambda: count_subscribers(engine))
    timed(
        "count_subscribers(status=subscribed)",
        lambda: count_subscribers(engine, status="subscribed"),
    )
    timed("count_subscribers(tags=[vip])", lambda: count_subscribers(engine, tags=["vip"]))
    timed(
        "count_subscribers(subscribed, tags=[vip, presse])",
        lambda: count_subscribers(engine, status="subscribed", tags=["vip", "presse"]),
    )

    def first_page() -> int:
        it = iter_subscribers(engine, status="subscribed", tags=["vip"])
        return sum(1 for _, _ in zip(range(20), it, strict=False))

    timed("first 20 of iter_subscribers(subscribed, vip)", first_page)

    def stream() -> int:
        return sum(1 for _ in iter_subscribers(engine, status="subscribed", tags=["vip"]))

    start = time.perf_counter()
    n = timed("stream iter_subscribers(subscribed, vip)", stream)
    rate = n / (time.perf_counter() - start)  # type: ignore[operator]
    print(f"{'':<44}{rate:,.0f} subscribers/s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
