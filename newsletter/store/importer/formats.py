"""Import file formats: encoding, delimiter, and which service's export a header is.

A format maps each column of the header to a target:

- `email`, `name`, `first_name`, `last_name`, `source`, `unsubscribe_reason`;
- `created_at`, `confirmed_at`, `unsubscribed_at` (timestamps);
- `optin_ip`, `confirm_ip` (Mailchimp's; kept as consent evidence, see `evidence.py`);
- `tags` (comma-separated), `tags_quoted` (Mailchimp's `"a","b"`), `tags_list`
  (a JSON or Python-style list, or comma-separated);
- `status` (a word such as subscribed, unsubscribed, enabled, blocklisted, cleaned...);
- `stopped_if_true` / `stopped_if_false` (Substack's `email_disabled`, Ghost's
  `subscribed_to_emails`), `stopped_if_set` (Ghost's `deleted_at`);
- `fields_json` (a JSON object merged into the custom fields: listmonk's `attributes`,
  Buttondown's `metadata`);
- `field:NAME` (a custom field), `ignore`.

Header sets were checked against real exports (Ghost's open-source migrators read the same
Mailchimp and Substack files; Buttondown and listmonk document theirs).
"""

from __future__ import annotations

import codecs
import csv
import re
from dataclasses import dataclass
from pathlib import Path

from newsletter.errors import ImportFileError
from newsletter.files import NotARegularFile, regular_file

SAMPLE_BYTES = 64 * 1024
DELIMITERS = (",", ";", "\t")


def _squash(heading: str) -> str:
    """`E-Mail-Adresse` -> `emailadresse`: compare headings without case, spaces or dashes."""
    return re.sub(r"[^0-9a-zäöüß]", "", heading.strip().lower())


EMAIL_HEADINGS = {
    "email",
    "emailaddress",
    "emailadresse",
    "emailadr",
    "mail",
    "mailaddress",
    "mailadresse",
    "emailaddr",
    "emails",
    "subscriberemail",
    "mitgliedemail",
}
NAME_HEADINGS = {"name", "fullname", "vollständigername", "displayname", "nameundvorname"}
FIRST_HEADINGS = {"firstname", "first", "givenname", "vorname", "fname"}
LAST_HEADINGS = {"lastname", "last", "surname", "familyname", "nachname", "lname"}
TAG_HEADINGS = {"tags", "tag", "labels", "label", "groups", "gruppen", "segments"}
STATUS_HEADINGS = {"status", "state", "subscriberstatus"}
CREATED_HEADINGS = {"createdat", "created", "signupdate", "subscribedat", "creationdate", "datum"}
#: A yes/no column saying the person must not be mailed (Brevo's EMAIL_BLACKLISTED, a CRM's
#: "Do not email"): true means unsubscribed. (As a custom field, the next send mailed them.)
OPT_OUT_HEADINGS = {
    "emailblacklisted",
    "blacklisted",
    "emailblocklisted",
    "blocklisted",
    "optedout",
    "optout",
    "emailoptout",
    "donotemail",
    "donotcontact",
}

#: Status words of all supported services, lower-cased.
STATUS_WORDS: dict[str, str] = {
    # ours
    "subscribed": "subscribed",
    "unconfirmed": "unconfirmed",
    "unsubscribed": "unsubscribed",
    "bounced": "bounced",
    "complained": "complained",
    # generic and German spreadsheets
    "active": "subscribed",
    "confirmed": "subscribed",
    "yes": "subscribed",
    "true": "subscribed",
    "1": "subscribed",
    "abonniert": "subscribed",
    "aktiv": "subscribed",
    "pending": "unconfirmed",
    "unbestätigt": "unconfirmed",
    "inactive": "unsubscribed",
    "no": "unsubscribed",
    "false": "unsubscribed",
    "0": "unsubscribed",
    "abgemeldet": "unsubscribed",
    "inaktiv": "unsubscribed",
    "spam": "complained",
    # Mailchimp (API/status column)
    "cleaned": "bounced",
    "transactional": "unsubscribed",
    "archived": "unsubscribed",
    # listmonk
    "enabled": "subscribed",
    "disabled": "unsubscribed",
    "blocklisted": "unsubscribed",
    "blacklisted": "unsubscribed",
    # Buttondown subscriber_type
    "regular": "subscribed",
    "premium": "subscribed",
    "gifted": "subscribed",
    "trialed": "subscribed",
    "churning": "subscribed",
    "churned": "subscribed",  # a paid plan ended; the free subscription goes on
    "past_due": "subscribed",
    "paused": "subscribed",
    "unactivated": "unconfirmed",
    "removed": "unsubscribed",
    "undeliverable": "bounced",
    "spammy": "complained",
    # Ghost status column (free/paid/comped are all subscribed members)
    "free": "subscribed",
    "paid": "subscribed",
    "comped": "subscribed",
    # Kit (ConvertKit) state column: "cold" readers are subscribed, just not reading
    "cancelled": "unsubscribed",
    "canceled": "unsubscribed",
    "cold": "subscribed",
}


