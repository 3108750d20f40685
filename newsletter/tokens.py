"""Signed tokens for unsubscribe, confirmation and reply addresses (itsdangerous).

Unsubscribe tokens never expire: the law wants the links in old issues to keep working.
Each purpose has its own salt, so a token made for one cannot be used for another.
"""

from __future__ import annotations

import binascii
import hashlib
import os
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


def secret_key(required: bool = True) -> str:
    """The signing key from the environment; never from a file."""
    key = os.environ.get(SECRET_ENV)
    if key:
        return key
    if required:
        raise NewsletterError(
            f"{SECRET_ENV} is not set; set it to a long random string "
            "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    global _warned
    if not _warned:
        print(
            f"Warning: {SECRET_ENV} is not set; unsubscribe links use a development key "
            "and will not work on a real server.",
            file=sys.stderr,
        )
        _warned = True
    return _DEVELOPMENT_KEY


@dataclass(frozen=True)
class SubscriberToken:
    subscriber_id: int
    issue_id: int | None


def make_token(purpose: str, subscriber_id: int, issue_id: int | None = None, *, key: str) -> str:
    return URLSafeSerializer(key, salt=purpose).dumps([subscriber_id, issue_id])


def read_token(
    purpose: str, token: str, *, key: str, max_age: int | None = None
) -> SubscriberToken:
    """Check the signature (and age, for expiring purposes); raise TokenError if bad."""
    try:
        if max_age is None:
            value = URLSafeSerializer(key, salt=purpose).loads(token)
        else:
            value = URLSafeTimedSerializer(key, salt=purpose).loads(token, max_age=max_age)
    except SignatureExpired:
        raise TokenError("this link has expired; ask for a new one") from None
    except BadSignature:
        raise TokenError("this link is not valid; it may have been altered or cut short") from None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], int)
        or not (value[1] is None or isinstance(value[1], int))
    ):
        raise TokenError("this link is not valid")
    return SubscriberToken(subscriber_id=value[0], issue_id=value[1])


def make_timed_token(
    purpose: str, subscriber_id: int, issue_id: int | None = None, *, key: str
) -> str:
    """For confirmations, which should expire (checked with `read_token(..., max_age=...)`)."""
    return URLSafeTimedSerializer(key, salt=purpose).dumps([subscriber_id, issue_id])


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


def unsubscribe_url(
    base_url: str | None, subscriber_id: int, issue_id: int | None, *, key: str
) -> str:
    """`base_url/unsubscribe/TOKEN`; without a base_url, a placeholder host that says so."""
    base = (base_url or "https://set-base_url-in-newsletter.toml.invalid").rstrip("/")
    return f"{base}/unsubscribe/{make_token(UNSUBSCRIBE, subscriber_id, issue_id, key=key)}"


def unsubscribe_url_maker(
    base_url: str | None, issue_id: int | None, *, key: str
) -> Callable[[int], str]:
    """`unsubscribe_url` for many subscribers of one issue, fast (a bulk send makes one URL
    per recipient): tokens itsdangerous reads back (a test checks), signed with the derived
    key and the HMAC's key schedule computed once. The payload is never zlib-compressed
    (itsdangerous tries that on every token; for "[id,issue]" it almost never wins), so a
    rare token is a few characters longer than `unsubscribe_url`'s; both are valid."""
    base = (base_url or "https://set-base_url-in-newsletter.toml.invalid").rstrip("/")
    token = token_maker(UNSUBSCRIBE, issue_id, key=key)
    return lambda subscriber_id: f"{base}/unsubscribe/{token(subscriber_id)}"


def token_maker(purpose: str, issue_id: int | None, *, key: str) -> Callable[[int], str]:
    """`make_token(purpose, subscriber_id, issue_id)` for many subscribers, fast (see
    `unsubscribe_url_maker`); `read_token` reads both alike."""
    serializer = URLSafeSerializer(key, salt=purpose)
    signer = serializer.make_signer(purpose)
    if not _fast_signing_matches(signer):
        return lambda subscriber_id: str(serializer.dumps([subscriber_id, issue_id]))
    inner, outer = _hmac_sha1_pads(signer.derive_key())
    b2a = binascii.b2a_base64
    tail = "null" if issue_id is None else str(int(issue_id))

    def token(subscriber_id: int) -> str:
        # URL-safe base64 without padding, as itsdangerous writes it (binascii and one
        # translate: a bulk send makes one token per reader).
        payload = f"[{int(subscriber_id)},{tail}]".encode()
        value = b2a(payload, newline=False).translate(_URLSAFE, b"=")
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


def reply_address(domain: str, issue_id: int, *, key: str) -> str:
    """`reply+TOKEN@domain` naming only the issue (subscriber 0: nobody). A reply to it is
    matched to its issue, but proves nothing about who wrote it."""
    return f"reply+{make_token(REPLY, 0, issue_id, key=key)}@{domain}"


def reply_address_for(domain: str, issue_id: int, subscriber_id: int, key: str) -> str:
    """`reply+TOKEN@domain` naming the issue and the subscriber it was sent to. Only a reply
    to this address (or one whose SPF/DKIM passed) can unsubscribe by saying "abmelden".

    SendGrid's `reply_to` is per message, not per personalization; a bulk send sets
    `reply_to` to `reply+{REPLY_TOKEN_TAG}@domain` and each personalization's
    `substitutions` to `{REPLY_TOKEN_TAG: reply_token_for(...)}` (SendGrid substitutes in
    reply_to too). Transports that build each message (SMTP, outbox) call this directly."""
    return f"reply+{reply_token_for(issue_id, subscriber_id, key)}@{domain}"


#: The substitution tag a SendGrid bulk send puts in `reply_to` (see `reply_address_for`).
REPLY_TOKEN_TAG = "%newsletter_reply_token%"


def reply_token_for(issue_id: int, subscriber_id: int, key: str) -> str:
    """The TOKEN of `reply_address_for`, for SendGrid's per-personalization substitutions."""
    return make_token(REPLY, subscriber_id, issue_id, key=key)
