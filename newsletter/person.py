"""Everything held about one person, as one JSON document (GDPR Art. 15:
`newsletter subscribers export-person`), and what erasure (`privacy.erase`) must find.

The rows come from every table with a foreign key to `subscribers` (found by walking the
schema, so a table added later is exported without anyone remembering it), plus the rows
that name the person without a key: replies from their address in any spelling (punycode,
NFD, any case), a send's error naming them, and clicked links carrying their address or a
value of theirs. `PersonalData` says what names them; erasure deletes or rewrites exactly
the rows exported here.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote_plus

from sqlalchemy import Connection, Engine, select

from newsletter.errors import StoreError
from newsletter.insights.counters import links_naming
from newsletter.masking import addresses_in, replace_addresses
from newsletter.replies.store import replies_written_by
from newsletter.replies.threads import threads_naming
from newsletter.sending.ledger import Ledger
from newsletter.store.consent import IMPORT, import_run_of, runs_naming
from newsletter.store.emails import address_key
from newsletter.store.schema import consent_texts, replies, subscribers
from newsletter.store.subscribers import (
    Subscriber,
    find_subscriber,
    tables_referencing_subscribers,
)

#: What an erased address or value is replaced with where a row is kept (a send's error,
#: a link's click counts).
ERASED = "<erased>"

#: Values shorter than this (a field "ja", an initial) are too common to tell a person by.
MIN_VALUE_LENGTH = 3

# A URL's path segments, query keys and values, and fragment: the parts a value fills.
_URL_PART = re.compile(r"[^/?&=#;]+")


def _folded(value: str) -> str:
    return unicodedata.normalize("NFC", value).strip().casefold()


@dataclass(frozen=True)
class PersonalData:
    """What names one person in text the store keeps: their address (compared in the
    store's one form, `address_key`) and their name and field values (exact, case-folded)."""

    key: str
    values: frozenset[str] = frozenset()
    #: The address as the store holds it, and its key: what a transport wrote in an error.
    spellings: tuple[str, ...] = ()

    @classmethod
    def of(cls, email: str, subscriber: Subscriber | None) -> PersonalData:
        key = address_key(subscriber.email if subscriber else email) or email.strip().lower()
        spellings = tuple(dict.fromkeys([subscriber.email if subscriber else email.strip(), key]))
        if subscriber is None:
            return cls(key=key, spellings=spellings)
        found: list[Any] = [subscriber.name, subscriber.first_name, subscriber.last_name]
        found += list(subscriber.fields.values())
        return cls(key=key, values=frozenset(_values(found)), spellings=spellings)

    def is_address(self, candidate: str) -> bool:
        return candidate.strip().lower() == self.key or address_key(candidate) == self.key

    def redact_text(self, text: str) -> str:
        """The text with the person's address (plain or percent-encoded) replaced."""
        return replace_addresses(text, self.is_address, ERASED)

    def names_text(self, text: str | None) -> bool:
        return bool(text) and any(self.is_address(a) for a in addresses_in(text or ""))

    def redact_url(self, url: str) -> str:
        """The URL with the person's address and each part (path segment, query value)
        that is one of their values replaced."""
        text = self.redact_text(url)
        if not self.values:
            return text

        def swap(match: re.Match[str]) -> str:
            return ERASED if _folded(unquote_plus(match.group(0))) in self.values else match[0]

        scheme, separator, rest = text.partition("://")
        if not separator:
            return _URL_PART.sub(swap, text)
        host, slash, tail = rest.partition("/")
        return f"{scheme}://{host}{slash}{_URL_PART.sub(swap, tail)}"

    def names_url(self, url: str | None) -> bool:
        return bool(url) and self.redact_url(url or "") != url


def _values(found: Iterable[Any]) -> Iterable[str]:
    for value in found:
        if isinstance(value, (list, tuple)):
            yield from _values(value)
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            folded = _folded(str(value))
            if len(folded) >= MIN_VALUE_LENGTH:
                yield folded


def rows_naming(conn: Connection, person: PersonalData) -> dict[str, list[Any]]:
    """The rows that name the person without a foreign key to them, by table: replies from
    their address, sends and other readers' deliveries whose error names them (a batch
    stopped at them), link counters whose URL does, import runs whose source or file does."""

    written = replies_written_by(conn, person.key)
    found: dict[str, list[Any]] = {}
    if written:
        found["replies"] = list(
            conn.execute(select(replies).where(replies.c.id.in_(written)).order_by(replies.c.id))
        )

    found.update(threads_naming(conn, person.key, written))
    found.update(Ledger.errors_naming(conn, person.spellings, person.names_text))
    links = links_naming(conn, person.names_url)
    if links:
        found["link_day_counters"] = links
    runs = runs_naming(conn, person.names_text)
    if runs:
        found["import_runs"] = runs
    return found


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _import_run_row(run: Any, subscriber_id: int) -> dict[str, Any]:
    """The import run's record, shaped as the person's own consent records are."""
    return {
        "id": None,
        "subscriber_id": subscriber_id,
        "kind": IMPORT,
        "occurred_at": _json_value(run.occurred_at),
        "ip": None,
        "user_agent": None,
        "page_url": None,
        "consent_text_hash": None,
        "source": run.source,
        "proves_consent": False,
        "details": dict(run.details or {}),
        "import_run_id": run.id,
    }


def _rows(conn: Connection, query: Any) -> list[dict[str, Any]]:
    return [
        {key: _json_value(value) for key, value in row._mapping.items()}
        for row in conn.execute(query)
    ]


def _as_dicts(rows: Iterable[Any]) -> list[dict[str, Any]]:
    return [{key: _json_value(value) for key, value in row._mapping.items()} for row in rows]


def export_person(engine: Engine, email: str) -> dict[str, Any]:
    """The subscriber row, then each referencing table's rows under its name
    (`subscriber_tags`, `consent_records`, `deliveries`, `events`, `replies`...), and the
    rows that name them without a key (`rows_naming`)."""
    with engine.connect() as conn:
        subscriber = find_subscriber(conn, email)
        person = PersonalData.of(email, subscriber)
        tables: dict[str, list[dict[str, Any]]] = {}
        if subscriber is not None:
            for table, column in sorted(
                tables_referencing_subscribers(), key=lambda pair: pair[0].name
            ):
                order = list(table.primary_key.columns) or [column]
                tables.setdefault(table.name, []).extend(
                    _rows(conn, select(table).where(column == subscriber.id).order_by(*order))
                )
        run = import_run_of(conn, subscriber.id) if subscriber is not None else None
        if subscriber is not None and run is not None:
            # the import's record, which the person shares with the others it added
            record = _import_run_row(run, subscriber.id)
            tables.setdefault("consent_records", []).insert(0, record)
        named = rows_naming(conn, person)
        if subscriber is None and not named:
            raise StoreError(
                f"{email} is not on the list and sent no replies; nothing is held about them"
            )
        for name, rows in named.items():
            listed = {row.get("id") for row in tables.get(name, [])} - {None}
            tables.setdefault(name, []).extend(
                row for row in _as_dicts(rows) if row.get("id") is None or row["id"] not in listed
            )
        hashes = {
            r["consent_text_hash"]
            for r in tables.get("consent_records", [])
            if r.get("consent_text_hash")
        }
        texts = (
            _rows(
                conn,
                select(consent_texts).where(consent_texts.c.text_hash.in_(sorted(hashes))),
            )
            if hashes
            else []
        )
        row = (
            _rows(conn, select(subscribers).where(subscribers.c.id == subscriber.id))[0]
            if subscriber is not None
            else None
        )
    if row is not None:
        row.pop("email_key", None)  # the address again, lower-cased
    return {
        "exported_at": datetime.now(UTC).isoformat(),
        "email": subscriber.email if subscriber else email.strip(),
        "subscriber": row,
        "tags": list(subscriber.tags) if subscriber else [],
        "fields": dict(subscriber.fields) if subscriber else {},
        "consent_texts": texts,
        "tables": tables,
    }