@dataclass
class Format:
    """A recognized kind of file and what each column means."""

    name: str  # "mailchimp", "generic", ...
    targets: dict[str, str]  # column heading -> target (see module docstring)
    #: Status of every row when the file itself says it (Mailchimp's unsubscribed export).
    file_status: str | None = None
    #: Our own export neutralizes formula cells with a leading "'"; undo that on import.
    unquote_formulas: bool = False


MAILCHIMP_SYSTEM = {
    "member_rating": "ignore",
    "optin_time": "created_at",
    "optin_ip": "optin_ip",
    "confirm_time": "confirmed_at",
    "confirm_ip": "confirm_ip",
    "latitude": "ignore",
    "longitude": "ignore",
    "gmtoff": "ignore",
    "dstoff": "ignore",
    "timezone": "ignore",
    "cc": "ignore",
    "region": "ignore",
    "last_changed": "ignore",
    "leid": "ignore",
    "euid": "ignore",
    "notes": "field:notes",
    "tags": "tags_quoted",
    "unsub_time": "unsubscribed_at",
    "unsub_campaign_title": "ignore",
    "unsub_campaign_id": "ignore",
    "unsub_reason": "unsubscribe_reason",
    "unsub_reason_other": "field:unsubscribe_reason_other",
    "clean_time": "unsubscribed_at",
    "clean_campaign_title": "ignore",
    "clean_campaign_id": "ignore",
    "email address": "email",
    "first name": "first_name",
    "last name": "last_name",
}

SUBSTACK = {
    "email": "email",
    "name": "name",
    "email_disabled": "stopped_if_true",
    "created_at": "created_at",
    "subscription_created_at": "created_at",
    "active_subscription": "field:substack_paid",
    "plan": "field:substack_plan",
    "expiry": "ignore",
    "first_payment_at": "ignore",
    "stripe_connected_customer_id": "ignore",
    "prefer_digests": "ignore",
    "type": "field:substack_plan",
}

BUTTONDOWN = {
    "id": "ignore",
    "email": "email",
    "email_address": "email",
    "creation_date": "created_at",
    "notes": "field:notes",
    "metadata": "fields_json",
    "secondary_id": "ignore",
    "source": "ignore",
    "subscriber_type": "status",
    "type": "status",
    "tags": "tags_list",
    "upgrade_date": "ignore",
    "unsubscription_date": "unsubscribed_at",
    "unsubscription_reason": "unsubscribe_reason",
    "referrer_url": "ignore",
    "utm_campaign": "ignore",
    "utm_medium": "ignore",
    "utm_source": "ignore",
    "ip_address": "ignore",
}

GHOST = {
    "id": "ignore",
    "uuid": "ignore",
    "email": "email",
    "name": "name",
    "note": "field:note",
    "subscribed_to_emails": "stopped_if_false",
    "complimentary_plan": "ignore",
    "stripe_customer_id": "ignore",
    "created_at": "created_at",
    "deleted_at": "stopped_if_set",
    "labels": "tags",
    "tiers": "ignore",
    "products": "ignore",
    "status": "status",
}

LISTMONK = {
    "uuid": "ignore",
    "id": "ignore",
    "email": "email",
    "name": "name",
    "attributes": "fields_json",
    "attribs": "fields_json",
    "status": "status",
    "created_at": "created_at",
    "updated_at": "ignore",
}

#: The columns `subscribers export` writes (see exporter.py).
OWN_COLUMNS = (
    "email",
    "name",
    "first_name",
    "last_name",
    "status",
    "tags",
    "source",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
    "unsubscribe_reason",
    # The person's consent records as JSON (an export's proof of opt-in, kept on import).
    "consent",
)
FIELD_PREFIX = "fields."


def _known(headings: list[str], table: dict[str, str]) -> dict[str, str]:
    """Map headings through a service's table; unknown columns become custom fields."""
    targets: dict[str, str] = {}
    for heading in headings:
        target = table.get(heading.strip().lower())
        if target is None:
            target = _generic_target(heading)
            # Only the table names the service's own columns; the rest are custom fields.
            if not target.startswith("field:") and target != "ignore":
                target = "field:" + heading.strip()
        targets[heading] = target
    return targets


def _generic_target(heading: str) -> str:
    squashed = _squash(heading)
    if not squashed:
        return "ignore"
    if heading.startswith(FIELD_PREFIX):
        return "field:" + heading[len(FIELD_PREFIX) :]
    for names, target in (
        (EMAIL_HEADINGS, "email"),
        (NAME_HEADINGS, "name"),
        (FIRST_HEADINGS, "first_name"),
        (LAST_HEADINGS, "last_name"),
        (TAG_HEADINGS, "tags"),
        (STATUS_HEADINGS, "status"),
        (CREATED_HEADINGS, "created_at"),
        (OPT_OUT_HEADINGS, "stopped_if_true"),
    ):
        if squashed in names:
            return target
    return "field:" + heading.strip()


