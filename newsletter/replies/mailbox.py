"""Replies from any mailbox, over IMAP: `newsletter replies fetch`.

An author who sends through SMTP gets their readers' answers in their own mailbox. This reads
the folder named in `[replies.imap]` (imap-tools, TLS or STARTTLS; the password from
`NEWSLETTER_IMAP_PASSWORD`) and stores each reply exactly as an Inbound Parse reply is stored
(`store.store`: auto-replies marked, a proven "abmelden" applied, counted in stats).

A message is matched to its reader and issue, in this order:
1. the signed per-reader `reply+TOKEN@` address it was sent to;
2. `In-Reply-To`/`References` naming a Message-ID the tool sent (the ledger keeps them);
3. a sender on the list whose subject is that of a sent issue.

A message that matches none of these is left in the mailbox untouched: it is the author's mail,
not a reply. Matched messages are moved to `move_to`, or get the keyword `flag` (so the next
fetch skips them). Bounce reports (RFC 3464) are read as bounces of the right reader
(`bounces.py`) and never stored as replies. Fetching twice stores nothing twice: replies are
keyed by their Message-ID, bounces by the report's.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import logging
import re
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from typing import TYPE_CHECKING, Any

from imap_tools.errors import MailboxFolderSelectError, MailboxLoginError
from imap_tools.message import MailMessage
from sqlalchemy import Engine, select

from newsletter import tokens
from newsletter.errors import ConfigError, NewsletterError
from newsletter.events import ingest
from newsletter.replies import threads
from newsletter.replies.bounces import Bounce, is_delivery_report, read_delivery_report
from newsletter.replies.decode import Inbound, RawInbound, decode
from newsletter.replies.store import Match, after_reply, normalize_subject, store
from newsletter.replies.verify import reply_token
from newsletter.secrets_file import secret_from_environment
from newsletter.store import schema
from newsletter.store.emails import address_key
from newsletter.store.public_ids import resolve
from newsletter.tls import ca_certificate

if TYPE_CHECKING:
    from newsletter.project import Project

log = logging.getLogger(__name__)

PASSWORD_ENV = "NEWSLETTER_IMAP_PASSWORD"

#: Messages fetched and matched per round trip (and per ledger look-up of Message-IDs).
CHUNK = 200

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_ADDRESS = re.compile(r"<?[^\s<>;:]+@[^\s<>;:]+>?")


@dataclass
class FetchReport:
    """What one `replies fetch` did."""

    looked_at: int = 0
    stored: int = 0  # new replies (automatic ones included)
    automatic: int = 0
    already_stored: int = 0  # by an earlier fetch or post (the same Message-ID)
    unsubscribed: int = 0
    bounces: int = 0  # readers marked bounced by a delivery report
    unmatched: int = 0  # left in the mailbox
    reply_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Fetched:
    uid: str
    raw: bytes


def imap_settings(project: Project) -> dict[str, Any]:
    """`[replies.imap]`, with its CA certificate read (`ca_data`): a ConfigError names a
    missing table or a bad `ca_file` before anything connects."""
    settings = project.config.section("replies")["imap"]
    if settings is None:
        raise ConfigError(
            f"{project.config.path}: no [replies.imap] table; add one with host and username "
            "(see docs/replies.md) to read replies from a mailbox"
        )
    ca_file = settings["ca_file"]
    return {
        **settings,
        "ca_data": ca_certificate(project, "replies.imap", ca_file) if ca_file else None,
    }


@contextmanager
def open_mailbox(settings: dict[str, Any], password: str) -> Iterator[Any]:
    """A logged-in imap-tools mailbox on the configured folder; every failure one line."""

    # deferred: imap_tools costs 48 ms at start-up
    from imap_tools import MailBox, MailBoxStartTls

    context = ssl.create_default_context(cadata=settings["ca_data"])
    host, security, timeout = settings["host"], settings["security"], settings["timeout"]
    port = settings["port"] or (993 if security == "tls" else 143)
    where = f"[replies.imap] {host}:{port}"
    try:
        box = (
            MailBox(host, port, timeout=timeout, ssl_context=context)
            if security == "tls"
            else MailBoxStartTls(host, port, timeout=timeout, ssl_context=context)
        )
    except ssl.SSLError as exc:
        raise NewsletterError(
            f"{where}: TLS failed ({exc.reason or exc}); check security and ca_file"
        ) from None
    except (TimeoutError, OSError, imaplib.IMAP4.error) as exc:
        raise NewsletterError(f"{where}: cannot connect ({exc}); check host and port") from None
    try:
        refused = NewsletterError(
            f"{where}: login as {settings['username']!r} refused; check username and {PASSWORD_ENV}"
        )
        # LOGIN takes ASCII only; SASL PLAIN carries UTF-8 (RFC 4616): "jörg", "pässwört".
        ascii_only = (settings["username"] + password).isascii()
        login = box.login if ascii_only else box.login_utf8
        try:
            login(settings["username"], password, initial_folder=None)
        except (MailboxLoginError, imaplib.IMAP4.error):
            raise refused from None
        try:
            box.folder.set(settings["folder"])
        except MailboxFolderSelectError:
            raise NewsletterError(
                f"{where}: no folder {settings['folder']!r}; check [replies.imap] folder"
            ) from None
        yield box
    finally:
        with suppress(Exception):  # the connection may be gone already; nothing to tidy then
            box.logout()


def fetch_replies(project: Project, engine: Engine, *, dry_run: bool = False) -> FetchReport:
    """Read new messages from the mailbox, store the replies, apply the bounces."""
    settings = imap_settings(project)
    password = secret_from_environment(PASSWORD_ENV)
    if not password:
        raise ConfigError(f"{PASSWORD_ENV} is not set; export the mailbox password")
    # deferred: imap_tools costs 48 ms at start-up
    from imap_tools import AND

    class _Raw(MailMessage):
        """imap-tools' message, keeping the bytes as the server sent them."""

        def __init__(self, fetch_data: list[Any]) -> None:
            super().__init__(fetch_data)
            self.raw: bytes = self._get_message_data_parts(fetch_data)[0]

    report = FetchReport()
    with open_mailbox(settings, password) as box:
        box.email_message_class = _Raw
        # Moved messages are gone from the folder; flagged ones are skipped by the search.
        criteria = "ALL" if settings["move_to"] else AND(no_keyword=settings["flag"])
        chunk: list[_Fetched] = []
        handled: list[str] = []
        for message in box.fetch(criteria, mark_seen=False, bulk=CHUNK):
            chunk.append(_Fetched(uid=str(message.uid), raw=message.raw))
            if len(chunk) == CHUNK:
                handled += _handle_chunk(project, engine, chunk, report, dry_run)
                chunk = []
        handled += _handle_chunk(project, engine, chunk, report, dry_run)
        if handled and not dry_run:
            # As UID ranges ("1:4000,4002:9001"): one command, where a list of single UIDs in
            # chunks made the server rewrite its index once per chunk (13 of 27 s for 9,000).
            ranges = uid_ranges(handled)
            if settings["move_to"]:
                if not box.folder.exists(settings["move_to"]):
                    box.folder.create(settings["move_to"])
                box.move(ranges, settings["move_to"])
            else:
                box.flag(ranges, settings["flag"], True)
    return report


