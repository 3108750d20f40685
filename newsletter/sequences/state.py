"""The sequence tables (see `store/schema.py`, m009): enrollments, step rows, schedule shape.

Every write here is idempotent: enrolling twice, registering a step twice or recomputing a
schedule that did not change leaves the rows as they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, and_, bindparam, case, func, literal, select, update
from sqlalchemy.exc import IntegrityError

from newsletter.sending.ledger import uncertain_to_failed_on
from newsletter.sequences.clock import latest_due
from newsletter.step import Step, due_at, fingerprint
from newsletter.store.issues import ensure_issue, rename_issue
from newsletter.store.schema import (
    NOT_SUBSCRIBED,
    DeliveryState,
    deliveries,
    sequence_enrollments,
    sequence_state,
    sequence_steps,
    status_is,
    subscribers,
)
from newsletter.store.subscribers import segment_filters
from newsletter.store.times import as_utc

ACTIVE, DONE, STOPPED = "active", "done", "stopped"

enrollments = sequence_enrollments


def dialect_insert(conn: Connection, table: Any) -> Any:
    """INSERT with `on_conflict_do_nothing` for the connection's database."""
    if conn.dialect.name == "postgresql":
        # deferred: the PostgreSQL dialect costs 20 ms at start-up; a SQLite project never needs it
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table)
    # deferred: the SQLite dialect costs 5 ms at start-up; a PostgreSQL project never needs it
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def first_schedule(
    steps: Sequence[Step], at: datetime, timezone: str
) -> tuple[str | None, datetime | None]:
    """(first step key, when it is due) for someone joining at `at`. Without loadable steps:
    (None, at), so the next run works it out once the steps are fixed."""
    if not steps:
        return None, at
    return steps[0].key, due_at(at, steps[0], timezone)


def enroll(
    conn: Connection,
    sequence: str,
    subscriber_id: int,
    *,
    reason: str,
    at: datetime,
    next_step: str | None,
    next_due_at: datetime | None,
) -> bool:
    """Put a person into a sequence; False if they were ever in it (no restart)."""
    stmt = (
        dialect_insert(conn, enrollments)
        .values(
            sequence=sequence,
            subscriber_id=subscriber_id,
            state=ACTIVE,
            reason=reason,
            started_at=at,
            next_step=next_step,
            next_due_at=next_due_at,
            updated_at=at,
        )
        .on_conflict_do_nothing(index_elements=["sequence", "subscriber_id"])
        .returning(enrollments.c.id)
    )
    # RETURNING, not rowcount: psycopg reports -1 for a skipped conflict's rowcount here.
    return conn.execute(stmt).first() is not None


def enroll_existing(
    engine: Engine,
    sequence: str,
    steps: Sequence[Step],
    timezone: str,
    *,
    tags: Iterable[str],
    at: datetime,
    where: Sequence[Any] = (),
) -> int:
    """`sequences start NAME --existing`: everyone subscribed now (with any of `tags`, and
    matching `where`: a segment's conditions) who was never in the sequence starts it at
    `at`. One INSERT ... SELECT; returns how many."""
    next_step, next_due = first_schedule(steps, at, timezone)
    ever = (
        select(enrollments.c.id)
        .where(enrollments.c.sequence == sequence, enrollments.c.subscriber_id == subscribers.c.id)
        .exists()
    )
    chosen = select(
        literal(sequence).label("sequence"),
        subscribers.c.id,
        literal(ACTIVE).label("state"),
        literal("existing").label("reason"),
        literal(at, enrollments.c.started_at.type).label("started_at"),
        literal(next_step, enrollments.c.next_step.type).label("next_step"),
        literal(next_due, enrollments.c.next_due_at.type).label("next_due_at"),
        literal(at, enrollments.c.updated_at.type).label("updated_at"),
    ).where(*segment_filters("subscribed", tags), *where, ~ever)
    with engine.begin() as conn:
        stmt = (
            dialect_insert(conn, enrollments)
            .from_select(
                [
                    "sequence",
                    "subscriber_id",
                    "state",
                    "reason",
                    "started_at",
                    "next_step",
                    "next_due_at",
                    "updated_at",
                ],
                chosen,
            )
            .on_conflict_do_nothing(index_elements=["sequence", "subscriber_id"])
            .returning(enrollments.c.id)
        )
        return len(conn.execute(stmt).all())


