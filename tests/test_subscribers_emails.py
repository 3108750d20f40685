"""Address normalization: the fast path must agree with email-validator exactly."""

from __future__ import annotations

import pytest

from newsletter.errors import StoreError
from newsletter.store.emails import _fast, normalize_email, normalize_email_slow

CORPUS = [
    # plain, the fast path's business
    "anna@example.com",
    "Anna.Schmidt@Example.DE",
    "first.last+tag@sub.mail.example.org",
    "o'brien@example.ie",
    "a_b-c=d?e^f`g{h|i}j~k!l#m$n%o&p*q/r@example.com",
    "x@a-b.example.com",
    "UPPER@UPPER.COM",
    "1234567890@example.museum",
    "user@example.c0m",  # digit in the TLD: email-validator decides
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "a@" + "b" * 63 + ".com",
    "a@" + "b" * 64 + ".com",
    "x@" + ".".join(["abcdefghi"] * 25) + ".com",  # over 254 characters
    # unusual: fall back to email-validator
    "jörg@müller.de",
    "info@MÜLLER.DE",
    "info@xn--mller-kva.de",
    "a@xn--80ak6aa92e.com",
    "user@bücher.example",
    '"quoted"@example.com',
    '"a b"@example.com',
    "user@[192.168.0.1]",
    "user@192.168.0.1",
    "user@localhost",
    "user@example.test",
    "user@example.local",
    "user@foo.invalid",
    "user@onion",
    "user@x.onion",
    "user@x.arpa",
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    "a@example..com",
    "a@-example.com",
    "a@example-.com",
    "a@ex--ample.com",
    "a@example.c",
    "a@example",
    "@example.com",
    "a@",
    "a@@example.com",
    "a b@example.com",
    "a\t@example.com",
    "a@exa mple.com",
    "Ünïcödé@example.com",
    "δοκιμή@παράδειγμα.δοκιμή",
    "用户@例子.广告",
    "a@example.com.",
    "a@_example.com",
    "a@sub_domain.example.com",
]


def slow(address: str) -> str | None:
    try:
        return normalize_email_slow(address)
    except StoreError:
        return None


def fast_or_slow(address: str) -> str | None:
    try:
        return normalize_email(address)
    except StoreError:
        return None


@pytest.mark.parametrize("address", CORPUS)
def test_fast_path_agrees_with_email_validator(address: str) -> None:
    expected = slow(address)
    fast = _fast(address)
    if fast is not None:
        # The fast path only ever answers for addresses email-validator accepts, identically.
        assert fast == expected
    assert fast_or_slow(address) == expected


def test_fast_path_takes_the_plain_addresses() -> None:
    assert _fast("Anna.Schmidt@Example.DE") == "Anna.Schmidt@example.de"
    assert _fast("jörg@müller.de") is None  # non-ASCII: email-validator's job
    assert _fast("info@xn--mller-kva.de") is None  # punycode: decoded by email-validator
    assert normalize_email("info@xn--mller-kva.de") == "info@müller.de"


def test_fast_path_agrees_on_generated_addresses() -> None:
    import random

    rng = random.Random(7)
    alphabet = "abcXYZ019.-_+'!#$%&*/=?^`{|}~@ äö"
    checked = 0
    for _ in range(3000):
        local = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        domain = "".join(rng.choice("abcXY019-.") for _ in range(rng.randint(0, 12)))
        tld = rng.choice(["de", "COM", "x", "test", "c0m", "", "museum"])
        address = f"{local}@{domain}.{tld}" if tld else f"{local}@{domain}"
        fast = _fast(address)
        if fast is not None:
            assert fast == slow(address), address
            checked += 1
    assert checked > 100  # the generator does hit the fast path


def test_error_names_the_address_and_reason() -> None:
    with pytest.raises(StoreError, match=r"'anna@' is not a valid email address: There must be"):
        normalize_email("anna@")
