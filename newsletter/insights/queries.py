"""What `stats` and `report` show, read from the counters (counters.py), never from raw events.

Counts are unique readers per issue, rated over the bases `metrics.RATE_BASES` names (delivered
and bounced over recipients; opened, clicked, unsubscribed, complained and replied over
delivered). An issue counts as sent once a send of it reached readers (`metrics.reached_readers`).
Opens are estimates: Apple Mail and security scanners load the tracking pixel for nobody;
machine opens (`sg_machine_open`) are left out, and opens are shown only when
`[tracking] opens = true`. Replies count distinct senders, auto-replies excluded.
"""

from __future__ import annotations

import html.parser
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, String, cast, distinct, func, select, text

from newsletter.errors import ConfigError, NewsletterError
from newsletter.insights import metrics
from newsletter.issue import load_issue
from newsletter.markdown import parse, render_html
from newsletter.personalize import extract_expressions
from newsletter.sending.answers import ACCEPTED_LABEL
from newsletter.sending.transports import capabilities_of
from newsletter.store import schema
from newsletter.store.times import as_utc

if TYPE_CHECKING:
    from newsletter.project import Project


@dataclass(frozen=True)
class IssueSummary:
    """One sent issue's row in `stats` and the report."""

    issue_id: int
    slug: str
    title: str
    sent_at: datetime | None
    counts: dict[str, int]
    rates: dict[str, float | None]
    #: Sent through a transport that reports no deliveries (SMTP): "delivered" counts the
    #: messages the mail server accepted (see `sending.answers`).
    delivered_means_accepted: bool = False

    @property
    def delivered_means(self) -> str:
        return ACCEPTED_LABEL if self.delivered_means_accepted else "delivered"

    def as_dict(self, opens: bool) -> dict[str, Any]:
        counts = dict(self.counts)
        rates = dict(self.rates)
        if not opens:
            counts.pop("opened", None)
            rates.pop("opened", None)
        return {
            "issue": self.slug,
            "title": self.title,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "counts": counts,
            "rates": rates,
            "delivered_means": self.delivered_means,
        }


def _accepted_is_delivered(engine: Engine, issue_ids: list[int]) -> set[int]:
    """Issues with a real send through a transport that reports no deliveries (SMTP), whose
    acceptance counts as delivered (asked of the transports' capabilities)."""
    s = schema.sends
    with engine.connect() as conn:
        rows = conn.execute(
            select(s.c.issue_id, s.c.transport)
            .where(s.c.issue_id.in_(issue_ids), metrics.reached_readers())
            .distinct()
        ).all()
    found = set()
    for issue_id, kind in rows:
        capabilities = capabilities_of(kind)
        if capabilities is not None and not capabilities.reports_delivery:
            found.add(issue_id)
    return found


def _metric_totals(engine: Engine, issue_ids: list[int]) -> dict[int, dict[str, int]]:
    c = schema.issue_day_counters
    totals: dict[int, dict[str, int]] = {i: {} for i in issue_ids}
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.c.issue_id, c.c.metric, func.sum(c.c.readers))
            .where(c.c.issue_id.in_(issue_ids))
            .group_by(c.c.issue_id, c.c.metric)
        )
        for issue_id, metric, readers in rows:
            totals[issue_id][metric] = int(readers or 0)
    return totals


def _recipients(engine: Engine, issue_ids: list[int]) -> dict[int, int]:
    """Handed-over messages per issue: the senders' totals, else the ledger's rows."""
    s, t, d = schema.sends, schema.send_totals, schema.deliveries
    found: dict[int, int] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(s.c.issue_id, func.sum(t.c.accepted + t.c.uncertain))
            .select_from(s.join(t, t.c.send_id == s.c.id))
            .where(
                s.c.issue_id.in_(issue_ids),
                metrics.reached_readers(),
                # Readers, not copies: a resend's second copies are `stats ISSUE`'s own table.
                s.c.resend.is_(None) | (s.c.resend == "new"),
            )
            .group_by(s.c.issue_id)
        )
        found = {issue_id: int(n or 0) for issue_id, n in rows}
        for issue_id in issue_ids:
            if issue_id in found:
                continue
            found[issue_id] = int(
                conn.execute(
                    select(func.count()).where(
                        d.c.issue_id == issue_id, d.c.state.in_(metrics.HANDED_OVER_STATES)
                    )
                ).scalar_one()
            )
    return found