# --- step rows ------------------------------------------------------------------------------


def step_issue_ids(engine: Engine | Connection, sequence: str) -> dict[str, int]:
    """step key -> its `issues` id, for every step of `sequence` that ever had a row."""
    query = select(sequence_steps.c.step_key, sequence_steps.c.issue_id).where(
        sequence_steps.c.sequence == sequence
    )
    if isinstance(engine, Connection):
        return {k: i for k, i in engine.execute(query)}
    with engine.connect() as conn:
        return {k: i for k, i in conn.execute(query)}


def ensure_step_issue(engine: Engine, step: Step, subject: str) -> int:
    """The step's `issues` row (created on first use; title and subject kept current)."""
    issue_id = ensure_issue(
        engine,
        slug=step.slug,
        title=step.issue.title,
        subject=subject,
        language=step.issue.language,
    )
    with engine.begin() as conn:
        conn.execute(
            dialect_insert(conn, sequence_steps)
            .values(
                issue_id=issue_id,
                sequence=step.sequence,
                step_key=step.key,
                step_number=step.number,
            )
            .on_conflict_do_nothing()
        )
    return issue_id


def known_steps(engine: Engine, sequence: str) -> dict[str, tuple[int, int | None]]:
    """step key -> (its `issues` id, its number when a run last saw it), for every step of
    `sequence` that ever had a row (removed ones too)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                sequence_steps.c.step_key, sequence_steps.c.issue_id, sequence_steps.c.step_number
            ).where(sequence_steps.c.sequence == sequence)
        ).all()
    return {key: (issue_id, number) for key, issue_id, number in rows}


def record_step_numbers(engine: Engine, sequence: str, steps: Sequence[Step]) -> None:
    """Remember each step's current number (for `renames.suspected_renames`); writes only the
    ones that changed."""
    known = known_steps(engine, sequence)
    changed = [
        {"k": s.key, "n": s.number} for s in steps if s.key in known and known[s.key][1] != s.number
    ]
    if not changed:
        return
    with engine.begin() as conn:
        conn.execute(
            update(sequence_steps)
            .where(
                sequence_steps.c.sequence == sequence, sequence_steps.c.step_key == bindparam("k")
            )
            .values(step_number=bindparam("n"))
            .execution_options(synchronize_session=False),
            changed,
        )


def rename_step_key(engine: Engine, sequence: str, old: str, new: str, slug: str) -> None:
    """The step `old` is called `new` from now on: its row, its `issues` slug and the people
    waiting for it. Its ledger rows stay: whoever had `old` has had `new`."""
    with engine.begin() as conn:
        issue_id = conn.execute(
            select(sequence_steps.c.issue_id).where(
                sequence_steps.c.sequence == sequence, sequence_steps.c.step_key == old
            )
        ).scalar_one()
        conn.execute(
            update(sequence_steps).where(sequence_steps.c.issue_id == issue_id).values(step_key=new)
        )
        rename_issue(conn, issue_id, slug)
        conn.execute(
            update(enrollments)
            .where(enrollments.c.sequence == sequence, enrollments.c.next_step == old)
            .values(next_step=new)
        )


def had_and_failed(
    conn: Connection, issue_to_key: dict[int, str], subscriber_ids: Sequence[int]
) -> tuple[dict[int, set[str]], dict[int, set[str]]]:
    """subscriber id -> keys of the steps they have (or may have) had, and -> keys of the
    steps whose sending failed (nothing went out: they may have them again)."""
    had: dict[int, set[str]] = {sid: set() for sid in subscriber_ids}
    failed: dict[int, set[str]] = {sid: set() for sid in subscriber_ids}
    if not issue_to_key or not subscriber_ids:
        return had, failed
    for start in range(0, len(subscriber_ids), 900):
        chunk = list(subscriber_ids[start : start + 900])
        rows = conn.execute(
            select(deliveries.c.subscriber_id, deliveries.c.issue_id, deliveries.c.state).where(
                deliveries.c.issue_id.in_(list(issue_to_key)),
                deliveries.c.subscriber_id.in_(chunk),
            )
        )
        for sid, issue_id, ledger_state in rows:
            (failed if ledger_state == DeliveryState.FAILED else had)[sid].add(
                issue_to_key[issue_id]
            )
    return had, failed


def had_steps(
    conn: Connection, issue_to_key: dict[int, str], subscriber_ids: Sequence[int]
) -> dict[int, set[str]]:
    """subscriber id -> keys of the steps they have (or may have) had."""
    return had_and_failed(conn, issue_to_key, subscriber_ids)[0]


def next_after(steps: Sequence[Step], had: AbstractSet[str]) -> Step | None:
    """The first step (in the current order) this person has not had."""
    for step in steps:
        if step.key not in had:
            return step
    return None


class Next(NamedTuple):
    """The step a run sends a reader next and when it is due; (None, None) when they have
    had every step (the run ends their sequence)."""

    step: Step | None
    due: datetime | None


def next_step_for(
    steps: Sequence[Step],
    had: AbstractSet[str],
    *,
    started_at: datetime,
    last_sent_at: datetime | None,
    timezone: str,
    planned: str | None = None,
    planned_due: datetime | None = None,
) -> Next:
    """The one rule for what a run sends a reader next: the claim, the rescheduling after the
    steps changed and `sequences status` all ask it. The step their enrollment names
    (`planned`, due at `planned_due`) while it is in the folder and they have not had it;
    else (it was removed or renamed, or they joined while a step did not load) the first step
    they have not had, `delay` after their last one (or after joining), but not before
    `planned_due`, since a run looks at them only from then on."""
    if planned is not None and planned not in had:
        for step in steps:
            if step.key == planned:
                return Next(step, as_utc(planned_due))
    first_not_had = next_after(steps, had)
    if first_not_had is None:
        return Next(None, None)
    due = due_at(as_utc(last_sent_at or started_at), first_not_had, timezone)
    if planned_due is not None:
        due = max(due, as_utc(planned_due))
    return Next(first_not_had, due)


class Move(NamedTuple):
    """An enrollment's new schedule, decided as its person is claimed: the next step and when
    it is due, its state, and when its last step went out."""

    next_step: str | None
    next_due_at: datetime | None
    state: str
    last_sent_at: datetime | None


def apply_moves(conn: Connection, moves: Mapping[int, Move], stamp: datetime) -> None:
    """Enrollment id -> its `Move`, in the claim's transaction. One UPDATE per distinct new
    schedule: in one run, everyone sent the same step moves on to the same next step at the
    same time, so a batch is typically one statement."""
    same: dict[Move, list[int]] = {}
    for enrollment_id, move in moves.items():
        same.setdefault(move, []).append(enrollment_id)
    for move, ids in same.items():
        for start in range(0, len(ids), 900):
            conn.execute(
                update(enrollments)
                .where(enrollments.c.id.in_(ids[start : start + 900]))
                .values(
                    next_step=move.next_step,
                    next_due_at=move.next_due_at,
                    state=move.state,
                    last_sent_at=move.last_sent_at,
                    updated_at=stamp,
                )
            )


def due_again(
    engine: Engine,
    step: Step,
    subscriber_ids: Sequence[int],
    following: Mapping[int, str | None],
    when: datetime,
) -> None:
    """Nothing went out to these people: they wait for `step` again, at `when`, unless they
    have moved on since (`following`: the step each was moved on to when claimed)."""
    e = enrollments
    with engine.begin() as conn:
        for sid in subscriber_ids:
            moved_to = following.get(sid)
            conn.execute(
                update(e)
                .where(
                    e.c.sequence == step.sequence,
                    e.c.subscriber_id == sid,
                    e.c.next_step == moved_to if moved_to is not None else e.c.next_step.is_(None),
                )
                .values(next_step=step.key, next_due_at=when, state=ACTIVE)
            )


# --- schedule shape ---------------------------------------------------------------------------


def stored_shape(engine: Engine, sequence: str) -> str | None:
    """The shape (`step.fingerprint`) of the steps the schedule was last worked out for."""
    with engine.connect() as conn:
        return conn.execute(
            select(sequence_state.c.fingerprint).where(sequence_state.c.sequence == sequence)
        ).scalar()


def reschedule_if_changed(
    engine: Engine, sequence: str, steps: Sequence[Step], timezone: str, at: datetime
) -> int:
    """When the steps' order, delays or hours changed since the schedule was worked out, work
    out every waiting person's next step and time again. Returns how many were rescheduled.

    A removed step is skipped, a moved one is not sent twice (who had a key keeps it), an edited
    delay counts from the person's previous step."""
    shape = fingerprint(list(steps))
    stored = stored_shape(engine, sequence)
    if stored == shape:
        return 0
    changed = 0
    if stored is not None:
        changed = _reschedule(engine, sequence, steps, timezone, at)
    with engine.begin() as conn:
        updated = conn.execute(
            update(sequence_state)
            .where(sequence_state.c.sequence == sequence)
            .values(fingerprint=shape, updated_at=at)
        ).rowcount
        if not updated:
            try:
                with conn.begin_nested():
                    conn.execute(
                        sequence_state.insert().values(
                            sequence=sequence, fingerprint=shape, updated_at=at
                        )
                    )
            except IntegrityError:
                pass  # another runner recorded it at the same moment
    return changed


