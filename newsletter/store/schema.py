"""Every table, in SQLAlchemy Core, shared by SQLite and PostgreSQL.

The tables join on integer ids: `deliveries`, `events` and `replies` all point at
`subscribers.id` and `issues.id`, so `stats` and `sends` are plain joins. Deleting a
subscriber (`remove --forget`) cascades to every row about them.

Changes to this file need a new step in `migrations.py`, never an edit of an old one.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)


#: Subscriber statuses (see CONTRACT.md); only `subscribed` people receive an issue.
class SubscriberStatus(StrEnum):
    """A subscriber's status. A str enum: the database keeps the plain values, and
    `SubscriberStatus.SUBSCRIBED == "subscribed"`."""

    SUBSCRIBED = "subscribed"
    UNCONFIRMED = "unconfirmed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


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


STATUSES = tuple(s.value for s in SubscriberStatus)

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
    # SQLite would otherwise give the newest subscriber's id to the next one after
    # `remove --forget`, and the forgotten person's links and late events would reach them.
    sqlite_autoincrement=True,
)
Index("ix_subscribers_status", subscribers.c.status)

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
)

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
)

DELIVERY_STATES = tuple(s.value for s in DeliveryState)

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
    # One row per person per issue, across all sends of it: the guard against sending twice.
    UniqueConstraint("issue_id", "subscriber_id", name="uq_deliveries_issue_subscriber"),
)
Index("ix_deliveries_send_state", deliveries.c.send_id, deliveries.c.state)
Index("ix_deliveries_message_id", deliveries.c.message_id)

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
Index("ix_events_issue_event", events.c.issue_id, events.c.event)

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
)
Index("ix_replies_issue", replies.c.issue_id)
Index("ix_replies_from_email", replies.c.from_email)
# Unique only among non-null ids: SQLite and PostgreSQL both let a unique index hold many NULLs.
Index("uq_replies_message_id", replies.c.message_id, unique=True)

# SendGrid echoes custom_args as top-level keys of each webhook event; these name the
# rows an event belongs to.
CUSTOM_ARG_ISSUE = "newsletter_issue_id"
CUSTOM_ARG_SUBSCRIBER = "newsletter_subscriber_id"
CUSTOM_ARG_SEND = "newsletter_send_id"

# One row per issue while a real send of it runs: the guard against two sends of one issue at
# once, and how `--resume` knows the previous sender is gone (pid + host + heartbeat).
send_leases = Table(
    "send_leases",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("send_id", Integer, ForeignKey("sends.id", ondelete="CASCADE"), nullable=False),
    Column("owner", String(36), nullable=False),  # random per process: compare-and-swap key
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
