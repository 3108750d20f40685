"""Store a decoded reply: match it to its issue and subscriber, store it once (per
Message-ID), apply a proven "abmelden", and forward a copy of a human's reply to the author.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, delete, select
from sqlalchemy.exc import IntegrityError

from newsletter import tokens
from newsletter.errors import NewsletterError
from newsletter.events import record
from newsletter.i18n import N_, texts
from newsletter.replies import threads
from newsletter.replies.decode import Inbound, RawInbound, decode, is_list_unsubscribe_mail
from newsletter.replies.verify import reply_token, sender_is_authenticated
from newsletter.segments.activity import Activity, note
from newsletter.sending.single import send_transactional
from newsletter.sequences import hooks
from newsletter.sequences.config import configured
from newsletter.store import schema
from newsletter.store.emails import address_key, normalize_email
from newsletter.store.public_ids import TokenIds, resolve
from newsletter.store.subscribers import add_tags, apply_status, get_subscriber

if TYPE_CHECKING:
    from newsletter.project import Project

log = logging.getLogger("newsletter.replies")

#: Replies that say only this (quotes and signature aside) unsubscribe their sender.
UNSUBSCRIBE_WORDS = {"unsubscribe", "abmelden", "stop"}


_SUBJECT_PREFIX = re.compile(
    r"^\s*(re|aw|wg|fw|fwd|sv|antw|rif)\s*(\[\d+\])?\s*:\s*", re.IGNORECASE
)


# Lines that start the quoted original in common mail clients (English and German).
_QUOTE_START = re.compile(
    r"^\s*(On .+wrote:|Am .+schrieb.*:|-{2,}\s*(Original Message|Ursprüngliche Nachricht)\s*-{2,}"
    r"|(From|Von):\s.+)\s*$",
    re.IGNORECASE,
)


@dataclass
class StoredReply:
    id: int
    subscriber_id: int | None
    issue_id: int | None
    unsubscribed: bool
    #: "verified" | "unverified" | None (see `UNSUBSCRIBE_LABELS`)
    unsubscribe_request: str | None = None
    #: Already stored: SendGrid posted the same message (Message-ID) again.
    duplicate: bool = False


def new_text(text: str) -> str:
    """The reply's own words: without quoted lines, the quoted original and the signature."""
    kept: list[str] = []
    for line in text.splitlines():
        if line.rstrip() == "--" or _QUOTE_START.match(line):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def is_unsubscribe_request(text: str, subject: str = "") -> bool:
    """The reply says only "abmelden" (or "unsubscribe", "stop"), or it is mail to the
    List-Unsubscribe `mailto:`, whatever its body says."""
    if is_list_unsubscribe_mail(subject):
        return True
    words = new_text(text).strip().strip(".!。 \n\t").casefold()
    return unicodedata.normalize("NFC", words) in UNSUBSCRIBE_WORDS


def normalize_subject(subject: str) -> str:
    previous = None
    while previous != subject:
        previous = subject
        subject = _SUBJECT_PREFIX.sub("", subject)
    return " ".join(subject.split()).casefold()


@dataclass(frozen=True)
class Match:
    """Who wrote a reply about which issue, as a mailbox fetch found out (its References)."""

    subscriber_id: int | None
    issue_id: int | None


def store(
    project: Project, engine: Engine, inbound: Inbound, *, match: Match | None = None
) -> StoredReply:
    """Match the reply to its issue and subscriber, store it, and apply an unsubscribe request.
    `match` is what the caller already knows beyond the reply address and the subject."""
    key = tokens.secret_key()
    now = datetime.now(UTC)
    token = reply_token(inbound.recipients, key)
    if inbound.message_id is not None:
        earlier = _stored_before(engine, inbound.message_id)
        if earlier is not None:
            return earlier
    try:
        return _store_new(engine, inbound, token, now, match)
    except IntegrityError:
        # The same message posted twice at once: the other post stored it.
        if inbound.message_id is not None:
            earlier = _stored_before(engine, inbound.message_id)
            if earlier is not None:
                return earlier
        raise


def _stored_before(engine: Engine, message_id: str) -> StoredReply | None:
    r = schema.replies
    with engine.connect() as conn:
        row = conn.execute(
            select(r.c.id, r.c.subscriber_id, r.c.issue_id, r.c.unsubscribe_request).where(
                r.c.message_id == message_id
            )
        ).first()
    if row is None:
        return None
    return StoredReply(
        id=row.id,
        subscriber_id=row.subscriber_id,
        issue_id=row.issue_id,
        unsubscribed=False,
        unsubscribe_request=row.unsubscribe_request,
        duplicate=True,
    )


