"""The neutral batch as a SendGrid v3 Mail Send body: `mail_body` (a dict) and the same
bytes written fast (`mail_json`, and `SendGridTransport.prepare` with `personalization_json`),
with what every reader of a batch shares written once (`Shared`) and SendGrid's size limits
checked per reader (`recipient_problem`). No I/O: worker processes run it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii as _string  # json.dumps's own
from typing import Any, NamedTuple, cast

from newsletter.personalize import UNSUBSCRIBE_HTML_KEY, UNSUBSCRIBE_TEXT_KEY, text_twin
from newsletter.sending.message import (
    ONE_CLICK,
    Batch,
    Message,
    Readers,
    Recipient,
    clean_header,
    unsubscribe_headers,
)

#: SendGrid's limits (see shared/reference/sendgrid-and-email.md).
MAX_PERSONALIZATIONS = 1000
MAX_SUBSTITUTION_BYTES = 10000
MAX_CUSTOM_ARGS_BYTES = 10000
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
SMALLEST_LIMIT = min(MAX_SUBSTITUTION_BYTES, MAX_CUSTOM_ARGS_BYTES)


# --- the neutral batch as a v3 body -----------------------------------------------------------


def unique_categories(categories: tuple[str, ...] | list[str]) -> list[str]:
    unique: list[str] = []
    for category in categories:
        category = category[:MAX_CATEGORY_LENGTH]
        if category and category not in unique:
            unique.append(category)
    return unique[:MAX_CATEGORIES]


class Shared(NamedTuple):
    """What every reader of a batch has alike, written once for the request instead of in
    each personalization (`shared_by_all`): SendGrid gives each personalization the top
    level's headers and custom_args merged with its own. A bulk send's issue and send ids,
    its one-click header and the HTML copy of its unsubscribe URL were a third of each
    personalization."""

    #: custom_args every reader carries with the same value.
    ids: tuple[tuple[str, str], ...] = ()
    #: Every reader has RFC 8058's List-Unsubscribe-Post (an unsubscribe URL, no own headers).
    one_click: bool = False
    #: HTML-part keys whose value every reader has equal to their text twin's (`text_twin`:
    #: nothing in it that HTML escapes, as an unsubscribe URL): the request's parts use the
    #: text key for both, and no personalization carries the HTML key.
    html_keys: tuple[str, ...] = ()

    @property
    def id_keys(self) -> frozenset[str]:
        """The names of the lifted custom_args."""
        return frozenset(key for key, _ in self.ids)


NOTHING_SHARED = Shared()
_POST_HEADER = "List-Unsubscribe-Post"


def shared_by_all(message: Message, recipients: Sequence[Recipient]) -> Shared:
    """What `Shared` can lift out of these readers' personalizations (nothing for one reader:
    it would save no byte, and each lone reader's ids would make a request top of its own)."""
    if len(recipients) < 2:
        return NOTHING_SHARED
    one_click = all(r.unsubscribe_url and not r.headers for r in recipients) and not any(
        name.lower() == _POST_HEADER.lower() for name in message.headers
    )
    ids = []
    for key, value in recipients[0].ids.items():
        if (
            type(key) is str
            and type(value) is str
            and {r.ids.get(key) for r in recipients} == {value}
        ):
            ids.append((key, value))
    html_keys = []
    first = recipients[0].substitutions
    for key in first:
        twin = text_twin(key) if type(key) is str else None
        if twin is not None and all(
            r.substitutions.get(key, _ABSENT) == r.substitutions.get(twin, _ALSO_ABSENT)
            for r in recipients
        ):
            html_keys.append(key)
    return Shared(tuple(ids), one_click, tuple(html_keys))


_ABSENT, _ALSO_ABSENT = object(), object()


def _with_text_keys(text: str, html_keys: tuple[str, ...]) -> str:
    for key in html_keys:
        text = text.replace(key, cast("str", text_twin(key)))
    return text


