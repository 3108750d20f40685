"""A segment's tree (`syntax.parse`) as one SQL condition on `subscribers`, the same on
SQLite and PostgreSQL.

Engagement terms read `reader_activity` (one row per reader: latest click, human open and
reply, and the newest issue each was about) and the ledger's `deliveries` through its index by
reader: "the last 5 issues sent to the reader" are their newest 5 ledger rows, whatever their
state (a bounce was sent too; issues in the order they were first recorded, i.e. sent),
welcome-sequence steps left out, and `received:` counts those rows. (Dry runs and the
outbox keep no ledger rows, so they never count; a cancelled send's rows are deleted.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    Engine,
    String,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

from newsletter.insights.metrics import reached_readers, sequence_step
from newsletter.segments import syntax
from newsletter.store import schema
from newsletter.store.consent import has_evidence


@dataclass(frozen=True)
class Context:
    """What a condition is evaluated against: the time, the author's time zone (dates in
    `joined:` are days there) and the issues that went out, ascending by id."""

    now: datetime
    tz: ZoneInfo
    sent_issues: tuple[int, ...]
    dialect: str = "sqlite"
    #: The issue rows of welcome-sequence steps: their deliveries are no issues received.
    sequence_issues: tuple[int, ...] = ()


def sent_issue_ids(conn: Connection) -> tuple[int, ...]:
    """Issues with a send that reached readers (the one rule, `insights.metrics`), welcome
    steps left out; ascending."""
    s = schema.sends
    query = (
        select(s.c.issue_id)
        .where(reached_readers(), ~sequence_step(s.c.issue_id))
        .distinct()
        .order_by(s.c.issue_id)
    )
    return tuple(conn.execute(query).scalars())


def context(conn: Connection, tz: ZoneInfo | None = None, now: datetime | None = None) -> Context:
    steps = tuple(conn.execute(select(schema.sequence_steps.c.issue_id)).scalars())
    return Context(
        now or datetime.now(UTC),
        tz or ZoneInfo("UTC"),
        sent_issue_ids(conn),
        conn.dialect.name,
        steps,
    )


def segment_condition(
    conn: Connection,
    tree: syntax.Node,
    tz: ZoneInfo | None = None,
    now: datetime | None = None,
) -> Any:
    """A segment's WHERE condition on `subscribers` (reads which issues went out, once)."""
    return condition(tree, context(conn, tz, now))


def count_matching(
    engine: Engine,
    tree: syntax.Node,
    tz: ZoneInfo | None = None,
    *,
    extra: Sequence[Any] = (),
    now: datetime | None = None,
) -> int:
    """How many subscribers (any status, unless the tree or `extra` says) match a segment."""
    with engine.connect() as conn:
        where = segment_condition(conn, tree, tz, now)
        return int(
            conn.execute(
                select(func.count()).select_from(schema.subscribers).where(where, *extra)
            ).scalar_one()
        )


def _field_text(name: str, dialect: str) -> Any:
    """A custom field's value as text. Spelled out per database with plain string binds
    (SQLAlchemy's JSON index binds need its bind processors, which a send's raw driver
    queries skip: `store.raw`)."""
    fields = schema.subscribers.c.fields
    if dialect == "postgresql":
        return fields.op("->>", return_type=String)(literal(name, String))
    path = f'$."{name}"'  # (the syntax has no way to put a " into a name)
    return func.json_extract(fields, literal(path, String), type_=String)


def condition(node: syntax.Node, ctx: Context) -> Any:
    """The condition on `subscribers` that `node` describes."""
    s = schema.subscribers
    if isinstance(node, syntax.Everyone):
        return true()
    if isinstance(node, syntax.And):
        return and_(*(condition(term, ctx) for term in node.terms))
    if isinstance(node, syntax.Or):
        return or_(*(condition(term, ctx) for term in node.terms))
    if isinstance(node, syntax.Not):
        return not_(condition(node.term, ctx))
    if isinstance(node, syntax.Tag):
        t = schema.subscriber_tags
        return exists().where(t.c.subscriber_id == s.c.id, t.c.tag == node.name)
    if isinstance(node, syntax.Field):
        value = _field_text(node.name, ctx.dialect)
        if node.op == "~":
            return func.lower(value).contains(node.value.lower(), autoescape=True)
        if node.value == "":
            return or_(value.is_(None), value == "")
        return value == node.value
    if isinstance(node, syntax.Status):
        return schema.status_is(node.status)
    if isinstance(node, syntax.Source):
        is_import = func.substr(s.c.source, 1, 6) == "import"
        if node.source == "form":
            return s.c.source == "form"
        if node.source == "import":
            return is_import
        return or_(s.c.source.is_(None), and_(s.c.source != "form", not_(is_import)))
    if isinstance(node, syntax.Joined):
        return _joined(node, ctx)
    if isinstance(node, syntax.Consent):
        return has_evidence() if node.proven else not_(has_evidence())
    if isinstance(node, syntax.Engaged):
        return engaged(node.kind, ctx, last_issues=node.last_issues, days=node.days)
    if isinstance(node, syntax.Received):
        return _received(node.op, node.issues, ctx)
    raise TypeError(f"not a segment term: {node!r}")


