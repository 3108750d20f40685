"""Named schema migration steps, each recorded in `schema_migrations` (as llm does).

An older database upgrades itself on first use. Append new steps; never edit or
reorder old ones, because databases in the field have recorded them by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

from newsletter.insights import counters
from newsletter.segments.activity import backfill
from newsletter.store import schema

Step = Callable[[Connection], None]


def m001_initial(conn: Connection) -> None:
    """Subscribers, tags, issues, sends, the delivery ledger, events and replies."""
    schema.metadata.create_all(
        conn,
        tables=[
            schema.subscribers,
            schema.subscriber_tags,
            schema.issues,
            schema.sends,
            schema.deliveries,
            schema.events,
            schema.replies,
        ],
    )


def m002_send_leases(conn: Connection) -> None:
    """The per-issue send lease (who is sending, last heartbeat)."""
    schema.send_leases.create(conn, checkfirst=True)


def m003_send_totals(conn: Connection) -> None:
    """Per-send totals, so outbox and dry-run sends show what they did."""
    schema.send_totals.create(conn, checkfirst=True)


def m004_store_ids_never_reused(conn: Connection) -> None:
    """On SQLite, rebuild `subscribers` as AUTOINCREMENT so an id is never handed out twice
    (PostgreSQL's sequences never reuse one). Databases created since have it already."""
    if conn.dialect.name != "sqlite":
        return
    current = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'subscribers'"
    ).scalar_one()
    if "AUTOINCREMENT" in current.upper():
        return
    # SQLite cannot change a primary key in place: its documented rebuild. Foreign keys must
    # be off, or dropping the old table would delete every tag, delivery and event with it.
    # (The pragma works here because pysqlite opens no transaction before the first write;
    # `open_engine` drops this connection afterwards so the pragma comes back on.)
    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    if conn.exec_driver_sql("PRAGMA foreign_keys").scalar() != 0:
        raise RuntimeError("could not turn off foreign keys to rebuild the subscribers table")

    rebuilt = schema.subscribers.to_metadata(MetaData(), name="subscribers_rebuilt")
    # Only the columns the old table has: later steps add theirs (m015: public_id).
    present = {column["name"] for column in inspect(conn).get_columns("subscribers")}
    columns = ", ".join(c.name for c in schema.subscribers.columns if c.name in present)
    conn.exec_driver_sql("DROP TABLE IF EXISTS subscribers_rebuilt")  # left by a crash
    conn.execute(CreateTable(rebuilt))
    conn.exec_driver_sql(
        f"INSERT INTO subscribers_rebuilt ({columns}) SELECT {columns} FROM subscribers"
    )
    conn.exec_driver_sql("DROP TABLE subscribers")
    conn.exec_driver_sql("ALTER TABLE subscribers_rebuilt RENAME TO subscribers")
    for index in schema.subscribers.indexes:
        index.create(conn)
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise RuntimeError(f"rebuilding subscribers broke {len(broken)} references")


def m005_send_recipients_fixed(conn: Connection) -> None:
    """`sends.up_to_subscriber`: the highest subscriber id when the send was planned, so a
    send reaches exactly the people counted and confirmed (later sign-ups wait for --resume)."""
    columns = {c["name"] for c in inspect(conn).get_columns("sends")}
    if "up_to_subscriber" not in columns:
        conn.exec_driver_sql("ALTER TABLE sends ADD COLUMN up_to_subscriber INTEGER")


def m006_consent_records(conn: Connection) -> None:
    """Consent evidence per subscriber, the consent texts shown, and the suppression list
    of erased addresses (keyed hashes only)."""
    schema.metadata.create_all(
        conn,
        tables=[schema.consent_records, schema.consent_texts, schema.suppressions],
    )


def m007_stats_counters(conn: Connection) -> None:
    """Counters for `stats` and `report`: per issue/day/metric, per link, and list growth
    (kept by triggers on `subscribers`), filled from the events and subscribers already here.
    The events index gains subscriber_id, so ingest finds a reader's earlier events."""

    for table in (schema.issue_day_counters, schema.link_day_counters, schema.list_counters):
        table.create(conn, checkfirst=True)
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_events_issue_event")
    conn.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS ix_events_issue_subscriber_event "
        "ON events (issue_id, subscriber_id, event)"
    )
    counters.seed_list_counters(conn)
    counters.install_list_triggers(conn)
    counters.rebuild_in(conn, readers_table=False)  # (m023 adds and fills it)


