"""The one call each place where people join makes: `joined` (confirmed double opt-in, a
form signup, `subscribers add`) and `tagged` (`subscribers tag`); and `replied` (a reader's
reply was stored).

Only people who are `subscribed` start a sequence, and only once ever per sequence (the
enrollment row is unique), so a resubscribe never restarts one. The web server reads
newsletter.toml again when it changed, so enabling a sequence needs no restart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Engine, select

from newsletter.errors import NewsletterError
from newsletter.masking import mask_addresses
from newsletter.project import Project
from newsletter.sequences import state
from newsletter.sequences.clock import SYSTEM, Clock
from newsletter.sequences.config import SequenceConfig, configured
from newsletter.step import Step, load_sequence
from newsletter.store.schema import subscriber_tags, subscribers

log = logging.getLogger("newsletter.sequences")

_fresh: dict[Path, tuple[int, Project]] = {}


def current_project(project: Project) -> Project:
    """`project` with newsletter.toml as it is on disk now (a long-running server otherwise
    keeps the config of when it started). A file broken mid-edit: the last good one."""
    path = project.config.path
    cached = _fresh.get(path)
    last_good = cached[1] if cached is not None else project
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return last_good
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        loaded = Project.load(project.root)
    except NewsletterError:
        return last_good
    _fresh[path] = (mtime, loaded)
    return loaded


def _person(engine: Engine, subscriber_id: int) -> tuple[str, set[str]] | None:
    with engine.connect() as conn:
        status = conn.execute(
            select(subscribers.c.status).where(subscribers.c.id == subscriber_id)
        ).scalar()
        if status is None:
            return None
        tags = set(
            conn.execute(
                select(subscriber_tags.c.tag).where(
                    subscriber_tags.c.subscriber_id == subscriber_id
                )
            ).scalars()
        )
    return status, tags


def _steps(project: Project, sequence: SequenceConfig) -> list[Step]:
    try:
        return load_sequence(project, sequence.name)
    except NewsletterError as exc:
        # Joining must not fail over a step being edited: the run works the step out later.
        log.warning("sequence %s: %s", sequence.name, mask_addresses(str(exc)))
        return []


def _enroll(
    project: Project,
    engine: Engine,
    subscriber_id: int,
    chosen: Iterable[tuple[SequenceConfig, str]],
    clock: Clock,
) -> list[str]:
    at = clock.now()
    timezone = project.config.section("newsletter")["timezone"]
    started = []
    with engine.begin() as conn:
        for sequence, reason in chosen:
            next_step, due = state.first_schedule(_steps(project, sequence), at, timezone)
            if state.enroll(
                conn,
                sequence.name,
                subscriber_id,
                reason=reason,
                at=at,
                next_step=next_step,
                next_due_at=due,
            ):
                started.append(sequence.name)
    return started


def joined(
    project: Project, engine: Engine, subscriber_id: int, *, clock: Clock = SYSTEM
) -> list[str]:
    """Someone became a subscriber: start the sequences triggered by "subscribed" (with their
    tag, if one is set) and by "tagged:<tag>" for tags they already have. Returns their names."""
    project = current_project(project)
    sequences = configured(project)
    if not sequences:
        return []
    person = _person(engine, subscriber_id)
    if person is None or person[0] != "subscribed":
        return []
    tags = person[1]
    chosen = []
    for sequence in sequences:
        if sequence.on_subscribe and (sequence.tag is None or sequence.tag in tags):
            chosen.append((sequence, "subscribed"))
        elif sequence.trigger_tag is not None and sequence.trigger_tag in tags:
            chosen.append((sequence, "tagged"))
    return _enroll(project, engine, subscriber_id, chosen, clock) if chosen else []


def tagged(
    project: Project,
    engine: Engine,
    subscriber_id: int,
    tags: Iterable[str],
    *,
    clock: Clock = SYSTEM,
) -> list[str]:
    """A subscriber got `tags`: start the sequences triggered by "tagged:<one of them>"."""
    project = current_project(project)
    wanted = set(tags)
    chosen = [
        (s, "tagged")
        for s in configured(project)
        if s.trigger_tag is not None and s.trigger_tag in wanted
    ]
    if not chosen:
        return []
    person = _person(engine, subscriber_id)
    if person is None or person[0] != "subscribed":
        return []
    return _enroll(project, engine, subscriber_id, chosen, clock)


def replied(
    project: Project, engine: Engine, subscriber_id: int, *, clock: Clock = SYSTEM
) -> list[str]:
    """A subscriber replied (a person, not an auto-reply): start the sequences triggered by
    "replied" (with their tag, if one is set). Once ever per sequence, like any other."""
    project = current_project(project)
    wanted = [s for s in configured(project) if s.on_reply]
    if not wanted:
        return []
    person = _person(engine, subscriber_id)
    if person is None or person[0] != "subscribed":
        return []
    chosen = [(s, "replied") for s in wanted if s.tag is None or s.tag in person[1]]
    return _enroll(project, engine, subscriber_id, chosen, clock) if chosen else []