def _reschedule(
    engine: Engine, sequence: str, steps: Sequence[Step], timezone: str, at: datetime
) -> int:
    issue_to_key = {i: k for k, i in step_issue_ids(engine, sequence).items()}
    changed = 0
    last = 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                select(
                    enrollments.c.id,
                    enrollments.c.subscriber_id,
                    enrollments.c.started_at,
                    enrollments.c.last_sent_at,
                    enrollments.c.next_step,
                    enrollments.c.next_due_at,
                )
                .where(
                    enrollments.c.sequence == sequence,
                    enrollments.c.state == ACTIVE,
                    enrollments.c.id > last,
                )
                .order_by(enrollments.c.id)
                .limit(1000)
            ).all()
            if not rows:
                return changed
            last = rows[-1].id
            had = had_steps(conn, issue_to_key, [r.subscriber_id for r in rows])
            updates = []
            for row in rows:
                # (Their next step as if nothing had been planned: the plan is what changed.)
                step, due = next_step_for(
                    steps,
                    had[row.subscriber_id],
                    started_at=row.started_at,
                    last_sent_at=row.last_sent_at,
                    timezone=timezone,
                )
                if step is None:
                    updates.append({"eid": row.id, "s": None, "d": None, "st": DONE})
                    continue
                old_due = as_utc(row.next_due_at) if row.next_due_at else None
                if step.key != row.next_step or due != old_due:
                    updates.append({"eid": row.id, "s": step.key, "d": due, "st": ACTIVE})
            if updates:
                _apply(conn, updates, at)
                changed += len(updates)