def m008_reply_flags(conn: Connection) -> None:
    """Replies: `automatic` (auto-replies), `unsubscribe_request` ("verified" | "unverified")
    and `message_id` (unique when set, so a replayed Inbound Parse post is stored once).
    Databases whose m001 already made the columns (created from today's schema) skip them."""

    present = {column["name"] for column in inspect(conn).get_columns("replies")}
    for name in ("automatic", "unsubscribe_request", "message_id"):
        if name not in present:
            column_ddl = CreateColumn(schema.replies.c[name]).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE replies ADD COLUMN {column_ddl}")
    indexes = {index["name"] for index in inspect(conn).get_indexes("replies")}
    for index in schema.replies.indexes:
        if index.name == "uq_replies_message_id" and index.name not in indexes:
            index.create(conn)


def _m009_run_tables() -> tuple[Table, Table]:
    """`sequence_runs` and `sequence_sends` as m009 made them (m017 drops them: a sequence
    run holds a `send_leases` row now)."""
    frozen = MetaData()
    Table("sends", frozen, Column("id", Integer, primary_key=True))
    runs = Table(
        "sequence_runs",
        frozen,
        Column("id", Integer, primary_key=True),
        Column("owner", String(36), nullable=False, unique=True),
        Column("host", String(255), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("heartbeat_at", DateTime(timezone=True), nullable=False),
        Column("finished_at", DateTime(timezone=True)),
    )
    run_sends = Table(
        "sequence_sends",
        frozen,
        Column("send_id", Integer, ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True),
        Column(
            "run_id", Integer, ForeignKey("sequence_runs.id", ondelete="CASCADE"), nullable=False
        ),
    )
    return runs, run_sends


def m009_sequences(conn: Connection) -> None:
    """Welcome sequences: step rows, enrollments, schedule fingerprints, runs."""
    schema.metadata.create_all(
        conn,
        tables=[schema.sequence_steps, schema.sequence_enrollments, schema.sequence_state],
    )
    for table in _m009_run_tables():
        table.create(conn, checkfirst=True)


def m010_no_delivery_message_id_index(conn: Connection) -> None:
    """Drop the index on `deliveries.message_id`: nothing looks a delivery up by it (events
    name their issue and reader), and keeping it up to date was half of a bulk send's ledger
    writes (every row's id goes from none to SendGrid's)."""
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_deliveries_message_id")


def m011_sequence_step_numbers(conn: Connection) -> None:
    """Sequence steps: the number (NN) each step had when a run last saw its file, so a step
    whose file was renamed is recognised before it goes out again. Databases whose m009
    already made the column (created from today's schema) skip it."""

    present = {column["name"] for column in inspect(conn).get_columns("sequence_steps")}
    if "step_number" not in present:
        column_ddl = CreateColumn(schema.sequence_steps.c.step_number).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE sequence_steps ADD COLUMN {column_ddl}")


def m012_send_cancel_requested(conn: Connection) -> None:
    """`sends.cancel_requested_at`: `newsletter cancel` marks a send it cancels, and the
    process sending it (which checks with every batch it claims) stops before the next one,
    so nothing goes out under a schedule that is being cancelled."""

    if "cancel_requested_at" not in {c["name"] for c in inspect(conn).get_columns("sends")}:
        column_ddl = CreateColumn(schema.sends.c.cancel_requested_at).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE sends ADD COLUMN {column_ddl}")


def m013_reply_threads(conn: Connection) -> None:
    """Conversations: `reply_threads`, `reply_answers` and `replies.thread_id`; the replies
    already stored are put into threads (one per reader and issue, answered by nobody yet)."""

    present = {column["name"] for column in inspect(conn).get_columns("replies")}
    if "thread_id" not in present:
        column_ddl = CreateColumn(schema.replies.c.thread_id).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE replies ADD COLUMN {column_ddl}")
    indexes = {index["name"] for index in inspect(conn).get_indexes("replies")}
    for index in schema.replies.indexes:
        if index.name == "ix_replies_thread" and index.name not in indexes:
            index.create(conn)
    schema.metadata.create_all(conn, tables=[schema.reply_threads, schema.reply_answers])
    r, threads = schema.replies, schema.reply_threads
    rows = conn.execute(
        select(
            r.c.id, r.c.subscriber_id, r.c.issue_id, r.c.from_email, r.c.automatic, r.c.received_at
        )
        .where(r.c.thread_id.is_(None))
        .order_by(r.c.id)
    ).all()
    found: dict[tuple[object, object], dict[str, object]] = {}
    for row in rows:
        who = row.subscriber_id if row.subscriber_id is not None else row.from_email.lower()
        thread = found.setdefault(
            (who, row.issue_id),
            {
                "id": row.id,
                "subscriber_id": row.subscriber_id,
                "issue_id": row.issue_id,
                "contact": None if row.subscriber_id is not None else row.from_email.lower(),
                "state": "new",
                "automatic": True,
                "messages": 0,
                "created_at": row.received_at,
                "last_at": row.received_at,
                "members": [],
            },
        )
        thread["automatic"] = bool(thread["automatic"]) and bool(row.automatic)
        thread["messages"] = int(thread["messages"]) + 1  # type: ignore[call-overload]
        thread["last_at"] = row.received_at
        thread["members"].append(row.id)  # type: ignore[attr-defined]
    for thread in found.values():
        members: list[int] = thread.pop("members")  # type: ignore[assignment]
        conn.execute(threads.insert().values(**thread))
        conn.execute(r.update().where(r.c.id.in_(members)).values(thread_id=thread["id"]))


def m014_signup_attempts(conn: Connection) -> None:
    """Sign-up limits every `serve` worker shares (per network, per target address)."""
    schema.signup_attempts.create(conn, checkfirst=True)


def m015_public_ids(conn: Connection) -> None:
    """`public_id` on subscribers and issues: a random identifier that new unsubscribe,
    confirmation and reply tokens carry instead of the sequential ids (which told every
    reader the list's size and growth). Existing rows get one each; old tokens keep working
    (they are read by row id)."""

    for table in (schema.subscribers, schema.issues):
        present = {column["name"] for column in inspect(conn).get_columns(table.name)}
        if "public_id" not in present:
            column_ddl = CreateColumn(table.c.public_id).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column_ddl}")
        missing = list(
            conn.execute(select(table.c.id).where(table.c.public_id.is_(None))).scalars()
        )
        if missing:
            conn.execute(
                update(table)
                .where(table.c.id == bindparam("row_id"))
                .values(public_id=bindparam("new_id")),
                [{"row_id": row_id, "new_id": schema.new_public_id()} for row_id in missing],
            )
        indexes = {index["name"] for index in inspect(conn).get_indexes(table.name)}
        for index in table.indexes:
            if index.name == f"uq_{table.name}_public_id" and index.name not in indexes:
                index.create(conn)


