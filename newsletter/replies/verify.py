"""Who wrote a reply, as far as it can be proven: the signed `reply+TOKEN@` address it was
sent to, and SendGrid's SPF and DKIM verdicts for the sender's domain. A `From:` header
alone proves nothing: anyone can write anyone's address there.
"""

from __future__ import annotations

import re

from newsletter import tokens
from newsletter.errors import TokenError
from newsletter.replies.decode import Inbound

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
