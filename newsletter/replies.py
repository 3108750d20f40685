"""Readers' replies from SendGrid Inbound Parse: decode, match to subscriber and issue, store.

We keep only what the author needs to read a reply: sender, subject, plain text (HTML is
reduced to text, never stored or shown as HTML), received time, and attachment names and
sizes (never their contents).
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, and_, select, true
from sqlalchemy.exc import IntegrityError

from newsletter import tokens
from newsletter.errors import NewsletterError, StoreError, TokenError
from newsletter.store import schema

if TYPE_CHECKING:
    from newsletter.project import Project

log = logging.getLogger("newsletter.replies")

#: Replies that say only this (quotes and signature aside) unsubscribe their sender.
UNSUBSCRIBE_WORDS = {"unsubscribe", "abmelden", "stop"}

_REPLY_ADDRESS = re.compile(r"reply\+([A-Za-z0-9_.\-]+)@", re.IGNORECASE)
_SUBJECT_PREFIX = re.compile(
    r"^\s*(re|aw|wg|fw|fwd|sv|antw|rif)\s*(\[\d+\])?\s*:\s*", re.IGNORECASE
)
# Lines that start the quoted original in common mail clients (English and German).
_QUOTE_START = re.compile(
    r"^\s*(On .+wrote:|Am .+schrieb.*:|-{2,}\s*(Original Message|Ursprüngliche Nachricht)\s*-{2,}"
    r"|(From|Von):\s.+)\s*$",
    re.IGNORECASE,
)
# Subjects that out-of-office robots write (German and English mail servers and clients).
_AUTO_REPLY_SUBJECT = re.compile(
    r"\b(automatische antwort|abwesenheitsnotiz|abwesenheitsmeldung|automatic reply"
    r"|auto[- ]?reply|out of (the )?office)\b",
    re.IGNORECASE,
)
# RFC 3834's header, and the older ones that vacation programs and Exchange set.
_AUTO_REPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress")
_AUTO_REPLY_PRECEDENCE = {"auto_reply", "bulk", "junk"}
# C0/C1 control characters except tab and newline: they could drive a terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class InboundAttachment:
    field: str
    filename: str
    size: int


@dataclass
class RawInbound:
    """The Inbound Parse form as bytes, before decoding."""

    fields: dict[str, bytes]
    attachments: list[InboundAttachment] = field(default_factory=list)


@dataclass
class Inbound:
    from_email: str
    from_name: str | None
    recipients: list[str]
    subject: str
    text: str
    spam_score: str | None
    attachments: list[dict[str, Any]]
    # What proves the sender: SendGrid's SPF verdict (for the envelope sender's domain),
    # its DKIM verdicts ("{@example.de : pass}") and the SMTP envelope's `from`.
    spf: str = ""
    dkim: str = ""
    envelope_from: str = ""
    #: An out-of-office or other robot's answer (see `is_auto_reply`).
    automatic: bool = False
    #: The Message-ID header: a replayed post of the same message is stored once.
    message_id: str | None = None


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


#: How `replies` shows a reply that asks to unsubscribe.
UNSUBSCRIBE_LABELS = {
    "verified": "unsubscribed by reply",
    "unverified": "asks to unsubscribe (unverified)",
}


class _TextExtractor(HTMLParser):
    """HTML to plain text: keeps text and line breaks, drops scripts, styles and all markup."""

    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        return raw.decode(codecs.lookup(charset or "utf-8").name, errors="replace")
    except LookupError:
        # Unknown, or a bytes-to-bytes codec (rot13, base64, hex) that a sender may declare.
        return raw.decode("utf-8", errors="replace")


def _header_text(value: str) -> str:
    """Decode RFC 2047 words (=?UTF-8?Q?...?=) if a header still has them."""
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeDecodeError):
        return value


def _from_mime(raw: RawInbound) -> RawInbound:
    """Raw mode ("POST the raw, full MIME message"): turn the `email` field into the parsed
    mode's fields, so both settings of Inbound Parse work."""
    import email
    import email.policy

    message = email.message_from_bytes(raw.fields["email"], policy=email.policy.default)
    fields: dict[str, bytes] = {}
    for name in ("from", "to", "cc", "subject"):
        value = message.get(name)
        if value is not None:
            fields[name] = str(value).encode("utf-8")
    attachments: list[InboundAttachment] = []
    for number, part in enumerate(message.iter_attachments(), start=1):  # type: ignore[attr-defined]
        payload = part.get_payload(decode=True) or b""
        attachments.append(
            InboundAttachment(
                field=f"attachment{number}",
                filename=part.get_filename() or f"attachment{number}",
                size=len(payload),
            )
        )
    for kind in ("plain", "html"):
        body = message.get_body(preferencelist=(kind,))  # type: ignore[attr-defined]
        if body is not None:
            try:
                content = body.get_content()
            except (LookupError, UnicodeDecodeError):
                payload = body.get_payload(decode=True)
                content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
            fields["text" if kind == "plain" else "html"] = content.encode("utf-8")
    # The header block as sent: what tells an auto-reply (parsed mode posts it as `headers`).
    fields["headers"] = re.split(rb"\r?\n\r?\n", raw.fields["email"], maxsplit=1)[0]
    for name in ("envelope", "spam_score", "SPF", "dkim"):
        if name in raw.fields:
            fields[name] = raw.fields[name]
    return RawInbound(fields=fields, attachments=attachments)


