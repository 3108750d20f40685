"""Segments: named, saved conditions on the list (`[segments.<name>] where = "…"` in
newsletter.toml) and ad-hoc ones (`--where "…"`), in one search-box syntax (`syntax.py`),
compiled to one SQL condition on `subscribers` (`query.py`).

    seg = resolve(project, segment="aktive")           # or where="tag:leser clicked:30d"
    with engine.connect() as conn:
        cond = query.segment_condition(conn, seg.tree, project_timezone(project))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from newsletter.segments import syntax
from newsletter.segments.syntax import SegmentError, where_label

if TYPE_CHECKING:
    from newsletter.project import Project

# No SQLAlchemy at import time: loading the config parses segments (`syntax`, and so this
# package), and commands that find nothing to do must start without it. What asks the
# database is in `query` (the store layer: it only reads tables).

__all__ = ["Segment", "SegmentError", "resolve", "defined", "where_label"]


class Segment(NamedTuple):
    """A parsed condition: a named segment (`name`) or an ad-hoc --where (`name` None)."""

    name: str | None
    definition: str
    tree: syntax.Node

    @classmethod
    def parse(cls, definition: str, name: str | None = None) -> Segment:
        return cls(name, definition, syntax.parse(definition, where_label(name)))

    def warnings(self, project: Project) -> list[str]:
        """What the author should know about the condition (one line each)."""
        tracking = project.config.sections.get("tracking", {})
        if "opened" in syntax.engagement_kinds(self.tree) and not tracking.get("opens"):
            return [
                f"{where_label(self.name)} uses opened:, but [tracking] opens is off: only opens "
                "recorded while it was on count (clicks and replies are the surer signals)"
            ]
        return []


def defined(project: Project) -> dict[str, Segment]:
    """The `[segments.<name>]` of newsletter.toml, parsed (the config load checked them)."""
    tables = project.config.sections.get("segments", {})
    return {name: Segment.parse(table["where"], name) for name, table in tables.items()}


def resolve(
    project: Project, *, segment: str | None = None, where: str | None = None
) -> Segment | None:
    """The segment a command was given (`--segment NAME` or `--where EXPR`), or None."""
    if segment is not None and where is not None:
        raise SegmentError("use --segment NAME or --where EXPR, not both")
    if where is not None:
        if not where.strip():
            raise SegmentError(
                "--where is empty, which would be everyone; leave it out to mean the whole "
                'list, or give conditions, e.g. --where "tag:leser"'
            )
        return Segment.parse(where)
    if segment is None:
        return None
    known = defined(project)
    if segment not in known:
        names = ", ".join(sorted(known)) or "none yet"
        raise SegmentError(
            f'{project.config.path}: no segment "{segment}" (defined: {names}); add '
            f'[segments.{segment}] with where = "…"'
        )
    return known[segment]
