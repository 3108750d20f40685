"""Who wrote a reply, as far as it can be proven: the signed `reply+TOKEN@` address it was
sent to, or SendGrid's DKIM verdict for the From address's domain together with an SMTP
envelope sender equal to the From address. A `From:` header alone proves nothing: anyone
can write anyone's address there; nor does SPF, which vouches only for the envelope's domain.
"""

from __future__ import annotations

import re

from newsletter import tokens
from newsletter.errors import TokenError
from newsletter.replies.decode import Inbound
from newsletter.store.emails import address_key

_REPLY_ADDRESS = re.compile(r"reply\+([A-Za-z0-9_.\-]+)@", re.IGNORECASE)


def reply_token(recipients: list[str], key: str) -> tokens.SubscriberToken | None:
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
    """Whether a domain that passed DKIM vouches for the sender's domain: the same, or
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
    """A DKIM signature passed for the From address's domain (or one aligned with it) and the
    SMTP envelope sender is the From address itself.

    SPF alone proves nothing about From: at a shared provider (gmail.com) it passes for any
    of its users, so `someone.else@gmail.com` could write `From: victim@gmail.com`. DKIM of
    gmail.com alone does not prove which gmail user wrote either; the provider does enforce
    the envelope sender of its own users, so both together name the person."""

    sender = address_key(inbound.from_email)
    if sender is None or address_key(inbound.envelope_from) != sender:
        return False
    domain = _domain(sender)
    return any(
        verdict.lower() == "pass" and _aligned(_idna(signer.lower().rstrip(".")), domain)
        for signer, verdict in _DKIM_VERDICT.findall(inbound.dkim)
    )


def _idna(domain: str) -> str:
    """A signer domain as the address keys spell domains (Unicode, not xn-- punycode)."""
    try:
        return domain.encode("ascii").decode("idna") if "xn--" in domain else domain
    except UnicodeError:
        return domain
