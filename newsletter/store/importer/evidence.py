"""`subscribers import`, consent: what the law asks an import to keep and to refuse.

- Every new subscriber gets an `import` consent record naming the file and its format,
  with the export's own opt-in data where it has any (Mailchimp's OPTIN_TIME, OPTIN_IP,
  CONFIRM_TIME, CONFIRM_IP; Substack's created_at), which makes it proof of consent;
  else it says "imported, no evidence": that record is the import run's, stored once
  (`import_runs`), and the people it added point at it.
- Addresses erased on request (the suppression list) are not imported; they are counted.

The records are written by the consent store (`consent.record_imported`), which owns them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from newsletter.store import consent, suppressions
from newsletter.store.importer.model import ImportResult, Incoming


@dataclass(frozen=True)
class ImportConsent:
    """What one import run needs for consent: the file's name and format, the IP policy,
    and whether any address is suppressed at all (else nothing needs hashing)."""

    file_name: str
    format: str
    keep_full_ip: bool = False
    check_suppressed: bool = False
    #: This run's own, for its `import_runs` row.
    token: str = field(default_factory=lambda: secrets.token_hex(16))

    def details(self) -> dict[str, Any]:
        return {"file": self.file_name, "format": self.format}


def consent_policy(conn: Connection, file_name: str, fmt: str, keep_full_ip: bool) -> ImportConsent:
    """Raises ConfigError if addresses are suppressed and the key to check them is not
    set: before the first row, since running the import again would not help."""
    check_suppressed = suppressions.any_suppressed(conn)
    if check_suppressed:
        suppressions.checked_key(conn)
    return ImportConsent(
        file_name=file_name,
        format=fmt,
        keep_full_ip=keep_full_ip,
        check_suppressed=check_suppressed,
    )


def drop_suppressed(
    conn: Connection, chunk: dict[str, Any], result: ImportResult, policy: ImportConsent
) -> None:
    """Take suppressed addresses out of the chunk (its keys are `email_key`s), counting them."""
    if not policy.check_suppressed:
        return
    for key in suppressions.suppressed_among(conn, list(chunk), normalized=True):
        del chunk[key]
        result.suppressed += 1


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def opt_in_data(inc: Incoming, fmt: str) -> dict[str, Any]:
    """The export's own opt-in data for this row (empty if it has none)."""
    # (Mailchimp's unsubscribed and cleaned exports carry the same opt-in columns: a person
    # who left or bounced since had opted in all the same, and the proof of it is kept.)
    if fmt in ("mailchimp", "mailchimp-unsubscribed", "mailchimp-cleaned"):
        found = {
            "optin_time": _iso(inc.created_at),
            "optin_ip": inc.optin_ip,
            "confirm_time": _iso(inc.confirmed_at),
            "confirm_ip": inc.confirm_ip,
        }
    elif fmt == "substack":
        found = {"created_at": _iso(inc.created_at)}
    else:
        return {}
    return {key: value for key, value in found.items() if value}


def record_with_evidence(
    sid: int, inc: Incoming, policy: ImportConsent, source: str, stamp: datetime
) -> dict[str, Any] | None:
    """The consent record of a new row that carries opt-in data, else None."""
    data = opt_in_data(inc, policy.format)
    if not data:
        return None
    for key in ("optin_ip", "confirm_ip"):  # as any IP we keep: truncated unless configured
        if key in data:
            data[key] = consent.truncate_ip(data[key], keep_full=policy.keep_full_ip)
    return consent.record_values(
        sid,
        consent.IMPORT,
        occurred_at=stamp,
        ip=data.get("confirm_ip") or data.get("optin_ip"),
        source=source,
        proves_consent=True,
        details={**policy.details(), **{k: v for k, v in data.items() if v}},
    )


def run_record(conn: Connection, policy: ImportConsent, source: str, stamp: datetime) -> int:
    """The id of this import's "imported, no evidence" record (`import_runs`)."""
    return consent.import_run(conn, policy.token, policy.details(), source, stamp)
