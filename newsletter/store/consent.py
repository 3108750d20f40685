"""Consent evidence: how each person came onto the list (owns `consent_records`,
`consent_texts` and `import_runs`).

A record is one event: a form signup, its confirmation, an `add` by the author, an
import, a resubscribe through the signed link. `proves_consent` marks the records that prove consent on their own (GDPR Art.
7(1)); `subscribers list --no-consent-evidence` lists everyone who has none of them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, exists, func, insert, select, update

# The kinds of record live where the import's reader process (no SQLAlchemy) reads them too.
from newsletter.consent_kinds import ADDED as ADDED
from newsletter.consent_kinds import CONFIRMATION as CONFIRMATION
from newsletter.consent_kinds import IMPORT as IMPORT
from newsletter.consent_kinds import KINDS as KINDS
from newsletter.consent_kinds import RESUBSCRIBE as RESUBSCRIBE
from newsletter.consent_kinds import SIGNUP as SIGNUP
from newsletter.store.schema import consent_records, consent_texts, import_runs, subscribers
from newsletter.store.times import as_utc

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


def record_imported(conn: Connection, with_evidence: list[dict[str, Any]]) -> None:
    """`import` records for the new subscribers of one chunk whose rows carried the export's
    opt-in data (`record_values`). The others point at their import's run (`import_run`)."""
    if with_evidence:
        conn.execute(insert(consent_records), with_evidence)


def import_run(
    conn: Connection, token: str, details: dict[str, Any], source: str, stamp: datetime
) -> int:
    """The id of the `import_runs` row of the import run `token` ("imported, no evidence",
    with `details`), made at its first call in the import's write transaction at `stamp`.
    Asked again for every chunk: a chunk that is rolled back takes a run it made with it."""
    found = conn.execute(select(import_runs.c.id).where(import_runs.c.token == token)).scalar()
    if found is not None:
        return int(found)
    values = {
        "token": token,
        "occurred_at": stamp,
        "source": source[:200],
        "details": {**details, "evidence": NO_EVIDENCE},
    }
    made = conn.execute(insert(import_runs).values(**values).returning(import_runs.c.id))
    return int(made.scalar_one())


def _run_record(run: Any) -> ConsentRecord:
    return ConsentRecord(
        kind=IMPORT,
        occurred_at=as_utc(run.occurred_at),
        ip=None,
        user_agent=None,
        page_url=None,
        consent_text_hash=None,
        source=run.source,
        proves_consent=False,
        details=dict(run.details or {}),
    )


def import_run_of(conn: Connection, subscriber_id: int) -> Any:
    """The `import_runs` row that is the subscriber's import record, or None."""
    return conn.execute(
        select(import_runs)
        .join(subscribers, subscribers.c.import_run_id == import_runs.c.id)
        .where(subscribers.c.id == subscriber_id)
    ).first()


def _file_and_stem(name: str) -> list[str]:
    # "anna@example.com.csv" holds the address only without its extension.
    stem, dot, _suffix = name.rpartition(".")
    return [name, stem] if dot else [name]


def runs_naming(conn: Connection, names: Callable[[str], bool]) -> list[Any]:
    """The `import_runs` rows whose source or file name names a person (`names(text)`), for
    export-person and erasure: a run outlives the people it added, so an address in it (a
    file named after the one person it held, say) is found as in a send's error."""
    rows = conn.execute(select(import_runs).order_by(import_runs.c.id)).all()
    named = []
    for row in rows:
        file = (row.details or {}).get("file")
        texts = [row.source or "", *(_file_and_stem(file) if isinstance(file, str) else [])]
        if any(names(text) for text in texts):
            named.append(row)
    return named


def scrub_runs(conn: Connection, names: Callable[[str], bool], redact: Callable[[str], str]) -> int:
    """Rewrite the source and file name of each import run that names the person with
    `redact(text)`, keeping the record for the others it added; how many runs."""
    rows = runs_naming(conn, names)
    for row in rows:
        details = dict(row.details or {})
        file = details.get("file")
        if isinstance(file, str):
            stem, dot, suffix = redact(file).rpartition(".")
            details["file"] = f"{redact(stem)}{dot}{suffix}" if dot else redact(file)
        source = redact(row.source) if row.source else row.source
        conn.execute(
            update(import_runs)
            .where(import_runs.c.id == row.id)
            .values(source=source, details=details)
        )
    return len(rows)


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
    run = import_run_of(conn, subscriber_id)
    records = [] if run is None else [_run_record(run)]
    records += [
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
    # (sorted is stable: the import's record stays first among those of its time)
    return sorted(records, key=lambda record: record.occurred_at)


def exported_records(
    conn: Connection, subscriber_ids: list[int]
) -> dict[int, list[dict[str, Any]]]:
    """Each subscriber's own consent records (not an import run's shared "no evidence"),
    oldest first, with the consent text's words instead of its hash: what `subscribers
    export` writes, so that an import of it into another database keeps the proof."""
    found: dict[int, list[dict[str, Any]]] = {}
    if not subscriber_ids:
        return found
    rows = conn.execute(
        select(consent_records, consent_texts.c.text)
        .select_from(
            consent_records.outerjoin(
                consent_texts, consent_texts.c.text_hash == consent_records.c.consent_text_hash
            )
        )
        .where(consent_records.c.subscriber_id.in_(subscriber_ids))
        .order_by(
            consent_records.c.subscriber_id, consent_records.c.occurred_at, consent_records.c.id
        )
    ).all()
    for row in rows:
        record = {
            "kind": row.kind,
            "occurred_at": as_utc(row.occurred_at).isoformat(),
            "ip": row.ip,
            "user_agent": row.user_agent,
            "page_url": row.page_url,
            "consent_text": row.text,
            "source": row.source,
            "proves_consent": bool(row.proves_consent),
            "details": dict(row.details or {}),
        }
        found.setdefault(row.subscriber_id, []).append(
            {key: value for key, value in record.items() if value not in (None, {})}
        )
    return found


def carried_records(
    conn: Connection | None, subscriber_id: int, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Rows for `record_imported` from an export's records (`exported_records`, checked by
    the importer's reader); `conn` None in a dry run (no consent text is stored then)."""
    rows = []
    for record in records:
        text = record.get("consent_text")
        rows.append(
            record_values(
                subscriber_id,
                record["kind"],
                occurred_at=record["occurred_at"],
                ip=record.get("ip"),
                user_agent=record.get("user_agent"),
                page_url=record.get("page_url"),
                consent_text_hash=(
                    remember_text(conn, text) if text and conn is not None else None
                ),
                source=record.get("source"),
                proves_consent=bool(record.get("proves_consent")),
                details=record.get("details") or {},
            )
        )
    return rows


def has_evidence() -> Any:
    """A condition on `subscribers`: the person has a record that proves consent."""
    return exists().where(
        consent_records.c.subscriber_id == subscribers.c.id,
        consent_records.c.proves_consent.is_(True),
    )