def uid_ranges(uids: list[str]) -> str:
    """`["1", "2", "3", "7"]` -> `"1:3,7"`: an IMAP sequence set of the UIDs."""
    numbers = sorted({int(uid) for uid in uids})
    parts: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        parts.append(str(start) if start == previous else f"{start}:{previous}")
        if number is not None:
            start = previous = number
    return ",".join(parts)


def _parse(raw: bytes) -> Message:
    """Headers and structure only (the classic policy: no header objects, which cost a
    hundred times more and are not needed to sort a message)."""
    return email.message_from_bytes(raw)


def _referenced_ids(message: Message) -> list[str]:
    text = f"{message.get('In-Reply-To', '')} {message.get('References', '')}"
    return _MESSAGE_ID.findall(text)


def _handle_chunk(
    project: Project,
    engine: Engine,
    chunk: Sequence[_Fetched],
    report: FetchReport,
    dry_run: bool,
) -> list[str]:
    """Handle a chunk of messages; the uids of those that were ours (to move or flag)."""
    if not chunk:
        return []
    parsed = [(item, _parse(item.raw)) for item in chunk]
    referenced = {mid for _, message in parsed for mid in _referenced_ids(message)}
    for _, message in parsed:
        if is_delivery_report(message):
            referenced |= {
                b.original_message_id
                for b in read_delivery_report(message)
                if b.original_message_id
            }
    sent = _sent_message_ids(engine, referenced)
    handled = []
    for item, message in parsed:
        report.looked_at += 1
        if is_delivery_report(message):
            ours = _bounces(engine, message, sent, report, dry_run)
        else:
            ours = _reply(project, engine, item.raw, message, sent, report, dry_run)
        if ours:
            handled.append(item.uid)
        else:
            report.unmatched += 1
    return handled


def _sent_message_ids(engine: Engine, wanted: set[str]) -> dict[str, tuple[int | None, int | None]]:
    """Message-ID -> (subscriber id, issue id) of the deliveries that sent them."""
    if not wanted:
        return {}
    d = schema.deliveries
    with engine.connect() as conn:
        rows = conn.execute(
            select(d.c.message_id, d.c.subscriber_id, d.c.issue_id).where(
                d.c.message_id.in_(sorted(wanted)),
                d.c.message_id.like("<%"),  # the partial index's own condition: it is used
            )
        ).all()
        # A reader's answer to the author's answer: the same conversation.
        answered = threads.answered_message_ids(conn, wanted)
    return {**answered, **{row.message_id: (row.subscriber_id, row.issue_id) for row in rows}}


