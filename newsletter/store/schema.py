"""Every table, in SQLAlchemy Core, shared by SQLite and PostgreSQL.

The tables join on integer ids: `deliveries`, `events` and `replies` all point at
`subscribers.id` and `issues.id`, so `stats` and `sends` are plain joins. Deleting a
subscriber (`remove --forget`) cascades to every row about them.

Changes to this file need a new step in `migrations.py`, never an edit of an old one.
"""

from __future__ import annotations

import secrets
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    false,
    literal_column,
)

# The statuses live below the schema (the config check names them without SQLAlchemy); the
# schema's readers keep importing them from here.
from newsletter.subscriber_status import STATUSES as STATUSES
from newsletter.subscriber_status import SubscriberStatus as SubscriberStatus

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)


class DeliveryState(StrEnum):
    """A ledger row's state. `in_flight` is written before a request goes out; a crash leaves
    it, and `uncertain` is what it becomes when nobody knows whether the provider took it."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    ACCEPTED = "accepted"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    DROPPED = "dropped"


#: `deliveries.send_round` of a first copy of an issue (see `deliveries`).
FIRST_ROUND = "first"


def new_public_id() -> str:
    """A random, opaque identifier (72 bits, 12 URL-safe characters) for links and reply
    addresses: unlike the sequential row id it tells a reader nothing about the list's size
    or growth. Short, so a reply address naming issue and reader fits in 64 characters; the
    token's signature, not the id, is what makes a link unforgeable."""
    return secrets.token_urlsafe(9)


#: Partial indexes and their conditions (`_partial_index`).
_PARTIAL: list[tuple[Index, ColumnElement[bool]]] = []


def _partial_index(index: Index, where: ColumnElement[bool]) -> None:
    """`index` made partial: only rows where `where` holds have an entry. SQLite's condition
    is given now; PostgreSQL's when a PostgreSQL database is opened (`for_postgresql`):
    naming `postgresql_where=` here made SQLAlchemy load its PostgreSQL dialect in every
    process at import, SQLite's too (about 30 ms of each command's start)."""
    index.dialect_options["sqlite"]["where"] = where
    _PARTIAL.append((index, where))


def for_postgresql() -> None:
    """The partial indexes' conditions for PostgreSQL's DDL (loads SQLAlchemy's PostgreSQL
    dialect): before anything creates them there (`migrate`)."""
    for index, where in _PARTIAL:
        index.dialect_options["postgresql"]["where"] = where


subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True),
    # The address as normalized by email-validator (domain lower-cased, IDN to Unicode).
    Column("email", String(320), nullable=False),
    # Lower-cased address: the unique key, so Foo@x.de and foo@x.de are one person.
    Column("email_key", String(320), nullable=False, unique=True),
    Column("name", String(200)),
    Column("first_name", String(100)),
    Column("last_name", String(100)),
    Column("status", String(16), nullable=False, default="subscribed"),
    Column("fields", JSON, nullable=False, default=dict),  # custom fields
    Column("source", String(100)),  # "cli", "import:mailchimp", "form", ...
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("confirmed_at", DateTime(timezone=True)),
    Column("unsubscribed_at", DateTime(timezone=True)),
    Column("unsubscribe_reason", String(200)),
    # The random public id m015 gave the rows it found, still honoured in links already sent.
    # Rows made since m018 have none: tokens carry a public id derived from `id` with the
    # secret key (`tokens.public_id`), which costs no column, no index, no work per insert.
    Column("public_id", String(32)),
    # The import that added this person without evidence of their opt-in: its one
    # `import_runs` row is their consent record (m025). No foreign key: the runs are never
    # deleted, and PostgreSQL would check one for every row an import copies in.
    Column("import_run_id", Integer),
    # SQLite would otherwise give the newest subscriber's id to the next one after
    # `remove --forget`, and the forgotten person's links and late events would reach them.
    sqlite_autoincrement=True,
)
# Partial: most of a list is subscribed, and an entry for each of them, which no query needs
# (they are most of the table, which is read instead), cost a big import a tenth of its inserts.
# The rare statuses (unconfirmed, bounced, ...) are found by it through `status_is`.
#: Not subscribed, written as the index's condition (a query repeating it can use the index).
NOT_SUBSCRIBED = subscribers.c.status != literal_column("'subscribed'")
_partial_index(Index("ix_subscribers_status", subscribers.c.status), NOT_SUBSCRIBED)


