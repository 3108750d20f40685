"""Typed summaries of sends for `newsletter sends` (and anything else that reports on them).

`send_summaries(engine, issue_id=None)` gives one `SendSummary` per send, with the ledger's
counts (or, for a transport that keeps no ledger and dry runs, the send's own totals), whether
its process is gone, and how many people joined after it was planned (they wait for
`--resume`). `recipients(engine, issue_id)` streams each recipient's state.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, exists, func, select

from newsletter.insights.metrics import ACCEPTED_STATES
from newsletter.segments.query import segment_condition
from newsletter.segments.sends import for_sends
from newsletter.segments.syntax import SegmentError, parse, where_label
from newsletter.sending.ledger import Ledger
from newsletter.sending.transports import capabilities_of
from newsletter.store.issues import PublishRule, publish_rule
from newsletter.store.schema import (
    DeliveryState,
    SubscriberStatus,
    deliveries,
    sequence_steps,
    subscribers,
)
from newsletter.store.subscribers import segment_filters
from newsletter.store.times import as_utc


@dataclass(frozen=True)
class SendSummary:
    id: int
    issue: str
    issue_id: int
    started_at: datetime
    status: str
    transport: str
    dry_run: bool
    segment: list[str]
    send_at: datetime | None
    error: str | None
    #: ledger state -> rows of this send (empty for a send without ledger)
    counts: dict[str, int] = field(default_factory=dict)
    #: planned recipients (None for sends older than the totals)
    recipients: int | None = None
    #: what was handed over: accepted / failed / uncertain
    handed_over: dict[str, int] | None = None
    keeps_ledger: bool = True
    #: its process died mid-send: `--resume` takes over
    process_gone: bool = False
    #: subscribed since the send was planned and not sent to (they wait for --resume)
    joined_since: int = 0
    #: a dry run validated by the provider's sandbox (else a dry run wrote files: the outbox)
    sandbox: bool = False
    finished_at: datetime | None = None
    #: whether this send makes its issue public on the web archive, and why
    publish: PublishRule | None = None
    #: `cancel` asked it to stop and has not finished cancelling it (yet)
    cancel_requested: bool = False
    #: the segment it went to (`--segment`/`--where`) as defined when it was planned
    segment_name: str | None = None
    segment_definition: str | None = None

    @property
    def segment_shown(self) -> str | None:
        """`segment aktive (clicked:last-5)`, `--where tag:x`, or None."""
        if self.segment_definition is None:
            return None
        if self.segment_name:
            return f"segment {self.segment_name} ({self.segment_definition})"
        return f"--where {self.segment_definition}"

    #: a resend's kind ("non-clickers", "non-openers", "new"); None for the first send
    resend: str | None = None
    #: the subject it used instead of the issue's (`send --subject`), if any
    subject: str | None = None

    @property
    def shown_status(self) -> str:
        """The status as it reads. A scheduled send that ended with every recipient failed
        has nothing at the provider: `failed`. (Stored, it stays `scheduled`, so that
        `send --resume` keeps its time and schedule id after the cause is fixed.)"""
        if self.status == "scheduled" and self.cancel_requested:
            return "cancelling"
        if self.status != "scheduled" or self.finished_at is None:
            return self.status
        if self.counts:
            every_one_failed = set(self.counts) == {DeliveryState.FAILED}
        else:  # its rows were taken over by a --resume: what this send itself handed over
            done = self.handed_over or {}
            every_one_failed = bool(done.get(DeliveryState.FAILED)) and not (
                done.get(DeliveryState.ACCEPTED) or done.get(DeliveryState.UNCERTAIN)
            )
        return "failed" if every_one_failed else self.status

    def shown_counts(self) -> str:
        """`accepted 2, uncertain 1`; for a send without ledger `written 2` (the outbox, also
        its dry runs) or `validated (sandbox) 2`; for a cancelled send `cancelled 2` (its
        ledger rows are gone; the totals say how many were scheduled)."""
        if self.counts:
            text = ", ".join(f"{state} {n}" for state, n in sorted(self.counts.items()))
        elif self.handed_over is not None:
            if self.status == "cancelled":
                label = "cancelled"
            elif self.sandbox:
                label = "validated (sandbox)"
            else:
                label = "written"
            done = {
                label: self.handed_over[DeliveryState.ACCEPTED],
                **{k: v for k, v in self.handed_over.items() if k != DeliveryState.ACCEPTED},
            }
            text = ", ".join(f"{k} {n}" for k, n in done.items() if n) or "none handed over"
        else:
            text = "-"
        if self.recipients is not None and self.status == "sending":
            text += f" (of {self.recipients})"
        if self.left_the_list:
            text += f", skipped {self.left_the_list} (no longer subscribed)"
        return text

    @property
    def left_the_list(self) -> int:
        """Planned readers no longer subscribed when their batch went out (unsubscribed,
        bounced, complained or erased meanwhile), who so got nothing, as they should: what a
        finished send handed over falls short of what it planned by these. Counted from the
        send's totals, which later resends and erasures leave as they are."""
        if self.status != "done" or self.recipients is None or self.handed_over is None:
            return 0
        return max(0, self.recipients - sum(self.handed_over.values()))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "issue": self.issue,
            "started": self.started_at.isoformat(),
            "status": self.shown_status,
            "transport": self.transport,
            "dry_run": self.dry_run,
            "segment": self.segment,
            "segment_name": self.segment_name,
            "segment_where": self.segment_definition,
            "send_at": self.send_at.isoformat() if self.send_at else None,
            "counts": self.counts,
            "recipients": self.recipients,
            "handed_over": self.handed_over,
            "joined_since": self.joined_since,
            "left_the_list": self.left_the_list,
            "process_gone": self.process_gone,
            "resend": self.resend,
            "subject": self.subject,
            "error": self.error,
            "published": self.publish.public if self.publish else None,
            "publish_rule": self.publish.reason if self.publish else None,
        }