def _reply(
    project: Project,
    engine: Engine,
    raw: bytes,
    message: Message,
    sent: dict[str, tuple[int | None, int | None]],
    report: FetchReport,
    dry_run: bool,
) -> bool:
    inbound = decode(RawInbound(fields={"email": raw}))
    # The address it was delivered to: a mailbox provider may keep it only here.
    for header in ("Delivered-To", "X-Original-To"):
        inbound.recipients += [str(v) for v in message.get_all(header, [])]
    match = _match(engine, inbound, message, sent)
    if match is None:
        return False
    if dry_run:
        report.stored += 1
        return True
    stored = store(project, engine, inbound, match=match)
    after_reply(project, engine, stored, inbound)
    if stored.duplicate:
        report.already_stored += 1
    else:
        report.stored += 1
        report.reply_ids.append(stored.id)
        report.automatic += int(inbound.automatic)
        report.unsubscribed += int(stored.unsubscribed)
    return True


def _match(
    engine: Engine,
    inbound: Inbound,
    message: Message,
    sent: dict[str, tuple[int | None, int | None]],
) -> Match | None:
    """Who wrote it about which issue, or None when it is not a reply to the newsletter."""
    token = reply_token(inbound.recipients, tokens.secret_key())
    if token is not None:
        with engine.connect() as conn:
            named = resolve(conn, token)
        return Match(subscriber_id=named.subscriber_id, issue_id=named.issue_id)
    for referenced in reversed(_referenced_ids(message)):  # the nearest first
        if referenced in sent:
            subscriber_id, issue_id = sent[referenced]
            return Match(subscriber_id=subscriber_id, issue_id=issue_id)
    wanted = normalize_subject(inbound.subject)
    if not wanted or not inbound.from_email:
        return None
    s, i = schema.subscribers, schema.issues
    with engine.connect() as conn:
        # The store's one form of an address (punycode and NFD spellings find them too).
        sender_key = address_key(inbound.from_email)
        sender = (
            conn.execute(select(s.c.id).where(s.c.email_key == sender_key)).scalar()
            if sender_key is not None
            else None
        )
        if sender is None:
            return None
        received = conn.execute(
            select(i.c.id, i.c.subject)
            .join(schema.deliveries, schema.deliveries.c.issue_id == i.c.id)
            .where(schema.deliveries.c.subscriber_id == sender)
            .order_by(i.c.id.desc())
        ).all()
    for row in received:
        if normalize_subject(row.subject) == wanted:
            return Match(subscriber_id=sender, issue_id=row.id)
    return None


def _bounces(
    engine: Engine,
    message: Message,
    sent: dict[str, tuple[int | None, int | None]],
    report: FetchReport,
    dry_run: bool,
) -> bool:
    """Apply a delivery report's permanent failures as bounce events; False when it names
    nobody on the list (then it stays in the mailbox)."""

    found = read_delivery_report(message)
    if not found:
        return False
    report_id = str(message.get("Message-ID") or "").strip() or None
    s = schema.subscribers
    keys = sorted({bounce.address.lower() for bounce in found})
    with engine.connect() as conn:
        on_list = dict(
            conn.execute(select(s.c.email_key, s.c.id).where(s.c.email_key.in_(keys))).all()
        )
    events = []
    for bounce in found:
        subscriber_id = on_list.get(bounce.address.lower())
        delivered = sent.get(bounce.original_message_id or "")
        if delivered is not None and (subscriber_id is None or delivered[0] == subscriber_id):
            subscriber_id, issue_id = delivered
        else:
            issue_id = None
        if subscriber_id is None:
            continue
        events.append(_bounce_event(bounce, subscriber_id, issue_id, report_id))
    if not events:
        return False
    if not dry_run:
        ingest(engine, events)
    report.bounces += len(events)
    return True


def _bounce_event(
    bounce: Bounce, subscriber_id: int, issue_id: int | None, report_id: str | None
) -> dict[str, Any]:
    """A delivery report's failure in the neutral shape `events.ingest` applies (the shape of
    SendGrid's bounce event, which is where that shape comes from)."""
    event: dict[str, Any] = {
        # The same report read twice is one event.
        "sg_event_id": f"dsn:{report_id or bounce.original_message_id}:{subscriber_id}"[:100],
        "event": "bounce",
        "type": "bounce",
        "status": bounce.status,
        # The remote server's words, without the address it quotes (events keep no address).
        "reason": _ADDRESS.sub("(address)", bounce.diagnostic)[:500],
        "timestamp": int(datetime.now(UTC).timestamp()),
        schema.CUSTOM_ARG_SUBSCRIBER: subscriber_id,
    }
    if issue_id is not None:
        event[schema.CUSTOM_ARG_ISSUE] = issue_id
    return event