def _replies(engine: Engine, issue_ids: list[int]) -> dict[int, int]:
    r = schema.replies
    where = [r.c.issue_id.in_(issue_ids)]
    if "automatic" in r.c:  # the replies table's auto-reply flag (m008)
        where.append(r.c.automatic.is_not(True))
    # Readers, not addresses: a reply stored on a subscriber (from another address of theirs,
    # to their signed reply address) is theirs; one from an unknown address counts by it.
    reader = func.coalesce(cast(r.c.subscriber_id, String), func.lower(r.c.from_email))
    with engine.connect() as conn:
        rows = conn.execute(
            select(r.c.issue_id, func.count(distinct(reader))).where(*where).group_by(r.c.issue_id)
        )
        return {issue_id: int(n) for issue_id, n in rows}


def _summaries(
    engine: Engine, issues: list[tuple[int, str, str, datetime | None]]
) -> list[IssueSummary]:
    ids = [i[0] for i in issues]
    if not ids:
        return []
    totals = _metric_totals(engine, ids)
    recipients = _recipients(engine, ids)
    replies = _replies(engine, ids)
    accepted = _accepted_is_delivered(engine, ids)
    out = []
    for issue_id, slug, title, sent_at in issues:
        counted = totals[issue_id]
        counts = {"recipients": recipients.get(issue_id, 0)}
        for metric in metrics.EVENT_METRICS:
            counts[metric] = counted.get(metric, 0)
        counts[metrics.REPLIED] = replies.get(issue_id, 0)
        rates: dict[str, float | None] = {}
        for metric in metrics.ISSUE_METRICS:
            base = counts[metrics.RATE_BASES[metric]]
            rates[metric] = counts[metric] / base if base else None
        out.append(
            IssueSummary(
                issue_id, slug, title, as_utc(sent_at), counts, rates, issue_id in accepted
            )
        )
    return out


def sent_issues(engine: Engine, limit: int | None = None) -> list[IssueSummary]:
    """Every issue with a real send, newest first; welcome-sequence steps are not issues
    (`stats sequences/NAME/STEP` shows one)."""
    i, s = schema.issues, schema.sends
    sent_at = func.min(metrics.goes_out_at())
    query = (
        select(i.c.id, i.c.slug, i.c.title, sent_at.label("sent_at"))
        .select_from(i.join(s, s.c.issue_id == i.c.id))
        .where(metrics.reached_readers(), ~metrics.sequence_step(i.c.id))
        .group_by(i.c.id, i.c.slug, i.c.title)
        .order_by(sent_at.desc(), i.c.id.desc())
    )
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        issues = [(r.id, r.slug, r.title, r.sent_at) for r in conn.execute(query)]
    return _summaries(engine, issues)


def issue_summary(engine: Engine, issue_id: int) -> IssueSummary:
    """One issue's row, sent or not (an unsent issue has zeros)."""
    i, s = schema.issues, schema.sends
    with engine.connect() as conn:
        row = conn.execute(select(i.c.id, i.c.slug, i.c.title).where(i.c.id == issue_id)).one()
        sent_at = conn.execute(
            select(func.min(metrics.goes_out_at())).where(
                s.c.issue_id == issue_id, metrics.reached_readers()
            )
        ).scalar()
    return _summaries(engine, [(row.id, row.slug, row.title, sent_at)])[0]


# --- one issue: links and unsubscribes per day ---------------------------------------------


@dataclass(frozen=True)
class LinkClicks:
    url: str
    text: str | None  # the link's text in the issue, when the issue file is at hand
    clicks: int

    @property
    def shown_url(self) -> str:
        """The URL as a person reads it (`…/podcast-öffi`); `url` stays as stored."""
        return readable_url(self.url)


#: A run of percent-escapes of bytes above ASCII: where a UTF-8 character may be encoded.
_HIGH_ESCAPES = re.compile(r"(?:%[89a-fA-F][0-9a-fA-F])+")


