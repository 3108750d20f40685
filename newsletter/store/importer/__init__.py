"""`subscribers import`: read another service's export (or a spreadsheet) into the list.

The file is read as a stream and written in chunks, each chunk its own transaction, so a
crash or Ctrl-C leaves the old list plus whole chunks of the new one, never half a row;
running the import again finishes the job and changes nothing that was already done.

Rules (see the README, "Subscribers"):
- duplicates (in the file, or against the list) are merged, never doubled: names and
  custom fields from the file fill in and override, tags are added;
- statuses from the file count (Substack's email_disabled, Mailchimp's unsubscribed and
  cleaned exports...), but nobody who is unsubscribed, bounced or complained, in the
  file or in the list, becomes subscribed unless `resubscribe=True`;
- a row that cannot be imported is a reject with its line number and reason.

For speed (a million rows in seconds) new rows go in with driver-level executemany and
ids allocated up front, and addresses take the fast path of `normalize_email`.

The package's modules use each other's public names only, in one direction:
`formats` (which service's export) and `model` (`Incoming`, `Reject`, `ImportResult`) at
the bottom; `lines` decodes the file line by line, `read` turns the lines into rows,
`reader` makes chunks of them (in a reader process of its own for big files, started and
heard by `process`), `keys` remembers the addresses read so far, `decide` works out what the
rows change in the list, `write` writes each chunk through the tables' owners
(`store.subscribers.BulkWriter`, `store.consent.record_imported`); `run` drives them.
Callers import from the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from newsletter.store.importer.decide import LOOKUP_BATCH
    from newsletter.store.importer.model import (
        REPORT_REJECTS,
        ImportInterrupted,
        ImportResult,
        ImportStopped,
        Incoming,
        Reject,
    )
    from newsletter.store.importer.read import parse_time
    from newsletter.store.importer.run import CHUNK_ROWS, PARALLEL_BYTES, import_file

# Loaded when first asked for: the reader process imports this package's `reader` module
# and must not load `run` (and SQLAlchemy with it) on the way.
_HOMES = {
    "LOOKUP_BATCH": "decide",
    "REPORT_REJECTS": "model",
    "ImportInterrupted": "model",
    "ImportResult": "model",
    "ImportStopped": "model",
    "Incoming": "model",
    "Reject": "model",
    "parse_time": "read",
    "CHUNK_ROWS": "run",
    "PARALLEL_BYTES": "run",
    "import_file": "run",
}


def __getattr__(name: str) -> Any:  # noqa: V103 (Python calls it for a missing name)
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


__all__ = [
    "CHUNK_ROWS",
    "LOOKUP_BATCH",
    "PARALLEL_BYTES",
    "REPORT_REJECTS",
    "ImportInterrupted",
    "ImportResult",
    "ImportStopped",
    "Incoming",
    "Reject",
    "import_file",
    "parse_time",
]
