"""The counters `stats` and `report` read: the only module that writes them.

Issue counters (`issue_day_counters`, `link_day_counters`) are bumped by `events.ingest` in the
transaction that stores the events, from the rows really inserted, so a replayed or repeated
event never counts twice. A reader counts once per issue and metric, on the day of their first
such event; whether they had one before is looked up in the stored events. The counters hold
no subscriber ids, so they outlive the events `[privacy] keep_events_days` purges.

List growth (`list_counters`) is kept by database triggers on `subscribers` (SQLite and
PostgreSQL alike). Subscribers come and go in many places (form, confirmation, `add`,
`import`, `remove`, webhook events, `sync`, web unsubscribes, erasure); a trigger sees every
one of them, including ones added later, without each remembering to count. Reading growth
back from the subscriber rows instead would be wrong: a resubscribe overwrites
`unsubscribed_at`, a later bounce overwrites an unsubscribe, and an erased person vanishes
from the history.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, delete, func, select, text

from newsletter.insights.metrics import (
    BLOCKED_METRICS,
    MACHINE_OPENED,
    METRIC_FOR_EVENT,
    metric_of,
)
from newsletter.store import raw, schema

#: Key of a PostgreSQL advisory lock that serializes event inserts, so two webhook posts at
#: once cannot both count the same reader's first click. (SQLite serializes writers anyway.)
INGEST_LOCK = 7_140_014
BUCKET_SECONDS = 900


def count_blocked_signup(conn: Connection, reason: str, now: datetime | None = None) -> None:
    """Count one blocked sign-up (`reason`: bot, domain, network or address) in its quarter
    hour of `list_counters`."""
    metric = f"blocked_{reason}"
    if metric not in BLOCKED_METRICS:
        raise ValueError(f"unknown reason for a blocked sign-up: {reason!r}")
    moment = now or datetime.now(UTC)
    bucket = int(moment.timestamp()) // BUCKET_SECONDS * BUCKET_SECONDS
    _upsert(
        conn,
        schema.list_counters,
        [{"bucket": bucket, "metric": metric, "count": 1}],
        ["bucket", "metric"],
    )


def serialize_ingest(conn: Connection) -> None:
    """Call first in a transaction that inserts events (see INGEST_LOCK)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": INGEST_LOCK})


class CountedEvent(NamedTuple):
    """An event just inserted, as the counters need it."""

    event: str
    issue_id: int | None
    subscriber_id: int | None
    day: date  # the UTC day it occurred
    detail: Mapping[str, Any]