def m016_message_id_lookups(conn: Connection) -> None:
    """Indexes for `replies fetch` matching a reply's In-Reply-To: SMTP deliveries'
    Message-IDs (only those: SendGrid's X-Message-Ids stay out of it) and the answers'."""
    for table, name in (
        (schema.deliveries, "ix_deliveries_smtp_message_id"),
        (schema.reply_answers, "ix_reply_answers_message_id"),
    ):
        present = {index["name"] for index in inspect(conn).get_indexes(table.name)}
        for index in table.indexes:
            if index.name == name and name not in present:
                index.create(conn)


def m017_one_send_lease(conn: Connection) -> None:
    """One lease for every send: `send_leases` gets a row per send (keyed by `send_id`);
    `issue_id` (unique) is set for a send of an issue and empty for a sequence run's sends.
    `sequence_runs` and `sequence_sends` go: an unfinished run's sends become lease rows of
    its owner, so the next run reaps it as before. A lease lives as long as its send: the
    table is rebuilt (SQLite cannot change a primary key in place) with its rows."""
    runs = inspect(conn).has_table("sequence_runs")
    if "source" not in {c["name"] for c in inspect(conn).get_columns("send_leases")}:
        meta = MetaData()  # (with the tables its foreign keys name)
        for table in (schema.issues, schema.sends):
            Table(table.name, meta, Column("id", Integer, primary_key=True))
        rebuilt = schema.send_leases.to_metadata(meta, name="send_leases_rebuilt")
        conn.exec_driver_sql("DROP TABLE IF EXISTS send_leases_rebuilt")
        conn.execute(CreateTable(rebuilt))
        columns = "send_id, issue_id, owner, source, host, pid, heartbeat_at"
        conn.exec_driver_sql(
            f"INSERT INTO send_leases_rebuilt ({columns}) "
            "SELECT send_id, issue_id, owner, 'issue', host, pid, heartbeat_at FROM send_leases"
        )
        if runs:
            conn.exec_driver_sql(
                f"INSERT INTO send_leases_rebuilt ({columns}) "
                "SELECT s.send_id, NULL, r.owner, 'sequences', r.host, r.pid, r.heartbeat_at "
                "FROM sequence_runs r JOIN sequence_sends s ON s.run_id = r.id "
                "WHERE r.finished_at IS NULL"
            )
        conn.exec_driver_sql("DROP TABLE send_leases")
        conn.exec_driver_sql("ALTER TABLE send_leases_rebuilt RENAME TO send_leases")
    # (A database whose m002 made today's lease table made the run tables after it, in
    # m009: no run of it can be unfinished under the old scheme.)
    if runs:
        # (IF EXISTS: of processes opening a new database at once, one may find them gone
        # after waiting for another's lock; its step then rolls back as a lost race.)
        conn.exec_driver_sql("DROP TABLE IF EXISTS sequence_sends")
        conn.exec_driver_sql("DROP TABLE IF EXISTS sequence_runs")


