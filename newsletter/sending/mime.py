"""One recipient's copy of a neutral message as RFC 5322 bytes (for SMTP and the outbox).

Written by hand rather than through `email.message`, for two reasons:
- speed: a copy per recipient, thousands a second; the parts are quoted-printable from
  `binascii` (C), so they are 7-bit clean for any server and any line length;
- header folding: `email` encodes long ASCII tokens (the List-Unsubscribe URL) as encoded-words
  and writes encoded-words longer than RFC 2047 allows. Here ASCII headers stay as they are,
  and non-ASCII ones become encoded-words of at most 75 characters, folded.

Headers: From, To, Subject, Reply-To, Date, Message-ID, the message's and the recipient's extra
headers (List-Unsubscribe, List-Id, Precedence ...), MIME-Version once, at the top.
The per-recipient ids are never written into the message (they would expose internal ids).
"""

from __future__ import annotations

import binascii
import contextlib
import uuid
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime, formataddr

from newsletter.sending.message import (
    Message,
    Recipient,
    clean_header,
    personal_parts,
    personal_reply_to,
    recipient_headers,
)

CRLF = "\r\n"


def header_value(name: str, value: str) -> str:
    """`value` as it goes after `Name: `: unchanged if ASCII, else folded encoded-words."""
    value = clean_header(value)
    if value.isascii():
        return value
    return Header(value, "utf-8", header_name=name).encode(linesep=CRLF, maxlinelen=76)


def address(email: str, name: str | None) -> tuple[str, bool]:
    """(header value, needs SMTPUTF8): a non-ASCII local part cannot be encoded."""
    local, _, domain = email.rpartition("@")
    if not domain.isascii():
        with contextlib.suppress(UnicodeError):
            domain = domain.encode("idna").decode("ascii")
    addr = f"{local}@{domain}"
    display = clean_header(name or "")
    if not addr.isascii():
        # SMTPUTF8: the whole header may be UTF-8; the name is quoted as usual.
        quoted = '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return (f"{quoted} <{addr}>" if display else addr), True
    return formataddr((display, addr), charset="utf-8"), False


def _qp(text: str) -> str:
    data = text.replace("\r\n", "\n").encode("utf-8")
    return binascii.b2a_qp(data, quotetabs=False, istext=True).decode("ascii").replace("\n", CRLF)


def _eight_bit(text: str) -> str | None:
    """The text as an 8bit body (CRLF lines), or None if a line is too long for SMTP (998)."""
    body = text.replace("\r\n", "\n")
    if max(map(len, body.split("\n")), default=0) > 998:
        return None
    return body.replace("\n", CRLF) + CRLF


def message_id(from_email: str) -> str:
    return f"<{uuid.uuid4().hex}@{from_email.rpartition('@')[2] or 'localhost'}>"


def date_header() -> str:
    """Now, for the Date header: `Mon, 07 Dec 2026 09:28:50 +0000` (RFC 5322; the `GMT`
    zone name is obsolete syntax there)."""
    return format_datetime(datetime.now(UTC))


def copy_for(
    message: Message,
    recipient: Recipient,
    *,
    date: str | None = None,
    msgid: str | None = None,
    eight_bit: bool = False,
) -> tuple[bytes, str, bool]:
    """(the complete message, its Message-ID, needs SMTPUTF8) for one recipient.

    `eight_bit`: the parts as 8bit UTF-8 where their lines allow (for an SMTP server that
    offers 8BITMIME: no encoding work, fewer lines); else quoted-printable, 7-bit clean."""
    subject, text, html = personal_parts(message, recipient)
    sender, utf8_from = address(message.from_email, message.from_name)
    to, utf8_to = address(recipient.email, recipient.name)
    msgid = msgid or message_id(message.from_email)
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {header_value('Subject', subject)}",
    ]
    reply_to = personal_reply_to(message, recipient)
    if reply_to:
        lines.append(f"Reply-To: {reply_to}")
    lines.append(f"Date: {date or date_header()}")
    lines.append(f"Message-ID: {msgid}")
    for name, value in recipient_headers(message, recipient).items():
        lines.append(f"{name}: {header_value(name, value)}")
    boundary = f"=_nl_{uuid.uuid4().hex}"
    lines += [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "",
    ]
    for subtype, content in (("plain", text), ("html", html)):
        raw = _eight_bit(content) if eight_bit else None
        lines += [
            f"--{boundary}",
            f'Content-Type: text/{subtype}; charset="utf-8"',
            f"Content-Transfer-Encoding: {'8bit' if raw is not None else 'quoted-printable'}",
            "",
            raw[:-2] if raw is not None else _qp(content),
        ]
    lines += [f"--{boundary}--", ""]
    return CRLF.join(lines).encode("utf-8"), msgid, utf8_from or utf8_to