def _upsert(conn: Connection, table: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """Add `rows` to the counters: one driver-level executemany (one statement text for both
    databases: both know `excluded`)."""
    if not rows:
        return
    names = [c.name for c in table.columns]
    adds = ", ".join(f"{n} = {table.name}.{n} + excluded.{n}" for n in names if n not in keys)
    binders = [raw.binder(conn, table.c[n]) for n in names]
    conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({raw.marks(conn, len(names))}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {adds}",
        [tuple(bind(row[n]) for bind, n in zip(binders, names, strict=True)) for row in rows],
    )


def count_events(conn: Connection, inserted: Iterable[CountedEvent]) -> None:
    """Bump the issue counters for events just inserted in this transaction.

    Work is per post, not per event: the deltas are summed here and each counter row gets
    one upsert; one statement finds (and records) which readers count for the first time.
    """
    per_day: Counter[tuple[int, date, str]] = Counter()
    clicks: Counter[tuple[int, date, str]] = Counter()
    first: dict[tuple[int, int, str], date] = {}
    for row in inserted:
        issue_id = row.issue_id
        if issue_id is None:
            continue
        metric = metric_of(row.event, row.detail)
        if metric is None:
            continue
        day = row.day
        per_day[(issue_id, day, metric)] += 1
        if metric == "clicked":
            url = row.detail.get("url")
            if isinstance(url, str) and url:
                clicks[(issue_id, day, url)] += 1
        if row.subscriber_id is not None:
            key = (issue_id, row.subscriber_id, metric)
            earlier = first.get(key)
            if earlier is None or day < earlier:
                first[key] = day
    if not per_day:
        return
    readers: Counter[tuple[int, date, str]] = Counter()
    for key in _newly_counted(conn, first):
        issue_id, _, metric = key
        readers[(issue_id, first[key], metric)] += 1
    _upsert(
        conn,
        schema.issue_day_counters,
        [
            {
                "issue_id": issue_id,
                "day": day,
                "metric": metric,
                "events": n,
                "readers": readers[(issue_id, day, metric)],
            }
            for (issue_id, day, metric), n in sorted(per_day.items())
        ],
        ["issue_id", "day", "metric"],
    )
    _upsert(
        conn,
        schema.link_day_counters,
        [
            {"issue_id": issue_id, "day": day, "url": url, "clicks": n}
            for (issue_id, day, url), n in sorted(clicks.items())
        ],
        ["issue_id", "day", "url"],
    )


def _newly_counted(
    conn: Connection, candidates: Iterable[tuple[int, int, str]]
) -> set[tuple[int, int, str]]:
    """Record the (issue, subscriber, metric) candidates in `issue_readers` and return those
    that were not there yet: the readers counted for the first time.

    One key lookup per candidate, and a write only for a new reader: most readers of a post
    were counted before. (Looking for a reader's earlier events instead needed the events
    indexed by reader, and that index took a random page write per stored event: half of
    the ingest's database time with a million events stored.) Event inserts are serialized
    (SQLite's write lock, INGEST_LOCK on PostgreSQL), so two posts cannot both count one
    reader; ON CONFLICT DO NOTHING RETURNING names exactly the rows this one added.
    """
    rows = sorted((sid, issue_id, metric) for issue_id, sid, metric in candidates)
    if not rows:
        return set()
    row_marks = f"({raw.marks(conn, 3)})"
    per_statement = max(min(raw.max_parameters(conn) // 3, 1000), 1)
    new: set[tuple[int, int, str]] = set()
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        added = conn.exec_driver_sql(
            "INSERT INTO issue_readers (subscriber_id, issue_id, metric) VALUES "
            f"{', '.join([row_marks] * len(chunk))} ON CONFLICT DO NOTHING "
            "RETURNING subscriber_id, issue_id, metric",
            tuple(value for row in chunk for value in row),
        )
        new.update((issue_id, sid, metric) for sid, issue_id, metric in added)
    return new


def links_naming(conn: Connection, names: Callable[[str], bool]) -> list[Any]:
    """The `link_day_counters` rows whose URL names a person (`names(url)`: their address,
    plain or percent-encoded, or a value of theirs), for export-person and erasure."""
    c = schema.link_day_counters
    rows = conn.execute(select(c).order_by(c.c.issue_id, c.c.day, c.c.url)).all()
    return [row for row in rows if names(row.url)]


def scrub_links(
    conn: Connection, names: Callable[[str], bool], redact: Callable[[str], str]
) -> int:
    """Rewrite each link URL that names the person with `redact(url)`, keeping its clicks
    (added to a row that has the rewritten URL already); how many rows were rewritten."""
    c = schema.link_day_counters
    rows = links_naming(conn, names)
    for row in rows:
        conn.execute(
            delete(c).where(c.c.issue_id == row.issue_id, c.c.day == row.day, c.c.url == row.url)
        )
    merged: Counter[tuple[int, date, str]] = Counter()
    for row in rows:
        merged[(row.issue_id, _as_date(row.day), redact(row.url)[:1000])] += row.clicks
    _upsert(
        conn,
        c,
        [
            {"issue_id": issue_id, "day": day, "url": url, "clicks": clicks}
            for (issue_id, day, url), clicks in sorted(merged.items())
        ],
        ["issue_id", "day", "url"],
    )
    return len(rows)


# --- rebuilding from the events ------------------------------------------------------------


def _metric_case(dialect: str) -> str:
    machine = (
        "json_extract(detail, '$.sg_machine_open') IN (1, 'true', '1')"
        if dialect == "sqlite"
        else "(detail->>'sg_machine_open') IN ('true', '1')"
    )
    whens = " ".join(
        f"WHEN '{event}' THEN '{metric}'"
        for event, metric in METRIC_FOR_EVENT.items()
        if event != "open"
    )
    return (
        f"CASE event WHEN 'open' THEN CASE WHEN {machine} THEN '{MACHINE_OPENED}' "
        f"ELSE 'opened' END {whens} END"
    )


def _day_sql(dialect: str) -> str:
    return "date(occurred_at)" if dialect == "sqlite" else "(occurred_at AT TIME ZONE 'UTC')::date"


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


@dataclass(frozen=True)
class RebuildResult:
    since: date | None  # None: every day was recomputed
    issue_rows: int
    link_rows: int


def rebuild(engine: Engine, since: date | None = None) -> RebuildResult:
    """Recompute the issue counters from the stored events, for days >= `since` (all if None).

    Days before `since` keep their counters: their events may have been purged. Unique
    readers are recomputed only for issues whose counters all lie from `since` on; an issue
    that began before keeps its reader counts (who was counted cannot be told once events are
    gone), and has its event and link counts recomputed.
    """
    with engine.begin() as conn:
        return rebuild_in(conn, since)


def _first_whole_day(conn: Connection, day: str) -> date | None:
    """The first day whose events are all still stored, when counters show that events of
    earlier days were purged (days counted before the oldest stored event): a rebuild must
    not count those days again from nothing. None: nothing was purged. (The setting
    `keep_events_days` alone does not tell: it may have been raised since the purge.)"""
    first_counted = conn.execute(
        select(func.min(schema.issue_day_counters.c.day)).where(
            schema.issue_day_counters.c.events > 0
        )
    ).scalar()
    if first_counted is None:
        return None
    oldest = conn.execute(
        text(f"SELECT min({day}) FROM events WHERE issue_id IS NOT NULL")
    ).scalar()
    if oldest is None:  # every counted event is gone: every counted day stays as it is
        return datetime.now(UTC).date() + timedelta(days=1)
    if _as_date(first_counted) < _as_date(oldest):
        return _as_date(oldest) + timedelta(days=1)  # (that day may have lost a part)
    return None


def rebuild_in(
    conn: Connection, since: date | None = None, *, readers_table: bool = True
) -> RebuildResult:
    """`rebuild` inside the caller's transaction (the migration's). `readers_table=False` leaves
    `issue_readers` alone (migration m007 ran before it existed; m023 fills it)."""
    serialize_ingest(conn)
    dialect = conn.dialect.name
    day, metric = _day_sql(dialect), _metric_case(dialect)
    whole = _first_whole_day(conn, day)
    if whole is not None and (since is None or whole > since):
        since = whole
    scoped = f"""
        SELECT issue_id, subscriber_id, {day} AS day, {metric} AS metric
        FROM events WHERE issue_id IS NOT NULL
    """
    params = {"since": since or date(1970, 1, 1)}
    if dialect == "sqlite":
        params = {"since": params["since"].isoformat()}  # type: ignore[dict-item]
    per_day = conn.execute(
        text(
            f"SELECT issue_id, day, metric, count(*) FROM ({scoped}) m "
            "WHERE metric IS NOT NULL AND day >= :since GROUP BY issue_id, day, metric"
        ),
        params,
    ).all()
    readers = conn.execute(
        text(
            "SELECT issue_id, first_day, metric, count(*) FROM ("
            f" SELECT issue_id, subscriber_id, metric, min(day) AS first_day FROM ({scoped}) m"
            " WHERE metric IS NOT NULL AND subscriber_id IS NOT NULL"
            " GROUP BY issue_id, subscriber_id, metric) f"
            " WHERE first_day >= :since GROUP BY issue_id, first_day, metric"
        ),
        params,
    ).all()
    url = "json_extract(detail, '$.url')" if dialect == "sqlite" else "(detail->>'url')"
    links = conn.execute(
        text(
            f"SELECT issue_id, {day} AS day, substr({url}, 1, 1000) AS url, count(*)"
            " FROM events WHERE event = 'click' AND issue_id IS NOT NULL"
            f" AND {url} IS NOT NULL AND {url} <> '' AND {day} >= :since"
            f" GROUP BY issue_id, {day}, substr({url}, 1, 1000)"
        ),
        params,
    ).all()
    # An issue with counters before `since` may have lost events to the purge: who was counted
    # there cannot be told any more, so its reader counts stay as ingest left them.
    c = schema.issue_day_counters
    spanning: set[int] = set()
    kept: list[Any] = []
    if since is not None:
        spanning = set(
            conn.execute(select(c.c.issue_id).where(c.c.day < since).distinct()).scalars()
        )
    if spanning:
        kept = list(
            conn.execute(
                select(c.c.issue_id, c.c.day, c.c.metric, c.c.readers).where(
                    c.c.day >= since, c.c.issue_id.in_(sorted(spanning)), c.c.readers > 0
                )
            )
        )
    readers = [r for r in readers if r[0] not in spanning] + list(kept)
    rows: dict[tuple[int, date, str], dict[str, Any]] = {}
    for issue_id, d, m, n in per_day:
        key = (issue_id, _as_date(d), m)
        rows[key] = {"issue_id": issue_id, "day": key[1], "metric": m, "events": n, "readers": 0}
    for issue_id, d, m, n in readers:
        key = (issue_id, _as_date(d), m)
        rows.setdefault(
            key, {"issue_id": issue_id, "day": key[1], "metric": m, "events": 0, "readers": 0}
        )["readers"] = n
    for table in (schema.issue_day_counters, schema.link_day_counters):
        stmt = delete(table)
        if since is not None:
            stmt = stmt.where(table.c.day >= since)
        conn.execute(stmt)
    if rows:
        conn.execute(schema.issue_day_counters.insert(), list(rows.values()))
    link_rows = [
        {"issue_id": issue_id, "day": _as_date(d), "url": u, "clicks": n}
        for issue_id, d, u, n in links
    ]
    if link_rows:
        conn.execute(schema.link_day_counters.insert(), link_rows)
    if readers_table:
        fill_readers(conn, keep=spanning)
    return RebuildResult(since=since, issue_rows=len(rows), link_rows=len(link_rows))


def fill_readers(conn: Connection, keep: Iterable[int] = ()) -> None:
    """Make `issue_readers` the readers the stored events count: the rows of the issues in
    `keep` (whose reader counts a rebuild keeps, their early events maybe purged) stay and
    gain any reader their events name; every other issue's rows are recomputed."""
    kept = sorted(set(keep))
    r = schema.issue_readers
    stmt = delete(r)
    if kept:
        stmt = stmt.where(r.c.issue_id.not_in(kept))
    conn.execute(stmt)
    metric = _metric_case(conn.dialect.name)
    # (The WHERE also keeps SQLite from reading ON CONFLICT as a join's ON.)
    conn.exec_driver_sql(
        "INSERT INTO issue_readers (subscriber_id, issue_id, metric) "
        f"SELECT DISTINCT subscriber_id, issue_id, metric FROM (SELECT subscriber_id, issue_id,"
        f" {metric} AS metric FROM events WHERE issue_id IS NOT NULL"
        " AND subscriber_id IS NOT NULL) m WHERE metric IS NOT NULL ON CONFLICT DO NOTHING"
    )


def forget_purged_readers(conn: Connection, issue_ids: Iterable[int]) -> int:
    """After `privacy purge` deleted events of these issues: drop the `issue_readers` rows
    whose reader has no event of that metric left, so whom an issue counted goes with the
    events (such a reader counts again if they come back to that old issue). How many went."""
    metric = _metric_case(conn.dialect.name)
    mark = raw.placeholder(conn)
    gone = 0
    for issue_id in sorted(set(issue_ids)):
        gone += (
            conn.exec_driver_sql(
                f"DELETE FROM issue_readers WHERE issue_id = {mark} AND (subscriber_id, metric)"
                f" NOT IN (SELECT subscriber_id, metric FROM (SELECT subscriber_id, {metric}"
                f" AS metric FROM events WHERE issue_id = {mark} AND subscriber_id IS NOT NULL)"
                " m WHERE metric IS NOT NULL)",
                (issue_id, issue_id),
            ).rowcount
            or 0
        )
    return gone


def complete_since(keep_events_days: int | None, today: date | None = None) -> date | None:
    """The first day whose events a purge keeping `keep_events_days` days has left whole."""
    if keep_events_days is None:
        return None
    today = today or datetime.now(UTC).date()
    return today - timedelta(days=keep_events_days - 1)


# --- list growth: triggers on `subscribers` ------------------------------------------------

# A new row counts by source unless it arrives already gone (an imported suppression list).
_SOURCE_METRIC = (
    "CASE WHEN {row}.source = 'form' THEN 'new_form' "
    "WHEN substr({row}.source, 1, 6) = 'import' THEN 'new_import' ELSE 'new_added' END"
)
_SQLITE_BUCKET = f"(CAST(strftime('%s', 'now') AS INTEGER) / {BUCKET_SECONDS} * {BUCKET_SECONDS})"


def _sqlite_bump(metric_sql: str, condition: str = "1") -> str:
    return (
        "INSERT INTO list_counters (bucket, metric, count) "
        f"SELECT {_SQLITE_BUCKET}, {metric_sql}, 1 WHERE {condition} "
        "ON CONFLICT (bucket, metric) DO UPDATE SET count = count + 1;"
    )


# SQLite has only row triggers, and each statement a trigger runs costs a few microseconds per
# row: a bulk import of subscribed people runs exactly one (its `new_*`). Joining by insert is
# not counted apart: it is the `new_*` rows less `unconfirmed_new` (see queries.list_growth).
def _sqlite_triggers() -> dict[str, str]:
    """Each trigger's name and the statement that creates it."""
    new_source = _SOURCE_METRIC.format(row="NEW")
    bodies = {
        "list_counters_insert": "AFTER INSERT ON subscribers "
        "WHEN NEW.status IN ('subscribed', 'unconfirmed') BEGIN "
        + _sqlite_bump(new_source)
        + " END",
        "list_counters_insert_unconfirmed": "AFTER INSERT "
        "ON subscribers WHEN NEW.status = 'unconfirmed' BEGIN "
        + _sqlite_bump("'unconfirmed_new'")
        + " END",
        "list_counters_update": "AFTER UPDATE OF status, confirmed_at "
        "ON subscribers WHEN NEW.status IS NOT OLD.status "
        "OR (OLD.confirmed_at IS NULL AND NEW.confirmed_at IS NOT NULL) BEGIN "
        + _sqlite_bump("'confirmed'", "OLD.confirmed_at IS NULL AND NEW.confirmed_at IS NOT NULL")
        + _sqlite_bump(
            "NEW.status",
            "NEW.status <> OLD.status AND NEW.status IN ('unsubscribed', 'bounced', 'complained')",
        )
        + _sqlite_bump("'joined'", "NEW.status = 'subscribed' AND OLD.status <> 'subscribed'")
        + _sqlite_bump("'left'", "OLD.status = 'subscribed' AND NEW.status <> 'subscribed'")
        + " END",
        "list_counters_delete": "AFTER DELETE ON subscribers "
        "WHEN OLD.status = 'subscribed' BEGIN " + _sqlite_bump("'left'") + " END",
    }
    return {name: f"CREATE TRIGGER IF NOT EXISTS {name} {body}" for name, body in bodies.items()}


# PostgreSQL: statement-level triggers with transition tables, so an import of 200,000 rows
# bumps each counter once instead of 200,000 times.
_PG_BUCKET = f"(floor(extract(epoch from now()) / {BUCKET_SECONDS}) * {BUCKET_SECONDS})::bigint"
_PG_UPSERT = (
    " ON CONFLICT (bucket, metric) DO UPDATE SET count = list_counters.count + EXCLUDED.count"
)


def _pg_statements() -> list[str]:
    new_source = _SOURCE_METRIC.format(row="n")
    insert_body = f"""
        INSERT INTO list_counters (bucket, metric, count)
        SELECT {_PG_BUCKET}, metric, count(*) FROM (
            SELECT {new_source} AS metric FROM new_rows n
             WHERE n.status IN ('subscribed', 'unconfirmed')
            UNION ALL SELECT 'unconfirmed_new' FROM new_rows n WHERE n.status = 'unconfirmed'
        ) m GROUP BY metric{_PG_UPSERT};
    """
    update_body = f"""
        INSERT INTO list_counters (bucket, metric, count)
        SELECT {_PG_BUCKET}, metric, count(*) FROM (
            SELECT 'confirmed' AS metric FROM new_rows n JOIN old_rows o ON o.id = n.id
             WHERE o.confirmed_at IS NULL AND n.confirmed_at IS NOT NULL
            UNION ALL SELECT n.status FROM new_rows n JOIN old_rows o ON o.id = n.id
             WHERE n.status <> o.status AND n.status IN ('unsubscribed', 'bounced', 'complained')
            UNION ALL SELECT 'joined' FROM new_rows n JOIN old_rows o ON o.id = n.id
             WHERE n.status = 'subscribed' AND o.status <> 'subscribed'
            UNION ALL SELECT 'left' FROM new_rows n JOIN old_rows o ON o.id = n.id
             WHERE o.status = 'subscribed' AND n.status <> 'subscribed'
        ) m GROUP BY metric{_PG_UPSERT};
    """
    delete_body = f"""
        INSERT INTO list_counters (bucket, metric, count)
        SELECT {_PG_BUCKET}, 'left', count(*) FROM old_rows o WHERE o.status = 'subscribed'
        HAVING count(*) > 0{_PG_UPSERT};
    """
    statements = []
    for op, body, tables in (
        ("insert", insert_body, "NEW TABLE AS new_rows"),
        ("update", update_body, "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
        ("delete", delete_body, "OLD TABLE AS old_rows"),
    ):
        statements += [
            f"CREATE OR REPLACE FUNCTION list_counters_{op}() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$",
            f"DROP TRIGGER IF EXISTS list_counters_{op} ON subscribers",
            f"CREATE TRIGGER list_counters_{op} AFTER {op.upper()} ON subscribers "
            f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION list_counters_{op}()",
        ]
    return statements


#: The SQLite triggers a bulk insert stands in for (see `BulkInsertTally`).
_SQLITE_INSERT_TRIGGERS = ("list_counters_insert", "list_counters_insert_unconfirmed")


def new_subscriber_metrics(source: str | None, status: str) -> tuple[str, ...]:
    """The list-growth metrics one inserted subscriber row counts for: what the insert
    triggers count (`_SOURCE_METRIC`), written in Python."""
    if status not in ("subscribed", "unconfirmed"):
        return ()
    if source == "form":
        new = "new_form"
    elif source is not None and source[:6] == "import":
        new = "new_import"
    else:
        new = "new_added"
    return (new, "unconfirmed_new") if status == "unconfirmed" else (new,)


class BulkInsertTally:
    """List growth for a bulk insert into `subscribers`, added up once instead of per row.

    On SQLite the insert triggers run one upsert per inserted row, a third of an import's
    insert time. Within the caller's write transaction (which holds SQLite's only write
    lock, so no other connection can insert meanwhile) `pause` drops them, the caller adds
    each inserted row's (source, status, how many) here, and `finish` writes the totals and
    creates the triggers again. DDL is transactional in SQLite: a rollback or a crash brings
    the triggers back with everything else, and other connections never see them missing.

    PostgreSQL's triggers are per statement already (one upsert per INSERT or COPY), so
    there the tally stays out of the way: `pause` does nothing and `add` is ignored.
    """

    def __init__(self, conn: Connection):
        self.conn = conn
        self.active = False
        self.counts: Counter[str] = Counter()

    def pause(self) -> None:
        """Call inside the write transaction, before the inserts."""
        if self.conn.dialect.name != "sqlite" or self.active:
            return
        for name in _SQLITE_INSERT_TRIGGERS:
            self.conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
        self.active = True

    def add(self, source: str | None, status: str, rows: int = 1) -> None:
        if self.active:
            for metric in new_subscriber_metrics(source, status):
                self.counts[metric] += rows

    def finish(self) -> None:
        """Write the totals (in the current quarter hour, as the triggers would) and bring
        the triggers back; in the same transaction as the inserts."""
        if not self.active:
            return
        rows = [(metric, n) for metric, n in sorted(self.counts.items()) if n]
        if rows:
            self.conn.exec_driver_sql(
                "INSERT INTO list_counters (bucket, metric, count) "
                f"VALUES ({_SQLITE_BUCKET}, ?, ?) "
                "ON CONFLICT (bucket, metric) DO UPDATE SET count = count + excluded.count",
                rows,  # type: ignore[arg-type]
            )
        statements = _sqlite_triggers()
        for name in _SQLITE_INSERT_TRIGGERS:
            self.conn.exec_driver_sql(statements[name])
        self.active = False
        self.counts.clear()


def install_list_triggers(conn: Connection) -> None:
    """Create (or recreate) the triggers; idempotent. A migration that rebuilds `subscribers`
    must call this again, since dropping a table drops its triggers."""
    statements = (
        list(_sqlite_triggers().values()) if conn.dialect.name == "sqlite" else _pg_statements()
    )
    for statement in statements:
        conn.exec_driver_sql(statement)


def seed_list_counters(conn: Connection) -> None:
    """Reconstruct growth before the triggers existed from the subscriber rows (the best the
    rows can tell: one unsubscribe per person, erased people gone)."""
    s = schema.subscribers
    found: Counter[tuple[int, str]] = Counter()

    def bucket(value: datetime | None) -> int | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp()) // BUCKET_SECONDS * BUCKET_SECONDS

    rows = conn.execute(
        select(s.c.source, s.c.status, s.c.created_at, s.c.confirmed_at, s.c.unsubscribed_at)
    )
    for source, status, created, confirmed, gone_at in rows:
        created_bucket = bucket(created)
        assert created_bucket is not None
        if source == "form":
            found[(created_bucket, "new_form")] += 1
        elif (source or "").startswith("import"):
            found[(created_bucket, "new_import")] += 1
        else:
            found[(created_bucket, "new_added")] += 1
        confirmed_bucket = bucket(confirmed)
        # A confirmed form signup came in unconfirmed and joined on confirming; everyone else
        # joined on arrival (counted as new, not unconfirmed_new), except those still waiting.
        if source == "form" and confirmed_bucket is not None:
            found[(created_bucket, "unconfirmed_new")] += 1
            found[(confirmed_bucket, "confirmed")] += 1
            found[(confirmed_bucket, "joined")] += 1
            joined = confirmed_bucket
        elif status == "unconfirmed":
            found[(created_bucket, "unconfirmed_new")] += 1
            continue
        else:
            joined = created_bucket
        if status in ("unsubscribed", "bounced", "complained"):
            left = max(bucket(gone_at) or joined, joined)
            found[(left, status)] += 1
            found[(left, "left")] += 1
    if found:
        _upsert(
            conn,
            schema.list_counters,
            [{"bucket": b, "metric": m, "count": n} for (b, m), n in sorted(found.items())],
            ["bucket", "metric"],
        )