def m018_derived_public_ids(conn: Connection) -> None:
    """Subscribers made from now on store no public id: tokens carry one derived from the row
    id (`tokens.public_id`). The random ones m015 stored stay, so links already sent keep
    working, and their unique index becomes partial, so that rows without one (a million
    imported ones, say) cost it nothing; it was a third of an import's time. On SQLite,
    `subscriber_tags` becomes a WITHOUT ROWID table (one B-tree fewer per tag)."""
    conn.exec_driver_sql("DROP INDEX IF EXISTS uq_subscribers_public_id")
    for index in schema.subscribers.indexes:
        if index.name == "uq_subscribers_public_id":
            index.create(conn)
    if conn.dialect.name == "sqlite":
        _tags_without_rowid(conn)


def _tags_without_rowid(conn: Connection) -> None:
    """SQLite: rebuild `subscriber_tags` as a WITHOUT ROWID table (its rows in the primary
    key's B-tree), the schema's current shape, keeping every tag."""
    current = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'subscriber_tags'"
    ).scalar_one()
    if "WITHOUT ROWID" in current.upper():
        return
    create = str(CreateTable(schema.subscriber_tags).compile(dialect=conn.dialect))
    conn.exec_driver_sql(create.replace("subscriber_tags", "subscriber_tags_m018", 1))
    conn.exec_driver_sql(
        "INSERT INTO subscriber_tags_m018 (subscriber_id, tag) "
        "SELECT subscriber_id, tag FROM subscriber_tags"
    )
    conn.exec_driver_sql("DROP TABLE subscriber_tags")  # its index goes with it
    conn.exec_driver_sql("ALTER TABLE subscriber_tags_m018 RENAME TO subscriber_tags")
    for index in schema.subscriber_tags.indexes:
        conn.exec_driver_sql(str(CreateIndex(index).compile(dialect=conn.dialect)))


def m019_segments(conn: Connection) -> None:
    """Segments and sunsetting: `reader_activity` (each reader's latest click, human open and
    reply, filled here from the events and replies already stored), `send_segments` (the
    segment a send went to, as defined then), `sunset_asks`, and the ledger's index by
    reader (`ix_deliveries_subscriber`: a reader's last issues in a few index steps)."""
    schema.metadata.create_all(
        conn, tables=[schema.reader_activity, schema.send_segments, schema.sunset_asks]
    )
    present = {index["name"] for index in inspect(conn).get_indexes("deliveries")}
    for index in schema.deliveries.indexes:
        if index.name == "ix_deliveries_subscriber" and index.name not in present:
            index.create(conn)
    backfill(conn)


