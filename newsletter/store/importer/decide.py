"""`subscribers import`, deciding: what a chunk of the file changes in the list.

The current rows of the chunk's addresses, the merge rules for each existing subscriber
(statuses, names, custom fields, tags), and `KeyFilter`, the addresses this run added.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from newsletter.store.importer.model import Incoming, same_field
from newsletter.store.raw import placeholder
from newsletter.store.subscribers import STOPPED

#: Bound parameters per IN (...) lookup, under every engine's limit.
LOOKUP_BATCH = 500


class KeyFilter:
    """The addresses this run added, by hash: a set of hashes (exact), or a bit set.

    The bit set has at least 16 bits for each of the `rows` expected (at most 2**27 bits,
    16 MB), so it answers "maybe" for at most about 1 in 16 unknown keys; a "maybe" only
    costs a database lookup (500 in one query), which gives the truth. It is used for a
    first import into an empty list, where every key found in the database was added by
    this run; dry runs and merges into a full list use the exact set.
    """

    BITS = 27
    MIN_BITS = 20
    BITS_PER_ROW = 16

    def __init__(self, exact: bool, rows: int = 1 << (BITS - 4)):
        self.exact: set[int] | None = set() if exact else None
        wanted = max(rows, 1) * self.BITS_PER_ROW
        bits = min(self.BITS, max(self.MIN_BITS, (wanted - 1).bit_length()))
        self.bits = bytearray(0 if exact else 1 << (bits - 3))
        self.mask = (1 << bits) - 1
        self.fixed = False

    @classmethod
    def of(cls, keys: Iterable[str]) -> KeyFilter:
        """An exact filter holding these keys, and only these: `update` leaves it alone
        (one chunk's keys seen before; hashing what the chunk adds would be wasted)."""
        found = cls(exact=True)
        found.update(keys)
        found.fixed = True
        return found

    def add(self, key: str) -> None:
        if self.exact is not None:
            self.exact.add(hash(key))
        else:
            h = hash(key) & self.mask
            self.bits[h >> 3] |= 1 << (h & 7)

    def update(self, keys: Iterable[str]) -> None:
        if self.fixed:
            return
        if self.exact is not None:
            self.exact.update(map(hash, keys))
            return
        bits, mask = self.bits, self.mask
        for key in keys:
            h = hash(key) & mask
            bits[h >> 3] |= 1 << (h & 7)

    def among(self, keys: Iterable[str]) -> list[str]:
        """The keys that may be in the filter, in order (`key in self` for each, without a
        method call per key: a first big import asks for every one of a million)."""
        if self.exact is not None:
            exact = self.exact
            return [key for key in keys if hash(key) in exact]
        bits, mask = self.bits, self.mask
        return [key for key in keys if bits[(h := hash(key) & mask) >> 3] & (1 << (h & 7))]

    def __contains__(self, key: str) -> bool:
        if self.exact is not None:
            return hash(key) in self.exact
        h = hash(key) & self.mask
        return bool(self.bits[h >> 3] & (1 << (h & 7)))


def fetch_current(conn: Connection, keys: list[str]) -> dict[str, dict[str, Any]]:
    """What the merge needs of the current rows (and tags) of these keys, by key.

    Driver-level SQL without result processing: a re-import looks up every row, and
    parsing times and JSON nobody compares would double its cost. `fields` stays raw
    (JSON text on SQLite) until a row from the file actually brings fields.
    """
    mark = placeholder(conn)
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(keys), LOOKUP_BATCH):
        batch = keys[start : start + LOOKUP_BATCH]
        marks = ", ".join([mark] * len(batch))
        rows = conn.exec_driver_sql(
            "SELECT id, email_key, name, first_name, last_name, status, fields, "
            f"confirmed_at IS NULL FROM subscribers WHERE email_key IN ({marks})",
            tuple(batch),
        ).all()
        by_id: dict[int, dict[str, Any]] = {}
        for sid, key, name, first, last, status, fields, unconfirmed in rows:
            record = {
                "id": sid,
                "name": name,
                "first_name": first,
                "last_name": last,
                "status": status,
                "fields": fields,
                "unconfirmed": bool(unconfirmed),
                "tags": set(),
            }
            found[key] = record
            by_id[sid] = record
        if by_id:
            marks = ", ".join([mark] * len(by_id))
            tag_rows = conn.exec_driver_sql(
                f"SELECT subscriber_id, tag FROM subscriber_tags WHERE subscriber_id IN ({marks})",
                tuple(by_id),
            )
            for sid, tag in tag_rows:
                by_id[sid]["tags"].add(tag)
    return found


def existing_field_names(conn: Connection) -> list[str]:
    """Every custom field name in the list (the database walks the JSON, not Python)."""
    if conn.dialect.name == "sqlite":
        sql = "SELECT DISTINCT j.key FROM subscribers, json_each(subscribers.fields) AS j"
    elif conn.dialect.name == "postgresql":
        sql = "SELECT DISTINCT json_object_keys(fields::json) FROM subscribers"
    else:  # pragma: no cover - the two engines we support
        rows = conn.exec_driver_sql("SELECT fields FROM subscribers")
        return sorted({key for (fields,) in rows for key in _json_object(fields)})
    return [name for (name,) in conn.exec_driver_sql(sql)]


def _json_object(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value) if value else {}
    return dict(value or {})


def resolve_status(current: str | None, incoming: str | None, resubscribe: bool) -> str:
    if resubscribe:
        return "subscribed"
    if current is None:
        return incoming or "subscribed"
    if current in STOPPED or incoming is None:
        return current
    if current == "subscribed" and incoming == "unconfirmed":
        return current
    return incoming


def changes(
    current: dict[str, Any], inc: Incoming, resubscribe: bool, stamp: datetime
) -> tuple[dict[str, Any], set[str], bool]:
    """Column changes and new tags for an existing subscriber; and whether a stop was kept."""
    values: dict[str, Any] = {}
    for column in ("name", "first_name", "last_name"):
        value = getattr(inc, column)
        if value and value != current[column]:
            values[column] = value
    if inc.fields:
        have = _json_object(current["fields"])
        # Onto the spelling this person's fields already use (`stadt` -> `Stadt`).
        merged = {**have, **{same_field(have, k): v for k, v in inc.fields.items()}}
        if merged != have:
            values["fields"] = merged
    status = resolve_status(current["status"], inc.status, resubscribe)
    kept_stop = current["status"] in STOPPED and inc.status not in STOPPED and not resubscribe
    if status != current["status"]:
        values["status"] = status
        if status == "subscribed":
            values["unsubscribed_at"] = None
            values["unsubscribe_reason"] = None
            if current["unconfirmed"]:
                values["confirmed_at"] = inc.confirmed_at or stamp
        elif status in STOPPED:
            values["unsubscribed_at"] = inc.unsubscribed_at or stamp
            values["unsubscribe_reason"] = inc.reason
    new_tags = inc.tags - current["tags"]
    return values, new_tags, kept_stop