def decode(raw: RawInbound) -> Inbound:
    """Decode each field with the charset SendGrid names for it in `charsets`."""
    if "email" in raw.fields and "from" not in raw.fields:
        raw = _from_mime(raw)
    try:
        charsets = json.loads(raw.fields.get("charsets", b"{}").decode("utf-8", "replace"))
    except ValueError:
        charsets = {}
    if not isinstance(charsets, dict):
        charsets = {}

    def get(name: str) -> str:
        value = raw.fields.get(name)
        if value is None:
            return ""
        charset = charsets.get(name)
        return _decode(value, charset if isinstance(charset, str) else None)

    try:
        envelope = json.loads(get("envelope") or "{}")
    except ValueError:
        envelope = {}
    if not isinstance(envelope, dict):
        envelope = {}
    sender = envelope.get("from")
    envelope_from = _clean(sender).strip()[:320] if isinstance(sender, str) else ""
    from_name, from_email = parseaddr(_header_text(get("from")))
    if not from_email or "@" not in from_email:
        # The SMTP envelope sender, when the From header is unusable.
        from_email = envelope_from
    recipients = [address for _, address in getaddresses([get("to"), get("cc")]) if address]
    if isinstance(envelope.get("to"), list):
        recipients += [a for a in envelope["to"] if isinstance(a, str)]

    headers = HeaderParser().parsestr(get("headers"))
    subject = one_line(_header_text(get("subject")))
    message_id = one_line(str(headers.get("Message-ID", "")))[:998] or None
    text = get("text")
    if not text.strip() and get("html").strip():
        text = html_to_text(get("html"))
    info: dict[str, Any] = {}
    try:
        parsed = json.loads(get("attachment-info") or "{}")
        if isinstance(parsed, dict):
            info = parsed
    except ValueError:
        pass
    attachments = []
    for item in raw.attachments:
        meta = info.get(item.field)
        name = item.filename
        if isinstance(meta, dict) and isinstance(meta.get("filename"), str):
            name = meta["filename"]
        attachments.append({"name": _clean(name)[:255], "size": item.size})
    spam = _clean(get("spam_score")).strip() or None
    return Inbound(
        from_email=_clean(from_email).strip()[:320],
        from_name=(one_line(from_name)[:200] or None),
        recipients=recipients,
        subject=subject,
        text=_clean(text),
        spam_score=spam[:20] if spam else None,
        attachments=attachments,
        spf=_clean(get("SPF")).strip()[:40],
        dkim=_clean(get("dkim"))[:2000],
        envelope_from=envelope_from,
        automatic=is_auto_reply(headers, subject),
        message_id=message_id,
    )


def is_auto_reply(headers: Message, subject: str) -> bool:
    """An out-of-office notice, vacation message or other robot's answer: by its headers
    (RFC 3834 `Auto-Submitted`, `X-Autoreply`, `X-Autorespond`, `Precedence`,
    Exchange's `X-Auto-Response-Suppress`) or by its subject ("Abwesenheitsnotiz")."""

    def value(name: str) -> str:
        return str(headers.get(name, "")).strip().lower()

    if value("Auto-Submitted") not in ("", "no"):
        return True
    if any(value(name) not in ("", "no", "false") for name in _AUTO_REPLY_HEADERS):
        return True
    if value("Precedence") in _AUTO_REPLY_PRECEDENCE:
        return True
    return bool(_AUTO_REPLY_SUBJECT.search(subject))