#: The columns `subscribers import --rejects FILE` adds after the file's own.
REJECT_COLUMNS = ("line", "reason")


def detect_format(headings: list[str]) -> Format:
    """Which export this header belongs to (see the module docstring)."""
    fmt = _detect_format(headings)
    # A rejects file, fixed and imported again: its last two columns are the import's notes,
    # not the readers' custom fields.
    if tuple(headings[-2:]) == REJECT_COLUMNS:
        for heading in REJECT_COLUMNS:
            fmt.targets[heading] = "ignore"
    return fmt


def _detect_format(headings: list[str]) -> Format:
    lower = {h.strip().lower() for h in headings}
    if "email address" in lower and lower & {"member_rating", "leid", "euid", "optin_time"}:
        fmt = Format("mailchimp", _known(headings, MAILCHIMP_SYSTEM))
        if "clean_time" in lower:
            fmt.file_status = "bounced"
            fmt.name = "mailchimp-cleaned"
        elif "unsub_time" in lower:
            fmt.file_status = "unsubscribed"
            fmt.name = "mailchimp-unsubscribed"
        return fmt
    if "email" in lower and lower & {"active_subscription", "email_disabled"}:
        return Format("substack", _known(headings, SUBSTACK))
    if lower & {"email", "email_address"} and "subscriber_type" in lower:
        return Format("buttondown", _known(headings, BUTTONDOWN))
    if "email" in lower and lower & {"subscribed_to_emails", "complimentary_plan"}:
        return Format("ghost", _known(headings, GHOST))
    if "email" in lower and "attributes" in lower and lower & {"uuid", "status"}:
        return Format("listmonk", _known(headings, LISTMONK))
    if {"email", "status", "tags", "source", "created_at"} <= lower:
        own = {c: c for c in OWN_COLUMNS}
        own["tags"] = "tags"
        return Format("newsletter", _known(headings, own), unquote_formulas=True)
    return Format("generic", {h: _generic_target(h) for h in headings})


def apply_map(fmt: Format, mapping: list[tuple[str, str]], path: Path) -> None:
    """`--map column=field` overrides; field is a target or any custom field name."""
    by_lower = {h.strip().lower(): h for h in fmt.targets}
    plain = {
        "email",
        "name",
        "first_name",
        "last_name",
        "tags",
        "status",
        "created_at",
        "confirmed_at",
        "unsubscribed_at",
        "unsubscribe_reason",
        "ignore",
    }
    for column, target in mapping:
        heading = by_lower.get(column.strip().lower())
        if heading is None:
            raise ImportFileError(
                f"{path}: --map {column}={target}: the file has no column {column!r}; "
                f"its columns are {', '.join(fmt.targets)}"
            )
        target = target.strip()
        if target in plain or target.startswith("field:"):
            fmt.targets[heading] = target
        elif target.startswith(FIELD_PREFIX):
            fmt.targets[heading] = "field:" + target[len(FIELD_PREFIX) :]
        elif target:
            fmt.targets[heading] = "field:" + target
        else:
            fmt.targets[heading] = "ignore"


def detect_encoding(path: Path) -> str:
    """utf-8-sig (BOM) or utf-8; ImportFileError for what is not text (ZIP, UTF-16, binary)."""
    try:
        # Looked at before it is opened: a named pipe would wait for a writer forever, and
        # /dev/zero never ends.
        regular_file(path, "CSV file")
        handle = path.open("rb")
    except NotARegularFile as exc:
        if exc.missing:
            raise ImportFileError(f"{path}: no such file; check the path") from None
        if exc.reason.startswith("is a folder"):
            raise ImportFileError(f"{path}: is a folder; give a CSV file") from None
        raise ImportFileError(str(exc)) from None
    except FileNotFoundError:
        raise ImportFileError(f"{path}: no such file; check the path") from None
    except OSError as exc:
        raise ImportFileError(
            f"{path}: cannot read it ({exc.strerror}); check its permissions"
        ) from None
    with handle:
        head = handle.read(SAMPLE_BYTES)
        if not head.strip():
            raise ImportFileError(f"{path}: the file is empty; export the list again")
        if head.startswith(b"PK\x03\x04"):
            raise ImportFileError(
                f"{path}: looks like a ZIP or Excel workbook; unzip it or save the sheet as CSV"
            )
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise ImportFileError(f"{path}: is UTF-16 text; save it as CSV UTF-8")
        if b"\x00" in head:
            raise ImportFileError(f"{path}: is a binary file, not CSV; export the list as CSV")
        # Lines that are not UTF-8 are decoded one by one as they are read (see `lines`).
        return "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"


def sniff_delimiter(header_line: str) -> str:
    """The delimiter that splits the header into the most columns (comma on a tie)."""
    best, best_count = ",", 1
    for delimiter in DELIMITERS:
        try:
            row = next(csv.reader([header_line], delimiter=delimiter), [])
        except csv.Error:  # one "column" over csv's field limit: not this delimiter
            continue
        if len(row) > best_count:
            best, best_count = delimiter, len(row)
    return best
