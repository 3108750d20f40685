"""Resending an issue to the part of its audience that missed it (issue 24).

`send ISSUE --resend KIND` sends the same issue again, once per kind:
- `non-clickers`: readers whose first copy was accepted (or delivered) and who neither
  clicked a link in it nor replied to it;
- `non-openers`: the same, with no human open either (machine opens, such as Apple Mail's
  prefetch, do not count; a click or a reply shows they opened it);
- `new`: readers who became subscribed after the first send and never had it.

Only people still subscribed are planned, and the ledger's claim checks that again per
batch, so nobody who unsubscribed, bounced or complained since gets it. The non-clickers'
and non-openers' copies are ledger rows of their own round (`deliveries.send_round` is the
kind), so the unique key lets each person have one first copy and one copy per resend kind,
and never two of either; the new readers' copies are first copies.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, func, or_, select

from newsletter.durations import parse_delay
from newsletter.errors import ConfigError
from newsletter.insights.metrics import human_open
from newsletter.sending.recipients import max_subscriber_id, planned_recipients
from newsletter.store.raw import driver_rows
from newsletter.store.schema import (
    FIRST_ROUND,
    DeliveryState,
    SubscriberStatus,
    deliveries,
    events,
    replies,
    sends,
    subscribers,
)
from newsletter.store.times import as_utc

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.project import Project

#: `[sending] resend_after` when not set.
DEFAULT_RESEND_AFTER = "24h"
#: A first copy that reached the reader, as far as the ledger knows.
GOT_IT = (DeliveryState.ACCEPTED, DeliveryState.DELIVERED)
#: A copy the provider took (what came of it aside).
HANDED_OVER = (*GOT_IT, DeliveryState.BOUNCED, DeliveryState.DROPPED)


class ResendKind(StrEnum):
    NON_CLICKERS = "non-clickers"
    NON_OPENERS = "non-openers"
    NEW = "new"

    @property
    def send_round(self) -> str:
        """The ledger round its copies are recorded in: the new readers' is their first."""
        return FIRST_ROUND if self is ResendKind.NEW else str(self)


@dataclass(frozen=True)
class FirstSend:
    """The issue's first real send: when it went out, to which segment, with opens tracked?"""

    id: int
    went_out: datetime
    segment: list[str]
    #: None: a send from before this was recorded (m020)
    track_opens: bool | None


def resend_after(project: Project) -> timedelta:
    """`[sending] resend_after` ("24h", "2d", "90m", "0") as a timedelta."""

    value = project.config.section("sending").get("resend_after")
    if value is None:
        value = DEFAULT_RESEND_AFTER  # (0 is a value: no wait)
    delay = parse_delay(value)
    if delay is None:
        raise ConfigError(
            f"{project.config.path}: [sending] resend_after {value!r} is not a time span; "
            'write it as "24h", "2d" or "90m"'
        )
    return delay


def first_send(engine: Engine, issue_id: int) -> FirstSend | None:
    """The earliest send of the issue that is no resend, no dry run, not cancelled, and left
    ledger rows (it handed mail over); None if there is none."""

    def earliest(handed_over: Any) -> Any:
        first_sends = select(sends).where(
            sends.c.issue_id == issue_id,
            sends.c.resend.is_(None),
            sends.c.dry_run.is_(False),
            sends.c.status != "cancelled",
            handed_over,
        )
        return conn.execute(first_sends.order_by(sends.c.id).limit(1)).first()

    with engine.connect() as conn:
        row = earliest(exists().where(deliveries.c.send_id == sends.c.id))
        if row is None:
            # Its rows may all have moved to a --resume's send: the earliest such send.
            row = earliest(
                exists().where(
                    deliveries.c.issue_id == issue_id, deliveries.c.send_round == FIRST_ROUND
                )
            )
    if row is None:
        return None
    started = as_utc(row.started_at)
    scheduled = as_utc(row.send_at)
    went_out = max(started, scheduled) if scheduled is not None else started
    assert went_out is not None
    return FirstSend(row.id, went_out, list(row.segment or []), row.track_opens)


def earlier_resend(engine: Engine, issue_id: int, kind: ResendKind) -> Any:
    """The latest real resend of this kind (not a dry run, not cancelled), or None."""
    with engine.connect() as conn:
        return conn.execute(
            select(sends)
            .where(
                sends.c.issue_id == issue_id,
                sends.c.resend == str(kind),
                sends.c.dry_run.is_(False),
                sends.c.status != "cancelled",
            )
            .order_by(sends.c.id.desc())
            .limit(1)
        ).first()


