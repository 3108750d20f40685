"""What keeps bots and abuse away from the sign-up form (issue 26 item 4, issue 28 item 6).

Checks, in the order the form's POST meets them:

- `bot_reason`: the honeypot field was filled in, or the form came back sooner than
  `[subscribe] min_fill_seconds` after it was shown (its signed `shown` field), or that
  field was forged. A form without the field (one embedded in a blog, an archive page)
  skips the time check.
- `is_disposable`: the address is at a throwaway-mail domain (`[subscribe]
  block_disposable`, on by default; the list is the maintained `disposable-email-domains`
  package).
- `allow_network`: at most `[subscribe] rate_limit_per_hour` sign-ups per hour from one
  network: an IPv4 address, or an IPv6 /64 (one household or server gets a whole /64, so a
  full IPv6 address limits nothing).
- `ADDRESS_LIMITS`: at most one confirmation mail per address per 10 minutes and 3 per day
  (checked by `optin.signup`, in its transaction).

The limits live in the database (`store.signup_limits`), so every worker and process of
`serve` shares them. A blocked attempt is answered exactly like a successful one (the web
layer's job) and counted in `stats --list` (`record_blocked`).
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING

from disposable_email_domains import blocklist

from newsletter import tokens
from newsletter.errors import TokenError
from newsletter.insights import counters
from newsletter.store import signup_limits
from newsletter.store.signup_limits import Limit, Scope

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.project import Config

#: Confirmation mails to one address: one per 10 minutes, three per day.
ADDRESS_LIMITS = (Limit(1, timedelta(minutes=10)), Limit(3, timedelta(days=1)))


class BlockReason(StrEnum):
    """Why a sign-up was turned away (its counter is `blocked_<reason>`)."""

    BOT = "bot"  # honeypot filled in, form sent too fast, or its time stamp forged
    DOMAIN = "domain"  # a throwaway-mail domain
    NETWORK = "network"  # too many sign-ups from one IPv4 address or IPv6 /64
    ADDRESS = "address"  # too many confirmation mails to one address


def network_of(client_ip: str | None) -> str:
    """What the per-network limit counts: an IPv4 address, or the /64 of an IPv6 one (an
    IPv4-mapped IPv6 address is its IPv4 address). A client without an IP address (a Unix
    socket) is counted as itself: all of them share one limit."""
    value = (client_ip or "").strip()
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return value or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def bot_reason(
    config: Config, honeypot: str, shown: str | None, *, now: float | None = None
) -> BlockReason | None:
    """BOT when the honeypot is filled in, or the form's `shown` stamp is forged or younger
    than `[subscribe] min_fill_seconds`; else None."""
    if honeypot:
        return BlockReason.BOT
    if not shown:
        return None  # a form from elsewhere (an archive page, a blog): no stamp to check
    minimum = config.section("subscribe")["min_fill_seconds"]
    try:
        age = tokens.form_stamp_age(shown, key=tokens.secret_key(), now=now)
    except TokenError:
        return BlockReason.BOT
    return BlockReason.BOT if age < minimum else None


@cache
def _disposable_domains() -> frozenset[str]:
    return frozenset(blocklist)


def is_disposable(config: Config, email: str) -> bool:
    """Whether `email` (normalized) is at a throwaway-mail domain or a subdomain of one,
    unless `[subscribe] block_disposable = false`."""
    if not config.section("subscribe")["block_disposable"]:
        return False
    domain = email.rpartition("@")[2].lower().rstrip(".")
    blocked = _disposable_domains()
    parts = domain.split(".")
    return any(".".join(parts[i:]) in blocked for i in range(len(parts) - 1))


def network_limits(config: Config) -> tuple[Limit, ...]:
    return (Limit(config.section("subscribe")["rate_limit_per_hour"], timedelta(hours=1)),)


def allow_network(engine: Engine, config: Config, client_ip: str | None) -> bool:
    """Whether one more sign-up from this client's network fits the hourly limit (and if
    so, it is counted)."""
    network = network_of(client_ip)
    with engine.begin() as conn:
        return signup_limits.allow(
            conn, Scope.NETWORK, network, network_limits(config), secret=tokens.secret_key()
        )


def record_blocked(engine: Engine, reason: BlockReason) -> None:
    """Count a blocked sign-up for `stats --list`."""
    with engine.begin() as conn:
        counters.count_blocked_signup(conn, reason.value)
