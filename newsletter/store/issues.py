"""The `issues` table, and resolving an ISSUE argument.

- `resolve_issue(project, name)`: what every command that takes ISSUE calls (build, check,
  preview, screenshot, send, sends, stats, cancel, replies): a path, a file name in
  `issues/` with or without `.md`, or a slug (from an issue file's front matter, or of an
  issue that was sent and whose file is gone).
- `ensure_issue`, `rename_issue`, `find_issue_id`, `find_issue`: the table's rows;
  `find_sent_issue(project, engine, name)`: the issue a `stats` or `replies` command names,
  among those with a row.
- `published_issues`, `is_published` (the archive's block): when readers may see an issue
  on the web. Once a send of it reached readers (`insights.metrics.reached_readers`, the one
  rule `stats` and `report` count by too): at the scheduled `send_at` of a send, or, for an
  immediate send, once the provider accepted a first recipient; never for drafts, test copies
  (they record no send), dry runs, outbox-only sends, cancelled sends, or sends rejected for
  every recipient. Only a
  send to the whole list publishes, unless the issue's front matter says `public: true` (then
  a send to a tag does too; `public: false` publishes nothing). `publish_rule` says which
  rule applies to a send, for `newsletter sends`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, and_, case, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from newsletter import issue_names
from newsletter.errors import NewsletterError, StoreError

# upward: the one rule for "a send that reached readers" lives with the metrics that count by
# it (insights); the archive publishes by the same rule, and metrics needs only the schema
from newsletter.insights import metrics
from newsletter.issue_names import ResolvedIssue
from newsletter.store.schema import issues, send_segments, sends
from newsletter.store.times import as_utc

if TYPE_CHECKING:
    from newsletter.project import Project


# --- core: resolving and the rows (owned by the sending core) ---------------------------------


def resolve_issue(
    project: Project, name: str | Path, engine: Engine | None = None
) -> ResolvedIssue:
    """An ISSUE argument as `newsletter.issue_names.resolve_issue` finds it (a path, a file
    name, a slug: no database needed); with `engine`, also the slug of an issue the database
    knows whose file is gone."""
    try:
        return issue_names.resolve_issue(project, name)
    except issue_names.NoSuchIssue:
        text = str(name)
        if engine is not None and find_issue_id(engine, text) is not None:
            return ResolvedIssue(text, text, None)  # sent once; its file is gone
        raise


def ensure_issue(engine: Engine, *, slug: str, title: str, subject: str, language: str) -> int:
    """The issue's row id (created on its first send)."""
    with engine.begin() as conn:
        found = conn.execute(select(issues.c.id).where(issues.c.slug == slug)).scalar()
        if found is not None:
            conn.execute(
                update(issues).where(issues.c.id == found).values(title=title, subject=subject)
            )
            return int(found)
        try:
            with conn.begin_nested():
                result = conn.execute(
                    insert(issues).values(
                        slug=slug,
                        title=title,
                        subject=subject,
                        language=language,
                        created_at=datetime.now(UTC),
                    )
                )
                return int(result.inserted_primary_key[0])  # type: ignore[index]
        except IntegrityError:
            return int(conn.execute(select(issues.c.id).where(issues.c.slug == slug)).scalar_one())


def rename_issue(conn: Connection, issue_id: int, slug: str) -> None:
    """Give an issue row a new slug (a sequence step whose file was renamed); its sends,
    deliveries, events and replies stay with it."""
    conn.execute(update(issues).where(issues.c.id == issue_id).values(slug=slug))


def find_issue_id(engine: Engine, slug: str) -> int | None:
    with engine.connect() as conn:
        return conn.execute(select(issues.c.id).where(issues.c.slug == slug)).scalar()


def find_issue(engine: Engine, slug: str) -> Any:
    """The issue's row (id, slug, title, subject, language, created_at), or None."""
    with engine.connect() as conn:
        return conn.execute(select(issues).where(issues.c.slug == slug)).first()


@dataclass(frozen=True)
class SentIssue:
    id: int
    slug: str
    title: str


def find_sent_issue(project: Project, engine: Engine, name: str) -> SentIssue:
    """An issue that has a row in the database, by slug, file name or path (the one
    resolver every command uses)."""
    try:
        slug = resolve_issue(project, name, engine).slug
    except NewsletterError:
        raise StoreError(f"{name}: no such issue; give its slug, file name or path") from None
    row = find_issue(engine, slug)
    if row is None:
        raise StoreError(f"{name}: issue {slug!r} has not been sent yet; send it first")
    return SentIssue(id=row.id, slug=row.slug, title=row.title)