def readable_url(url: str) -> str:
    """The URL with its percent-encoded UTF-8 letters decoded, for display only, as a
    browser's address bar shows it: escapes of ASCII (`%20`, `%2F`) stay, and so does a run
    that is not UTF-8 or holds an invisible character (a control, a bidi mark, a space)."""

    def letters(match: re.Match[str]) -> str:
        try:
            text = bytes.fromhex(match.group().replace("%", "")).decode("utf-8")
        except UnicodeDecodeError:
            return match.group()
        if any(unicodedata.category(c)[0] in "CZ" for c in text):
            return match.group()
        return text

    return _HIGH_ESCAPES.sub(letters, url)


def link_clicks(engine: Engine, issue_id: int, limit: int | None = None) -> list[tuple[str, int]]:
    """(URL, clicks) for an issue, most clicked first."""
    c = schema.link_day_counters
    total = func.sum(c.c.clicks)
    query = (
        select(c.c.url, total)
        .where(c.c.issue_id == issue_id)
        .group_by(c.c.url)
        .order_by(total.desc(), c.c.url)
    )
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [(url, int(n)) for url, n in conn.execute(query)]


def per_day(engine: Engine, issue_id: int, metric: str) -> list[tuple[date, int]]:
    """(UTC day, readers whose first `metric` event for the issue fell that day)."""
    c = schema.issue_day_counters
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.c.day, c.c.readers)
            .where(c.c.issue_id == issue_id, c.c.metric == metric, c.c.readers > 0)
            .order_by(c.c.day)
        )
        return [(day, int(n)) for day, n in rows]


class _LinkCollector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: dict[str, str] = {}
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._text = []
        elif tag == "img" and self._href is not None:
            alt = dict(attrs).get("alt")
            if alt:
                self._text.append(alt)

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            text = " ".join("".join(self._text).split())
            if text:
                self.links.setdefault(self._href, text)
            self._href = None


def issue_files(project: Project) -> dict[str, Path]:
    """slug -> issue file, for the files in issues/ that load."""
    found: dict[str, Path] = {}
    for path in sorted(project.issues_dir.glob("*.md")):
        try:
            found.setdefault(load_issue(project, path).slug, path)
        except NewsletterError:
            continue
    return found


def link_texts(project: Project, path: Path) -> dict[str, str]:
    """URL -> the link's text, from the issue's body as rendered into the email."""
    try:
        issue = load_issue(project, path)
        body, _ = extract_expressions(issue.path, issue.body, issue.body_line)
    except NewsletterError:
        return {}
    collector = _LinkCollector()
    collector.feed(render_html(*parse(body)))
    collector.close()
    return collector.links


def with_texts(clicks: Iterable[tuple[str, int]], texts: dict[str, str]) -> list[LinkClicks]:
    # The issue's href and the clicked URL may differ in their encoding (`ö`, `%C3%B6`).
    readable = {readable_url(href): text for href, text in texts.items()}

    def text_for(url: str) -> str | None:
        for key in (url, url.rstrip("/"), url + "/"):
            if found := texts.get(key) or readable.get(readable_url(key)):
                return found
        return None

    return [LinkClicks(url, text_for(url), n) for url, n in clicks]


# --- list growth ---------------------------------------------------------------------------


def timezone(project: Project) -> ZoneInfo:
    """`[newsletter] timezone` as a ZoneInfo; ConfigError naming the key when unknown."""
    name = project.config.section("newsletter").get("timezone") or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{project.config.path}: [newsletter] timezone = {name!r} is not a time zone; "
            'use an IANA name such as "Europe/Berlin" or "UTC"'
        ) from None


@dataclass
class GrowthPeriod:
    start: date  # first day of the period, in the newsletter's time zone
    counts: dict[str, int] = field(default_factory=dict)
    net_size: int = 0  # subscribed people at the end of the period
    #: Sign-ups the form turned away (bots, throwaway domains, limits), and by reason:
    #: bot, domain, network, address (only those that occurred).
    blocked: int = 0
    blocked_by: dict[str, int] = field(default_factory=dict)
    #: Of `unsubscribed`, those `subscribers sunset --apply` removed as inactive (shown apart:
    #: `newsletter.segments.sunset.split_inactive` fills it).
    inactive: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.start.isoformat(),
            **self.counts,
            "inactive": self.inactive,
            "net_size": self.net_size,
            "blocked": self.blocked,
            "blocked_by": dict(sorted(self.blocked_by.items())),
        }