def _store_new(
    engine: Engine,
    inbound: Inbound,
    token: tokens.SubscriberToken | None,
    now: datetime,
    match: Match | None = None,
) -> StoredReply:
    unsubscribed = False
    with engine.begin() as conn:
        # Compared in the store's one form, so a From in punycode or NFD still finds them.
        sender_key = address_key(inbound.from_email)
        sender_id = (
            conn.execute(
                select(schema.subscribers.c.id).where(schema.subscribers.c.email_key == sender_key)
            ).scalar()
            if sender_key is not None
            else None
        )
        # Written from an address not on the list (an alias) to the address naming them.
        named = resolve(conn, token) if token is not None else TokenIds(None, None)
        token_subscriber = (
            conn.execute(
                select(schema.subscribers.c.id).where(
                    schema.subscribers.c.id == named.subscriber_id
                )
            ).scalar()
            if named.subscriber_id is not None
            else None
        )
        subscriber_id = sender_id if sender_id is not None else token_subscriber
        issue_id = named.issue_id
        if match is not None:
            subscriber_id = subscriber_id if subscriber_id is not None else match.subscriber_id
            issue_id = issue_id if issue_id is not None else match.issue_id
        if (
            issue_id is not None
            and conn.execute(
                select(schema.issues.c.id).where(schema.issues.c.id == issue_id)
            ).scalar()
            is None
        ):
            issue_id = None
        if issue_id is None and inbound.subject:
            wanted = normalize_subject(inbound.subject)
            sent = select(schema.sends.c.issue_id)
            candidates = conn.execute(
                select(schema.issues.c.id, schema.issues.c.subject)
                .where(schema.issues.c.id.in_(sent))
                .order_by(schema.issues.c.id.desc())
            ).all()
            matching = [row.id for row in candidates if normalize_subject(row.subject) == wanted]
            if subscriber_id is not None and len(matching) > 1:
                received = set(
                    conn.execute(
                        select(schema.deliveries.c.issue_id).where(
                            schema.deliveries.c.subscriber_id == subscriber_id
                        )
                    ).scalars()
                )
                matching = [i for i in matching if i in received] or matching
            issue_id = matching[0] if matching else None
        unsubscribe_request = None
        # An auto-reply quoting "abmelden" from the issue's footer asks for nothing.
        if not inbound.automatic and is_unsubscribe_request(inbound.text, inbound.subject):
            # Only the sender's own copy of the issue (its signed reply address), or DKIM for
            # the From address's domain with the From address as envelope sender, may
            # unsubscribe: anyone can put a subscriber's address in From.
            proven = sender_id is not None and (
                named.subscriber_id == sender_id or sender_is_authenticated(inbound)
            )
            unsubscribe_request = "verified" if proven else "unverified"
        reply_id = conn.execute(
            schema.replies.insert().values(
                subscriber_id=subscriber_id,
                issue_id=issue_id,
                from_email=inbound.from_email or "(unknown)",
                from_name=inbound.from_name,
                subject=inbound.subject,
                text=inbound.text,
                attachments=inbound.attachments,
                spam_score=inbound.spam_score,
                received_at=now,
                unsubscribe_request=unsubscribe_request,
                automatic=inbound.automatic,
                message_id=inbound.message_id,
                refers_to=inbound.refers_to,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        thread_id = threads.file_reply(
            conn,
            reply_id=int(reply_id),
            subscriber_id=subscriber_id,
            issue_id=issue_id,
            from_email=inbound.from_email or "(unknown)",
            automatic=inbound.automatic,
            at=now,
        )
        conn.execute(
            schema.replies.update()
            .where(schema.replies.c.id == reply_id)
            .values(thread_id=thread_id)
        )
        if subscriber_id is not None and not inbound.automatic:
            # A reply is the most honest sign of a reader (segments' `replied:` term).
            note(conn, [Activity(subscriber_id, "replied", now, issue_id)])
        if unsubscribe_request == "verified" and subscriber_id is not None:
            unsubscribed = apply_status(conn, [subscriber_id], "unsubscribed", "reply", now) > 0
            if unsubscribed:
                record(
                    conn,
                    f"reply:unsubscribe:{reply_id}",
                    "unsubscribe",
                    subscriber_id=subscriber_id,
                    issue_id=issue_id,
                    detail={"via": "reply"},
                )
    return StoredReply(
        id=int(reply_id),
        subscriber_id=subscriber_id,
        issue_id=issue_id,
        unsubscribed=unsubscribed,
        unsubscribe_request=unsubscribe_request,
    )


#: The author's copy of a reply, in the newsletter's language.
FORWARD_TEXT = {
    "intro": N_("Reply from {sender}:"),
    "intro_about": N_("Reply from {sender} ({issue}):"),
    "attachment": N_("[attachment: {name}, {size} bytes]"),
    "no_subject": N_("(no subject)"),
}


def forward(project: Project, inbound: Inbound, issue_title: str | None) -> None:
    """Send the author a copy at `reply_to` (as plain text; the reader's HTML is never relayed)."""

    sender = (
        f"{inbound.from_name} <{inbound.from_email}>" if inbound.from_name else inbound.from_email
    )
    t = texts(project.config.language, FORWARD_TEXT)
    intro = (
        t["intro_about"].format(sender=sender, issue=issue_title)
        if issue_title
        else t["intro"].format(sender=sender)
    )
    attachments = "".join(
        "\n" + t["attachment"].format(name=a["name"], size=a["size"]) for a in inbound.attachments
    )
    text = f"{intro}\n\n{inbound.text}{attachments}\n"
    html = f'<p>{escape(intro)}</p><pre style="white-space:pre-wrap">{escape(inbound.text + attachments)}</pre>'

    try:
        # Answering the copy should reach the reader, not the author's own address.
        reader: str | None = normalize_email(inbound.from_email)
    except NewsletterError:
        reader = None
    send_transactional(
        project,
        project.config.reply_to,
        f"Fwd: {inbound.subject or t['no_subject']}",
        html,
        text,
        reply_to=reader,
    )


def after_reply(project: Project, engine: Engine, stored: StoredReply, inbound: Inbound) -> None:
    """What a person's reply does besides being stored: the reader gets `[replies] tag`, and
    sequences triggered by "replied" (or by that tag) start. Never fails the reply itself."""
    if stored.duplicate or inbound.automatic or stored.subscriber_id is None or stored.unsubscribed:
        return

    tag = project.config.section("replies")["tag"]
    if not tag and not any(s.on_reply for s in configured(hooks.current_project(project))):
        return  # nothing a reply does here: no look-up per reply
    try:
        reader = get_subscriber(engine, stored.subscriber_id)
        if reader is None:
            return
        if tag and tag not in reader.tags:
            add_tags(engine, reader.email, [tag])
            hooks.tagged(project, engine, reader.id, [tag])
        hooks.replied(project, engine, reader.id)
    except NewsletterError as exc:
        log.warning("reply %s: tag or sequence not applied: %s", stored.id, exc)


def receive(project: Project, engine: Engine, raw: RawInbound) -> StoredReply:
    """The whole Inbound Parse step: decode, store, maybe forward."""
    inbound = decode(raw)
    stored = store(project, engine, inbound)
    after_reply(project, engine, stored, inbound)
    replies_config = project.config.section("replies")
    # Robots' answers are kept for the record, but nobody needs a copy of them.
    if stored.duplicate:
        return stored  # forwarded (or not) when it first came
    if replies_config["domain"] and replies_config["forward"] and not inbound.automatic:
        title = None
        if stored.issue_id is not None:
            with engine.connect() as conn:
                title = conn.execute(
                    select(schema.issues.c.title).where(schema.issues.c.id == stored.issue_id)
                ).scalar()
        try:
            forward(project, inbound, title)
        except Exception as exc:
            # The reply is stored; a failed copy must not make SendGrid post it again.
            log.warning("could not forward reply %s to reply_to: %s", stored.id, type(exc).__name__)
    return stored


# --- erasure and clean-up: the other writes of `replies`, kept here with their table -----------


def replies_written_by(conn: Connection, key: str, given: str = "") -> list[int]:
    """Ids of the replies whose From is this address (`email_key`) in any spelling: punycode
    or Unicode domain, NFC or NFD, any case. Compared in Python, in the store's one form
    (`address_key`): SQL's lower() differs between SQLite and PostgreSQL and knows no IDNA."""
    given = given.strip()
    found = []
    for reply_id, sender in conn.execute(select(schema.replies.c.id, schema.replies.c.from_email)):
        if sender == given or sender.lower() == key or address_key(sender) == key:
            found.append(reply_id)
    return found


def forget_replies(conn: Connection, reply_ids: Iterable[int]) -> int:
    """Delete these replies (erasure); how many went."""
    ids = sorted(set(reply_ids))
    if not ids:
        return 0
    return conn.execute(delete(schema.replies).where(schema.replies.c.id.in_(ids))).rowcount


#: Rows deleted per transaction by `purge_automatic_replies`, so a running server is never held up.
PURGE_CHUNK = 5000


def purge_automatic_replies(engine: Engine, before: datetime) -> int:
    """Delete automatic replies (out-of-office notes, bounces) received before `before`, in
    short transactions, and settle their threads; how many went."""
    automatic = schema.replies.c.get("automatic")
    if automatic is None:  # the column arrives with the replies work (m008)
        return 0
    old = automatic.is_(True) & (schema.replies.c.received_at < before)
    with engine.connect() as conn:
        touched = set(conn.execute(select(schema.replies.c.thread_id).where(old)).scalars())
    total = 0
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(select(schema.replies.c.id).where(old).limit(PURGE_CHUNK)).scalars()
            )
            if not ids:
                break
            total += forget_replies(conn, ids)
    if total:
        with engine.begin() as conn:
            threads.settle_threads(conn, touched)  # no empty thread keeps a robot's address
    return total
