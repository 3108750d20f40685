"""`sequences start NAME --existing`: a sequence for people who were on the list before it.

Who it starts: subscribed people who were never in the sequence and match every limit: the
sequence's own tag (`tag = "leser"`, or the tag of `trigger = "tagged:kunde"`: a new reader
without it would not start the sequence either), any of the `--tag` values, and a segment
(`--segment`/`--where`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, case, func, select

from newsletter.errors import NewsletterError
from newsletter.sequences import state
from newsletter.sequences.clock import SYSTEM, Clock
from newsletter.sequences.config import SequenceConfig, get_sequence
from newsletter.step import load_sequence
from newsletter.store.schema import sequence_enrollments, subscribers
from newsletter.store.subscribers import normalize_tags, segment_filters

if TYPE_CHECKING:
    from newsletter.project import Project


@dataclass(frozen=True)
class Existing:
    """Who `sequences start NAME --existing` would start."""

    sequence: str
    count: int  # subscribed, matching every limit, never in the sequence: who would start
    matching: int  # subscribed and matching every limit, in the sequence before or not
    limits: tuple[str, ...]  # each limit as the user gave it, e.g. "has the tag leser (...)"

    def nobody(self) -> str | None:
        """Why there is nobody to start, in one line; None when there is somebody."""
        if self.count:
            return None
        start = f"Nobody to start {self.sequence} for: "
        if self.matching == 0:
            if not self.limits:
                return start + "nobody on the list is subscribed."
            return start + f"no subscriber {' and '.join(self.limits)}."
        who = f" who {' and '.join(self.limits)}" if self.limits else ""
        return start + f"every subscriber{who} has been in it."


def _own_tag(sequence: SequenceConfig) -> str | None:
    """The tag a reader needs to start the sequence at all: its `tag`, or its trigger's."""
    return sequence.trigger_tag or sequence.tag


def _limits(sequence: SequenceConfig, tags: Iterable[str], where_label: str | None) -> list[str]:
    limits = []
    own = _own_tag(sequence)
    if own:
        source = "trigger" if sequence.trigger_tag else "tag"
        limits.append(f"has the tag {own} (the {source} of [sequences.{sequence.name}])")
    wanted = normalize_tags(tags)
    if len(wanted) == 1:
        limits.append(f"has the tag {wanted[0]} (--tag)")
    elif wanted:
        limits.append(f"has one of the tags {', '.join(wanted)} (--tag)")
    if where_label:
        limits.append(f"matches {where_label}")
    return limits


def _own_limit(sequence: SequenceConfig) -> list[Any]:
    """The sequence's own tag as a WHERE condition on `subscribers` (none without one)."""
    own = _own_tag(sequence)
    return segment_filters(None, [own]) if own else []


def count_existing(
    project: Project,
    engine: Engine,
    name: str,
    tags: Iterable[str],
    where: Sequence[Any] = (),
    *,
    where_label: str | None = None,
) -> Existing:
    """Subscribed people (with the sequence's own tag, any of `tags`, matching `where`: a
    segment's conditions, shown as `where_label`) and how many of them were never in it."""
    sequence = get_sequence(project, name)
    tags = list(tags)
    e = sequence_enrollments
    ever = (
        select(e.c.id).where(e.c.sequence == name, e.c.subscriber_id == subscribers.c.id).exists()
    )
    with engine.connect() as conn:
        matching, never = conn.execute(
            select(func.count(), func.coalesce(func.sum(case((~ever, 1), else_=0)), 0))
            .select_from(subscribers)
            .where(*segment_filters("subscribed", tags), *_own_limit(sequence), *where)
        ).one()
    return Existing(name, int(never), int(matching), tuple(_limits(sequence, tags, where_label)))


def start_existing(
    project: Project,
    engine: Engine,
    name: str,
    tags: Iterable[str],
    *,
    clock: Clock = SYSTEM,
    where: Sequence[Any] = (),
) -> int:
    """Start the sequence for the people `count_existing` counts; returns how many."""
    sequence = get_sequence(project, name)
    steps = load_sequence(project, name)
    if not steps:
        raise NewsletterError(
            f"sequence {name} has no steps; add sequences/{name}/01-willkommen.md first"
        )
    timezone = project.config.section("newsletter")["timezone"]
    return state.enroll_existing(
        engine,
        name,
        steps,
        timezone,
        tags=tags,
        at=clock.now(),
        where=[*_own_limit(sequence), *where],
    )
