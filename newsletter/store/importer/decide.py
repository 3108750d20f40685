"""`subscribers import`, deciding: what a chunk of the file changes in the list.

The current rows of the chunk's addresses and the merge rules for each existing subscriber
(statuses, names, custom fields, tags); `KeyFilter` (in `keys`) holds the addresses this
run added.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from newsletter.store.importer.keys import KeyFilter as KeyFilter
from newsletter.store.importer.model import Incoming, same_field
from newsletter.store.raw import placeholder
from newsletter.store.subscribers import STOPPED

#: Bound parameters per IN (...) lookup, under every engine's limit.
LOOKUP_BATCH = 500


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
            ).all()  # at once: fetching row by row cost a re-import a tenth of its time
            for sid, tag in tag_rows:
                by_id[sid]["tags"].add(tag)
    return found


def packed_changes(
    current: dict[str, Any], item: tuple[Any, ...]
) -> tuple[dict[str, Any], set[str], bool]:
    """`changes` for a row the reader packed as (line, email, key, first, last, tags): no
    status (the current one stays), no fields, no full name, and not `--resubscribe`. A
    re-import of a big list compares every row, and making an `Incoming` of each to ask
    `changes` took a sixth of its time. tests/test_import_decide.py checks both agree."""
    first, last, tags = item[3], item[4], item[5]
    values: dict[str, Any] = {}
    if first and first != current["first_name"]:
        values["first_name"] = first
    if last and last != current["last_name"]:
        values["last_name"] = last
    new_tags = set(tags).difference(current["tags"]) if tags else set()
    return values, new_tags, current["status"] in STOPPED


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
