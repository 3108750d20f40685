"""`sequences start NAME --existing`: a sequence for people who were on the list before it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select

from newsletter.errors import NewsletterError
from newsletter.sequences import state
from newsletter.sequences.clock import SYSTEM, Clock
from newsletter.sequences.config import get_sequence
from newsletter.step import load_sequence
from newsletter.store.schema import sequence_enrollments, subscribers
from newsletter.store.subscribers import segment_filters

if TYPE_CHECKING:
    from newsletter.project import Project


def count_existing(
    project: Project,
    engine: Engine,
    name: str,
    tags: Iterable[str],
    where: Sequence[Any] = (),
) -> int:
    """Subscribed people (with any of `tags`, matching `where`) never in the sequence."""
    get_sequence(project, name)
    e = sequence_enrollments
    ever = (
        select(e.c.id).where(e.c.sequence == name, e.c.subscriber_id == subscribers.c.id).exists()
    )
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(subscribers)
                .where(*segment_filters("subscribed", tags), *where, ~ever)
            ).scalar_one()
        )


def start_existing(
    project: Project,
    engine: Engine,
    name: str,
    tags: Iterable[str],
    *,
    clock: Clock = SYSTEM,
    where: Sequence[Any] = (),
) -> int:
    get_sequence(project, name)
    steps = load_sequence(project, name)
    if not steps:
        raise NewsletterError(
            f"sequence {name} has no steps; add sequences/{name}/01-willkommen.md first"
        )
    timezone = project.config.section("newsletter")["timezone"]
    return state.enroll_existing(
        engine, name, steps, timezone, tags=tags, at=clock.now(), where=where
    )