# --- end of the core's block ---------------------------------------------------------------------


# --- publish rule (archive) --------------------------------------------------------------


@dataclass(frozen=True)
class PublishedIssue:
    """An issue that readers may see on the web, and since when."""

    issue_id: int
    slug: str
    title: str
    language: str
    published_at: datetime  # send_at of a scheduled send, else when the send started


def _whole_list() -> Any:
    """A condition on `sends`: it went to the whole list (no --tag, no segment)."""
    return and_(
        func.coalesce(func.json_array_length(sends.c.segment), 0) == 0,
        ~exists().where(send_segments.c.send_id == sends.c.id),
    )


def _published_query(now: datetime):  # type: ignore[no-untyped-def]
    """(issue id, slug, title, language, first time out, first time out to the whole list)
    per issue that really went out to someone by `now`."""
    goes_out_at = metrics.goes_out_at()
    first_out = func.min(goes_out_at).label("first_out")
    first_to_all = func.min(case((_whole_list(), goes_out_at), else_=None)).label("first_to_all")
    return (
        select(
            issues.c.id, issues.c.slug, issues.c.title, issues.c.language, first_out, first_to_all
        )
        .select_from(issues.join(sends, sends.c.issue_id == issues.c.id))
        .where(
            and_(
                metrics.reached_readers(),
                goes_out_at <= now,
                # A welcome-sequence step is personal mail, never a public issue.
                ~metrics.sequence_step(issues.c.id),
            )
        )
        .group_by(issues.c.id, issues.c.slug, issues.c.title, issues.c.language)
    )


def published_issues(
    engine: Engine,
    now: datetime | None = None,
    public: Mapping[str, bool | None] | None = None,
) -> list[PublishedIssue]:
    """Every public issue, newest first (ties: by slug, so the order is stable). `public`:
    slug -> the issue file's `public:` front matter (see `publish_rule`)."""
    moment = as_utc(now or datetime.now(UTC))
    flags = public or {}
    with engine.connect() as conn:
        rows = conn.execute(_published_query(moment)).all()
    found = []
    for issue_id, slug, title, language, first_out, first_to_all in rows:
        flag = flags.get(slug)
        if flag is False or (flag is None and first_to_all is None):
            continue
        at = first_out if flag else first_to_all
        found.append(PublishedIssue(int(issue_id), slug, title, language, as_utc(at)))
    found.sort(key=lambda p: p.slug)
    found.sort(key=lambda p: p.published_at, reverse=True)
    return found


def is_published(
    engine: Engine, slug: str, now: datetime | None = None, public: bool | None = None
) -> bool:
    """Is the issue with this slug public (see the module docstring for the rule)?"""
    return any(p.slug == slug for p in published_issues(engine, now, {slug: public}))


@dataclass(frozen=True)
class PublishRule:
    """Whether one send makes its issue public on the web (once it has gone out), and why."""

    public: bool
    reason: str


def publish_rule(
    *,
    segment: Sequence[str],
    dry_run: bool,
    transport: str,
    status: str,
    sequence_step: bool,
    front_matter_public: bool | None,
    segment_shown: str | None = None,
) -> PublishRule:
    """The rule that applies to a send: only a send to the whole list publishes, unless the
    issue's front matter says `public: true` (or `public: false`: never)."""
    no_reader = metrics.reason_no_reader(dry_run=dry_run, transport=transport, status=status)
    if no_reader is not None:
        return PublishRule(False, no_reader)
    if sequence_step:
        return PublishRule(False, "a sequence step is personal mail")
    if front_matter_public is False:
        return PublishRule(False, "its front matter says `public: false`")
    if segment_shown:
        if front_matter_public:
            return PublishRule(
                True, f"sent to {segment_shown}; its front matter says `public: true`"
            )
        return PublishRule(
            False,
            f"sent to {segment_shown} only; add `public: true` to its front matter to publish it",
        )
    if not segment:
        return PublishRule(True, "sent to the whole list")
    tags = ", ".join(segment)
    if front_matter_public:
        return PublishRule(True, f"sent to tag {tags}; its front matter says `public: true`")
    return PublishRule(
        False, f"sent to tag {tags} only; add `public: true` to its front matter to publish it"
    )


# --- end of publish rule -------------------------------------------------------------------
