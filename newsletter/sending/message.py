"""The neutral message model: what every transport is given, with no provider in it.

A `Message` is what all recipients of one send share (from, reply-to, subject, both bodies,
headers, categories, ids); a `Recipient` is one person's part (address, name, the values
for the per-recipient keys in the bodies, their unsubscribe URL, ids). A `Batch` is a message
plus up to a transport's `max_batch` recipients. Transports turn a batch into their own
wire form (a SendGrid v3 body, one SMTP message per recipient, one .eml per recipient).

`ids` are opaque string pairs that come back with the provider's events (for SendGrid: the
`custom_args`), so a webhook event can be matched to an issue, a send, a subscriber, or a
sequence step. They are never put into a message's headers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

from newsletter.tokens import secret_key_is_set

#: RFC 8058 one-click unsubscribe.
ONE_CLICK = "List-Unsubscribe=One-Click"
#: ASCII control characters (CR, LF, NUL ...) never belong in a header value.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def clean_header(value: str) -> str:
    """A header value with control characters (CR/LF header injection) replaced by a space."""
    return _CONTROL.sub(" ", value).strip()


@dataclass(frozen=True)
class Message:
    """What every recipient of a send shares."""

    from_email: str
    from_name: str
    subject: str
    html: str
    text: str
    reply_to: str | None = None
    #: Headers for everyone (List-Id, Precedence, Feedback-ID, ...).
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Tags for grouping in the provider's statistics (issue slug, "newsletter", "test").
    categories: tuple[str, ...] = ()
    #: Ids every recipient's events carry back (e.g. a sequence step).
    ids: Mapping[str, str] = field(default_factory=dict)
    #: `mailto:` address for List-Unsubscribe besides the URL (replies routed via a domain).
    unsubscribe_mailto: str | None = None
    #: Deliver later (only transports that `can_schedule`), grouped under `schedule_id`.
    send_at: datetime | None = None
    schedule_id: str | None = None
    #: Validate, deliver nothing (only transports that `has_sandbox`).
    sandbox: bool = False
    #: Settings the provider may apply to links and opens; both off unless asked.
    track_opens: bool = False
    track_clicks: bool = False
    #: Deliver even to an address the provider keeps on its bounce list: a confirmation
    #: the reader asked for, whose click then shows the address takes mail again.
    even_if_bounced: bool = False


#: Marks a message whose links are signed with the development key (outbox, dry run), so
#: the .eml file itself says why its unsubscribe link will not work.
DEVELOPMENT_KEY_HEADER = "X-Newsletter-Development-Key"


def marked_if_development_key(message: Message) -> Message:
    """`message`, with DEVELOPMENT_KEY_HEADER when NEWSLETTER_SECRET_KEY is not set."""
    if secret_key_is_set():
        return message
    note = "links are signed with a development key and will not work on a real server"
    return replace(message, headers={**message.headers, DEVELOPMENT_KEY_HEADER: note})


#: The default for a recipient without substitutions, ids or headers. A plain dict (a
#: mappingproxy cannot be pickled to and from worker processes); typed read-only, never changed.
_EMPTY: Mapping[str, str] = {}


class Recipient(NamedTuple):
    """One person's part of a message. A named tuple: a big send builds one per reader in
    worker processes and pickles it back, and tuples pickle fastest."""

    email: str
    name: str | None = None
    #: key in `html`/`text`/`subject` -> this person's value.
    substitutions: Mapping[str, str] = _EMPTY
    unsubscribe_url: str | None = None
    ids: Mapping[str, str] = _EMPTY
    headers: Mapping[str, str] = _EMPTY


@dataclass(frozen=True)
class Batch:
    message: Message
    recipients: list[Recipient]


class Reader(NamedTuple):
    """One reader of a bulk send in `Readers`: what is theirs alone, and substitutions that
    may be shared by everyone with the same personal fields."""

    email: str
    name: str | None
    #: Their unsubscribe URL: plain (see `Readers`), so it is also its own HTML and JSON text.
    unsubscribe_url: str
    subscriber_id: int
    #: With `shared`, the substitutions of everyone whose fields read alike, the same dict
    #: for all of them: its unsubscribe keys hold another reader's URL, which this reader's
    #: replaces. Without, this reader's own, complete.
    substitutions: Mapping[str, str]
    shared: bool


@dataclass(frozen=True)
class Readers:
    """A batch of a bulk send as a transport that writes its requests itself takes it
    (`Builder.readers`, `SendGridTransport.prepare_readers`): the same recipients as
    `Batch`, without a dict of substitutions and ids built per reader. Every reader's
    unsubscribe URL is plain: no character that HTML or JSON would escape, no `%%`, and
    shorter than `MAX_URL_CHARS`."""

    message: Message
    readers: list[Reader]
    #: The ids every reader carries alike, in their order: the issue's and the send's.
    ids: tuple[tuple[str, str], ...]
    #: The name of each reader's own id (their subscriber id as text).
    own_id: str
    #: The full `Recipient` of the reader at an index, as `Batch` would have it (for the
    #: rare reader the fast path leaves to the general one).
    recipient: Callable[[int], Recipient]


@lru_cache(maxsize=64)
def _pattern(keys: frozenset[str]) -> re.Pattern[str]:
    # Longest first, so a key that is a prefix of another never wins.
    return re.compile("|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True)))


def apply_substitutions(value: str, substitutions: Mapping[str, str]) -> str:
    """Replace each key by its value in one pass (so a value is never expanded again)."""
    if not substitutions:
        return value
    return _pattern(frozenset(substitutions)).sub(lambda m: substitutions[m.group(0)], value)


def unsubscribe_headers(message: Message, recipient: Recipient) -> dict[str, str]:
    """List-Unsubscribe (the URL, and the mailto when replies go through a domain) with
    RFC 8058's one-click Post header, for one recipient."""
    targets = []
    if recipient.unsubscribe_url:
        targets.append(f"<{recipient.unsubscribe_url}>")
    if message.unsubscribe_mailto:
        # Per recipient: the address may carry a substitution tag (a signed reply token).
        mailto = apply_substitutions(message.unsubscribe_mailto, recipient.substitutions)
        targets.append(f"<mailto:{mailto}?subject=unsubscribe>")
    headers: dict[str, str] = {}
    if targets:
        headers["List-Unsubscribe"] = ", ".join(targets)
        if recipient.unsubscribe_url:
            headers["List-Unsubscribe-Post"] = ONE_CLICK
    for name, value in recipient.headers.items():
        headers[name] = clean_header(value)
    return headers


def recipient_headers(message: Message, recipient: Recipient) -> dict[str, str]:
    """Every extra header one recipient's copy carries, on every transport: the message's
    (List-Id, Precedence, Feedback-ID ...), then the unsubscribe headers and the recipient's."""
    headers = {name: clean_header(value) for name, value in message.headers.items()}
    headers.update(unsubscribe_headers(message, recipient))
    return headers


def personal_reply_to(message: Message, recipient: Recipient) -> str | None:
    """Reply-To for one recipient (it may carry a substitution tag: a signed reply token)."""
    if not message.reply_to:
        return None
    return clean_header(apply_substitutions(message.reply_to, recipient.substitutions))


def personal_parts(message: Message, recipient: Recipient) -> tuple[str, str, str]:
    """(subject, text, html) for one recipient, substitutions applied."""
    subs = recipient.substitutions
    return (
        clean_header(apply_substitutions(message.subject, subs)),
        apply_substitutions(message.text, subs),
        apply_substitutions(message.html, subs),
    )
