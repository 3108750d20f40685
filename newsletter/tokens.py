"""Signed tokens for unsubscribe, confirmation and reply addresses (itsdangerous).

Unsubscribe tokens never expire: the law wants the links in old issues to keep working.
Each purpose has its own salt, so a token made for one cannot be used for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from itsdangerous import (
    BadSignature,
    SignatureExpired,
    TimestampSigner,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)

from newsletter.errors import NewsletterError, TokenError

SECRET_ENV = "NEWSLETTER_SECRET_KEY"
# Used only where nothing can be sent for real (build, preview, outbox): links made with it
# look right but the server will not accept them.
_DEVELOPMENT_KEY = "newsletter-development-key-not-secret"
_warned = False

UNSUBSCRIBE = "unsubscribe"
CONFIRM = "confirm"
REPLY = "reply"
FORM = "signup-form"


def secret_key_is_set() -> bool:
    return bool(os.environ.get(SECRET_ENV))


def secret_key_missing(needed_for: str | None = None) -> str:
    """The one line that says the key is missing and how to get one."""
    why = f" ({needed_for} needs it: links signed without it are dead)" if needed_for else ""
    return (
        f"{SECRET_ENV} is not set{why}; run `newsletter secrets init` to make one in "
        "~/.config/newsletter/env, or set it to a long random string"
    )


def secret_key(required: bool = True) -> str:
    """The signing key from the environment (which the CLI fills from the user's secrets
    file, see `secrets_file`). Not `required`: the development key, with a warning."""
    key = os.environ.get(SECRET_ENV)
    if key:
        return key
    if required:
        raise NewsletterError(secret_key_missing())
    global _warned
    if not _warned:
        print(
            f"Warning: {SECRET_ENV} is not set; links are signed with a development key "
            "and will not work on a real server (`newsletter secrets init` makes a key).",
            file=sys.stderr,
        )
        _warned = True
    return _DEVELOPMENT_KEY


#: What a token names a subscriber or an issue by. In the API: a row id (an int), which the
#: token carries as its public id (`public_id`) and `read_token` turns back into the row id;
#: or a random public id (a str, stored by m015 for rows made before m018); or None (nobody,
#: e.g. the issue-only reply address). Tokens made before m015 carry row ids as such and
#: are still honoured: links in old issues must keep working.
Ref = int | str | None

#: A public id: 12 URL-safe base64 characters (72 bits).
_PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{8,32}")
PUBLIC_ID_LENGTH = 12

# A row id's public id is a keyed, reversible encoding of it (a synthetic-IV construction:
# a 32-bit tag = PRF(id), then id XOR PRF(tag), 40 + 32 bits), so it needs no column, no
# index and no work per inserted row, tells a reader nothing about the list's size or
# growth, and only the key's holder can turn it back. The tag also tells a public id made
# here from a random one that m015 stored (a random one passes its check once in 2**32).
_ID_BYTES = 5
_TAG_BYTES = 4
_MAX_DERIVED_ID = (1 << (8 * _ID_BYTES)) - 1
_id_keys: dict[str, tuple[Any, Any]] = {}
# The last id derived: a send asks for each reader's twice in a row (unsubscribe, reply).
_last_derived: tuple[int, str, str | None] = (0, "", None)


def _id_hashers(key: str) -> tuple[Any, Any]:
    """The two keyed BLAKE2b states (tag, pad) for `key`, made once per key."""
    found = _id_keys.get(key)
    if found is None:
        derived = hmac.new(key.encode(), b"newsletter public id", hashlib.sha256).digest()
        found = (
            hashlib.blake2b(key=derived, digest_size=_TAG_BYTES, person=b"public-id-tag"),
            hashlib.blake2b(key=derived, digest_size=_ID_BYTES, person=b"public-id-pad"),
        )
        _id_keys[key] = found
    return found


def public_id(row_id: int, *, key: str) -> str | None:
    """The public id links carry for `row_id` (12 characters); None for ids beyond 2**40."""
    global _last_derived
    if not 0 < row_id <= _MAX_DERIVED_ID:
        return None
    last_id, last_key, last_public = _last_derived
    if row_id == last_id and key == last_key:
        return last_public
    tagger, padder = _id_hashers(key)
    plain = row_id.to_bytes(_ID_BYTES, "big")
    mac = tagger.copy()
    mac.update(plain)
    tag = mac.digest()
    pad = padder.copy()
    pad.update(tag)
    hidden = (row_id ^ int.from_bytes(pad.digest(), "big")).to_bytes(_ID_BYTES, "big")
    public = base64.urlsafe_b64encode(hidden + tag).decode()
    _last_derived = (row_id, key, public)
    return public


def row_id_of(public: str, *, key: str) -> int | None:
    """The row id a public id made by `public_id` stands for; None for any other string
    (a random public id stored by m015, or garbage)."""
    if len(public) != PUBLIC_ID_LENGTH or not _PUBLIC_ID.fullmatch(public):
        return None
    raw = base64.urlsafe_b64decode(public)
    hidden, tag = raw[:_ID_BYTES], raw[_ID_BYTES:]
    tagger, padder = _id_hashers(key)
    pad = padder.copy()
    pad.update(tag)
    row_id = int.from_bytes(hidden, "big") ^ int.from_bytes(pad.digest(), "big")
    mac = tagger.copy()
    mac.update(row_id.to_bytes(_ID_BYTES, "big"))
    if not hmac.compare_digest(mac.digest(), tag) or row_id == 0:
        return None
    return row_id


def _carried(ref: Ref, key: str) -> Ref:
    """What a token carries for `ref`: a row id's public id (the row id itself only beyond
    the 2**40 that public ids cover)."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        return public_id(ref, key=key) or ref
    return ref


