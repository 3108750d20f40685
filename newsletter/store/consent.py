"""Consent evidence: how each person came onto the list (owns `consent_records` and
`consent_texts`).

A record is one event: a form signup, its confirmation, an `add` by the author, an
import. `proves_consent` marks the records that prove consent on their own (GDPR Art.
7(1)); `subscribers list --no-consent-evidence` lists everyone who has none of them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, func, insert, literal, select

from newsletter.store.schema import consent_records, consent_texts, subscribers
from newsletter.store.times import as_utc

#: Kinds of record.
SIGNUP = "signup"  # the form was submitted (unconfirmed yet, unless single opt-in)
CONFIRMATION = "confirmation"  # the confirmation button was pressed
ADDED = "added"  # `subscribers add` by the author
IMPORT = "import"  # `subscribers import`

#: What an import record without the export's own opt-in data says.
NO_EVIDENCE = "imported, no evidence"

USER_AGENT_CHARS = 500  # consent_records.user_agent


@dataclass(frozen=True)
class ConsentRecord:
    kind: str
    occurred_at: datetime
    ip: str | None
    user_agent: str | None
    page_url: str | None
    consent_text_hash: str | None
    source: str | None
    proves_consent: bool
    details: dict[str, Any] = field(hash=False)
    consent_text: str | None = None  # the words behind consent_text_hash, when known

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "occurred_at": self.occurred_at.isoformat(),
            "ip": self.ip,
            "user_agent": self.user_agent,
            "page_url": self.page_url,
            "consent_text_hash": self.consent_text_hash,
            "consent_text": self.consent_text,
            "source": self.source,
            "proves_consent": self.proves_consent,
            "details": dict(self.details),
        }


def text_hash(text: str) -> str:
    """The version of a consent text: sha256 of its words (surrounding blanks aside)."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


def remember_text(conn: Connection, text: str) -> str:
    """Keep `text` under its hash (once), so a record's hash can be shown as the words."""
    digest = text_hash(text)
    known = conn.execute(
        select(consent_texts.c.text_hash).where(consent_texts.c.text_hash == digest)
    ).first()
    if known is None:
        conn.execute(
            insert(consent_texts).values(
                text_hash=digest, text=text.strip(), first_used_at=datetime.now(UTC)
            )
        )
    return digest


def truncate_ip(address: str | None, *, keep_full: bool = False) -> str | None:
    """The client address as stored: the last octet (IPv4) or the last 80 bits (IPv6)
    zeroed, unless `keep_full`. Anything that is not an IP address is not stored."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if keep_full:
        return str(ip)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def record(conn: Connection, subscriber_id: int, kind: str, **fields: Any) -> None:
    """Store one consent record for the subscriber (in the caller's transaction); `fields`
    are `record_values`'s keywords."""
    conn.execute(insert(consent_records).values(**record_values(subscriber_id, kind, **fields)))


def record_values(
    subscriber_id: int,
    kind: str,
    *,
    occurred_at: datetime | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    page_url: str | None = None,
    consent_text_hash: str | None = None,
    source: str | None = None,
    proves_consent: bool = False,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The row `record` inserts, for callers that insert many at once (the importer)."""
    return {
        "subscriber_id": subscriber_id,
        "kind": kind,
        "occurred_at": occurred_at or datetime.now(UTC),
        "ip": ip,
        "user_agent": user_agent[:USER_AGENT_CHARS] if user_agent else None,
        "page_url": page_url or None,
        "consent_text_hash": consent_text_hash,
        "source": source[:200] if source else None,
        "proves_consent": proves_consent,
        "details": dict(details or {}),
    }


def record_imported(
    conn: Connection,
    ids: list[int],
    with_evidence: list[dict[str, Any]],
    details: dict[str, Any],
    source: str,
    stamp: datetime,
) -> None:
    """`import` records for one chunk of new subscribers (`ids`, inserted at `stamp`): the
    given ones (`record_values`, with the export's opt-in data), and "imported, no
    evidence" with `details` for the rest, in one INSERT ... SELECT (a big plain import
    pays little for them)."""
    if not ids:
        return
    if with_evidence:
        conn.execute(insert(consent_records), with_evidence)
    conditions = [
        subscribers.c.id.between(min(ids), max(ids)),
        # This chunk's rows only: another writer's rows in the id range have other times.
        subscribers.c.updated_at == stamp,
    ]
    if with_evidence:
        conditions.append(~exists().where(consent_records.c.subscriber_id == subscribers.c.id))
    columns = ["subscriber_id", "kind", "occurred_at", "source", "proves_consent", "details"]
    query = select(
        subscribers.c.id,
        literal(IMPORT, consent_records.c.kind.type),
        literal(stamp, consent_records.c.occurred_at.type),
        literal(source[:200], consent_records.c.source.type),
        literal(False, consent_records.c.proves_consent.type),
        literal({**details, "evidence": NO_EVIDENCE}, consent_records.c.details.type),
    ).where(and_(*conditions))
    conn.execute(insert(consent_records).from_select(columns, query))


def count(conn: Connection, subscriber_id: int, kind: str) -> int:
    """How many records of `kind` the subscriber has (confirmation links carry it)."""
    return int(
        conn.execute(
            select(func.count()).where(
                consent_records.c.subscriber_id == subscriber_id, consent_records.c.kind == kind
            )
        ).scalar_one()
    )


def records_for(conn: Connection, subscriber_id: int) -> list[ConsentRecord]:
    """The subscriber's consent records, oldest first, with the consent texts' words."""
    rows = conn.execute(
        select(consent_records, consent_texts.c.text)
        .select_from(
            consent_records.outerjoin(
                consent_texts, consent_texts.c.text_hash == consent_records.c.consent_text_hash
            )
        )
        .where(consent_records.c.subscriber_id == subscriber_id)
        .order_by(consent_records.c.occurred_at, consent_records.c.id)
    ).all()
    return [
        ConsentRecord(
            kind=row.kind,
            occurred_at=as_utc(row.occurred_at),
            ip=row.ip,
            user_agent=row.user_agent,
            page_url=row.page_url,
            consent_text_hash=row.consent_text_hash,
            source=row.source,
            proves_consent=bool(row.proves_consent),
            details=dict(row.details or {}),
            consent_text=row.text,
        )
        for row in rows
    ]


def has_evidence() -> Any:
    """A condition on `subscribers`: the person has a record that proves consent."""
    return exists().where(
        consent_records.c.subscriber_id == subscribers.c.id,
        consent_records.c.proves_consent.is_(True),
    )