def reschedule_from_the_future(
    engine: Engine, sequence: str, steps: Sequence[Step], timezone: str, at: datetime
) -> int:
    """People whose next step is due later than the steps allow (`steps.latest_due`): a run
    whose clock was far ahead sent their last step (or enrolled them) "in the future" and
    scheduled the next from then, so with the clock right again nothing would be due for
    them until that future. What was sent cannot have been sent after `at`: it counts as sent
    at `at`, and their next step is due from then. Returns how many were rescheduled.

    (Found through the due index, like everything a run asks of every enrollment.)"""
    e = enrollments
    by_key = {s.key: s for s in steps}
    with engine.begin() as conn:
        rows = conn.execute(
            select(e.c.id, e.c.started_at, e.c.last_sent_at, e.c.next_step).where(
                e.c.sequence == sequence,
                e.c.next_due_at > latest_due(list(steps), at),
                e.c.state == ACTIVE,
            )
        ).all()
        if not rows:
            return 0
        updates = []
        for row in rows:
            started = min(as_utc(row.started_at), at)
            sent = min(as_utc(row.last_sent_at), at) if row.last_sent_at else None
            step = by_key.get(row.next_step) if row.next_step else None
            # A step no longer in the folder: the next claim works out which one is next.
            due = due_at(sent or started, step, timezone) if step else at
            updates.append(
                {"eid": row.id, "started": started, "sent": sent, "s": step and step.key, "d": due}
            )
        conn.execute(
            update(e)
            .where(e.c.id == bindparam("eid"))
            .values(
                started_at=bindparam("started"),
                last_sent_at=bindparam("sent"),
                next_step=bindparam("s"),
                next_due_at=bindparam("d"),
                updated_at=at,
            )
            .execution_options(synchronize_session=False),
            updates,
        )
    return len(updates)