def _day_start(day: Any, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def _joined(node: syntax.Joined, ctx: Context) -> Any:
    created = schema.subscribers.c.created_at
    if node.op == "within":
        assert node.days is not None
        return created >= ctx.now - timedelta(days=node.days)
    assert node.day is not None
    start, next_day = _day_start(node.day, ctx.tz), _day_start(node.day + timedelta(1), ctx.tz)
    return {
        ">": created >= next_day,
        ">=": created >= start,
        "<": created < start,
        "<=": created < next_day,
    }[node.op]


def engaged(
    kind: str, ctx: Context, *, last_issues: int | None = None, days: int | None = None
) -> Any:
    """A condition on `subscribers`: the reader clicked / opened (a human's open) / replied
    in their last `last_issues` issues, or in the last `days` days, or ever (neither given).

    Public for the other audience features (resend, subject test) to reuse."""
    if kind not in ("clicked", "opened", "replied"):
        raise ValueError(f"unknown engagement {kind!r}")
    a = schema.reader_activity
    at, issue = a.c[f"{kind}_at"], a.c[f"{kind}_issue"]
    # Driven from `reader_activity` (only readers who did something): the database reads
    # that set once and probes it per subscriber, instead of a subquery per subscriber.
    engaged_ids = select(a.c.subscriber_id)
    if days is not None:
        engaged_ids = engaged_ids.where(at >= ctx.now - timedelta(days=days))
    elif last_issues is None:
        engaged_ids = engaged_ids.where(at.is_not(None))
    else:
        # The newest engaged issue is among the last N sent to the reader when fewer than N
        # issues reached them after it; certainly so when it is among the last N sent at all
        # (most engaged readers: no ledger walk for them).
        older = not_(_at_least(last_issues, ctx, after=issue, reader=a.c.subscriber_id))
        if len(ctx.sent_issues) >= last_issues:
            older = or_(issue >= ctx.sent_issues[-last_issues], older)
        engaged_ids = engaged_ids.where(issue.is_not(None), older)
    return schema.subscribers.c.id.in_(engaged_ids)


def _at_least(count: int, ctx: Context, after: Any = None, reader: Any = None) -> Any:
    """A condition on `subscribers` (or on the table of `reader`, a subscriber id column):
    the reader received at least `count` issues (only those newer than `after`, if given;
    welcome steps are no issues). Walks the ledger's index by reader from their newest
    issue and stops at the `count`th."""
    if count <= 0:
        return true()
    if not ctx.sent_issues:
        return false()
    d = schema.deliveries
    query = select(literal(1)).where(
        d.c.subscriber_id == (schema.subscribers.c.id if reader is None else reader)
    )
    if ctx.sequence_issues:
        query = query.where(d.c.issue_id.not_in(list(ctx.sequence_issues)))
    if after is not None:
        query = query.where(d.c.issue_id > after)
    # Correlated to `subscribers` (and `reader_activity`) wherever they are in the query.
    query = query.correlate_except(d).order_by(d.c.issue_id.desc()).limit(1).offset(count - 1)
    return exists(query)


def received(op: str, count: int, ctx: Context) -> Any:
    """A condition on `subscribers`: how many issues the reader received compares to
    `count` (op: >=, >, <=, <, =). Public like `engaged`."""
    return _received(op, count, ctx)


def _received(op: str, count: int, ctx: Context) -> Any:
    at_least = {">=": count, ">": count + 1}.get(op)
    if at_least is not None:
        return _at_least(at_least, ctx)
    below = {"<": count, "<=": count + 1}.get(op)
    if below is not None:
        return not_(_at_least(below, ctx))
    return and_(_at_least(count, ctx), not_(_at_least(count + 1, ctx)))
