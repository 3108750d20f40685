"""Whether a `sequences run` has anything to do, decided before the run loads SQLAlchemy, the
transport or the renderer: run from cron every minute, it nearly always finds nothing due, and
importing SQLAlchemy alone takes longer than the rest of such a run.

Plain DB-API (sqlite3; psycopg for PostgreSQL) and a few small read-only queries. It answers
"nothing to do" only when it is sure of all of:
- the database has migration m017 (runs hold send leases since),
- no run holds a lease (a dead one must be reaped; a live one may be sending),
- every enabled sequence's steps load and have the shape its schedule was worked out for
  (else waiting people must be rescheduled),
- nobody's next step is due later than the steps allow (else a run whose clock was far ahead
  scheduled it, and it must be rescheduled),
- nobody is due,
- nobody still in a sequence has left the list (else the run ends their sequence and says so).
Anything else, an error included (no database yet, one not migrated, a URL it does not
know), means "look properly": the full run decides, with SQLAlchemy, as before.

The queries mirror `batches.anything_due`, `Ledger.reap_gone_runs`,
`state.reschedule_if_changed`, `state.reschedule_from_the_future` and `state.stop_departed`
(tables in `store/schema.py`); `tests/test_sequences_precheck.py` keeps them in step.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.request import pathname2url

from newsletter.sequences.clock import latest_due
from newsletter.sequences.config import configured
from newsletter.step import fingerprint, load_sequence

if TYPE_CHECKING:
    from newsletter.project import Project

log = logging.getLogger("newsletter.sequences")

#: How SQLAlchemy writes a DateTime into SQLite (text that sorts as the time does), in UTC as
#: the store writes every time.
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


def nothing_to_do(project: Project, now: datetime, wall_now: datetime | None = None) -> bool:
    """True only when a run at `now` (the system clock saying `wall_now`) would surely find
    nothing to reap, reschedule or send."""
    try:
        shapes = _shapes(project, max(now, wall_now or datetime.now(UTC)))
        if shapes is None:
            return False
        return _database_says_nothing(project.database_url, shapes, now)
    except Exception as exc:  # any doubt: the full run looks properly (and reports problems)
        log.debug("sequences precheck: %s; running in full", type(exc).__name__)
        return False


def _shapes(project: Project, reference: datetime) -> dict[str, tuple[str, datetime]] | None:
    """Enabled sequence -> (the shape of its steps, the latest a next step can be due at
    `reference`); None if one does not load or has no steps (the full run reports that)."""
    out = {}
    for sequence in configured(project):
        steps = load_sequence(project, sequence.name)
        if not steps:
            return None
        out[sequence.name] = (fingerprint(steps), latest_due(steps, reference))
    return out


def _connect(url: str) -> tuple[Any, str, Any] | None:
    """(DB-API connection, its parameter marker, `now` converter), or None for a URL left to
    SQLAlchemy."""
    if url.startswith("sqlite:///") and "?" not in url and url != "sqlite:///:memory:":
        # Read-only: never creates the file (the full run creates and migrates it).
        uri = f"file:{pathname2url(url[len('sqlite:///') :])}?mode=ro"
        return (
            sqlite3.connect(uri, uri=True, timeout=10),
            "?",
            lambda t: t.astimezone(UTC).strftime(SQLITE_TIME),
        )
    for scheme in ("postgresql://", "postgres://", "postgresql+psycopg://"):
        if url.startswith(scheme):
            import psycopg  # deferred: psycopg costs 110 ms at start-up, and only PostgreSQL needs it

            return (
                psycopg.connect("postgresql://" + url[len(scheme) :], autocommit=True),
                "%s",
                lambda t: t,
            )
    return None


def _database_says_nothing(
    url: str, shapes: dict[str, tuple[str, datetime]], now: datetime
) -> bool:
    connected = _connect(url)
    if connected is None:
        return False
    conn, mark, when = connected
    try:
        cur = conn.cursor()
        # Runs hold `send_leases` rows since m017: before it, the full run migrates first.
        cur.execute("SELECT 1 FROM schema_migrations WHERE name = 'm017_one_send_lease'")
        if cur.fetchone() is None:
            return False
        # A run's lease (an issue-less `send_leases` row): a live run, or a dead one to reap.
        cur.execute("SELECT 1 FROM send_leases WHERE issue_id IS NULL LIMIT 1")
        if cur.fetchone() is not None:
            return False
        cur.execute("SELECT sequence, fingerprint FROM sequence_state")
        stored = dict(cur.fetchall())
        if any(stored.get(name) != shape for name, (shape, _) in shapes.items()):
            return False
        for name, (_, latest) in shapes.items():
            # An index seek (sequence, next_due_at), however many people are enrolled.
            cur.execute(
                "SELECT 1 FROM sequence_enrollments WHERE sequence = "
                f"{mark} AND next_due_at > {mark} AND state = 'active' LIMIT 1",
                [name, when(latest)],
            )
            if cur.fetchone() is not None:
                return False
        names = list(shapes)
        if not names:
            return True
        marks = ", ".join([mark] * len(names))
        cur.execute(
            "SELECT 1 FROM sequence_enrollments WHERE state = 'active' "  # state.ACTIVE
            f"AND next_due_at <= {mark} AND sequence IN ({marks}) LIMIT 1",
            [when(now), *names],
        )
        if cur.fetchone() is not None:
            return False
        # Someone who left the list while in a sequence. Asked from the side of those who
        # left (the partial index of the statuses other than subscribed, which this
        # condition repeats), one index seek each: the people in a sequence may be the whole
        # list, after `sequences start --existing`.
        cur.execute(
            "SELECT 1 FROM subscribers WHERE status != 'subscribed' AND EXISTS ("
            "SELECT 1 FROM sequence_enrollments e WHERE e.subscriber_id = subscribers.id "
            f"AND e.state = 'active' AND e.sequence IN ({marks})) LIMIT 1",
            names,
        )
        return cur.fetchone() is None
    finally:
        conn.close()