def _apply(conn: Connection, updates: list[dict[str, Any]], at: datetime) -> None:
    conn.execute(
        update(enrollments)
        .where(enrollments.c.id == bindparam("eid"))
        .values(
            next_step=bindparam("s"),
            next_due_at=bindparam("d"),
            state=bindparam("st"),
            updated_at=at,
        )
        .execution_options(synchronize_session=False),
        updates,
    )


# --- reading ----------------------------------------------------------------------------------


def enrollment_counts(engine: Engine, sequence: str) -> dict[str, int]:
    """state -> people, as it stands: someone who left the list is stopped already, though
    their row says so only after the next run (`stop_departed`)."""
    e = enrollments
    shown = case(
        (and_(e.c.state == ACTIVE, NOT_SUBSCRIBED), STOPPED),
        else_=e.c.state,
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(shown, func.count())
            .select_from(e.join(subscribers, subscribers.c.id == e.c.subscriber_id))
            .where(e.c.sequence == sequence)
            .group_by(shown)
        ).all()
    return {state: int(n) for state, n in rows}


@dataclass
class Waiting:
    """Who waits for one step: how many, how many of them are due, when the first is due,
    and each of them (soonest first)."""

    waiting: int = 0
    due: int = 0
    first_due: datetime | None = None
    people: list[tuple[str, datetime | None]] = field(default_factory=list)  # (email, due)