def message_body(
    message: Message, *, asm_group_id: int | None = None, shared: Shared = NOTHING_SHARED
) -> dict[str, Any]:
    """Everything of a request except its personalizations; shared by every batch of a send
    (with what its readers share, `shared`)."""
    twins = shared.html_keys  # (wherever SendGrid substitutes: subject, parts, Reply-To)
    body: dict[str, Any] = {
        "from": {"email": message.from_email, "name": clean_header(message.from_name)},
        "subject": _with_text_keys(clean_header(message.subject), twins),
        # SendGrid wants text/plain first.
        "content": [
            {"type": "text/plain", "value": _with_text_keys(message.text, twins)},
            {"type": "text/html", "value": _with_text_keys(message.html, twins)},
        ],
        "categories": unique_categories(message.categories),
        # Explicit, private by default: our footer is the unsubscribe, links stay as written.
        "tracking_settings": {
            "subscription_tracking": {"enable": False},
            "click_tracking": {"enable": message.track_clicks, "enable_text": False},
            "open_tracking": {"enable": message.track_opens},
        },
    }
    if message.reply_to:
        body["reply_to"] = {"email": _with_text_keys(message.reply_to, twins)}
    headers = {k: clean_header(v) for k, v in message.headers.items()}
    if shared.one_click:
        headers[_POST_HEADER] = ONE_CLICK
    if headers:
        body["headers"] = headers
    if message.ids or shared.ids:
        body["custom_args"] = {**message.ids, **dict(shared.ids)}
    if asm_group_id is not None:
        body["asm"] = {"group_id": asm_group_id}
    settings: dict[str, Any] = {}
    if message.sandbox:
        settings["sandbox_mode"] = {"enable": True}
    if message.even_if_bounced:
        settings["bypass_bounce_management"] = {"enable": True}
    if settings:
        body["mail_settings"] = settings
    if message.send_at is not None:
        body["send_at"] = int(message.send_at.timestamp())
    if message.schedule_id is not None:
        body["batch_id"] = message.schedule_id
    return body


def personalization(
    message: Message, recipient: Recipient, shared: Shared = NOTHING_SHARED
) -> dict[str, Any]:
    """One recipient: address, substitutions, RFC 8058 headers and the ids for webhooks
    (less what the batch's readers share, `shared`)."""
    to: dict[str, str] = {"email": recipient.email}
    name = clean_header(recipient.name) if recipient.name else ""
    if name:  # a name of only spaces or control characters is no name
        to["name"] = name
    subs = recipient.substitutions
    p: dict[str, Any] = {
        "to": [to],
        "substitutions": {k: v for k, v in subs.items() if k not in shared.html_keys},
    }
    headers = unsubscribe_headers(message, recipient)
    if shared.one_click:
        del headers[_POST_HEADER]
    if headers:
        p["headers"] = headers
    lifted = shared.id_keys
    ids = {k: v for k, v in recipient.ids.items() if k not in lifted}
    if ids:
        p["custom_args"] = ids
    return p


def mail_body(batch: Batch, *, asm_group_id: int | None = None) -> dict[str, Any]:
    """The v3 body as a dict; what is posted is `mail_json`, these same bytes made faster."""
    if not 1 <= len(batch.recipients) <= MAX_PERSONALIZATIONS:
        raise ValueError(f"a request holds 1..{MAX_PERSONALIZATIONS} personalizations")
    message = batch.message
    shared = shared_by_all(message, batch.recipients)
    body = message_body(message, asm_group_id=asm_group_id, shared=shared)
    body["personalizations"] = [personalization(message, r, shared) for r in batch.recipients]
    return body


# --- the same body as JSON, fast ------------------------------------------------------------
# A big send encodes a 600-byte personalization per reader. Building dicts for `json.dumps`
# cost twice as long as writing the JSON text directly: the shared part is encoded once per
# send, each reader's part from C-escaped strings. The bytes equal `json.dumps(mail_body())`
# (a test compares them on awkward input).


def personalization_json(
    message: Message, recipient: Recipient, shared: Shared = NOTHING_SHARED
) -> str:
    """`json.dumps(personalization(message, recipient, shared))`."""
    name = recipient.name
    if name and not (name.isprintable() and not name[0].isspace() and not name[-1].isspace()):
        name = clean_header(name)  # (printable and trimmed: nothing to clean, and faster)
    subs, ids, url = recipient.substitutions, recipient.ids, recipient.unsubscribe_url
    if url and not message.unsubscribe_mailto and not recipient.headers:
        # The common case: one template per shape of reader (the same keys in the same order
        # for everyone of a send), its values escaped in C.
        shape = (bool(name), tuple(subs), tuple(ids), shared)
        values = [recipient.email, name] if name else [recipient.email]
        try:
            known = _TEMPLATES.get(shape)
            if known is None:
                if len(_TEMPLATES) > 64:  # (the shared ids differ from send to send)
                    _TEMPLATES.clear()
                known = _TEMPLATES[shape] = _template(*shape)
            template, own_subs, own_ids = known
            values += [subs[key] for key in own_subs] if shared.html_keys else subs.values()
            values.append(f"<{url}>")
            values += [ids[key] for key in own_ids]
            return template % tuple(map(_string, values))
        except TypeError:  # a key or value that is not a string: json's own rules, below
            pass
    # Everything else (a mailto or the reader's own headers in List-Unsubscribe, a value that
    # is not a string) is rare: the dict, as json writes it.
    return json.dumps(personalization(message, recipient, shared))