def m020_resend_rounds(conn: Connection) -> None:
    """Resends (issue 24): `deliveries.send_round` joins the unique key, which becomes
        UNIQUE(issue_id, subscriber_id, send_round): one first copy per person and issue, and at
        most one copy per resend kind. Existing rows are first copies. `sends` gains `resend` (the
        kind), `subject` (a resend's own subject) and `track_opens`; subject-line tests get
    `subject_tests` and `subject_test_members`. On SQLite a unique constraint
        cannot change in place: the table is rebuilt as m004 rebuilds `subscribers`."""
    present = {c["name"] for c in inspect(conn).get_columns("sends")}
    for name in ("resend", "subject", "track_opens"):
        if name not in present:
            column_ddl = CreateColumn(schema.sends.c[name]).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE sends ADD COLUMN {column_ddl}")
    schema.metadata.create_all(conn, tables=[schema.subject_tests, schema.subject_test_members])
    present = {c["name"] for c in inspect(conn).get_columns("deliveries")}
    if "send_round" in present:
        return  # created from today's schema (m001)
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql(
            "ALTER TABLE deliveries ADD COLUMN send_round VARCHAR(16) DEFAULT 'first' NOT NULL"
        )
        conn.exec_driver_sql(
            "ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS uq_deliveries_issue_subscriber"
        )
        conn.exec_driver_sql(
            "ALTER TABLE deliveries ADD CONSTRAINT uq_deliveries_issue_subscriber_round "
            "UNIQUE (issue_id, subscriber_id, send_round)"
        )
        return
    # Nothing refers to `deliveries`, but its own foreign keys are checked on the copy:
    # off, as in m004 (the rows are copied as they are).
    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    copy = MetaData()
    for referred in (schema.issues, schema.subscribers, schema.sends):
        referred.to_metadata(copy)  # (so the copy's foreign keys find their tables)
    rebuilt = schema.deliveries.to_metadata(copy, name="deliveries_rebuilt")
    columns = ", ".join(c.name for c in schema.deliveries.columns if c.name in present)
    conn.exec_driver_sql("DROP TABLE IF EXISTS deliveries_rebuilt")  # left by a crash
    conn.execute(CreateTable(rebuilt))
    conn.exec_driver_sql(
        f"INSERT INTO deliveries_rebuilt ({columns}) SELECT {columns} FROM deliveries"
    )
    conn.exec_driver_sql("DROP TABLE deliveries")
    conn.exec_driver_sql("ALTER TABLE deliveries_rebuilt RENAME TO deliveries")
    for index in schema.deliveries.indexes:
        index.create(conn)
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check(deliveries)").all()
    if broken:
        raise RuntimeError(f"rebuilding deliveries broke {len(broken)} references")


def m023_issue_readers(conn: Connection) -> None:
    """Ingest (issue 27): `issue_readers`, whom the issue counters counted, filled from the
    stored events; it answers "counted before?" by key, so the events' index by reader
    (issue, subscriber, event), a random page write per stored event, gives way to
    (issue, event) again, which new events append to, and one by reader for clicks only."""
    schema.issue_readers.create(conn, checkfirst=True)
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_events_issue_subscriber_event")
    present = {index["name"] for index in inspect(conn).get_indexes("events")}
    for index in schema.events.indexes:
        if index.name not in present:
            index.create(conn)
    counters.fill_readers(conn)


def m025_import_runs(conn: Connection) -> None:
    """Import (issue 27): an import's "imported, no evidence" consent record is stored once,
    in `import_runs`, and the people it added point at it (`subscribers.import_run_id`).
    The records made per person before stay as they are and are read as before."""
    schema.import_runs.create(conn, checkfirst=True)
    present = {c["name"] for c in inspect(conn).get_columns("subscribers")}
    if "import_run_id" not in present:
        column_ddl = CreateColumn(schema.subscribers.c.import_run_id).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE subscribers ADD COLUMN {column_ddl}")


def m026_status_index_partial(conn: Connection) -> None:
    """Import (issue 27): `ix_subscribers_status` leaves out the subscribed (most of a list),
    whose entries no query needs (they are most of the table, which is read instead) and
    which cost a big import a tenth of its inserts."""
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_subscribers_status")
    index = next(i for i in schema.subscribers.indexes if i.name == "ix_subscribers_status")
    index.create(conn)


def m027_reply_refers_to(conn: Connection) -> None:
    """Replies keep the Message-IDs they answered (`replies.refers_to`), so that an answer's
    References reach back to the issue, as RFC 5322 asks; replies stored before have none,
    and their answers refer to the replies alone, as before."""
    present = {c["name"] for c in inspect(conn).get_columns("replies")}
    if "refers_to" not in present:
        column_ddl = CreateColumn(schema.replies.c.refers_to).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE replies ADD COLUMN {column_ddl}")


