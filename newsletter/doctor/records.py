"""DNS lookups for the doctor (dnspython), with a nameserver of the user's choice.

A name that does not exist and a name without records of the asked type are both "no
records" (an empty list); a server that does not answer is a `LookupFailed`, which the
checks show as such rather than as a missing record.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from newsletter.errors import ConfigError, NewsletterError

DEFAULT_DNS_PORT = 53


class LookupFailed(NewsletterError):
    """The DNS server did not answer (timeout, refused, SERVFAIL)."""


def parse_nameserver(value: str) -> tuple[str, int]:
    """`HOST`, `HOST:PORT` or `[IPv6]:PORT` as (IP address, port); ValueError if unusable."""
    host, port = value.strip(), DEFAULT_DNS_PORT
    if host.startswith("["):
        inner, _, rest = host[1:].partition("]")
        host = inner
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{value!r} is not HOST[:PORT]")
            port = _port(rest[1:], value)
    elif host.count(":") == 1:
        host, _, text = host.partition(":")
        port = _port(text, value)
    if not host:
        raise ValueError(f"{value!r} names no host")
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_UDP)
    except OSError:
        raise ValueError(f"cannot resolve the nameserver {host!r}; give its IP address") from None
    return str(infos[0][4][0]), port


def _port(text: str, value: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{value!r}: the port must be a number from 1 to 65535")
    return int(text)


@dataclass(frozen=True)
class MX:
    preference: int
    host: str


class Lookup:
    """Asks one resolver: the system's, or `nameserver` (HOST[:PORT]) alone."""

    def __init__(self, nameserver: str | None = None, timeout: float = 5.0) -> None:
        # deferred: dns.resolver costs 61 ms at start-up
        import dns.resolver

        if nameserver:
            address, port = parse_nameserver(nameserver)
            self.resolver = dns.resolver.Resolver(configure=False)
            self.resolver.nameservers = [address]
            self.resolver.port = port
        else:
            try:
                self.resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                raise ConfigError(
                    "this machine names no DNS server (/etc/resolv.conf); "
                    "pass --nameserver HOST[:PORT]"
                ) from None
        self.resolver.lifetime = timeout
        self.where = nameserver or "the system's DNS resolver"

    def _answer(self, name: str, rdtype: str) -> list[Any]:
        # deferred: dns.resolver costs 61 ms at start-up
        import dns.resolver

        try:
            answer = self.resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return []
        except dns.resolver.NoNameservers:
            raise LookupFailed(f"{self.where} failed to answer for {name} {rdtype}") from None
        except dns.exception.Timeout:
            raise LookupFailed(f"{self.where} did not answer for {name} {rdtype}") from None
        except dns.exception.DNSException as exc:
            raise LookupFailed(f"{name} {rdtype}: {exc}") from None
        # Only records of the asked name's final type (a CNAME chain ends in them).
        return [r for r in answer.rrset or () if r.rdtype == answer.rdtype]

    def txt(self, name: str) -> list[str]:
        """The TXT records at `name`, each one string (its character-strings joined)."""
        return [
            b"".join(record.strings).decode("utf-8", "replace")
            for record in self._answer(name, "TXT")
        ]

    def cname(self, name: str) -> str | None:
        """Where the CNAME at `name` points (no trailing dot), or None."""
        records = self._answer(name, "CNAME")
        return records[0].target.to_text().rstrip(".").lower() if records else None

    def mx(self, name: str) -> list[MX]:
        found = [
            MX(record.preference, record.exchange.to_text().rstrip(".").lower())
            for record in self._answer(name, "MX")
        ]
        return sorted(found, key=lambda mx: (mx.preference, mx.host))

    def addresses(self, name: str) -> list[str]:
        """The A and AAAA addresses of `name`."""
        return [r.address for kind in ("A", "AAAA") for r in self._answer(name, kind)]