def status_is(status: str) -> ColumnElement[bool]:
    """`subscribers.status = status`, written so that a status other than subscribed is
    looked up in `ix_subscribers_status`: SQLite uses a partial index only for a query that
    repeats its condition (PostgreSQL would infer it)."""
    if status == SubscriberStatus.SUBSCRIBED:
        return subscribers.c.status == status
    return and_(subscribers.c.status == status, NOT_SUBSCRIBED)


# Partial: a row without a stored public id (all since m018) costs the index nothing.
_partial_index(
    Index("uq_subscribers_public_id", subscribers.c.public_id, unique=True),
    subscribers.c.public_id.isnot(None),
)

subscriber_tags = Table(
    "subscriber_tags",
    metadata,
    Column(
        "subscriber_id",
        Integer,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("tag", String(100), primary_key=True),
    # SQLite: the rows live in the primary key's B-tree, not in a second one beside it
    # (m018): one B-tree fewer to write per tag of a million imported readers.
    sqlite_with_rowid=False,
)
# Tag-filtered lists and counts walk this index, not the whole tags table.
Index("ix_subscriber_tags_tag", subscriber_tags.c.tag, subscriber_tags.c.subscriber_id)

issues = Table(
    "issues",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(200), nullable=False, unique=True),
    Column("title", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("language", String(8), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # What tokens carry instead of `id` (m015; random, see `new_public_id`).
    Column("public_id", String(32), default=new_public_id),
)
Index("uq_issues_public_id", issues.c.public_id, unique=True)

sends = Table(
    "sends",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), nullable=False),
    # preparing -> sending -> done | stopped | failed; scheduled -> cancelled
    Column("status", String(16), nullable=False),
    Column("transport", String(16), nullable=False),  # a transport's kind: "sendgrid", "smtp" ...
    Column("segment", JSON, nullable=False, default=list),  # --tag values
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("batch_id", String(100)),  # SendGrid batch id of a scheduled send
    Column("send_at", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("error", Text),
    # The highest subscriber id when the send was planned: it goes to those counted (m005).
    Column("up_to_subscriber", Integer),
    # `newsletter cancel` asked the send to stop (m012): its sender claims no further batch.
    Column("cancel_requested_at", DateTime(timezone=True)),
    # A resend (m020): "non-clickers", "non-openers" or "new"; null for the first send.
    Column("resend", String(16)),
    # The subject this send used instead of the issue's (`--subject`; m020), so --resume keeps it.
    Column("subject", Text),
    # Whether the provider's open pixel was on (m020): a non-openers resend needs it; null for
    # sends older than m020 (then the issue's open events tell).
    Column("track_opens", Boolean),
)


deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), nullable=False),
    Column(
        "subscriber_id",
        Integer,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("send_id", Integer, ForeignKey("sends.id", ondelete="CASCADE"), nullable=False),
    Column("state", String(16), nullable=False),
    Column("batch_no", Integer),
    Column("message_id", String(200)),  # SendGrid's X-Message-Id
    Column("error", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Which copy of the issue the row is about (m020): "first" (the first send, its --resume,
    # and a resend to the "new", who never had it), or a resend's kind ("non-clickers",
    # "non-openers"), each at most once per person.
    Column(
        "send_round", String(16), nullable=False, default=FIRST_ROUND, server_default=FIRST_ROUND
    ),
    # One row per person per issue and round, across all sends of it: the guard against
    # sending twice (a resend is its own round, so it cannot clash with the first copy, and
    # nobody gets a second copy of either).
    UniqueConstraint(
        "issue_id", "subscriber_id", "send_round", name="uq_deliveries_issue_subscriber_round"
    ),
)
Index("ix_deliveries_send_state", deliveries.c.send_id, deliveries.c.state)
# A reader's issues, newest first (m019): what segments' `received:` and `clicked:last-5`
# walk, a few entries per reader. Two integers a row: a third column (the state) made each
# walk half again as slow (benchmarks/segments.py).
Index("ix_deliveries_subscriber", deliveries.c.subscriber_id, deliveries.c.issue_id)
# The RFC Message-IDs SMTP sends record ("<...>"), which a reply's In-Reply-To names
# (`replies fetch`); SendGrid's X-Message-Ids are left out, so a bulk send's ledger writes
# do not pay for it (m016; m010 dropped the index over all of them).
_partial_index(
    Index("ix_deliveries_smtp_message_id", deliveries.c.message_id),
    deliveries.c.message_id.like("<%"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sg_event_id", String(100), nullable=False, unique=True),  # dedupe key
    Column("event", String(32), nullable=False),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE")),
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="SET NULL")),
    Column("sg_message_id", String(200)),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("detail", JSON, nullable=False, default=dict),  # type, reason, url...: no address
)
# (issue, event): anything that reads one issue's events of a kind (resends, subject tests,
# `stats ISSUE`). Ingest appends to it: a new event's entry goes to the end of its (issue,
# event) run, where an index by reader took a random page per event (m023; who was counted
# before is `issue_readers`).
Index("ix_events_issue_event", events.c.issue_id, events.c.event)
# Who clicked an issue, by reader (`sends`' and `stats ISSUE`'s clickers per send round): only
# clicks, a few in a hundred events, pay for an entry by reader.
_partial_index(
    Index("ix_events_issue_clickers", events.c.issue_id, events.c.subscriber_id),
    events.c.event == "click",
)

replies = Table(
    "replies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE")),
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="SET NULL")),
    Column("from_email", String(320), nullable=False),
    Column("from_name", String(200)),
    Column("subject", Text, nullable=False, default=""),
    Column("text", Text, nullable=False, default=""),
    Column("attachments", JSON, nullable=False, default=list),  # [{"name", "size"}] only
    Column("spam_score", String(20)),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # An out-of-office or other robot's answer: hidden from `replies`, not counted in `stats`,
    # never forwarded, never read as an unsubscribe (m008).
    Column("automatic", Boolean, nullable=False, default=False, server_default=false()),
    # The reply asks to unsubscribe: "verified" (applied) or "unverified" (sender not proven,
    # nothing changed); null when it asks nothing (m008).
    Column("unsubscribe_request", String(16)),
    # The reply's Message-ID header: a replayed Inbound Parse post is stored once (m008).
    Column("message_id", Text),
    # The conversation it belongs to: `reply_threads.id` (m013).
    Column("thread_id", Integer),
    # The Message-IDs the reply answered, as its References header names them (else its
    # In-Reply-To): an answer's References go on from them, back to the issue (m027).
    Column("refers_to", Text),
)
Index("ix_replies_issue", replies.c.issue_id)
Index("ix_replies_from_email", replies.c.from_email)
# Unique only among non-null ids: SQLite and PostgreSQL both let a unique index hold many NULLs.
Index("uq_replies_message_id", replies.c.message_id, unique=True)
Index("ix_replies_thread", replies.c.thread_id)

