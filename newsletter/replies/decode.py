"""Inbound Parse's form, as bytes, to one `Inbound` reply: each field in its own charset,
raw (full MIME) mode too, HTML reduced to text, header values on one clean line, and
auto-replies recognised by their headers or subject.
"""

from __future__ import annotations

import codecs
import email
import json
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser
from typing import Any

from newsletter.store.raw import storable_text

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
    # What proves the sender: SendGrid's DKIM verdicts ("{@example.de : pass}") and the SMTP
    # envelope's `from` (SPF proves nothing at a shared provider, so it is not kept).
    dkim: str = ""
    envelope_from: str = ""
    #: An out-of-office or other robot's answer (see `is_auto_reply`).
    automatic: bool = False
    #: The Message-ID header: a replayed post of the same message is stored once.
    message_id: str | None = None
    #: The Message-IDs it answers (References, else In-Reply-To), space-separated.
    refers_to: str | None = None


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


#: Labels that mail programs put on Windows-1252 text: Outlook and other Windows programs
#: say ISO-8859-1 (or US-ASCII) and write „ “ – € as the bytes 0x84 0x93 0x96 0x80, which
#: ISO-8859-1 reads as invisible control characters. Browsers read these labels as
#: Windows-1252 for that reason (the WHATWG Encoding Standard), and so does this.
_WINDOWS_1252_LABELS = frozenset(("iso8859-1", "ascii"))


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        codec = codecs.lookup(charset or "utf-8").name
    except (LookupError, ValueError):  # (ValueError: a name with a NUL in it)
        codec = "utf-8"
    if codec in _WINDOWS_1252_LABELS and not raw.isascii():
        return _windows_1252(raw)
    try:
        text = raw.decode(codec, errors="replace")
    except (LookupError, UnicodeError, ValueError):
        # A bytes-to-bytes codec (rot13, base64, hex) that a sender may declare, or one that
        # raises whatever `errors` says (idna).
        text = raw.decode("utf-8", errors="replace")
    return storable_text(text)


def _windows_1252(raw: bytes) -> str:
    """Text labelled ISO-8859-1 or US-ASCII: UTF-8 if it is that (a common mislabel too,
    and never valid by chance in Latin text), else Windows-1252; its five unassigned bytes
    stay what ISO-8859-1 makes of them, as in browsers."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors=_LATIN_1_FOR_UNASSIGNED)


def _latin_1(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    return error.object[error.start : error.end].decode("latin-1"), error.end


_LATIN_1_FOR_UNASSIGNED = "newsletter-latin-1-for-unassigned"
codecs.register_error(_LATIN_1_FOR_UNASSIGNED, _latin_1)


def _header_text(value: str) -> str:
    """Decode RFC 2047 words (=?UTF-8?Q?...?=) if a header still has them; a word labelled
    ISO-8859-1 or US-ASCII is read as the body's text is (`_windows_1252`)."""
    try:
        words = [
            (word, _header_charset(word, charset) if isinstance(word, bytes) else charset)
            for word, charset in decode_header(value)
        ]
        return storable_text(str(make_header(words)))
    except (ValueError, LookupError, UnicodeError):
        return value


def _header_charset(word: bytes, charset: str | None) -> str | None:
    """The charset to read an encoded word with: a label `_windows_1252` reads otherwise
    becomes UTF-8 or Windows-1252 as the bytes say (the label itself when neither fits)."""
    if charset is None or word.isascii():
        return charset
    try:
        if codecs.lookup(charset).name not in _WINDOWS_1252_LABELS:
            return charset
    except (LookupError, ValueError):
        return charset
    for codec in ("utf-8", "windows-1252"):
        try:
            word.decode(codec)
        except UnicodeDecodeError:
            continue
        return codec
    return charset


def _part_text(part: Any) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    return _decode(payload, part.get_content_charset())


def _from_mime(raw: RawInbound) -> RawInbound:
    """Raw mode ("POST the raw, full MIME message", and mail fetched over IMAP): turn the
    `email` field into the parsed mode's fields, so both work alike. The classic parser
    policy: header objects cost a hundred times more, and `decode` reads the headers itself."""

    message = email.message_from_bytes(raw.fields["email"])
    fields: dict[str, bytes] = {}
    for name in ("from", "to", "cc", "subject"):
        value = message.get(name)
        if value is not None:
            # 8-bit header bytes come back as surrogates: give back the bytes as sent.
            fields[name] = str(value).encode("utf-8", "surrogateescape")
    attachments: list[InboundAttachment] = []
    texts: dict[str, str] = {}
    for part in message.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        disposition = str(part.get("Content-Disposition", "")).split(";")[0].strip().lower()
        filename = part.get_filename()
        is_body = kind in ("text/plain", "text/html") and disposition != "attachment"
        if is_body and not (filename and disposition != "inline"):
            texts.setdefault("text" if kind == "text/plain" else "html", _part_text(part))
            continue
        number = len(attachments) + 1
        payload = part.get_payload(decode=True)
        attachments.append(
            InboundAttachment(
                field=f"attachment{number}",
                filename=_header_text(filename) if filename else f"attachment{number}",
                size=len(payload) if isinstance(payload, bytes) else 0,
            )
        )
    for name, content in texts.items():
        fields[name] = content.encode("utf-8")
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
    refers_to = _message_ids(headers.get("References") or headers.get("In-Reply-To"))
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
        dkim=_clean(get("dkim"))[:2000],
        envelope_from=envelope_from,
        # A mailbox provider's unsubscribe button is machine-made, but the reader's own request.
        automatic=is_auto_reply(headers, subject) and not is_list_unsubscribe_mail(subject),
        message_id=message_id,
        refers_to=refers_to,
    )


_MESSAGE_ID = re.compile(r"<[^<>\s]{1,250}>")
#: RFC 5322 lets mail programs leave out the middle of a long chain: the first (the issue)
#: and the newest are kept.
MAX_REFERENCES = 20


def _message_ids(value: object) -> str | None:
    """The Message-IDs in a References or In-Reply-To header, at most `MAX_REFERENCES`."""
    return " ".join(trim_references(_MESSAGE_ID.findall(str(value or "")))) or None


def trim_references(ids: list[str]) -> list[str]:
    """At most `MAX_REFERENCES` Message-IDs: the first (the issue) and the newest."""
    if len(ids) > MAX_REFERENCES:
        return ids[:1] + ids[-(MAX_REFERENCES - 1) :]
    return ids


#: The subject of the `mailto:` in our List-Unsubscribe header (`?subject=unsubscribe`).
LIST_UNSUBSCRIBE_SUBJECT = "unsubscribe"


def is_list_unsubscribe_mail(subject: str) -> bool:
    """Mail to the List-Unsubscribe `mailto:` (sent by a mailbox provider's button): its
    subject is exactly the one the header asks for; a reply would start with "Re:"."""
    return subject.strip().casefold() == LIST_UNSUBSCRIBE_SUBJECT


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
