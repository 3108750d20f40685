"""Sunsetting: find the readers who stopped reading, ask them once whether they still want
the newsletter, and take those who stay silent off the list (reason "inactive").

Cold is a segment (`cold_definition`): subscribed, no click, no reply and no human open in
their last N issues, on the list for at least M days, and at least 3 issues received.
`ask` mails each a re-engagement message (templates/web/keep_email.html and .txt, which a
project may override) with a signed "Yes, keep sending" link; `keep` is what `serve` does
when the button on the link's page is pressed (opening the link changes nothing: mail
scanners open every link): the reader counts as having clicked (active again). `due` lists
who was asked at least `grace` ago and has not clicked, opened or replied since; `remove`
takes them off through the subscriber store. `sunset_asks` is this module's table.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, and_, delete, or_, select, update

from newsletter import tokens
from newsletter.check import imprint_missing
from newsletter.errors import ConfigError
from newsletter.i18n import gettext_for
from newsletter.mail_templates import MAIL_TEXT, mail_template_problems, render_mail
from newsletter.project import project_timezone
from newsletter.segments import Segment
from newsletter.segments.activity import Activity, latest_issue_sent_to, note
from newsletter.segments.query import segment_condition
from newsletter.sending.single import send_transactional
from newsletter.store import schema
from newsletter.store.subscribers import iter_subscribers, set_status
from newsletter.store.times import as_utc

if TYPE_CHECKING:
    from newsletter.insights.queries import GrowthPeriod
    from newsletter.project import Project
    from newsletter.store.subscribers import Subscriber

#: The token purpose of the keep link (its own salt: an unsubscribe token cannot keep anyone).
KEEP = "keep"
#: The reason `remove` records (`stats --list` counts these apart from unsubscribes).
INACTIVE = "inactive"
MIN_RECEIVED = 3


def cold_definition(issues: int = 10, min_days: int = 30) -> str:
    """The cold readers, in the segment syntax."""
    quiet = " ".join(f"-{kind}:last-{issues}" for kind in ("clicked", "replied", "opened"))
    return f"status:subscribed {quiet} -joined:{min_days}d received:>={MIN_RECEIVED}"


def cold_readers(
    project: Project, engine: Engine, *, issues: int = 10, min_days: int = 30
) -> list[Subscriber]:
    """The cold readers now, in id order."""
    segment = Segment.parse(cold_definition(issues, min_days), "sunset")
    with engine.connect() as conn:
        where = segment_condition(conn, segment.tree, project_timezone(project))
    return list(iter_subscribers(engine, where=[where]))


def keep_url(project: Project, subscriber: Subscriber) -> str:
    base = project.config.base_url
    if not base:
        raise ConfigError(
            f"{project.config.path}: [newsletter] base_url is not set; the keep link needs "
            'it: add base_url = "https://news.example.com"'
        )
    key = tokens.secret_key()
    token = tokens.make_token(KEEP, subscriber.public_id or subscriber.id, key=key)
    return f"{base.rstrip('/')}/keep/{token}"


def refuse_unlawful(project: Project) -> None:
    """A ConfigError if the law forbids the mail: a German one without an Impressum (§ 5 DDG),
    as `send` and `sequences run` refuse it."""
    language = project.config.language
    if language == "de" and (missing := imprint_missing(project, language)):
        raise ConfigError(f"{project.config.path}: {missing}")


def pending(engine: Engine, subscriber_ids: Sequence[int]) -> set[int]:
    """Which of these were asked and have not answered yet."""
    a = schema.sunset_asks
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(a.c.subscriber_id).where(
                    a.c.subscriber_id.in_(list(subscriber_ids)), a.c.kept_at.is_(None)
                )
            ).scalars()
        )


def ask(
    project: Project, engine: Engine, readers: Sequence[Subscriber], *, grace_days: int
) -> list[str]:
    """Mail each reader the re-engagement message (through the project's transport) and
    note when; readers asked before who have not answered are not asked again. Returns one
    line per message (where it went). Before the first mail, a ConfigError for a German
    newsletter without an Impressum (`refuse_unlawful`), and a RenderError if the project's
    own keep_email template cannot be rendered (not one halfway through the readers). Each
    mail carries the reader's one-click unsubscribe (List-Unsubscribe), as issues do: it is
    mail to many readers at once."""
    language = project.config.language
    refuse_unlawful(project)
    for problem in mail_template_problems(project, ["keep_email"]):
        raise problem
    already = pending(engine, [r.id for r in readers])
    key = tokens.secret_key()
    lines = []
    for reader in readers:
        if reader.id in already:
            continue
        person = reader.first_name or reader.name or ""
        subject = (
            gettext_for(language)
            .gettext(MAIL_TEXT["keep_subject"])
            .format(name=project.config.name)
        )
        context = {
            "keep_url": keep_url(project, reader),
            "person": person,
            "subject": subject,
            "grace_days": grace_days,
        }
        html = render_mail(project, "keep_email.html", language, **context)
        text = render_mail(project, "keep_email.txt", language, **context)
        unsubscribe = tokens.unsubscribe_url(
            project.config.base_url, reader.public_id or reader.id, None, key=key
        )
        where = send_transactional(
            project,
            reader.email,
            subject,
            html,
            text,
            categories=("sunset",),
            unsubscribe_url=unsubscribe,
        )
        _asked(engine, reader.id)
        lines.append(where)
    return lines


def _asked(engine: Engine, subscriber_id: int) -> None:
    a = schema.sunset_asks
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(delete(a).where(a.c.subscriber_id == subscriber_id))
        conn.execute(a.insert().values(subscriber_id=subscriber_id, asked_at=now))


def removed_as_inactive(subscriber: Subscriber) -> bool:
    return subscriber.status == "unsubscribed" and subscriber.unsubscribe_reason == INACTIVE


def keeps(subscriber: Subscriber) -> bool:
    """Whether `keep` leaves the reader subscribed: still on the list, or taken off as
    inactive (the keep link brings them back). What the keep page offers before the click."""
    return subscriber.status == "subscribed" or removed_as_inactive(subscriber)


def keep(conn: Connection, subscriber: Subscriber, now: datetime | None = None) -> str:
    """The reader pressed "Yes, keep sending" on the keep page (a POST; opening the link
    changes nothing): they count as having clicked their latest issue (active again), and
    someone already removed as inactive is subscribed again (the signed link proves the
    address). Returns their status afterwards."""
    moment = now or datetime.now(UTC)
    a = schema.sunset_asks
    conn.execute(update(a).where(a.c.subscriber_id == subscriber.id).values(kept_at=moment))
    note(
        conn,
        [Activity(subscriber.id, "clicked", moment, latest_issue_sent_to(conn, subscriber.id))],
    )
    if removed_as_inactive(subscriber):
        set_status(conn, subscriber.id, "subscribed")
        return "subscribed"
    return subscriber.status


@dataclass(frozen=True)
class Due:
    subscriber_id: int
    email: str
    asked_at: datetime


def due(engine: Engine, *, grace: timedelta, now: datetime | None = None) -> list[Due]:
    """Asked at least `grace` ago, still subscribed, and no keep click, click, human open
    or reply since they were asked."""
    a, r, s = schema.sunset_asks, schema.reader_activity, schema.subscribers
    moment = now or datetime.now(UTC)
    since = [
        and_(r.c[f"{kind}_at"].is_not(None), r.c[f"{kind}_at"] >= a.c.asked_at)
        for kind in ("clicked", "opened", "replied")
    ]
    query = (
        select(s.c.id, s.c.email, a.c.asked_at)
        .join(a, a.c.subscriber_id == s.c.id)
        .outerjoin(r, r.c.subscriber_id == s.c.id)
        .where(
            s.c.status == "subscribed",
            a.c.kept_at.is_(None),
            a.c.asked_at <= moment - grace,
            ~or_(*since),
        )
        .order_by(s.c.id)
    )
    with engine.connect() as conn:
        return [Due(row.id, row.email, as_utc(row.asked_at)) for row in conn.execute(query)]  # type: ignore[arg-type]


def remove(engine: Engine, people: Sequence[Due]) -> int:
    """Unsubscribe them with the reason "inactive" (through the subscriber store)."""
    a = schema.sunset_asks
    with engine.begin() as conn:
        for person in people:
            set_status(conn, person.subscriber_id, "unsubscribed", reason=INACTIVE)
        conn.execute(delete(a).where(a.c.subscriber_id.in_([p.subscriber_id for p in people])))
    return len(people)


def split_inactive(engine: Engine, periods: Sequence[GrowthPeriod], tz: ZoneInfo) -> None:
    """Move the readers `remove` took off as inactive from each period's `unsubscribed` to its
    `inactive` (by when they were removed; someone who came back since is no longer counted
    apart)."""
    s = schema.subscribers
    if not periods:
        return
    with engine.connect() as conn:
        times = conn.execute(
            select(s.c.unsubscribed_at).where(
                schema.status_is("unsubscribed"), s.c.unsubscribe_reason == INACTIVE
            )
        ).scalars()
        days = sorted(as_utc(t).astimezone(tz).date() for t in times if t is not None)  # type: ignore[union-attr]
    starts = [p.start for p in periods]
    for day in days:
        index = bisect_right(starts, day) - 1
        if index < 0:
            continue
        period = periods[index]
        period.inactive += 1
        period.counts["unsubscribed"] = max(period.counts.get("unsubscribed", 0) - 1, 0)
