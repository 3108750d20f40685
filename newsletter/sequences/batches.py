"""The sequence run itself (see `runner.py` for what one run does and guarantees): the people
due now as a source of batches for the one sending loop (`sending.loop`). Each batch is
claimed under a row lock, in one transaction with the move of each reader to their next step
(`ledger.claim_on`, `state.apply_moves`); the lease, the reaping of dead runs, the sending and
the recording are `sending`'s. `runner.run_due` comes here only when its cheap `precheck` did
not rule out that anything is due.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Text, select, type_coerce

from newsletter.check import imprint_missing
from newsletter.errors import NewsletterError
from newsletter.sending.execute import Row, stop_on_signals
from newsletter.sending.factory import Chosen, batch_limits, choose_transport
from newsletter.sending.ledger import Ledger, RunLease, claim_on
from newsletter.sending.loop import Loop, Work
from newsletter.sending.transports import Outcome, Transport
from newsletter.sequences import delivery, state
from newsletter.sequences.clock import Clock
from newsletter.sequences.config import SequenceConfig, configured
from newsletter.sequences.renames import suspected_renames
from newsletter.sequences.report import RunReport
from newsletter.step import FOLDER, Step, due_at, load_sequence
from newsletter.store.engine import project_engine
from newsletter.store.schema import DeliveryState, sequence_enrollments, subscribers

if TYPE_CHECKING:
    from newsletter.project import Project

#: A batch the transport refused is tried again this much later.
RETRY_AFTER = timedelta(minutes=10)

e = sequence_enrollments


#: The lease source of a sequence run (`send_leases.source`).
SOURCE = "sequences"


def reap_dead_runs(engine: Engine, wall_now: datetime) -> int:
    """In-flight deliveries of runs whose process is gone become `uncertain`; returns how many
    (the ledger's reaper, for sequence runs)."""
    return Ledger(engine).reap_gone_runs(
        SOURCE,
        wall_now,
        row_error="the sequence run stopped while this email was in flight",
        send_error="the sequence run's process died; its in-flight emails are uncertain",
    )


# --- the run -----------------------------------------------------------------------------------


@dataclass
class _Loaded:
    config: SequenceConfig
    steps: list[Step]
    timezone: str
    issue_ids: dict[str, int]  # step key -> issues id


def _load(
    project: Project, engine: Engine, report: RunReport, now: datetime, wall_now: datetime
) -> list[_Loaded]:
    timezone = project.config.section("newsletter")["timezone"]
    loaded = []
    for sequence in configured(project):
        try:
            steps = load_sequence(project, sequence.name)
        except NewsletterError as exc:
            report.errors.append(f"sequence {sequence.name} skipped: {exc}")
            continue
        if not steps:
            report.errors.append(
                f"sequence {sequence.name} skipped: it has no steps; add "
                f"sequences/{sequence.name}/01-willkommen.md"
            )
            continue
        refusal = _legal_refusal(project, steps)
        if refusal:  # (as `send` refuses an issue; `sequences check` says so too)
            report.errors.append(f"sequence {sequence.name} skipped: {refusal}")
            continue
        suspects = suspected_renames(engine, sequence.name, steps)
        if suspects:  # nothing is sent, rescheduled or recorded until the author says
            report.held_back += [
                f"sequence {sequence.name} held back: {FOLDER}/{sequence.name}/"
                f"{suspect.step.path.name}: {suspect.message()}"
                for suspect in suspects
            ]
            continue
        state.record_step_numbers(engine, sequence.name, steps)
        report.rescheduled += state.reschedule_if_changed(
            engine, sequence.name, steps, timezone, now
        )
        # Against the later of the two clocks: a forced run ahead keeps what it scheduled,
        # and a catch-up run (`--now` in the past) does not take anyone's next step earlier.
        from_the_future = state.reschedule_from_the_future(
            engine, sequence.name, steps, timezone, max(now, wall_now)
        )
        report.from_the_future += from_the_future
        report.rescheduled += from_the_future
        loaded.append(_Loaded(sequence, steps, timezone, {}))
    return loaded


def _legal_refusal(project: Project, steps: list[Step]) -> str | None:
    """Why the law forbids sending these steps (a German step without an Impressum), or None."""
    if any(step.issue.language == "de" for step in steps):
        return imprint_missing(project, "de")
    return None


def anything_due(engine: Engine, names: Sequence[str], now: datetime) -> bool:
    if not names:
        return False
    with engine.connect() as conn:
        return (
            conn.execute(
                select(e.c.id)
                .where(e.c.next_due_at <= now, e.c.state == state.ACTIVE, e.c.sequence.in_(names))
                .limit(1)
            ).first()
            is not None
        )


def send_due(
    project: Project,
    now: datetime,
    *,
    wall: Clock,
    transport: Chosen | None,
    progress: Callable[[RunReport], None] | None,
    include_uncertain: bool,
    stop: threading.Event,
) -> RunReport:
    """`runner.run_due`'s work, at the schedule time `now`. From the first claim on, Ctrl-C
    and SIGTERM (in the main thread) set `stop` instead of raising: the run ends once what
    is in flight is settled."""
    engine = project_engine(project)
    report = RunReport()
    wall_now = wall.now()
    report.reaped = reap_dead_runs(engine, wall_now)
    loaded = _load(project, engine, report, now, wall_now)
    report.stopped += state.stop_departed(engine, [s.config.name for s in loaded], wall_now)
    if include_uncertain:
        for item in loaded:
            report.retried += state.retry_uncertain(engine, item.config.name, now)
    if not anything_due(engine, [s.config.name for s in loaded], now):
        return report
    chosen = transport or choose_transport(project)  # (the one factory, as for `send`)
    delivery.check_can_send(project, chosen.transport)
    report.transport, report.where = chosen.transport.kind, chosen.transport.where
    report.note = chosen.note
    for item in loaded:
        for step in item.steps:
            item.issue_ids[step.key] = state.ensure_step_issue(engine, step, step.issue.subject)
    run = Ledger(engine).start_run(SOURCE, wall.now)
    try:
        with stop_on_signals(stop):
            for item in loaded:
                _send_sequence(
                    project, engine, run, chosen.transport, item, now, report, progress, stop
                )
                if report.error or stop.is_set():
                    break
    except BaseException as exc:
        run.finish(report.error or f"interrupted ({type(exc).__name__})")
        raise
    finally:
        chosen.transport.close()
        gc.unfreeze()  # `serve` runs on: its loop collects what this run left as usual
    report.interrupted = stop.is_set()
    run.finish(report.error or ("interrupted" if report.interrupted else None))
    return report


@dataclass
class _Claimed:
    step: Step
    rows: list[Row]
    send_id: int
    following: dict[int, str | None]  # subscriber id -> the step key they moved on to


def _send_sequence(
    project: Project,
    engine: Engine,
    run: RunLease,
    transport: Transport,
    item: _Loaded,
    now: datetime,
    report: RunReport,
    progress: Callable[[RunReport], None] | None,
    stop: threading.Event,
) -> None:
    """The sequence's due people, a claimed batch at a time, through the one sending loop."""
    batch_size, concurrency = batch_limits(project, transport)
    mails: dict[str, delivery.StepMail] = {}

    def due_batches() -> Iterator[Work]:
        """The source: claim the next batch of due people (only when the loop asks for
        it, so never far ahead of what is sent), build their emails, hand them over."""
        batch_no = 0
        while not report.error and not stop.is_set():
            batch_no += 1
            claimed = _claim(engine, run, transport.kind, batch_size, item, now, report, batch_no)
            if claimed is None:
                return
            for group in claimed:
                mail = mails.get(group.step.key)
                if mail is None:
                    mail = delivery.prepare_step(
                        project,
                        engine,
                        group.step,
                        item.issue_ids[group.step.key],
                        group.send_id,
                        transport,
                    )
                    mails[group.step.key] = mail
                    # SQLAlchemy, the renderer and the transport are loaded now: the cyclic
                    # garbage collector need not walk their ~80,000 objects again at every
                    # full collection while batches come and go (`send_due` undoes it).
                    gc.freeze()
                built, refused = mail.build(group.rows)
                if refused:
                    _refused(engine, mail, refused, report)
                for start in range(0, len(built), batch_size):
                    chunk = built[start : start + batch_size]
                    yield Work(
                        mail.preparer,
                        mail.issue_id,
                        mail.send_id,
                        batch_no,
                        [row for row, _ in chunk],
                        claim=False,
                        recipients=[recipient for _, recipient in chunk],
                        note=(mail, group.following),
                    )

    def settled(work: Work, outcomes: list[Outcome]) -> None:
        mail, following = work.note
        _count(mail, [row[0] for row in work.rows], following, outcomes, now, report)
        if progress:
            progress(report)

    loop = Loop(
        Ledger(engine),
        concurrency,
        settled,
        stop=stop,
        halted=lambda: report.error is not None,
        count=False,  # (a step's sends keep no totals: `sequences status` reads the rows)
    )
    loop.run(due_batches())


def _claim(
    engine: Engine,
    run: RunLease,
    transport: str,
    batch_size: int,
    item: _Loaded,
    now: datetime,
    report: RunReport,
    batch_no: int,
) -> list[_Claimed] | None:
    """Claim the next batch of due people in one transaction (see the module docstring): the
    enrollments locked, each person's step claimed in the ledger (`claim_on`, on this
    transaction's connection) and their enrollment moved on (`state.apply_moves`). None when
    nobody is due any more."""
    steps = item.steps
    issue_to_key = {i: k for k, i in item.issue_ids.items()}
    timezone_name = item.timezone
    s = subscribers
    with engine.begin() as conn:
        run.touch(conn)  # a write first: on SQLite this takes the write lock before reading
        rows = conn.execute(
            select(
                e.c.id,
                e.c.subscriber_id,
                e.c.next_step,
                e.c.next_due_at,
                e.c.started_at,
                e.c.last_sent_at,
                s.c.status,
                s.c.email,
                s.c.name,
                s.c.first_name,
                s.c.last_name,
                # As text: parsed only when a person has custom fields (most have none).
                type_coerce(s.c.fields, Text).label("fields"),
                s.c.public_id,
            )
            .join(s, s.c.id == e.c.subscriber_id)
            .where(
                e.c.sequence == item.config.name,
                e.c.next_due_at <= now,
                e.c.state == state.ACTIVE,
            )
            .order_by(e.c.next_due_at, e.c.id)
            .limit(batch_size)
            .with_for_update(of=e, skip_locked=True)
        ).all()
        if not rows:
            return None
        had, failed = state.had_and_failed(conn, issue_to_key, [r.subscriber_id for r in rows])
        moves: dict[int, state.Move] = {}
        groups: dict[str, _Claimed] = {}
        new_rows: dict[str, list[int]] = {}
        retry: dict[str, list[int]] = {}
        enrollment_of: dict[int, Any] = {}
        upcoming: dict[frozenset[str], tuple[Step | None, datetime | None]] = {}
        stamp = run.clock()
        for row in rows:
            sid = row.subscriber_id
            if row.status != "subscribed":
                moves[row.id] = state.Move(None, None, state.STOPPED, row.last_sent_at)
                report.stopped += 1
                continue
            step, due = state.next_step_for(
                steps,
                had[sid],
                started_at=row.started_at,
                last_sent_at=row.last_sent_at,
                timezone=timezone_name,
                planned=row.next_step,
                planned_due=row.next_due_at,
            )
            if step is None:
                moves[row.id] = state.Move(None, None, state.DONE, row.last_sent_at)
                report.finished += 1
                continue
            if due is not None and due > now:  # the steps changed under them: not due after all
                moves[row.id] = state.Move(step.key, due, state.ACTIVE, row.last_sent_at)
                continue
            # Most people of a batch had the same steps: work their next one out once.
            seen = frozenset(had[sid] | {step.key})
            if seen not in upcoming:
                nxt = state.next_after(steps, seen)
                upcoming[seen] = (nxt, due_at(now, nxt, timezone_name) if nxt else None)
            following, following_due = upcoming[seen]
            if following is None:
                moves[row.id] = state.Move(None, None, state.DONE, now)
            else:
                moves[row.id] = state.Move(following.key, following_due, state.ACTIVE, now)
            issue_id = item.issue_ids[step.key]
            group = groups.get(step.key)
            if group is None:
                group = groups[step.key] = _Claimed(
                    step, [], run.send_for(conn, issue_id, transport), {}
                )
            enrollment_of[sid] = row
            group.rows.append(
                (sid, row.email, row.name, row.first_name, row.last_name, row.fields, row.public_id)
            )
            group.following[sid] = following.key if following else None
            if step.key in failed[sid]:
                retry.setdefault(step.key, []).append(sid)
            else:
                new_rows.setdefault(step.key, []).append(sid)
        for key, group in groups.items():
            new, again = new_rows.get(key, []), retry.get(key, [])
            issue_id = item.issue_ids[key]
            slug = group.step.slug
            kept = claim_on(conn, issue_id, group.send_id, batch_no, new, again, stamp, slug)
            if len(kept) < len(new) + len(again):
                # Left the list since the rows were read (another transaction): no mail, and
                # their sequence ends.
                for sid in {*new, *again} - kept:
                    row = enrollment_of[sid]
                    moves[row.id] = state.Move(None, None, state.STOPPED, row.last_sent_at)
                    report.stopped += 1
                group.rows = [r for r in group.rows if r[0] in kept]
        state.apply_moves(conn, moves, stamp)
    return [group for group in groups.values() if group.rows]


def _count(
    mail: delivery.StepMail,
    ids: list[int],
    following: dict[int, str | None],
    outcomes: list[Outcome],
    now: datetime,
    report: RunReport,
) -> None:
    """A settled batch (its answers are in the ledger) in the run's report; those the
    transport refused are due again later."""
    counts = report.step(mail.step)
    failed = []
    for sid, outcome in zip(ids, outcomes, strict=True):
        if outcome.state == DeliveryState.ACCEPTED:
            counts.accepted += 1
        elif outcome.state == DeliveryState.FAILED:
            counts.failed += 1
            failed.append(sid)
        else:
            counts.uncertain += 1
        if outcome.error and outcome.error not in report.errors and len(report.errors) < 100:
            report.errors.append(outcome.error)
        if outcome.fatal and not report.error:
            report.error = outcome.error
    if failed:
        # Nothing went out: these people wait for this step again (if they have not moved on).
        state.due_again(mail.engine, mail.step, failed, following, now + RETRY_AFTER)


def _refused(
    engine: Engine, mail: delivery.StepMail, refused: dict[int, str], report: RunReport
) -> None:
    """People the transport would refuse (e.g. fields over its size limit): failed, with why.
    They are not due again: the same fields would be refused again."""
    outcomes = [Outcome(DeliveryState.FAILED, error=error) for error in refused.values()]
    Ledger(engine).record_outcomes(mail.issue_id, mail.send_id, list(refused), outcomes)
    for error in refused.values():
        if error not in report.errors:
            report.errors.append(error)
    report.step(mail.step).failed += len(refused)
