"""What `newsletter run-due` (cron) and `serve --run-due` do: carry each unfinished
subject-line test on (`subject_test.py`): finish an arm a crash interrupted, decide when the
time has come, and send the winner to the rest, each send planned and carried out by the one
send engine (`plan.py`, `execute.py`).

Kept apart from `subject_test.py`, which the plan asks about an arm's members and subject:
this is what plans and executes, so it sits above both.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from newsletter.errors import NewsletterError, SendError
from newsletter.masking import mask_addresses
from newsletter.sending.execute import SendReport, execute
from newsletter.sending.ledger import Ledger
from newsletter.sending.plan import SendRequest, plan_send
from newsletter.sending.subject_test import (
    ARMS,
    decide,
    find_test,
    finish,
    pending,
    was_cancelled,
)
from newsletter.store.engine import project_engine
from newsletter.store.schema import issues, subject_tests
from newsletter.store.times import as_utc

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.project import Project


@dataclass
class DueOutcome:
    """What `run-due` did for one test: lines to show, and whether something went wrong."""

    slug: str
    lines: list[str] = field(default_factory=list)
    error: str | None = None
    interrupted: bool = False


def send_arm(
    project: Project,
    slug: str,
    arm: str,
    now: datetime,
    progress: Callable[[SendReport], None] | None = None,
) -> tuple[Any, Any]:
    """Plan and carry out one arm's send (the arm's pending members, its subject); returns
    (plan, report), report None when there was nobody (or the plan was refused)."""
    plan = plan_send(project, slug, SendRequest(subject_test_arm=arm, now=now))
    if plan.refusal or plan.nobody:
        return plan, None
    return plan, execute(plan, progress)


def run_due(project: Project, now: datetime) -> list[DueOutcome]:
    """Every unfinished subject-line test: finish its arms, decide when due, send the rest."""
    engine = project_engine(project)
    with engine.connect() as conn:
        tests = conn.execute(
            select(subject_tests, issues.c.slug)
            .join(issues, issues.c.id == subject_tests.c.issue_id)
            .where(subject_tests.c.finished_at.is_(None), subject_tests.c.cancelled_at.is_(None))
            .order_by(subject_tests.c.id)
        ).all()
    return [_carry_on(project, engine, test, now) for test in tests]


def _carry_on(project: Project, engine: Engine, test: Any, now: datetime) -> DueOutcome:
    slug = test.slug
    out = DueOutcome(slug)
    arms: list[str] = [arm for arm in ARMS]
    if test.winner is None and as_utc(test.decide_at) <= now:  # type: ignore[operator]
        arms.append("decide")
    elif test.winner is not None:
        arms.append("rest")
    for step in arms:
        if step == "decide":
            fresh = find_test(engine, test.issue_id)
            if any(len(pending(engine, fresh, arm, ())) for arm in ARMS):
                out.lines.append(f"{slug}: the sample is not all sent yet; not deciding")
                return out
            test = decide(engine, fresh, now)
            if test.winner is None:  # (`newsletter cancel` came first)
                out.lines.append(
                    f"{slug}: the subject-line test was cancelled; nothing more goes out"
                )
                return out
            out.lines.append(f"{slug}: {test.decision['why']}")
            step = "rest"
        try:
            plan, report = send_arm(project, slug, step, now)
        except SendError as exc:
            # Another runner took the issue's lease (or recorded the batch) first: it sends,
            # or has sent already; this one has nothing to do. Anything else is an error.
            others = Ledger(engine).running(test.issue_id) is not None
            if not others and len(pending(engine, find_test(engine, test.issue_id), step, ())):
                raise
            out.lines.append(f"{slug}: {exc}")
            return out
        stopped = plan.refusal or (report is not None and report.cancelled)
        if stopped and was_cancelled(engine, test.issue_id):  # (`newsletter cancel`, just now)
            out.lines.append(f"{slug}: the subject-line test was cancelled; nothing more goes out")
            return out
        if plan.refusal:
            out.lines.append(f"{slug}: {plan.refusal}")
            out.error = plan.refusal if "is running" not in plan.refusal else None
            return out
        if report is None:
            continue
        label = f"subject {step.upper()}" if step in ARMS else "the rest (winner)"
        out.lines.append(
            f"{slug}: {label}: send {report.send_id}, {report.accepted} accepted"
            + (f", {report.failed} failed" if report.failed else "")
            + (f", {report.uncertain} uncertain" if report.uncertain else "")
        )
        if report.interrupted:
            out.interrupted = True
            return out
        if report.error:
            out.error = report.error
            return out
    if test.winner is not None and not len(pending(engine, test, "rest", ())):
        finish(engine, test, now)
        out.lines.append(f"{slug}: subject-line test done")
    elif test.winner is None:
        at = as_utc(test.decide_at)
        out.lines.append(f"{slug}: the decision is due at {at:%Y-%m-%d %H:%M} UTC")
    return out


class DueRunner:
    """`serve --run-due`: `run_due` every `interval` seconds in a thread, until `stop()`.
    A failing run is logged in one line (addresses masked) and tried again at the next tick.
    A send it is in the middle of when `serve` stops is settled by the next run (its batch in
    flight becomes uncertain, never sent twice)."""

    def __init__(self, project: Project, *, interval: float = 60.0) -> None:
        self.project = project
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="run-due", daemon=True)

    def start(self) -> DueRunner:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        log = logging.getLogger("newsletter.run_due")
        while not self._stop.is_set():
            try:
                for outcome in run_due(self.project, datetime.now(UTC)):
                    for line in outcome.lines:
                        log.info("run-due: %s", mask_addresses(line))
                    if outcome.error:
                        log.warning("run-due: %s", mask_addresses(outcome.error))
            except NewsletterError as exc:
                log.error("run-due failed: %s", mask_addresses(str(exc)))
            except SQLAlchemyError as exc:
                log.error("run-due failed: database error (%s)", type(exc).__name__)
            self._stop.wait(self.interval)
