"""What a transport's answers mean for the reader, applied as the provider's events would be.

SendGrid reports later what became of each message (its Event Webhook: `delivered`,
`bounce`); `capabilities.reports_delivery` says so. A transport without such reports (SMTP)
gives its last word at once: a `250` counts as delivered ("accepted by the mail server")
until a bounce says otherwise (the ledger keeps `accepted`), and a refused address (5xx at
RCPT) is a hard bounce. Both go
through `events.ingest`, the code that applies SendGrid's events, so the reader's status, the
ledger, `stats`, `report`, `doctor` and the archive see an SMTP send as they see a SendGrid one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from newsletter.events import ingest
from newsletter.sending.ledger import Ledger
from newsletter.sending.transports import Capabilities, Outcome, outcome_runs
from newsletter.store.schema import (
    CUSTOM_ARG_ISSUE,
    CUSTOM_ARG_SEND,
    CUSTOM_ARG_SUBSCRIBER,
    DeliveryState,
)

#: What `stats` and `report` call a delivery through a transport that reports none.
ACCEPTED_LABEL = "accepted by the mail server"
_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def answer_events(
    capabilities: Capabilities,
    issue_id: int,
    send_id: int,
    ids: Sequence[int],
    outcomes: Sequence[Outcome],
) -> list[dict[str, Any]]:
    """The provider-style events (`delivered`, `bounce`) the answers stand for."""
    if not capabilities.delivers:
        return []
    if capabilities.reports_delivery and not any(
        outcome.hard_bounce for outcome, _ in outcome_runs(outcomes)
    ):
        return []  # (SendGrid's answers: its own events say what became of each message)
    now = time.time()
    found: list[dict[str, Any]] = []
    for subscriber_id, outcome in zip(ids, outcomes, strict=True):
        if outcome.hard_bounce:
            name = "bounce"
            status = _STATUS.search(outcome.error or "")
            detail = {
                "type": "bounce",
                "reason": outcome.error,
                "status": status.group(1) if status else None,
            }
        elif outcome.state == DeliveryState.ACCEPTED and not capabilities.reports_delivery:
            name, detail = "delivered", {"response": ACCEPTED_LABEL}
        else:
            continue
        found.append(
            {
                "event": name,
                # One per send, reader and kind: an answer recorded twice counts once.
                "sg_event_id": f"answer-{send_id}-{subscriber_id}-{name}",
                "timestamp": now,
                "sg_message_id": outcome.message_id,
                CUSTOM_ARG_SUBSCRIBER: subscriber_id,
                CUSTOM_ARG_ISSUE: issue_id,
                CUSTOM_ARG_SEND: send_id,
                **{key: value for key, value in detail.items() if value is not None},
            }
        )
    return found


def apply_answers(
    engine: Engine,
    capabilities: Capabilities,
    issue_id: int,
    send_id: int,
    ids: Sequence[int],
    outcomes: Sequence[Outcome],
) -> None:
    """Apply the events the answers stand for; call it after the ledger recorded them. A
    bounce moves the ledger's row to bounced, as SendGrid's does; a 250 leaves it `accepted`
    (what the server said) and counts as delivered."""
    found = answer_events(capabilities, issue_id, send_id, ids, outcomes)
    bounces = [event for event in found if event["event"] == "bounce"]
    delivered = [event for event in found if event["event"] != "bounce"]
    if delivered:
        ingest(engine, delivered, update_ledger=False)
    if bounces:
        ingest(engine, bounces)


def record_answers(
    engine: Engine,
    capabilities: Capabilities,
    issue_id: int,
    send_id: int,
    ids: Sequence[int],
    outcomes: Sequence[Outcome],
    *,
    count: bool = False,
) -> None:
    """What the transport answered for a claimed batch: into the ledger (with `count`, the
    send's totals too, in the same transaction), then what the answers mean for the readers
    (`apply_answers`). Every send's batches, an issue's or a sequence step's, end here."""
    Ledger(engine).record_outcomes(issue_id, send_id, ids, outcomes, count=count)
    apply_answers(engine, capabilities, issue_id, send_id, ids, outcomes)