# A conversation with one reader about one issue (or welcome step): the reader's replies and
# the author's answers. Its id is the id of its first reply, so `replies show ID` finds it by
# any of its replies' ids. new (a reply waits) -> answered -> done; a new reply reopens it (m013).
reply_threads = Table(
    "reply_threads",
    metadata,
    Column("id", Integer, primary_key=True),  # given: the first reply's id
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE")),
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="SET NULL")),
    # The sender's address, lower-cased, when they are not on the list (else null).
    Column("contact", String(320)),
    Column("state", String(12), nullable=False),
    # Only auto-replies so far (hidden from `replies` unless --all).
    Column("automatic", Boolean, nullable=False, default=False),
    Column("messages", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_at", DateTime(timezone=True), nullable=False),
)
Index("ix_reply_threads_last", reply_threads.c.last_at)
Index("ix_reply_threads_subscriber", reply_threads.c.subscriber_id)

# The author's answers (`replies answer`), in their thread (m013).
reply_answers = Table(
    "reply_answers",
    metadata,
    Column("id", Integer, primary_key=True),
    # Erasure removes a reader's answers through subscriber_id; `privacy purge` by thread.
    Column("thread_id", Integer, ForeignKey("reply_threads.id", ondelete="SET NULL")),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE")),
    Column("to_email", String(320), nullable=False),
    Column("subject", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("message_id", Text),  # ours, so the reader's answer to it finds the thread
    Column("sent_at", DateTime(timezone=True), nullable=False),
)
Index("ix_reply_answers_thread", reply_answers.c.thread_id)
Index("ix_reply_answers_message_id", reply_answers.c.message_id)  # a reply to an answer (m016)

# SendGrid echoes custom_args as top-level keys of each webhook event; these name the
# rows an event belongs to.
CUSTOM_ARG_ISSUE = "newsletter_issue_id"
CUSTOM_ARG_SUBSCRIBER = "newsletter_subscriber_id"
CUSTOM_ARG_SEND = "newsletter_send_id"

# The one lease of every send (m017): a row per send while its process runs it. A send of an
# issue holds its issue's row (`issue_id`, unique: the guard against two sends of one issue at
# once, and how `--resume` knows the previous sender is gone). A run of due work (a sequence
# run, one send per step) holds a row without an issue for each of its sends, all with its
# `owner`. Who holds it: pid + host + heartbeat; a holder that is gone is taken over (`send
# --resume`) or reaped (the next run), see `sending.ledger`.
send_leases = Table(
    "send_leases",
    metadata,
    Column("send_id", Integer, ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True),
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), unique=True),
    Column("owner", String(36), nullable=False),  # random per process: compare-and-swap key
    Column("source", String(16), nullable=False, default="issue"),  # issue | sequences
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
)