def resend_rows(engine: Engine, send_ids: Sequence[int]) -> dict[str, int]:
    """state -> ledger rows of these sends."""
    if not send_ids:
        return {}
    with engine.connect() as conn:
        return {
            state: n
            for state, n in conn.execute(
                select(deliveries.c.state, func.count())
                .where(deliveries.c.send_id.in_(list(send_ids)))
                .group_by(deliveries.c.state)
            )
        }


def opens_were_tracked(engine: Engine, issue_id: int, first: FirstSend) -> bool:
    """Was the open pixel on for the first send? Recorded on sends since m020; for an older
    send, whether any open of the issue came in."""
    if first.track_opens is not None:
        return first.track_opens
    with engine.connect() as conn:
        return (
            conn.execute(
                select(events.c.id)
                .where(events.c.issue_id == issue_id, events.c.event == "open")
                .limit(1)
            ).first()
            is not None
        )


def resend_recipients(
    engine: Engine,
    issue_id: int,
    kind: ResendKind,
    first: FirstSend,
    again: Sequence[str] = (),
    segment_where: Sequence[Any] = (),
) -> array[int]:
    """The ids a resend of this kind goes to, ascending: read once, at planning time.
    `again`: states of this round's own rows that may be sent to again (a --resume).
    `segment_where`: the condition of the segment the first send went to (for `new`: who
    joined it since; the others got the first send or not)."""
    if kind is ResendKind.NEW:
        joined = func.coalesce(subscribers.c.confirmed_at, subscribers.c.created_at)
        up_to_id = max_subscriber_id(engine)
        return planned_recipients(
            engine,
            first.segment,
            up_to_id,
            issue_id,
            again,
            where=[joined > first.went_out, *segment_where],
        )
    d = deliveries.c
    me = subscribers.c.id
    # Uncorrelated `NOT IN` sets, each read once (a correlated EXISTS per reader scanned the
    # replies, which have no index by reader, once for each of them).
    clickers = select(events.c.subscriber_id).where(
        events.c.issue_id == issue_id,
        events.c.event == "click",
        events.c.subscriber_id.is_not(None),
    )
    repliers = select(replies.c.subscriber_id).where(
        replies.c.issue_id == issue_id,
        replies.c.subscriber_id.is_not(None),
        replies.c.automatic.is_(False),
    )
    # A click or a reply says they read it (also with the pixel blocked).
    signals = [me.in_(clickers), me.in_(repliers)]
    if kind is ResendKind.NON_OPENERS:
        openers = select(events.c.subscriber_id).where(
            events.c.issue_id == issue_id,
            events.c.event == "open",
            events.c.subscriber_id.is_not(None),
            human_open(engine.dialect.name),
        )
        signals.append(me.in_(openers))
    # This round's copy: 'deliveries' again, under another name (the join's is the first copy).
    mine = deliveries.alias("this_round")
    had = [mine.c.state.not_in(list(again))] if again else []
    this_round = exists().where(
        mine.c.issue_id == issue_id,
        mine.c.subscriber_id == me,
        mine.c.send_round == kind.send_round,
        *had,
    )
    statement = (
        select(me)
        .select_from(subscribers.join(deliveries, d.subscriber_id == me))
        .where(
            d.issue_id == issue_id,
            d.send_round == FIRST_ROUND,
            d.state.in_([str(s) for s in GOT_IT]),
            subscribers.c.status == SubscriberStatus.SUBSCRIBED,
            ~or_(*signals),
            ~this_round,
        )
        .order_by(me)
    )
    with engine.connect() as conn:
        return array("q", (row[0] for row in driver_rows(conn, statement)))


def _span(wait: timedelta) -> str:
    """A wait as people say it: 24h (not 1d) up to two days, then days."""
    seconds = int(wait.total_seconds())
    for unit, size, least in (("d", 86400, 2 * 86400), ("h", 3600, 3600), ("m", 60, 0)):
        if seconds % size == 0 and seconds >= least:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cancelled_send(engine: Engine, issue_id: int) -> int | None:
    """The latest real send of the issue that was cancelled (`newsletter cancel`: its schedule
    cancelled at the provider and its ledger rows gone, so nothing of it went out), or None."""
    with engine.connect() as conn:
        return conn.execute(
            select(sends.c.id)
            .where(
                sends.c.issue_id == issue_id,
                sends.c.dry_run.is_(False),
                sends.c.status == "cancelled",
            )
            .order_by(sends.c.id.desc())
            .limit(1)
        ).scalar()


def _sent_without_ledger(engine: Engine, issue_id: int) -> bool:
    """The issue has sends, none of which left ledger rows (outbox, dry run)."""
    with engine.connect() as conn:
        return (
            conn.execute(select(sends.c.id).where(sends.c.issue_id == issue_id)).first() is not None
        )