def _read_back(ref: Ref, key: str) -> Ref:
    """`_carried` undone: a public id made here becomes its row id again."""
    if isinstance(ref, str):
        found = row_id_of(ref, key=key)
        if found is not None:
            return found
    return ref


# Compact tokens (public ids only): one character saying which ids follow, then the issue's
# and the subscriber's public ids (12 characters each), then "." and the signature. No JSON
# and no base64, so a reply address stays within RFC 5321's 64 characters (59). Tokens made
# before (JSON with row ids) begin with "W" (base64 of "[") and are read as before.
_COMPACT_CODES = {(True, True): "1", (True, False): "2", (False, True): "3", (False, False): "4"}
_COMPACT_PARTS = {code: parts for parts, code in _COMPACT_CODES.items()}


@dataclass(frozen=True)
class SubscriberToken:
    """What a token names; `store.public_ids.resolve` turns it into row ids."""

    subscriber: Ref
    issue: Ref
    #: Confirmation links only: how many confirmations the person had when the link was
    #: made (None in links made before links carried it).
    confirmations: int | None = None


def _is_public(value: Ref) -> bool:
    return isinstance(value, str) and len(value) == PUBLIC_ID_LENGTH and _is_ref(value)


def _compact(subscriber: Ref, issue: Ref) -> str | None:
    """The compact value for these refs, or None if they need the JSON form (row ids)."""
    if not all(ref is None or _is_public(ref) for ref in (subscriber, issue)):
        return None
    code = _COMPACT_CODES[(issue is not None, subscriber is not None)]
    return f"{code}{issue or ''}{subscriber or ''}"


def _from_compact(value: str) -> SubscriberToken | None:
    parts = _COMPACT_PARTS.get(value[:1])
    if parts is None:
        return None
    has_issue, has_subscriber = parts
    rest = value[1:]
    if len(rest) != PUBLIC_ID_LENGTH * (has_issue + has_subscriber):
        raise TokenError("this link is not valid")
    issue = rest[:PUBLIC_ID_LENGTH] if has_issue else None
    subscriber = rest[-PUBLIC_ID_LENGTH:] if has_subscriber else None
    if not all(ref is None or _is_public(ref) for ref in (subscriber, issue)):
        raise TokenError("this link is not valid")
    return SubscriberToken(subscriber=subscriber, issue=issue)


def make_token(purpose: str, subscriber: Ref, issue: Ref = None, *, key: str) -> str:
    """A token naming `subscriber` and `issue` (row ids or public ids; a row id goes in as
    its public id, see `public_id`)."""
    serializer = URLSafeSerializer(key, salt=purpose)
    subscriber, issue = _carried(subscriber, key), _carried(issue, key)
    compact = _compact(subscriber, issue)
    if compact is None:
        return serializer.dumps([subscriber, issue])
    return serializer.make_signer(purpose).sign(compact).decode()