# Per-send totals (planned recipients and outcomes), written by the sender as it goes; the only
# record of what outbox and dry-run sends did, since those keep no deliveries rows.
send_totals = Table(
    "send_totals",
    metadata,
    Column("send_id", Integer, ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True),
    Column("recipients", Integer, nullable=False, default=0),  # counted before sending
    Column("accepted", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("uncertain", Integer, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# --- counters for `stats` and `report` (m007; written by newsletter/insights/counters.py only)
# Aggregates only, never a subscriber id (except `issue_readers`, which says whom they
# counted): they outlive the events that `[privacy] keep_events_days` purges, and `stats`
# reads them instead of millions of event rows.

#: Per issue, UTC day and metric (delivered, bounced, dropped, opened, machine_opened, clicked,
#: unsubscribed, complained): `readers` counts people whose first such event for the issue fell
#: on that day (so the sum over days is unique readers); `events` counts every event.
issue_day_counters = Table(
    "issue_day_counters",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("metric", String(16), primary_key=True),
    Column("readers", Integer, nullable=False, default=0),
    Column("events", Integer, nullable=False, default=0),
)

#: Who `issue_day_counters.readers` counted (m023): one row per reader, issue and metric, so
#: ingest tells a reader's first event of a kind from the others by one key lookup per
#: candidate. Personal data, unlike the counters: erasure deletes a person's rows, and
#: `privacy purge` those whose events it purged.
issue_readers = Table(
    "issue_readers",
    metadata,
    Column(
        "subscriber_id",
        Integer,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("metric", String(16), primary_key=True),
    sqlite_with_rowid=False,
)

#: Clicks per issue, UTC day and link (the URL as SendGrid reports it, at most 1000 chars).
link_day_counters = Table(
    "link_day_counters",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("url", String(1000), primary_key=True),
    Column("clicks", Integer, nullable=False, default=0),
)

#: List growth per quarter hour (UTC epoch seconds of its start; every time zone's offset is a
#: multiple of 15 minutes, so days, weeks and months in `[newsletter] timezone` add up exactly).
#: Metrics: new_form, new_import, new_added, confirmed, unsubscribed, bounced, complained,
#: joined and left (into and out of `subscribed`; their running sum is the list's size).
#: Database triggers on `subscribers` keep it, so every way in or out counts (see
#: insights/counters.py).
list_counters = Table(
    "list_counters",
    metadata,
    Column("bucket", BigInteger, primary_key=True, autoincrement=False),
    Column("metric", String(16), primary_key=True),
    Column("count", Integer, nullable=False, default=0),
)

# --- welcome sequences (m009) ----------------------------------------------------------------
# A step's deliveries are ordinary ledger rows: each step has an `issues` row (slug
# `sequences/<name>/<key>`); this table says which sequence and step an issue row is.
sequence_steps = Table(
    "sequence_steps",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("sequence", String(100), nullable=False),
    Column("step_key", String(200), nullable=False),
    # The step's NN when a run last saw its file (m011; null before): a step that is gone while
    # a new one sits at its number was probably renamed (`sequences check`, `sequences rename`).
    Column("step_number", Integer),
    UniqueConstraint("sequence", "step_key", name="uq_sequence_steps_key"),
)


# Who is in which sequence, and what they get next when. One row per person per sequence,
# ever: resubscribing does not restart a sequence.
sequence_enrollments = Table(
    "sequence_enrollments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sequence", String(100), nullable=False),
    Column(
        "subscriber_id",
        Integer,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("state", String(16), nullable=False),
    Column("reason", String(32), nullable=False),  # subscribed | tagged | existing
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("last_sent_at", DateTime(timezone=True)),
    Column("next_step", String(200)),  # a step key; null: work it out at the next run
    # Null unless active, so finished people drop out of the due index.
    Column("next_due_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("sequence", "subscriber_id", name="uq_sequence_enrollments_person"),
)
# "Who is due in this sequence", soonest first, is one range scan (also what a claim walks).
Index(
    "ix_sequence_enrollments_due",
    sequence_enrollments.c.sequence,
    sequence_enrollments.c.next_due_at,
)
Index(
    "ix_sequence_enrollments_step",
    sequence_enrollments.c.sequence,
    sequence_enrollments.c.next_step,
)
Index("ix_sequence_enrollments_subscriber", sequence_enrollments.c.subscriber_id)

# Per sequence: the shape of its steps (order, delays, hours) the schedule was worked out for.
sequence_state = Table(
    "sequence_state",
    metadata,
    Column("sequence", String(100), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# How each person came onto the list (GDPR Art. 7(1): the author must be able to prove consent).
# One row per event: a form signup, its confirmation, an `add` by the author, an import.
# Owned by `newsletter.store.consent`.
consent_records = Table(
    "consent_records",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "subscriber_id",
        Integer,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("kind", String(32), nullable=False),  # signup | confirmation | added | import
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    # Truncated (last octet / last 80 bits zeroed) unless [privacy] store_full_ip = true.
    Column("ip", String(64)),
    Column("user_agent", String(500)),
    Column("page_url", Text),
    Column("consent_text_hash", String(64)),  # sha256 of the consent text shown
    Column("source", String(200)),  # "form", "cli", --source, "import:mailchimp <file>"...
    # Whether this record on its own proves consent (a confirmed double opt-in, an author's
    # add with the consent text, an import carrying the export's opt-in time or IP).
    Column("proves_consent", Boolean, nullable=False, default=False),
    Column("details", JSON, nullable=False, default=dict),
)
Index("ix_consent_records_subscriber", consent_records.c.subscriber_id)

# An import's consent record, once for all the people it added without evidence of their
# opt-in (`subscribers.import_run_id`): a record per person said the same for each, and made a
# third of a big list's database (m025). Owned by `newsletter.store.consent`. It holds no
# personal data (the file's name and format, the source, when), so erasure leaves it.
import_runs = Table(
    "import_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token", String(32), nullable=False, unique=True),  # one import run's own
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("source", String(200)),
    Column("details", JSON, nullable=False, default=dict),
)

# Every consent text ever shown, by its hash, so a hash in a record can be shown as the words.
consent_texts = Table(
    "consent_texts",
    metadata,
    Column("text_hash", String(64), primary_key=True),
    Column("text", Text, nullable=False),
    Column("first_used_at", DateTime(timezone=True), nullable=False),
)

# Addresses erased on request (GDPR Art. 17) that must not come back through `add` or an
# import: only an HMAC of the normalized address (keyed with NEWSLETTER_SECRET_KEY), never
# the address. A new double opt-in through the form lifts it. Owned by
# `newsletter.store.suppressions`.
suppressions = Table(
    "suppressions",
    metadata,
    Column("email_hash", String(64), primary_key=True),
    Column("reason", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Sign-up limits shared by every `serve` worker and process (issue 26 item 4, issue 28 item
# 6): one row per allowed attempt, kept for a day at most. Only an HMAC of what is limited
# (an IPv4 address, an IPv6 /64, a target address), never the value itself. Owned by
# `newsletter.store.signup_limits`.
signup_attempts = Table(
    "signup_attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("scope", String(16), nullable=False),  # "network" | "address"
    Column("key_hash", String(64), nullable=False),
    Column("attempted_at", DateTime(timezone=True), nullable=False),
)
Index(
    "ix_signup_attempts_key",
    signup_attempts.c.scope,
    signup_attempts.c.key_hash,
    signup_attempts.c.attempted_at,
)
Index("ix_signup_attempts_time", signup_attempts.c.attempted_at)

# --- segments and sunsetting (m019) ----------------------------------------------------------
# Per reader, their latest click, human open (no `sg_machine_open`) and reply: when, and the
# newest issue (by id) it was about. Kept up to date at ingest (events.py, replies) so a
# segment's engagement terms read one row per reader instead of millions of events. Owned by
# `newsletter.segments.activity`.
reader_activity = Table(
    "reader_activity",
    metadata,
    Column(
        "subscriber_id",
        Integer,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("clicked_at", DateTime(timezone=True)),
    Column("clicked_issue", Integer),
    Column("opened_at", DateTime(timezone=True)),
    Column("opened_issue", Integer),
    Column("replied_at", DateTime(timezone=True)),
    Column("replied_issue", Integer),
)

# Which segment a send went to and its definition when it was planned (`sends` keeps the --tag
# values in `segment`). Owned by `newsletter.segments.sends`.
send_segments = Table(
    "send_segments",
    metadata,
    Column("send_id", Integer, ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(100)),  # null: an ad-hoc --where
    Column("definition", Text, nullable=False),
)

# `subscribers sunset --ask`: who was asked whether they still want the newsletter, and when
# they answered "keep sending" (null: not yet). Owned by `newsletter.segments.sunset`.
sunset_asks = Table(
    "sunset_asks",
    metadata,
    Column(
        "subscriber_id",
        Integer,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("asked_at", DateTime(timezone=True), nullable=False),
    Column("kept_at", DateTime(timezone=True)),
)

# --- subject-line tests (m020; written by sending/subject_test.py only) -----------------------
# `send ISSUE --subject-b TEXT`: subject A and B each to a random half of a sample, then the
# winner to the rest. Each reader's copy is an ordinary first-round ledger row, so the unique
# key (issue, subscriber, round) is what makes "both subjects" impossible.
subject_tests = Table(
    "subject_tests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), nullable=False),
    Column("subject_a", Text, nullable=False),
    Column("subject_b", Text, nullable=False),
    Column("sample_percent", Integer, nullable=False),
    Column("metric", String(16), nullable=False),  # clicks | replies | opens
    Column("segment", JSON, nullable=False, default=list),  # --tag values
    # Its --segment / --where (m028), which every arm's send records as the send's segment
    # (`send_segments`); null: none. (Before, a test of a segment was recorded as one to the
    # whole list, and the archive published the issue.)
    Column("segment_name", String(100)),
    Column("segment_definition", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("decide_at", DateTime(timezone=True), nullable=False),
    # null until decided: "a" or "b"; set once (compare-and-set), by whichever runner is first
    Column("winner", String(1)),
    Column("decided_at", DateTime(timezone=True)),
    Column("decision", JSON),  # sizes, counts, rates, z, and the sentence saying why
    Column("finished_at", DateTime(timezone=True)),  # the rest was sent
    # `newsletter cancel` stopped it (m029): the sample keeps its copies, the rest gets none,
    # and `run-due` leaves it alone.
    Column("cancelled_at", DateTime(timezone=True)),
)
Index("uq_subject_tests_issue", subject_tests.c.issue_id, unique=True)

#: Who is in which arm ("a", "b", or "rest"), fixed when the test was planned.
subject_test_members = Table(
    "subject_test_members",
    metadata,
    Column(
        "test_id", Integer, ForeignKey("subject_tests.id", ondelete="CASCADE"), primary_key=True
    ),
    Column(
        "subscriber_id",
        Integer,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("arm", String(4), nullable=False),
)
Index("ix_subject_test_members_arm", subject_test_members.c.test_id, subject_test_members.c.arm)
