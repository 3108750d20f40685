"""A real DNS server on 127.0.0.1 for `newsletter doctor`'s tests (dnslib), serving a zone
given as zone-file text:

    with ZoneServer('''
        example.com.   TXT   "v=spf1 include:sendgrid.net ~all"
        _dmarc.example.com. TXT "v=DMARC1; p=none"
    ''') as dns:
        newsletter doctor --nameserver 127.0.0.1:{dns.port}

A name not in the zone answers NXDOMAIN; a name in it without the asked type, an empty
NOERROR; a CNAME is returned for any type and followed within the zone, as a real
resolver's answer would be.
"""

from __future__ import annotations

from typing import Any

from dnslib import QTYPE, RCODE, RR, DNSLabel
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class _ZoneResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, zone: str) -> None:
        self.records: list[Any] = RR.fromZone(zone)
        self.queries: list[tuple[str, str]] = []

    def _at(self, name: DNSLabel) -> list[Any]:
        return [rr for rr in self.records if rr.rname == name]

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = request.q.qname
        qtype = QTYPE[request.q.qtype]
        self.queries.append((str(name).rstrip("."), qtype))
        for _ in range(8):  # follow CNAMEs inside the zone, as a recursive answer would
            here = self._at(name)
            if not here:
                if not reply.rr:
                    reply.header.rcode = RCODE.NXDOMAIN
                return reply
            exact = [rr for rr in here if QTYPE[rr.rtype] == qtype]
            if exact:
                reply.rr.extend(exact)
                return reply
            cnames = [rr for rr in here if QTYPE[rr.rtype] == "CNAME"]
            if not cnames:
                return reply
            reply.add_answer(cnames[0])
            name = cnames[0].rdata.label
        return reply


class ZoneServer:
    """A UDP DNS server for one zone text on 127.0.0.1 and a free port."""

    def __init__(self, zone: str) -> None:
        self.resolver = _ZoneResolver(zone)
        self.server = DNSServer(
            self.resolver,
            address="127.0.0.1",
            port=0,
            logger=DNSLogger(
                log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False
            ),
        )

    @property
    def port(self) -> int:
        return int(self.server.server.server_address[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> ZoneServer:
        self.server.start_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.server.server.server_close()