def _is_ref(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and _PUBLIC_ID.fullmatch(value) is not None


_BAD = "this link is not valid; it may have been altered or cut short"


def read_token(
    purpose: str, token: str, *, key: str, max_age: int | None = None
) -> SubscriberToken:
    """Check the signature (and age, for expiring purposes); raise TokenError if bad."""
    try:
        if max_age is None:
            serializer = URLSafeSerializer(key, salt=purpose)
            signed = serializer.make_signer(purpose).unsign(token).decode()
            compact = _from_compact(signed)
            if compact is not None:
                return SubscriberToken(
                    subscriber=_read_back(compact.subscriber, key),
                    issue=_read_back(compact.issue, key),
                )
            value = serializer.loads(token)
        else:
            value = URLSafeTimedSerializer(key, salt=purpose).loads(token, max_age=max_age)
    except SignatureExpired:
        raise TokenError("this link has expired; ask for a new one") from None
    except (BadSignature, UnicodeDecodeError):
        raise TokenError(_BAD) from None
    if (
        not isinstance(value, list)
        or len(value) not in (2, 3)
        or not all(_is_ref(v) for v in value[:2])
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value[2:])
    ):
        raise TokenError("this link is not valid")
    confirmations = value[2] if len(value) == 3 else None
    return SubscriberToken(
        subscriber=_read_back(value[0], key),
        issue=_read_back(value[1], key),
        confirmations=confirmations,
    )


def make_timed_token(
    purpose: str,
    subscriber: Ref,
    issue: Ref = None,
    *,
    key: str,
    confirmations: int | None = None,
) -> str:
    """For confirmations, which should expire (checked with `read_token(..., max_age=...)`).
    `confirmations` (how many the person has had) makes the link single-use at any speed:
    token times have whole seconds, a count does not."""
    payload: list[Ref | int] = [_carried(subscriber, key), _carried(issue, key)]
    if confirmations is not None:
        payload.append(confirmations)
    return URLSafeTimedSerializer(key, salt=purpose).dumps(payload)


def timed_token_issued_at(purpose: str, token: str, *, key: str) -> datetime:
    """When a timed token was made; call `read_token` first (this checks only the signature)."""
    try:
        _value, issued = URLSafeTimedSerializer(key, salt=purpose).loads(
            token, return_timestamp=True
        )
    except BadSignature:
        raise TokenError("this link is not valid; it may have been altered or cut short") from None
    return issued.astimezone(UTC)


def form_stamp(*, key: str) -> str:
    """A signed "shown at" time for the sign-up form's hidden `shown` field."""
    return TimestampSigner(key, salt=FORM).sign(b"shown").decode()


def form_stamp_age(stamp: str, *, key: str, now: float | None = None) -> float:
    """Seconds since the form with `stamp` was shown; TokenError if it was forged or altered."""
    try:
        _value, shown = TimestampSigner(key, salt=FORM).unsign(stamp, return_timestamp=True)
    except BadSignature:
        raise TokenError("the sign-up form's time stamp is not valid") from None
    return (now if now is not None else datetime.now(UTC).timestamp()) - shown.timestamp()


def unsubscribe_url(base_url: str | None, subscriber: Ref, issue: Ref, *, key: str) -> str:
    """`base_url/unsubscribe/TOKEN`; without a base_url, a placeholder host that says so.
    A row id goes into the token as its public id (`public_id`), never as such."""
    base = (base_url or "https://set-base_url-in-newsletter.toml.invalid").rstrip("/")
    return f"{base}/unsubscribe/{make_token(UNSUBSCRIBE, subscriber, issue, key=key)}"


def unsubscribe_url_maker(
    base_url: str | None, issue: Ref, *, key: str
) -> Callable[[int | str | None], str]:
    """`unsubscribe_url` for many subscribers of one issue, fast (a bulk send makes one URL
    per recipient): tokens itsdangerous reads back (a test checks), signed with the derived
    key and the HMAC's key schedule computed once."""
    base = (base_url or "https://set-base_url-in-newsletter.toml.invalid").rstrip("/")
    token = token_maker(UNSUBSCRIBE, issue, key=key)
    return lambda subscriber: f"{base}/unsubscribe/{token(subscriber)}"