def waiting_by_step(
    engine: Engine, sequence: str, steps: Sequence[Step], timezone: str, now: datetime
) -> dict[str, Waiting]:
    """step key -> who waits for it, for `sequences status`. Each active reader counts under
    the step the run would send them next (`next_step_for`, the run's own rule), not under
    the step their row names: that is empty for someone who joined while a step did not
    load, and an old key after a step was removed or renamed, and the run sends them the
    first step they have not had."""
    if not steps:
        return {}
    # Steps changed since the schedule was worked out: the run reschedules everyone first,
    # from what they had, whatever their row planned (`reschedule_if_changed`).
    planned_holds = stored_shape(engine, sequence) in (None, fingerprint(list(steps)))
    issue_to_key = {i: k for k, i in step_issue_ids(engine, sequence).items()}
    e, s = enrollments, subscribers
    found: dict[str, list[tuple[datetime | None, int, str]]] = {}
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=1000).execute(
            select(
                e.c.id,
                e.c.subscriber_id,
                e.c.started_at,
                e.c.last_sent_at,
                e.c.next_step,
                e.c.next_due_at,
                s.c.email,
            )
            .join(s, s.c.id == e.c.subscriber_id)
            # (who left the list waits for nothing: `stop_departed` ends their row)
            .where(e.c.sequence == sequence, e.c.state == ACTIVE, status_is("subscribed"))
        )
        for rows in result.partitions():
            had = had_steps(conn, issue_to_key, [r.subscriber_id for r in rows])
            for row in rows:
                step, due = next_step_for(
                    steps,
                    had[row.subscriber_id],
                    started_at=row.started_at,
                    last_sent_at=row.last_sent_at,
                    timezone=timezone,
                    planned=row.next_step if planned_holds else None,
                    planned_due=row.next_due_at if planned_holds else None,
                )
                if step is not None:
                    found.setdefault(step.key, []).append((due, row.id, row.email))
    out = {}
    for key, people in found.items():
        people.sort(key=lambda p: (p[0] is None, p[0] or now, p[1]))
        dues = [due for due, _, _ in people if due is not None]
        out[key] = Waiting(
            waiting=len(people),
            due=sum(1 for due in dues if due <= now),
            first_due=min(dues, default=None),
            people=[(email, due) for due, _, email in people],
        )
    return out


def sent_counts(engine: Engine, issue_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """issue id -> ledger state -> rows."""
    ids = list(issue_ids)
    out: dict[int, dict[str, int]] = {i: {} for i in ids}
    if not ids:
        return out
    with engine.connect() as conn:
        for issue_id, state, n in conn.execute(
            select(deliveries.c.issue_id, deliveries.c.state, func.count())
            .where(deliveries.c.issue_id.in_(ids))
            .group_by(deliveries.c.issue_id, deliveries.c.state)
        ):
            out[issue_id][state] = int(n)
    return out


def stop_departed(engine: Engine, sequences: Sequence[str], stamp: datetime) -> int:
    """End the sequences of people who are no longer subscribed (unsubscribed, bounced,
    complained) at the start of a run, not only once their next step falls due: nothing more
    would go to them either way, and `sequences status` no longer shows them waiting. How
    many enrollments ended."""
    if not sequences:
        return 0
    e = enrollments
    departed = select(subscribers.c.id).where(NOT_SUBSCRIBED)
    with engine.begin() as conn:
        result = conn.execute(
            update(e)
            .where(
                e.c.sequence.in_(sequences), e.c.state == ACTIVE, e.c.subscriber_id.in_(departed)
            )
            .values(next_step=None, next_due_at=None, state=STOPPED, updated_at=stamp)
        )
    return int(result.rowcount or 0)


def retry_uncertain(engine: Engine, sequence: str, at: datetime) -> int:
    """`sequences run --include-uncertain`: people whose copy of a step is `uncertain` (the
    transport may or may not have taken it) get it again: the row becomes `failed` (nothing
    known sent) and the person is due now, so the run works out their first step not had."""
    issue_ids = list(step_issue_ids(engine, sequence).values())
    if not issue_ids:
        return 0
    with engine.begin() as conn:
        people = list(
            conn.execute(
                select(deliveries.c.subscriber_id)
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .where(
                    deliveries.c.issue_id.in_(issue_ids),
                    deliveries.c.state == DeliveryState.UNCERTAIN,
                    subscribers.c.status == "subscribed",
                )
            ).scalars()
        )
        uncertain_to_failed_on(
            conn, issue_ids, people, error="uncertain, sent again on request", at=at
        )
        for start in range(0, len(people), 900):
            chunk = people[start : start + 900]
            conn.execute(
                update(enrollments)
                .where(enrollments.c.sequence == sequence, enrollments.c.subscriber_id.in_(chunk))
                .values(state=ACTIVE, next_step=None, next_due_at=at, updated_at=at)
            )
    return len(people)