def _clean(value: str) -> str:
    # PostgreSQL text cannot hold NUL; CR LF becomes LF.
    return value.replace("\x00", "").replace("\r\n", "\n")


def one_line(value: str) -> str:
    """A header value as one clean line: an encoded word may decode to CR/LF or other
    control characters, which must never reach a header we write (the forwarded copy)."""
    return " ".join(_CONTROL.sub(" ", _clean(value)).split())


def strip_terminal_controls(value: str) -> str:
    """What `replies show` prints: the text with control characters (escape codes) removed."""
    return _CONTROL.sub("", value)


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


def is_unsubscribe_request(text: str) -> bool:
    words = new_text(text).strip().strip(".!。 \n\t").casefold()
    return unicodedata.normalize("NFC", words) in UNSUBSCRIBE_WORDS


def normalize_subject(subject: str) -> str:
    previous = None
    while previous != subject:
        previous = subject
        subject = _SUBJECT_PREFIX.sub("", subject)
    return " ".join(subject.split()).casefold()


def _reply_token(recipients: list[str], key: str) -> tokens.SubscriberToken | None:
    """The first validly signed `reply+TOKEN@` address among the recipients."""
    for address in recipients:
        found = _REPLY_ADDRESS.search(address)
        if not found:
            continue
        try:
            return tokens.read_token(tokens.REPLY, found.group(1), key=key)
        except TokenError:
            continue
    return None


# One DKIM verdict in SendGrid's `dkim` field: "{@example.de : pass, @sendgrid.info : fail}".
_DKIM_VERDICT = re.compile(r"@([A-Za-z0-9.\-]+)\s*:\s*([A-Za-z]+)")


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().strip("<>").rstrip(".").lower()


def _aligned(authenticated: str, sender: str) -> bool:
    """Whether a domain that passed SPF/DKIM vouches for the sender's domain: the same, or
    one inside the other (DMARC's relaxed alignment without a public-suffix list; a check
    cannot pass for a bare suffix such as `de`, which publishes no SPF record or DKIM key)."""
    if not authenticated or not sender:
        return False
    return (
        authenticated == sender
        or authenticated.endswith("." + sender)
        or sender.endswith("." + authenticated)
    )


def sender_is_authenticated(inbound: Inbound) -> bool:
    """SPF passed for the envelope sender's domain, or a DKIM signature passed, for the
    domain of the From address. A From header alone proves nothing."""
    domain = _domain(inbound.from_email)
    if inbound.spf.strip().lower() == "pass" and _aligned(_domain(inbound.envelope_from), domain):
        return True
    return any(
        verdict.lower() == "pass" and _aligned(signer.lower().rstrip("."), domain)
        for signer, verdict in _DKIM_VERDICT.findall(inbound.dkim)
    )