def token_maker(purpose: str, issue: Ref, *, key: str) -> Callable[[int | str | None], str]:
    """`make_token(purpose, subscriber, issue)` for many subscribers (row or public ids), fast
    (see `unsubscribe_url_maker`): the same tokens, `read_token` reads them alike."""
    serializer = URLSafeSerializer(key, salt=purpose)
    signer = serializer.make_signer(purpose)
    issue = _carried(issue, key)

    def slow(subscriber: Ref) -> str:
        return make_token(purpose, subscriber, issue, key=key)

    if _compact(None, issue) is None or not _fast_signing_matches(signer):
        return slow
    inner, outer = _hmac_sha1_pads(signer.derive_key())
    b2a = binascii.b2a_base64
    issue_part = issue if isinstance(issue, str) else ""  # _compact checked: public or None
    with_subscriber = (_COMPACT_CODES[(issue is not None, True)] + issue_part).encode()
    length = PUBLIC_ID_LENGTH
    is_public = _PUBLIC_ID.fullmatch
    tagger, padder = _id_hashers(key)

    def token(subscriber: Ref) -> str:
        # The signature as itsdangerous writes it: URL-safe base64 without padding (binascii
        # and one translate: a bulk send makes one token per reader).
        if type(subscriber) is int and 0 < subscriber <= _MAX_DERIVED_ID:
            # `public_id(subscriber)`, written in (a bulk send derives one per reader); its
            # 9 bytes are 12 base64 characters without padding.
            tag_mac = tagger.copy()
            tag_mac.update(subscriber.to_bytes(_ID_BYTES, "big"))
            tag = tag_mac.digest()
            pad = padder.copy()
            pad.update(tag)
            hidden = (subscriber ^ int.from_bytes(pad.digest(), "big")).to_bytes(_ID_BYTES, "big")
            value = with_subscriber + b2a(hidden + tag, newline=False).translate(_URLSAFE)
        else:
            if type(subscriber) is int:
                subscriber = public_id(subscriber, key=key) or subscriber
            if not (
                isinstance(subscriber, str) and len(subscriber) == length and is_public(subscriber)
            ):
                return slow(subscriber)
            value = with_subscriber + subscriber.encode()
        mac = inner.copy()
        mac.update(value)
        signed = outer.copy()
        signed.update(mac.digest())
        signature = b2a(signed.digest(), newline=False).translate(_URLSAFE, b"=")
        return (value + b"." + signature).decode()

    return token


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _hmac_sha1_pads(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA1's inner and outer hashes with the key absorbed (RFC 2104, as the `hmac`
    module's own pure-Python path builds them): copying two SHA-1 states per token costs a
    third of copying an `hmac` object (0.8 against 2.7 us, one per reader of a bulk send).
    The tokens equal `hmac.new`'s and itsdangerous' (a test compares them)."""
    block = hashlib.sha1().block_size
    if len(key) > block:
        key = hashlib.sha1(key).digest()
    key = key.ljust(block, b"\0")
    return hashlib.sha1(key.translate(_IPAD)), hashlib.sha1(key.translate(_OPAD))


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _fast_signing_matches(signer: Any) -> bool:
    """The fast path assumes itsdangerous' defaults (HMAC-SHA1, django-concat, "." separator)."""
    try:
        sha1 = signer.digest_method(b"").name == "sha1"
    except (AttributeError, TypeError):
        return False
    return (
        sha1
        and getattr(signer, "key_derivation", None) == "django-concat"
        and getattr(signer, "sep", None) == b"."
        and type(getattr(signer, "algorithm", None)).__name__ == "HMACAlgorithm"
    )


def reply_address(domain: str, issue: Ref, *, key: str) -> str:
    """`reply+TOKEN@domain` naming only the issue (no subscriber). A reply to it is matched
    to its issue, but proves nothing about who wrote it."""
    return f"reply+{make_token(REPLY, None, issue, key=key)}@{domain}"


def reply_address_for(domain: str, issue: Ref, subscriber: Ref, key: str) -> str:
    """`reply+TOKEN@domain` naming the issue and the subscriber it was sent to. Only a reply
    to this address (or one whose DKIM and envelope sender prove the From address) can
    unsubscribe by saying "abmelden".

    SendGrid's `reply_to` is per message, not per personalization; a bulk send sets
    `reply_to` to `reply+{REPLY_TOKEN_TAG}@domain` and each personalization's
    `substitutions` to `{REPLY_TOKEN_TAG: reply_token_for(...)}` (SendGrid substitutes in
    reply_to too). Transports that build each message (SMTP, outbox) call this directly."""
    return f"reply+{reply_token_for(issue, subscriber, key)}@{domain}"


#: The substitution tag a SendGrid bulk send puts in `reply_to` (see `reply_address_for`).
REPLY_TOKEN_TAG = "%newsletter_reply_token%"


def reply_token_for(issue: Ref, subscriber: Ref, key: str) -> str:
    """The TOKEN of `reply_address_for`, for SendGrid's per-personalization substitutions."""
    return make_token(REPLY, subscriber, issue, key=key)