def m028_subject_test_segment(conn: Connection) -> None:
    """A subject-line test keeps its --segment / --where (`subject_tests.segment_name`,
    `segment_definition`), which its arms' sends record; tests made before have none, as
    they were recorded."""
    if not inspect(conn).has_table("subject_tests"):
        return  # (m020, not run yet, makes it from today's schema)
    present = {c["name"] for c in inspect(conn).get_columns("subject_tests")}
    for column in (schema.subject_tests.c.segment_name, schema.subject_tests.c.segment_definition):
        if column.name not in present:
            column_ddl = CreateColumn(column).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE subject_tests ADD COLUMN {column_ddl}")


def m029_subject_test_cancelled(conn: Connection) -> None:
    """A subject-line test can be cancelled (`subject_tests.cancelled_at`); tests made before
    were not."""
    if not inspect(conn).has_table("subject_tests"):
        return  # (m020, not run yet, makes it from today's schema)
    present = {c["name"] for c in inspect(conn).get_columns("subject_tests")}
    if "cancelled_at" not in present:
        column_ddl = CreateColumn(schema.subject_tests.c.cancelled_at).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE subject_tests ADD COLUMN {column_ddl}")


#: In order. A step runs once per database, inside the same transaction as its record.
STEPS: list[tuple[str, Step]] = [
    ("m001_initial", m001_initial),
    ("m002_send_leases", m002_send_leases),
    ("m003_send_totals", m003_send_totals),
    ("m004_store_ids_never_reused", m004_store_ids_never_reused),
    ("m005_send_recipients_fixed", m005_send_recipients_fixed),
    ("m006_consent_records", m006_consent_records),
    ("m007_stats_counters", m007_stats_counters),
    ("m008_reply_flags", m008_reply_flags),
    ("m009_sequences", m009_sequences),
    ("m010_no_delivery_message_id_index", m010_no_delivery_message_id_index),
    ("m011_sequence_step_numbers", m011_sequence_step_numbers),
    ("m012_send_cancel_requested", m012_send_cancel_requested),
    ("m013_reply_threads", m013_reply_threads),
    ("m014_signup_attempts", m014_signup_attempts),
    ("m015_public_ids", m015_public_ids),
    ("m016_message_id_lookups", m016_message_id_lookups),
    ("m017_one_send_lease", m017_one_send_lease),
    ("m018_derived_public_ids", m018_derived_public_ids),
    ("m019_segments", m019_segments),
    ("m020_resend_rounds", m020_resend_rounds),
    ("m023_issue_readers", m023_issue_readers),
    ("m025_import_runs", m025_import_runs),
    ("m026_status_index_partial", m026_status_index_partial),
    ("m027_reply_refers_to", m027_reply_refers_to),
    ("m028_subject_test_segment", m028_subject_test_segment),
    ("m029_subject_test_cancelled", m029_subject_test_cancelled),
]


def applied(conn: Connection) -> set[str]:
    if not inspect(conn).has_table("schema_migrations"):
        return set()
    return set(conn.execute(select(schema.schema_migrations.c.name)).scalars())


#: PostgreSQL's deadlock_detected and serialization_failure: one of the racers was rolled back.
_RACE_SQLSTATES = frozenset({"40P01", "40001"})


def migrate(engine: Engine, attempts: int = 10) -> list[str]:
    """Run the steps this database has not had yet; return their names.

    Two processes opening a new database at once race to create the same tables; the
    loser's step rolls back (a clash, or on PostgreSQL a deadlock between their DDL), so it
    tries again and finds the steps done.
    """
    for attempt in range(1, attempts + 1):
        try:
            return _migrate(engine)
        except DBAPIError as exc:
            lost_race = (
                isinstance(exc, IntegrityError)
                or "already exists" in str(exc.orig)
                or getattr(exc.orig, "sqlstate", None) in _RACE_SQLSTATES
            )
            if not lost_race or attempt == attempts:
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def _migrate(engine: Engine) -> list[str]:
    ran: list[str] = []
    if engine.dialect.name == "postgresql":
        schema.for_postgresql()  # (its partial indexes' conditions)
    with engine.begin() as conn:
        schema.schema_migrations.create(conn, checkfirst=True)
        done = applied(conn)
    for name, step in STEPS:
        if name in done:
            continue
        with engine.begin() as conn:
            step(conn)
            conn.execute(
                schema.schema_migrations.insert().values(name=name, applied_at=datetime.now(UTC))
            )
        ran.append(name)
    return ran
