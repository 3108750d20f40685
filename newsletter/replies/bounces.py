"""Bounce reports found in a mailbox: RFC 3464 delivery status notifications
(`multipart/report; report-type=delivery-status`), read into neutral bounce events.

An SMTP author has no SendGrid webhook: the receiving servers' bounce reports come back to
the envelope sender's mailbox, and `replies fetch` finds them there. Each failed recipient
with a permanent status (5.x.x) becomes one `bounce` event for `events.ingest`, the path
SendGrid's bounce events take: the reader is marked bounced, the ledger row too, and stats
count it. A delay (4.x.x) changes nothing.
"""

from __future__ import annotations

import email.message
from dataclasses import dataclass
from email.parser import BytesHeaderParser, HeaderParser

__all__ = ["Bounce", "is_delivery_report", "read_delivery_report"]


@dataclass(frozen=True)
class Bounce:
    """One recipient a delivery report says could not be reached, for good."""

    address: str
    status: str  # "5.1.1"
    diagnostic: str  # the remote server's answer, e.g. "550 5.1.1 user unknown"
    #: The Message-ID of the message that bounced, when the report quotes its headers.
    original_message_id: str | None


def is_delivery_report(message: email.message.Message) -> bool:
    return (
        message.get_content_type() == "multipart/report"
        and str(message.get_param("report-type") or "").lower() == "delivery-status"
    )


def _address(value: str | None) -> str:
    """`rfc822; jörg@example.de` -> `jörg@example.de`."""
    if not value:
        return ""
    kind, _, address = value.partition(";")
    return (address if _ else kind).strip().strip("<>")


def _status_groups(part: email.message.Message) -> list[email.message.Message]:
    """The header groups of a message/delivery-status part: the message's own fields first,
    then one group per recipient. Python's parser gives them as sub-messages, or, with some
    policies, as one text payload of blank-line-separated groups."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [group for group in payload if isinstance(group, email.message.Message)]
    text = payload if isinstance(payload, str) else ""
    raw = part.get_payload(decode=True)
    if isinstance(raw, bytes) and not text:
        text = raw.decode("utf-8", "replace")
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    return [HeaderParser().parsestr(block) for block in blocks]


def _original_message_id(message: email.message.Message) -> str | None:
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
                found = inner[0].get("Message-ID")
                if found:
                    return str(found).strip()
        elif kind == "text/rfc822-headers":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                found = BytesHeaderParser().parsebytes(raw).get("Message-ID")
                if found:
                    return str(found).strip()
    return None


def read_delivery_report(message: email.message.Message) -> list[Bounce]:
    """The permanently failed recipients of a delivery status notification."""
    if not is_delivery_report(message):
        return []
    bounces: list[Bounce] = []
    original = _original_message_id(message)
    for part in message.walk():
        if part.get_content_type() not in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            continue
        for group in _status_groups(part)[1:]:
            action = (group.get("Action") or "").strip().lower()
            status = (group.get("Status") or "").strip()
            address = _address(group.get("Original-Recipient")) or _address(
                group.get("Final-Recipient")
            )
            if action != "failed" or not status.startswith("5") or "@" not in address:
                continue
            diagnostic = " ".join(str(group.get("Diagnostic-Code") or "").split())
            bounces.append(
                Bounce(
                    address=address,
                    status=status,
                    diagnostic=_address(diagnostic) if ";" in diagnostic else diagnostic,
                    original_message_id=original,
                )
            )
    return bounces