def resend_refusal(
    engine: Engine,
    slug: str,
    issue_id: int | None,
    kind: ResendKind,
    *,
    after: timedelta,
    now: datetime,
    resume: bool,
) -> tuple[str | None, FirstSend | None, Any]:
    """(why not, the first send, the earlier resend of this kind being resumed)."""
    first = first_send(engine, issue_id) if issue_id is not None else None
    cancelled = None
    if first is None and issue_id is not None:
        cancelled = _cancelled_send(engine, issue_id)
    if cancelled is not None:
        return (
            f"{slug} has not gone out: its send {cancelled} was cancelled, so nobody got it "
            f"and there is nobody to resend to; send it again with `newsletter send {slug}`",
            None,
            None,
        )
    if first is None and issue_id is not None and _sent_without_ledger(engine, issue_id):
        return (
            f"{slug} went only to the outbox or as a dry run, which keep no record of who got "
            f"it; a resend follows a send through SendGrid or SMTP ([sending] transport)",
            None,
            None,
        )
    if first is None:
        return (
            f"{slug} has not been sent yet; a resend follows a send: "
            f"`newsletter send {slug}` first",
            None,
            None,
        )
    possible = first.went_out + after
    if now < possible:
        return (
            f"too soon to resend {slug} to {kind}: possible from {possible:%Y-%m-%d %H:%M} UTC "
            f"({_span(after)} after the first send; [sending] resend_after)",
            first,
            None,
        )
    assert issue_id is not None
    if kind is ResendKind.NON_OPENERS and not opens_were_tracked(engine, issue_id, first):
        return (
            f"cannot resend {slug} to non-openers: open tracking was off for its first send "
            f"(send {first.id}), so nobody's opens are known; use --resend {ResendKind.NON_CLICKERS}",
            first,
            None,
        )
    earlier = earlier_resend(engine, issue_id, kind)
    if earlier is None:
        if resume:
            return (
                f"{slug} has no resend to {kind} to resume; leave out --resume to start it",
                first,
                None,
            )
        return None, first, None
    rows = resend_rows(engine, [earlier.id])
    had = sum(n for state, n in rows.items() if state != DeliveryState.FAILED)
    if resume or had == 0:
        return None, first, earlier  # (every row failed: nobody has it, go on as a resume)
    return (
        f"{slug} was already resent to {kind} (send {earlier.id}, {had} recorded); a resend "
        f"goes once per kind: `newsletter send {slug} --resend {kind} --resume` finishes it",
        first,
        earlier,
    )


@dataclass(frozen=True)
class SendRound:
    """One copy of an issue as `stats ISSUE` shows it: the first send, or a resend."""

    kind: str  # "first", or the resend's kind
    subject: str | None  # its own subject (`--subject`), or None: the issue's
    copies: int  # copies the provider took (accepted, delivered, bounced, dropped)
    clicked: int  # readers among them who clicked the issue (at any time)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "copies": self.copies,
            "clicked": self.clicked,
        }


def send_rounds(engine: Engine, issue_id: int) -> list[SendRound]:
    """For `sends` and `stats ISSUE`: per round (the first send, then each resend kind) the
    copies handed over and the readers among them who clicked: after a resend to the
    non-clickers, its clickers are the ones the resend won back."""
    d = deliveries.c
    me = d.subscriber_id
    clicked = exists().where(
        events.c.issue_id == issue_id, events.c.subscriber_id == me, events.c.event == "click"
    )
    kind = func.coalesce(sends.c.resend, FIRST_ROUND)
    with engine.connect() as conn:
        rows = conn.execute(
            select(kind, func.max(sends.c.subject), func.count(), func.count().filter(clicked))
            .select_from(deliveries.join(sends, sends.c.id == d.send_id))
            .where(d.issue_id == issue_id, d.state.in_([str(s) for s in HANDED_OVER]))
            .group_by(kind)
        ).all()
    order = [FIRST_ROUND, *(str(k) for k in ResendKind)]
    found = [SendRound(str(k), subject, int(n), int(c)) for k, subject, n, c in rows]
    return sorted(found, key=lambda r: order.index(r.kind) if r.kind in order else len(order))


def rounds_table(rounds: Sequence[SendRound], issue_subject: str) -> str:
    """The first send and the resends, apart and together, as `stats ISSUE` shows them."""
    lines = ["First send and resends:"]
    for r in rounds:
        name = "first send" if r.kind == FIRST_ROUND else f"resend {r.kind}"
        lines.append(
            f"  {name:<22} {r.copies:>7} copies {r.clicked:>7} clicked   "
            f'subject "{r.subject or issue_subject}"'
        )
    total = sum(r.copies for r in rounds)
    lines.append(f"  {'together':<22} {total:>7} copies")
    return "\n".join(lines)