_Template = tuple[str, list[str], list[str]]
_TEMPLATES: dict[tuple[bool, tuple[str, ...], tuple[str, ...], Shared], _Template] = {}


def _template(
    named: bool, subs: tuple[str, ...], ids: tuple[str, ...], shared: Shared
) -> _Template:
    """A personalization with `%s` for each (JSON-escaped) value, in `personalization_json`'s
    order: email, name, the values of the substitutions and then of the custom_args not
    `shared` (the second and third parts name them), the List-Unsubscribe value between."""

    def keys(names: tuple[str, ...] | list[str]) -> str:
        # Keys are escaped here, once; a "%" in them must survive the % formatting.
        return "{" + ", ".join(_string(k).replace("%", "%%") + ": %s" for k in names) + "}"

    own_ids = [key for key in ids if key not in shared.id_keys]
    own_subs = [key for key in subs if key not in shared.html_keys]
    out = '{"to": [{"email": %s' + (', "name": %s' if named else "") + '}], "substitutions": '
    out += keys(own_subs)
    out += ', "headers": {"List-Unsubscribe": %s'
    if not shared.one_click:
        out += ', "' + _POST_HEADER + '": "' + ONE_CLICK + '"'
    out += "}"
    if own_ids:
        out += ', "custom_args": ' + keys(own_ids)
    return out + "}", own_subs, own_ids


def mail_json(batch: Batch, *, asm_group_id: int | None = None) -> bytes:
    """`json.dumps(mail_body(batch)).encode()`."""
    if not 1 <= len(batch.recipients) <= MAX_PERSONALIZATIONS:
        raise ValueError(f"a request holds 1..{MAX_PERSONALIZATIONS} personalizations")
    message = batch.message
    shared = shared_by_all(message, batch.recipients)
    top = shared_json(message, asm_group_id=asm_group_id, shared=shared)
    return joined_request(top, [personalization_json(message, r, shared) for r in batch.recipients])


def joined_request(top: str, personalizations: list[str]) -> bytes:
    people = ", ".join(personalizations)
    return "".join((top, ', "personalizations": [', people, "]}")).encode("ascii")


def shared_json(
    message: Message, *, asm_group_id: int | None = None, shared: Shared = NOTHING_SHARED
) -> str:
    """`message_body` as JSON without its closing brace: every batch of a send starts so."""
    return json.dumps(message_body(message, asm_group_id=asm_group_id, shared=shared))[:-1]


def _size(value: Mapping[str, str]) -> int:
    # (A lone surrogate, which JSON text can carry, counts as the 3 bytes it takes escaped.)
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _surely_small(values: Mapping[str, str], limit: int) -> bool:
    # JSON-escaped UTF-8 is at most 6 bytes a character (+6 per pair for quotes and ": ,"):
    # below that bound the exact (slower) size does not matter.
    chars = sum(map(len, values)) + sum(map(len, values.values())) + len(values)
    return 6 * chars + 2 < limit


def recipient_problem(recipient: Recipient) -> str | None:
    """Why SendGrid would refuse this recipient (too-large fields), or None."""
    subs = recipient.substitutions
    if not _surely_small(subs, MAX_SUBSTITUTION_BYTES) and _size(subs) >= MAX_SUBSTITUTION_BYTES:
        return (
            f"the personal values for {recipient.email} exceed SendGrid's "
            f"{MAX_SUBSTITUTION_BYTES}-byte substitution limit; shorten that subscriber's fields"
        )
    args = recipient.ids
    if not _surely_small(args, MAX_CUSTOM_ARGS_BYTES) and _size(args) >= MAX_CUSTOM_ARGS_BYTES:
        return f"custom_args for {recipient.email} exceed {MAX_CUSTOM_ARGS_BYTES} bytes"
    return None


# --- a bulk send's readers, written without a Recipient each ----------------------------------
# A send of an issue to a list builds nearly the same personalization for everyone: the
# substitutions of all who share a first name are one dict (`Reader.shared`), and only the
# address, name, unsubscribe URL and subscriber id are a reader's own. Their template is
# written once with the shared values in it, each reader's part is one % formatting. The
# bytes equal what `SendGridTransport.prepare` writes for the same readers as `Recipient`s
# (a test compares them); anything out of the ordinary goes the general way.

