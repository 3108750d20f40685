"""Subject-line tests (issue 24, item 4): `send ISSUE --subject-b TEXT [--sample 20%]
[--decide-after 4h] [--by clicks|replies|opens]`.

A random sample of the planned recipients is split in two halves; half A gets the issue's
subject, half B the other one. After the wait, the subject with the better rate wins (by a
two-proportion z-test at 95 %; within noise, A wins) and goes to everyone else. The members
of each arm are fixed when the test is planned (`subject_test_members`); every copy is an
ordinary first-round ledger row, so the ledger's unique key (issue, reader, round) makes a
second copy, and so "both subjects", impossible, and the lease and claim of the one send
engine keep runners from sending the rest twice.

The decision and the rest need no laptop: `newsletter run-due` (cron; `run_due.py`) does
what is due: it finishes an arm a crash interrupted, decides when the time has come
(compare-and-set, so of several runners one decides), and sends the rest.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from newsletter.durations import parse_delay
from newsletter.errors import SendError
from newsletter.insights.metrics import human_open
from newsletter.store.raw import driver_rows
from newsletter.store.schema import (
    FIRST_ROUND,
    DeliveryState,
    SubscriberStatus,
    deliveries,
    events,
    replies,
    subject_test_members,
    subject_tests,
    subscribers,
)
from newsletter.store.times import as_utc

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.project import Project
    from newsletter.sending.transports import Transport

METRICS = ("clicks", "replies", "opens")
ARMS = ("a", "b")
#: |z| at or above this: the difference is not noise (two-sided, 95 %).
Z_CRITICAL = 1.96
DEFAULT_SAMPLE = 20
DEFAULT_WAIT = "4h"
#: A copy that reached the reader, as far as the ledger knows: the rate's denominator.
GOT_IT = (DeliveryState.ACCEPTED, DeliveryState.DELIVERED)


@dataclass(frozen=True)
class SubjectTestSetup:
    """What the author asked for."""

    subject_b: str
    sample_percent: int = DEFAULT_SAMPLE
    decide_after: timedelta = timedelta(hours=4)
    metric: str = "clicks"


def default_metric(project: Project, transport: Transport) -> str:
    """`--by` when not given: clicks where they are tracked and reported (click tracking on,
    through SendGrid), else replies, which every transport brings back."""
    tracked = project.config.section("tracking")["clicks"]
    return "clicks" if tracked and transport.capabilities.reports_delivery else "replies"


def parse_sample(text: str) -> int:
    """`20%` or `20` -> 20 (1 to 100); ValueError otherwise."""
    value = int(text.strip().removesuffix("%").strip())
    if not 1 <= value <= 100:
        raise ValueError(text)
    return value


def parse_wait(text: str) -> timedelta:

    wait = parse_delay(text)
    if wait is None:
        raise ValueError(text)
    return wait


def setup_refusal(
    project: Project, setup: SubjectTestSetup, transport: Transport | None = None
) -> str | None:
    """A rate that cannot be measured is refused before anything is sent: clicks and opens
    come from a provider that reports them (SendGrid's events), not over SMTP."""
    if setup.metric not in METRICS:
        return f"--by {setup.metric}: the rate is one of {', '.join(METRICS)}"
    reports = transport is None or transport.capabilities.reports_delivery
    if setup.metric in ("clicks", "opens") and not reports:
        assert transport is not None
        return (
            f"--by {setup.metric} cannot be measured over {transport.kind}: only SendGrid "
            f"reports {setup.metric}; use --by replies"
        )
    tracking = project.config.section("tracking")
    if setup.metric == "clicks" and not tracking["clicks"]:
        return "--by clicks needs click tracking: set [tracking] clicks = true, or use --by replies"
    if setup.metric == "opens" and not tracking["opens"]:
        return "--by opens needs open tracking: set [tracking] opens = true, or use --by clicks"
    return None


def split(
    planned: Sequence[int], percent: int, rng: random.Random | None = None
) -> dict[str, list[int]]:
    """A random sample of `percent` % (at least one reader per arm when there are two), in
    two halves, and the rest; each ascending."""
    ids = list(planned)
    (rng or random.SystemRandom()).shuffle(ids)
    size = min(len(ids), max(2, round(len(ids) * percent / 100)))
    half = size // 2
    return {"a": sorted(ids[:half]), "b": sorted(ids[half:size]), "rest": sorted(ids[size:])}


def create_test(
    engine: Engine,
    issue_id: int,
    subject_a: str,
    setup: SubjectTestSetup,
    segment: Sequence[str],
    arms: dict[str, list[int]],
    now: datetime,
    chosen: Any = None,
) -> int:
    """The test and its members, in one transaction, before anything is sent; `segment`
    its --tag values, `chosen` its --segment / --where (a `Segment`), if any."""
    try:
        with engine.begin() as conn:
            test_id = int(
                conn.execute(
                    insert(subject_tests).values(
                        issue_id=issue_id,
                        subject_a=subject_a,
                        subject_b=setup.subject_b,
                        sample_percent=setup.sample_percent,
                        metric=setup.metric,
                        segment=list(segment),
                        segment_name=None if chosen is None else chosen.name,
                        segment_definition=None if chosen is None else chosen.definition,
                        created_at=now,
                        decide_at=now + setup.decide_after,
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            )
            rows = [
                {"test_id": test_id, "subscriber_id": sid, "arm": arm}
                for arm, ids in arms.items()
                for sid in ids
            ]
            for start in range(0, len(rows), 5000):
                conn.execute(insert(subject_test_members), rows[start : start + 5000])
    except IntegrityError:
        raise SendError(
            "this issue has a subject-line test already; `newsletter run-due` carries it on"
        ) from None
    return test_id


def find_test(engine: Engine, issue_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(subject_tests).where(subject_tests.c.issue_id == issue_id)
        ).first()


def subject_of(test: Any, arm: str) -> str | None:
    """The subject an arm gets (the rest: the winner's; None before the decision)."""
    if arm == "rest":
        arm = test.winner or ""
    return {"a": test.subject_a, "b": test.subject_b}.get(arm)


def pending(engine: Engine, test: Any, arm: str, again: Sequence[str]) -> array[int]:
    """The arm's members still subscribed who have no first copy (or one in an `again`
    state): who its send goes to, ascending."""
    m = subject_test_members.c
    had = exists().where(
        deliveries.c.issue_id == test.issue_id,
        deliveries.c.subscriber_id == m.subscriber_id,
        deliveries.c.send_round == FIRST_ROUND,
        deliveries.c.state.not_in(list(again)),
    )
    statement = (
        select(m.subscriber_id)
        .join(subscribers, subscribers.c.id == m.subscriber_id)
        .where(
            m.test_id == test.id,
            m.arm == arm,
            subscribers.c.status == SubscriberStatus.SUBSCRIBED,
            ~had,
        )
        .order_by(m.subscriber_id)
    )
    with engine.connect() as conn:
        return array("q", (row[0] for row in driver_rows(conn, statement)))


def _signal(engine: Engine, metric: str, issue_id: int) -> Any:
    """SQL: the reader (subject_test_members.subscriber_id) did what the metric counts. An
    uncorrelated IN set, read once (replies have no index by reader)."""
    me = subject_test_members.c.subscriber_id
    if metric == "replies":
        return me.in_(
            select(replies.c.subscriber_id).where(
                replies.c.issue_id == issue_id,
                replies.c.subscriber_id.is_not(None),
                replies.c.automatic.is_(False),
            )
        )
    conditions = [events.c.issue_id == issue_id, events.c.subscriber_id.is_not(None)]
    if metric == "clicks":
        conditions.append(events.c.event == "click")
    else:
        conditions += [events.c.event == "open", human_open(engine.dialect.name)]
    return me.in_(select(events.c.subscriber_id).where(*conditions))


@dataclass(frozen=True)
class ArmResult:
    arm: str
    subject: str
    size: int  # members of the arm who got their copy (accepted or delivered)
    hits: int  # of them, those who clicked / replied / opened

    @property
    def rate(self) -> float:
        return self.hits / self.size if self.size else 0.0


def arm_results(engine: Engine, test: Any) -> dict[str, ArmResult]:
    """Per arm (a, b and rest): who got it, and who of them did what the test counts."""
    m = subject_test_members.c
    got = exists().where(
        deliveries.c.issue_id == test.issue_id,
        deliveries.c.subscriber_id == m.subscriber_id,
        deliveries.c.send_round == FIRST_ROUND,
        deliveries.c.state.in_([str(s) for s in GOT_IT]),
    )
    hit = _signal(engine, test.metric, test.issue_id)
    with engine.connect() as conn:
        rows = conn.execute(
            select(m.arm, func.count(), func.count().filter(hit))
            .where(m.test_id == test.id, got)
            .group_by(m.arm)
        ).all()
    found = {arm: (int(n), int(h)) for arm, n, h in rows}
    out = {}
    for arm in (*ARMS, "rest"):
        n, h = found.get(arm, (0, 0))
        out[arm] = ArmResult(arm, subject_of(test, arm) or "", n, h)
    return out


def z_score(a: ArmResult, b: ArmResult) -> float:
    """Two-proportion z-test (pooled): how many standard errors B's rate is above A's."""
    if not a.size or not b.size:
        return 0.0
    pooled = (a.hits + b.hits) / (a.size + b.size)
    error = math.sqrt(pooled * (1 - pooled) * (1 / a.size + 1 / b.size))
    return 0.0 if error == 0 else (b.rate - a.rate) / error


def judge(a: ArmResult, b: ArmResult, metric: str) -> tuple[str, str, float]:
    """(winner, the sentence saying why, z): the better rate if the difference is beyond
    noise, else A."""
    z = z_score(a, b)
    shown = (
        f"A {a.rate:.1%} ({a.hits} of {a.size}) vs B {b.rate:.1%} ({b.hits} of {b.size}) by "
        f"{metric}; two-proportion z-test: z = {z:.2f}"
    )
    if abs(z) < Z_CRITICAL:
        return "a", f"A wins: the difference is within noise ({shown}, |z| < {Z_CRITICAL})", z
    winner = "b" if z > 0 else "a"
    return winner, f"{winner.upper()} wins ({shown}, |z| >= {Z_CRITICAL}, 95 %)", z


def decide(engine: Engine, test: Any, now: datetime) -> Any:
    """Decide once: of several runners, the first to set the winner wins the race
    (compare-and-set on `winner IS NULL`); returns the test as stored afterwards."""
    results = arm_results(engine, test)
    winner, why, z = judge(results["a"], results["b"], test.metric)
    decision = {
        "why": why,
        "z": round(z, 4),
        "test": "two-proportion z-test (pooled), 95 %, two-sided",
        **{arm: {"size": results[arm].size, "hits": results[arm].hits} for arm in ARMS},
    }
    with engine.begin() as conn:
        conn.execute(
            update(subject_tests)
            .where(
                subject_tests.c.id == test.id,
                subject_tests.c.winner.is_(None),
                subject_tests.c.cancelled_at.is_(None),  # (`cancel` came first: no decision)
            )
            .values(winner=winner, decided_at=now, decision=decision)
        )
    return find_test(engine, test.issue_id)


def finish(engine: Engine, test: Any, now: datetime) -> None:
    """Mark the test done: its rest has the winner."""
    with engine.begin() as conn:
        conn.execute(
            update(subject_tests)
            .where(subject_tests.c.id == test.id, subject_tests.c.finished_at.is_(None))
            .values(finished_at=now)
        )


def is_open(test: Any) -> bool:
    """Still under way: neither done (the rest has the winner) nor cancelled."""
    return test is not None and test.finished_at is None and test.cancelled_at is None


def mark_cancelled(engine: Engine, test: Any, now: datetime) -> bool:
    """Cancel the test unless it is done or cancelled already (compare-and-set); from now on
    no decision is made and no arm is planned. Whether this call cancelled it."""
    with engine.begin() as conn:
        result = conn.execute(
            update(subject_tests)
            .where(
                subject_tests.c.id == test.id,
                subject_tests.c.finished_at.is_(None),
                subject_tests.c.cancelled_at.is_(None),
            )
            .values(cancelled_at=now)
        )
    return result.rowcount == 1


def was_cancelled(engine: Engine, issue_id: int) -> bool:
    test = find_test(engine, issue_id)
    return test is not None and test.cancelled_at is not None


def planned_sizes(engine: Engine, test: Any) -> dict[str, int]:
    """Per arm (a, b and rest): how many readers it was planned for."""
    with engine.connect() as conn:
        return dict(
            conn.execute(  # type: ignore[arg-type]
                select(subject_test_members.c.arm, func.count())
                .where(subject_test_members.c.test_id == test.id)
                .group_by(subject_test_members.c.arm)
            ).all()
        )


def subject_test_summary(engine: Engine, issue_id: int) -> dict[str, Any] | None:
    """For `stats ISSUE`: both subjects, their samples and rates, the winner and why."""
    test = find_test(engine, issue_id)
    if test is None:
        return None
    results = arm_results(engine, test)
    planned = planned_sizes(engine, test)
    return {
        "metric": test.metric,
        "sample_percent": test.sample_percent,
        "decide_at": as_utc(test.decide_at).isoformat(),  # type: ignore[union-attr]
        "arms": {
            arm: {
                "subject": subject_of(test, arm) if arm in ARMS else None,
                "planned": int(planned.get(arm, 0)),
                "got_it": results[arm].size,
                "hits": results[arm].hits,
                "rate": round(results[arm].rate, 4),
            }
            for arm in (*ARMS, "rest")
        },
        "winner": test.winner,
        "decision": test.decision,
        "finished": test.finished_at is not None,
        "cancelled_at": (
            None if test.cancelled_at is None else as_utc(test.cancelled_at).isoformat()  # type: ignore[union-attr]
        ),
    }


def state_line(summary: dict[str, Any]) -> str:
    """One line: where the test stands (for `sends ISSUE`)."""
    rest = summary["arms"]["rest"]
    sample = sum(summary["arms"][arm]["got_it"] for arm in ARMS)
    if summary["cancelled_at"]:
        when = summary["cancelled_at"][:16].replace("T", " ")
        return (
            f"Subject-line test: cancelled {when} UTC; {sample} of the sample got it, "
            f"{rest['got_it']} of the rest ({rest['planned']}) got the issue"
        )
    if summary["finished"]:
        return f"Subject-line test: done; subject {summary['winner'].upper()} won"
    if summary["winner"]:
        return f"Subject-line test: subject {summary['winner'].upper()} won; the rest is being sent"
    due = summary["decide_at"][:16].replace("T", " ")
    return f"Subject-line test: {sample} of the sample got it; the decision is due at {due} UTC"


def summary_table(summary: dict[str, Any]) -> str:
    lines = [f"Subject-line test (by {summary['metric']}, sample {summary['sample_percent']} %):"]
    for arm in ARMS:
        a = summary["arms"][arm]
        lines.append(
            f"  {arm.upper()}  {a['got_it']:>6} got it {a['hits']:>6} {summary['metric']:<8}"
            f' {a["rate"]:>7.1%}   subject "{a["subject"]}"'
        )
    rest = summary["arms"]["rest"]
    if summary["cancelled_at"]:
        if summary["winner"]:
            lines.append(f"  {summary['decision']['why']}")
        when = summary["cancelled_at"][:16].replace("T", " ")
        lines.append(
            f"  cancelled {when} UTC (`newsletter cancel`): {rest['got_it']} of the rest "
            f"({rest['planned']}) got the issue, the others nothing"
        )
    elif summary["winner"]:
        lines.append(f"  {summary['decision']['why']}")
        lines.append(
            f"  the rest: {rest['got_it']} of {rest['planned']} got subject "
            f"{summary['winner'].upper()}"
            + ("" if summary["finished"] else " (still sending: `newsletter run-due`)")
        )
    else:
        lines.append(
            f"  not decided yet: due at {summary['decide_at'][:16].replace('T', ' ')} UTC; "
            f"{rest['planned']} wait for the winner (`newsletter run-due`)"
        )
    return "\n".join(lines)
