"""The metrics `stats` and `report` show: their names, what each rate is over, and THE rule for
"a send that reached readers", which stats, the report and the archive's publish rule all use.

Everything that names a metric imports it from here; the counters (counters.py) count them,
the queries (queries.py) read them back, text.py and report.py show them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, literal_column

from newsletter.sending.transports import kinds_that
from newsletter.store import schema

# --- one issue's metrics -------------------------------------------------------------------

#: The metrics of one issue, in the order `stats ISSUE` lists them. Counts are unique readers.
ISSUE_METRICS = (
    "delivered",
    "bounced",
    "dropped",
    "opened",
    "clicked",
    "unsubscribed",
    "complained",
    "replied",
)
#: What each metric's rate is over: the recipients (what was handed over), or those it was
#: delivered to.
RATE_BASES = {
    **{metric: "recipients" for metric in ("delivered", "bounced", "dropped")},
    **{
        metric: "delivered"
        for metric in ("opened", "clicked", "unsubscribed", "complained", "replied")
    },
}
#: Replies are counted from the replies table (distinct senders, auto-replies left out); the
#: other metrics from SendGrid's events, as they arrive.
REPLIED = "replied"
EVENT_METRICS = tuple(m for m in ISSUE_METRICS if m != REPLIED)
#: An open that `sg_machine_open` marks as a machine's (Apple Mail, scanners): counted apart,
#: never shown as opened.
MACHINE_OPENED = "machine_opened"

#: SendGrid event -> the metric it counts for (opens are split by `sg_machine_open`).
METRIC_FOR_EVENT = {
    "delivered": "delivered",
    "bounce": "bounced",
    "dropped": "dropped",
    "open": "opened",
    "click": "clicked",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
    "spamreport": "complained",
}
EVENTS_FOR_METRIC: dict[str, tuple[str, ...]] = {}
for _event, _metric in METRIC_FOR_EVENT.items():
    EVENTS_FOR_METRIC[_metric] = (*EVENTS_FOR_METRIC.get(_metric, ()), _event)
EVENTS_FOR_METRIC[MACHINE_OPENED] = ("open",)
#: The values of `sg_machine_open` that mean a machine opened it (JSON true, or as text).
MACHINE_OPEN_VALUES = (True, 1, "true", "1")


def is_machine_open(detail: Mapping[str, Any]) -> bool:
    """An open event's detail says a machine opened it (Apple Mail's prefetch, a scanner)."""
    return detail.get("sg_machine_open") in MACHINE_OPEN_VALUES


def human_open(dialect: str) -> ColumnElement[bool]:
    """SQL, a condition on `events`: SendGrid did not flag this open as a machine's (the same
    test as `is_machine_open`, for resends, subject tests and segments' engagement)."""
    if dialect == "sqlite":
        flag = "json_extract(events.detail, '$.sg_machine_open') IN (1, 'true', '1')"
        return literal_column(f"NOT coalesce({flag}, 0)")
    return literal_column(
        "NOT coalesce((events.detail->>'sg_machine_open') IN ('true', '1'), false)"
    )


def metric_of(event: str, detail: Mapping[str, Any]) -> str | None:
    """The metric an event counts for, or None."""
    metric = METRIC_FOR_EVENT.get(event)
    if metric == "opened" and is_machine_open(detail):
        return MACHINE_OPENED
    return metric


# --- list growth ---------------------------------------------------------------------------

#: New people by how they came (the sign-up form, an import, `subscribers add`), and people
#: gone by why: the `list_counters` metrics the report's growth chart adds up.
GROWTH_NEW = ("new_form", "new_import", "new_added")
GROWTH_LOST = ("unsubscribed", "bounced", "complained")
#: List growth per period, in the order `stats --list` shows them (`list_counters` metrics,
#: kept by the triggers on `subscribers`).
GROWTH_METRICS = (*GROWTH_NEW, "confirmed", *GROWTH_LOST)
#: Sign-ups the form turned away (see `newsletter.signup_guard`), per reason; `stats --list`
#: shows their sum as `blocked`. Nobody is added for them, so no trigger sees them.
BLOCKED_METRICS = ("blocked_bot", "blocked_domain", "blocked_network", "blocked_address")


# --- the one rule: a send that reached readers ---------------------------------------------

#: Delivery states that mean the provider took the message (later events included: a bounce
#: or a drop happens only after the provider accepted it). `failed` is a rejection;
#: `uncertain` and `in_flight` are not known to have gone out.
ACCEPTED_STATES = ("accepted", "delivered", "bounced", "dropped")
#: Delivery states counted as handed over, the `recipients` rates are over when a send has no
#: totals: accepted ones, and uncertain ones (the answer was lost; SendGrid may have them).
HANDED_OVER_STATES = (*ACCEPTED_STATES, "uncertain")


def delivering_transports() -> list[str]:
    """Transports whose sends reach readers (the outbox only writes .eml files here): asked
    of the transports' capabilities, never by name."""
    return kinds_that(lambda capabilities: capabilities.delivers)


def reason_no_reader(*, dry_run: bool, transport: str, status: str) -> str | None:
    """Why a send can reach no reader, whatever its deliveries say (None: it can). The part
    of `reached_readers` that a send's row tells alone, for messages about one send."""
    if dry_run:
        return "a dry run"
    if transport not in delivering_transports():
        return f"the {transport} transport reaches no reader"
    if status == "cancelled":
        return "cancelled"
    return None


def reached_readers() -> ColumnElement[bool]:
    """THE rule for "a send that reached readers", as a condition on `sends`.

    Not a dry run, through a transport that delivers, not cancelled, and the provider accepted
    at least one recipient. So a send rejected for every recipient, an outbox send and a dry
    run reached nobody (a `--test` copy records no send at all); a crashed, stopped or failed
    send that handed over some did, and so does a scheduled one, whose mail the provider holds
    until its time. `stats` and `report` count an issue as sent by it, and the archive
    publishes by it (at `goes_out_at`).
    """
    s, d = schema.sends, schema.deliveries
    return and_(
        s.c.dry_run.is_(False),
        s.c.transport.in_(delivering_transports()),
        s.c.status != "cancelled",
        exists().where(d.c.send_id == s.c.id, d.c.state.in_(ACCEPTED_STATES)),
    )


def goes_out_at() -> ColumnElement[Any]:
    """When a send's mail goes out: its scheduled time, else when it started."""
    s = schema.sends
    return func.coalesce(s.c.send_at, s.c.started_at)


def sequence_step(issue_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """The issue is a welcome-sequence step: personal mail, never an issue in stats' list or
    the archive (`stats sequences/NAME/STEP` shows one)."""
    return exists().where(schema.sequence_steps.c.issue_id == issue_id)