def _period_start(day: date, by: str) -> date:
    if by == "month":
        return day.replace(day=1)
    if by == "week":
        return day - timedelta(days=day.weekday())
    return day


def _next_period(start: date, by: str) -> date:
    if by == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start + timedelta(days=7 if by == "week" else 1)


def list_growth(
    engine: Engine, tz: ZoneInfo, by: str = "month", now: datetime | None = None
) -> list[GrowthPeriod]:
    """Growth per day, week (Monday first) or month in `tz`, oldest first, every period from
    the first change to now (quiet ones too, so a chart's axis is even)."""
    c = schema.list_counters
    with engine.connect() as conn:
        first, last = conn.execute(select(func.min(c.c.bucket), func.max(c.c.bucket))).one()
        if first is None:
            return []
        now = now or datetime.now(UTC)
        first_day = datetime.fromtimestamp(first, tz).date()
        last_day = max(now.astimezone(tz).date(), datetime.fromtimestamp(last, tz).date())
        periods: list[GrowthPeriod] = []
        bounds: list[int] = []  # UTC epoch seconds where each period starts
        start = _period_start(first_day, by)
        while start <= last_day:
            periods.append(GrowthPeriod(start, {name: 0 for name in metrics.GROWTH_METRICS}))
            bounds.append(int(datetime(start.year, start.month, start.day, tzinfo=tz).timestamp()))
            start = _next_period(start, by)
        # The database sums the quarter hours into periods: a range scan per period.
        ranges = ", ".join(
            f"({i}, {lo}, {hi})"
            for i, (lo, hi) in enumerate(zip(bounds, [*bounds[1:], 2**62], strict=True))
        )
        rows = conn.execute(
            text(
                f"WITH periods (n, lo, hi) AS (VALUES {ranges}) "
                "SELECT periods.n, list_counters.metric, sum(list_counters.count) "
                "FROM periods JOIN list_counters "
                "ON list_counters.bucket >= periods.lo AND list_counters.bucket < periods.hi "
                "GROUP BY periods.n, list_counters.metric"
            )
        ).all()
    # Joining: new people who arrived subscribed (new_* less unconfirmed_new), and changes
    # into `subscribed` (a confirmation, a resubscribe); leaving: changes out of it, erasure.
    sign = {**{new: 1 for new in metrics.GROWTH_NEW}, "unconfirmed_new": -1, "joined": 1}
    sign["left"] = -1
    net = [0] * len(periods)
    for index, metric, count in rows:
        net[index] += sign.get(metric, 0) * int(count)
        if metric in metrics.BLOCKED_METRICS:
            periods[index].blocked += int(count)
            by_reason = periods[index].blocked_by
            reason = metric.removeprefix("blocked_")
            by_reason[reason] = by_reason.get(reason, 0) + int(count)
        elif metric in periods[index].counts:
            periods[index].counts[metric] += int(count)
    size = 0
    for period, change in zip(periods, net, strict=True):
        size += change
        period.net_size = size
    return periods


def list_size_change(
    engine: Engine, tz: ZoneInfo, days: int = 30, now: datetime | None = None
) -> tuple[int, int]:
    """(subscribed people now, the change over the last `days` days)."""
    now = now or datetime.now(UTC)
    daily = list_growth(engine, tz, "day", now)
    if not daily:
        return 0, 0
    before = now.astimezone(tz).date() - timedelta(days=days)
    then = next((p.net_size for p in reversed(daily) if p.start <= before), 0)
    return daily[-1].net_size, daily[-1].net_size - then


def summary_dicts(rows: list[IssueSummary], opens: bool) -> list[dict[str, Any]]:
    return [row.as_dict(opens) for row in rows]


def growth_dicts(rows: list[GrowthPeriod]) -> list[dict[str, Any]]:
    return [row.as_dict() for row in rows]


def link_dicts(rows: list[LinkClicks]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


def opens_tracked(project: Project) -> bool:
    return bool(project.config.sections.get("tracking", {}).get("opens", False))