_URL_KEYS = frozenset((UNSUBSCRIBE_HTML_KEY, UNSUBSCRIBE_TEXT_KEY))
#: Each `Shared` once, so that a template made for it is found again by identity.
_INTERNED: dict[Shared, Shared] = {}
#: (id of a shared substitutions dict, named) -> (that dict, the Shared, template, URL slots).
_BAKED: dict[tuple[int, bool], tuple[Mapping[str, str], Shared, str, int]] = {}
_MAX_BAKED = 20000


def shared_by_readers(readers: Readers) -> Shared | None:
    """`shared_by_all` of the readers as recipients (each has an unsubscribe URL and no
    headers of their own, its subscriber id and the batch's `ids`), or None when there is
    nothing to gain (one reader) or the readers are unusual (the same subscriber twice)."""
    people, message = readers.readers, readers.message
    if len(people) < 2:
        return None
    first_id = people[0].subscriber_id
    if all(reader.subscriber_id == first_id for reader in people):
        return None
    one_click = not any(name.lower() == _POST_HEADER.lower() for name in message.headers)
    ids = tuple((key, value) for key, value in readers.ids if type(value) is str)
    if len(ids) != len(readers.ids):
        return None
    # Each distinct substitutions dict once: a shared one stands for all its readers (their
    # unsubscribe URLs are plain, so equal to their HTML twin, as in the shared dict).
    distinct = list({id(reader.substitutions): reader.substitutions for reader in people}.values())
    html_keys = []
    for key in people[0].substitutions:
        twin = text_twin(key) if type(key) is str else None
        if twin is not None and all(
            subs.get(key, _ABSENT) == subs.get(twin, _ALSO_ABSENT) for subs in distinct
        ):
            html_keys.append(key)
    shared = Shared(ids, one_click, tuple(html_keys))
    if len(_INTERNED) > 64:  # (each send has its own ids)
        _INTERNED.clear()
    return _INTERNED.setdefault(shared, shared)


def readers_json(
    readers: Readers, shared: Shared, lifted: int
) -> tuple[list[str], dict[int, str]] | None:
    """Each reader's personalization (`personalization_json` of their recipient), but those
    SendGrid would refuse, with why (`recipient_problem`) by index; None when a value is
    not text (the general path says which reader)."""
    message = readers.message
    if message.unsubscribe_mailto:
        return None  # (a List-Unsubscribe of two targets: the general path)
    string, clean = _string, clean_header
    parts: list[str] = []
    problems: dict[int, str] = {}
    try:
        for index, (email, name, url, sid, subs, alike) in enumerate(readers.readers):
            if name and not (
                name.isprintable() and not name[0].isspace() and not name[-1].isspace()
            ):
                name = clean(name)
            if not alike:
                part = personalization_json(message, readers.recipient(index), shared)
            else:
                named = bool(name)  # (and so text: `name` is a str or None)
                baked = _BAKED.get((id(subs), named))
                if baked is None or baked[0] is not subs or baked[1] is not shared:
                    baked = _bake(subs, named, shared, readers.own_id)
                quoted = f'"{url}"'
                own = (string(email), string(cast(str, name))) if named else (string(email),)
                part = baked[2] % (*own, *(quoted,) * baked[3], f'"<{url}>"', f'"{sid:d}"')
            if len(part) + lifted >= SMALLEST_LIMIT:
                problem = recipient_problem(readers.recipient(index))
                if problem:
                    problems[index] = problem
                    continue
            parts.append(part)
    except (TypeError, ValueError):
        return None
    return parts, problems


def _bake(
    subs: Mapping[str, str], named: bool, shared: Shared, own_id: str
) -> tuple[Mapping[str, str], Shared, str, int]:
    """`_template` for readers of the shared `subs`, with its values written in: what is
    left to fill is the address, name, unsubscribe URL (once per URL key the request does not
    lift), List-Unsubscribe and subscriber id."""
    template, own_subs, _ = _template(named, tuple(subs), (own_id, *shared.id_keys), shared)
    slot = "\x00"  # (never in JSON text: escaped as \\u0000)
    values = [slot, slot] if named else [slot]
    values += [slot if key in _URL_KEYS else _string(subs[key]) for key in own_subs]
    values += [slot, slot]
    text = template % tuple(values)
    baked = "%s".join(chunk.replace("%", "%%") for chunk in text.split(slot))
    if len(_BAKED) >= _MAX_BAKED:
        _BAKED.clear()
    entry = (subs, shared, baked, sum(key in _URL_KEYS for key in own_subs))
    _BAKED[(id(subs), named)] = entry
    return entry