def _joined_since(engine: Engine, row: Any, chosen: Any = None) -> int:
    """Subscribed (of the segment) and without the issue, after a send that ended without an
    error: it reached everyone it planned who was still subscribed, so these became
    subscribed after it was planned, whatever their id (a resubscribe keeps the old one)."""
    if row.up_to_subscriber is None:
        return 0
    reached = exists().where(
        deliveries.c.issue_id == row.issue_id, deliveries.c.subscriber_id == subscribers.c.id
    )
    with engine.connect() as conn:
        where = []
        if chosen is not None:  # in its segment as defined then, by today's data
            try:
                tree = parse(chosen.definition, where_label(chosen.name))
                where.append(segment_condition(conn, tree))
            except SegmentError:
                return 0
        return int(
            conn.execute(
                select(func.count())
                .select_from(subscribers)
                .where(
                    *segment_filters(SubscriberStatus.SUBSCRIBED, row.segment or []),
                    *where,
                    ~reached,
                )
            ).scalar_one()
        )


def _sequence_step_issues(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(select(sequence_steps.c.issue_id).distinct()).scalars())


def as_it_stands(
    rule: PublishRule,
    accepted: int,
    unfinished: bool,
    send_at: datetime | None,
    now: datetime,
) -> PublishRule:
    """A send's publish rule as the archive applies it now: a send the provider accepted
    nobody of reached no reader (`metrics.reached_readers`), and a scheduled one is public
    from its time on (`metrics.goes_out_at`)."""
    if not rule.public:
        return rule
    if not accepted:
        why = "no recipient accepted so far" if unfinished else "no recipient was accepted"
        return PublishRule(False, f"{why}; it is published once a send reached readers")
    if send_at is not None and as_utc(send_at) > now:
        return PublishRule(True, f"from {send_at:%Y-%m-%d %H:%M}, when it goes out; {rule.reason}")
    return rule


def send_summaries(
    engine: Engine,
    issue_id: int | None = None,
    front_matter_public: Mapping[str, bool | None] | None = None,
) -> list[SendSummary]:
    """`front_matter_public`: slug -> the issue file's `public:` (for the publish rule)."""
    flags = front_matter_public or {}
    steps = _sequence_step_issues(engine)
    ledger = Ledger(engine)
    rows = ledger.list_sends(issue_id)
    counts = ledger.counts_by_state(issue_id=issue_id)
    sums = ledger.totals()
    # A sequence run's sends are never dead for `--resume`: the next run reaps them itself.
    live = ledger.live_sends() | ledger.run_sends_unfinished()
    # (People who joined later wait for a --resume of the first send, not of a resend.)
    last_of_issue = {r.issue_id: r.id for r in rows if r.resend is None}
    chosen = for_sends(engine, (r.id for r in rows))
    now = datetime.now(UTC)
    out = []
    for r in rows:
        caps = capabilities_of(r.transport)
        keeps = bool(caps and caps.keeps_ledger) and not r.dry_run
        t = sums.get(r.id)
        unfinished = r.status == "sending" or (r.status == "scheduled" and r.finished_at is None)
        joined = 0
        ended_well = r.status == "done" or (
            r.status == "scheduled" and r.finished_at is not None and r.error is None
        )
        if keeps and last_of_issue.get(r.issue_id) == r.id and ended_well:
            joined = _joined_since(engine, r, chosen.get(r.id))
        out.append(
            SendSummary(
                id=r.id,
                issue=r.slug,
                issue_id=r.issue_id,
                started_at=r.started_at,
                status=r.status,
                transport=r.transport,
                dry_run=r.dry_run,
                segment=list(r.segment or []),
                send_at=r.send_at,
                error=r.error,
                counts=counts.get(r.id, {}),
                recipients=t.recipients if t is not None else None,
                handed_over=(
                    {"accepted": t.accepted, "failed": t.failed, "uncertain": t.uncertain}
                    if t is not None
                    else None
                ),
                keeps_ledger=keeps,
                process_gone=keeps and unfinished and r.id not in live,
                joined_since=joined,
                sandbox=bool(r.dry_run and caps and caps.has_sandbox),
                finished_at=r.finished_at,
                publish=as_it_stands(
                    publish_rule(
                        segment=list(r.segment or []),
                        dry_run=r.dry_run,
                        transport=r.transport,
                        status=r.status,
                        sequence_step=r.issue_id in steps,
                        front_matter_public=flags.get(r.slug),
                        segment_shown=chosen[r.id].shown if r.id in chosen else None,
                    ),
                    # (the totals outlive the ledger's rows, which a purge removes)
                    t.accepted
                    if t is not None
                    else sum(counts.get(r.id, {}).get(state, 0) for state in ACCEPTED_STATES),
                    unfinished,
                    r.send_at,
                    now,
                ),
                cancel_requested=r.cancel_requested_at is not None,
                segment_name=chosen[r.id].name if r.id in chosen else None,
                segment_definition=chosen[r.id].definition if r.id in chosen else None,
                resend=r.resend,
                subject=r.subject,
            )
        )
    return out


@dataclass(frozen=True)
class RecipientState:
    subscriber_id: int
    email: str
    state: str
    send_id: int
    message_id: str | None
    error: str | None
    #: which copy: "first", or a resend's kind (see `deliveries.send_round`)
    send_round: str = "first"


def recipients(engine: Engine, issue_id: int) -> Iterator[RecipientState]:
    for d in Ledger(engine).iter_deliveries(issue_id):
        yield RecipientState(
            d.subscriber_id, d.email, d.state, d.send_id, d.message_id, d.error, d.send_round
        )
