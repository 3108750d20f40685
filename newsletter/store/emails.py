"""Email address normalization: email-validator, with a fast path for plain addresses.

email-validator costs about 50 µs an address, which is 50 s for a million-row import.
Nearly every real address is plain ASCII `local@domain.tld`; for those a strict regex
(a subset of what email-validator accepts) gives the same answer in about a microsecond.
Anything unusual (non-ASCII, IDN/punycode, quoted local parts, odd lengths, reserved
domains) falls back to email-validator, so both paths agree (tests/test_subscribers_emails.py).
"""

from __future__ import annotations

import functools
import re

from newsletter.errors import StoreError

# RFC 5322 dot-atom local part (atext only), as email-validator allows without quoting.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
# Domain labels: letters, digits, inner hyphens; the TLD is 2-63 letters. Labels containing
# "--" are left to email-validator (xn-- punycode must be decoded to Unicode).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_FAST = re.compile(rf"({_ATEXT}{{1,64}}(?:\.{_ATEXT}+)*)@((?:{_LABEL}\.)+([A-Za-z]{{2,63}}))")


@functools.cache
def _special() -> frozenset[str]:
    # deferred: email-validator (with dnspython and idna) costs 60 ms; it is imported when an
    # address is first checked, which a send, `stats` or `sends` never does.
    from email_validator import SPECIAL_USE_DOMAIN_NAMES

    return frozenset(SPECIAL_USE_DOMAIN_NAMES)


def _fast(address: str) -> str | None:
    """The normalized address if it is plainly valid, else None (ask email-validator)."""
    match = _FAST.fullmatch(address)
    if match is None or len(address) > 254 or match.end(1) > 64:
        return None
    domain = match.group(2)
    # Punycode (xn--) must be decoded by email-validator; reserved TLDs are refused by it.
    if "--" in domain or match.group(3).lower() in _special():
        return None
    return address[: match.start(2)] + domain.lower()


def normalize_email(address: str) -> str:
    """The address as email-validator normalizes it (domain lower-cased, IDN as Unicode).

    Raises StoreError naming the address and the reason. Never looks up DNS.
    """
    address = address.strip()
    fast = _fast(address)
    if fast is not None:
        return fast
    if not address:
        raise StoreError("empty email address; give an address like name@example.com")
    if "\ufffd" in address:  # (email-validator takes it: any symbol may be in a local part)
        raise StoreError(
            f"{address!r} is not a valid email address: U+FFFD marks bytes that were no "
            "text (a wrong encoding); give the address as it is written"
        )
    return normalize_email_slow(address)


def normalize_email_slow(address: str) -> str:
    """email-validator alone (no fast path): the reference the fast path is tested against."""
    # deferred: email_validator costs 22 ms at start-up
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(address.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise StoreError(f"{address!r} is not a valid email address: {exc}") from None


def email_key(normalized: str) -> str:
    """The unique key of a normalized address: lower-cased, so case never doubles a person."""
    return normalized.lower()


def address_key(address: str) -> str | None:
    """The one form addresses are compared in everywhere (the store's `email_key`): the
    domain as Unicode (punycode `xn--` decoded by IDNA), the whole address in NFC, then
    lower-cased. `jörg@xn--exmple-cua.de`, its NFD spelling and `Jörg@EXÄMPLE.de` are one
    key. None for something that is not a valid address."""
    try:
        return email_key(normalize_email(address))
    except StoreError:
        return None
