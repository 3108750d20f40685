"""`newsletter serve` with the issue counters switched off: the baseline of
benchmarks/webhook_ingest.py only, so it can show what maintaining them costs side by side.

The product has no such switch (the counters must always be exact); this wrapper replaces
`counters.count_events` in its own process before the CLI starts. The benchmark drops the
list-growth triggers from the baseline's copy of the database itself.

    python benchmarks/serve_without_counters.py --project DIR serve --port N
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsletter.insights import counters  # noqa: E402


def _count_nothing(conn: Any, inserted: Any) -> None:
    """Counts nothing (the events themselves are already inserted when this is called)."""


counters.count_events = _count_nothing

from newsletter.cli import main  # noqa: E402

main(prog_name="newsletter")