def store(project: Project, engine: Engine, inbound: Inbound) -> StoredReply:
    """Match the reply to its issue and subscriber, store it, and apply an unsubscribe request."""
    key = tokens.secret_key()
    now = datetime.now(UTC)
    token = _reply_token(inbound.recipients, key)
    if inbound.message_id is not None:
        earlier = _stored_before(engine, inbound.message_id)
        if earlier is not None:
            return earlier
    try:
        return _store_new(engine, inbound, token, now)
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
    engine: Engine, inbound: Inbound, token: tokens.SubscriberToken | None, now: datetime
) -> StoredReply:
    unsubscribed = False
    with engine.begin() as conn:
        sender_id = conn.execute(
            select(schema.subscribers.c.id).where(
                schema.subscribers.c.email_key == inbound.from_email.lower()
            )
        ).scalar()
        # Written from an address not on the list (an alias) to the address naming them.
        token_subscriber = (
            conn.execute(
                select(schema.subscribers.c.id).where(
                    schema.subscribers.c.id == token.subscriber_id
                )
            ).scalar()
            if token is not None and token.subscriber_id
            else None
        )
        subscriber_id = sender_id if sender_id is not None else token_subscriber
        issue_id = token.issue_id if token is not None else None
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
        if not inbound.automatic and is_unsubscribe_request(inbound.text):
            # Only the sender's own copy of the issue, or a sender that SPF/DKIM vouch for,
            # may unsubscribe: anyone can put a subscriber's address in From.
            proven = sender_id is not None and (
                (token is not None and token.subscriber_id == sender_id)
                or sender_is_authenticated(inbound)
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
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        if unsubscribe_request == "verified" and subscriber_id is not None:
            from newsletter.events import apply_status, record

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


def forward(project: Project, inbound: Inbound, issue_title: str | None) -> None:
    """Send the author a copy at `reply_to` (as plain text; the reader's HTML is never relayed)."""
    from html import escape

    from newsletter.sending.single import send_transactional

    sender = (
        f"{inbound.from_name} <{inbound.from_email}>" if inbound.from_name else inbound.from_email
    )
    about = f" ({issue_title})" if issue_title else ""
    intro = f"Reply from {sender}{about}:"
    attachments = "".join(
        f"\n[attachment: {a['name']}, {a['size']} bytes]" for a in inbound.attachments
    )
    text = f"{intro}\n\n{inbound.text}{attachments}\n"
    html = f'<p>{escape(intro)}</p><pre style="white-space:pre-wrap">{escape(inbound.text + attachments)}</pre>'
    from newsletter.store.emails import normalize_email

    try:
        # Answering the copy should reach the reader, not the author's own address.
        reader: str | None = normalize_email(inbound.from_email)
    except NewsletterError:
        reader = None
    send_transactional(
        project,
        project.config.reply_to,
        f"Fwd: {inbound.subject or '(no subject)'}",
        html,
        text,
        reply_to=reader,
    )


def receive(project: Project, engine: Engine, raw: RawInbound) -> StoredReply:
    """The whole Inbound Parse step: decode, store, maybe forward."""
    inbound = decode(raw)
    stored = store(project, engine, inbound)
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


@dataclass
class ReplyRow:
    id: int
    received_at: datetime
    from_email: str
    from_name: str | None
    subject: str
    text: str
    issue_slug: str | None
    subscriber_id: int | None
    attachments: list[dict[str, Any]]
    spam_score: str | None
    automatic: bool = False
    unsubscribe_request: str | None = None
    #: The address on the list of the subscriber it was matched to (may differ from From).
    subscriber_email: str | None = None

    @property
    def note(self) -> str:
        """What `replies` shows beside the subject: an unsubscribe request, an auto-reply."""
        notes = []
        if self.automatic:
            notes.append("auto-reply")
        if self.unsubscribe_request:
            notes.append(UNSUBSCRIBE_LABELS[self.unsubscribe_request])
        return ", ".join(notes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "received_at": self.received_at.isoformat(),
            "from_email": self.from_email,
            "from_name": self.from_name,
            "subject": self.subject,
            "issue": self.issue_slug,
            "subscriber_id": self.subscriber_id,
            "text": self.text,
            "attachments": self.attachments,
            "spam_score": self.spam_score,
            "automatic": self.automatic,
            "unsubscribe_request": self.unsubscribe_request,
        }


def _rows(engine: Engine, where: Any = None) -> list[ReplyRow]:
    r, i, s = schema.replies, schema.issues, schema.subscribers
    query = (
        select(r, i.c.slug, s.c.email.label("subscriber_email"))
        .select_from(
            r.outerjoin(i, r.c.issue_id == i.c.id).outerjoin(s, r.c.subscriber_id == s.c.id)
        )
        .order_by(r.c.received_at, r.c.id)
    )
    if where is not None:
        query = query.where(where)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        ReplyRow(
            id=row.id,
            received_at=row.received_at
            if row.received_at.tzinfo
            else row.received_at.replace(tzinfo=UTC),
            from_email=row.from_email,
            from_name=row.from_name,
            subject=row.subject,
            text=row.text,
            issue_slug=row.slug,
            subscriber_id=row.subscriber_id,
            attachments=list(row.attachments or []),
            spam_score=row.spam_score,
            automatic=bool(row.automatic),
            unsubscribe_request=row.unsubscribe_request,
            subscriber_email=row.subscriber_email,
        )
        for row in rows
    ]


def list_replies(
    engine: Engine, issue_id: int | None = None, *, include_automatic: bool = False
) -> list[ReplyRow]:
    """Replies, oldest first; auto-replies only with `include_automatic`."""
    r = schema.replies
    conditions = [] if issue_id is None else [r.c.issue_id == issue_id]
    if not include_automatic:
        conditions.append(r.c.automatic.is_(False))
    return _rows(engine, and_(true(), *conditions))


def get_reply(engine: Engine, reply_id: int) -> ReplyRow:
    rows = _rows(engine, schema.replies.c.id == reply_id)
    if not rows:
        raise StoreError(f"no reply with id {reply_id}; list them with `newsletter replies`")
    return rows[0]
