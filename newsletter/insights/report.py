"""`newsletter report`: one self-contained HTML page about how the newsletter is doing.

No network and no script: charts are pygal's SVG inlined into the page (its JavaScript
tooltips are left out, every value is in the tables too), styles are inline, and the page
follows the reader's dark mode and a phone's width. Wording follows `[newsletter] language`.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup
from sqlalchemy import Engine, select

from newsletter import i18n
from newsletter.errors import NewsletterError
from newsletter.i18n import LANGUAGES, N_, install
from newsletter.insights import metrics, queries
from newsletter.project import builtin_templates_dir
from newsletter.store import schema
from newsletter.store.times import as_utc

if TYPE_CHECKING:
    from newsletter.project import Project

LAST_ISSUES_FOR_LINKS = 5
LINKS_PER_ISSUE = 5
LAST_REPLIES = 10
TEMPLATE = "report.html.j2"

#: The charts' texts by name; the wording is the catalogue's (the page's own says `_()`).
STRINGS: dict[str, str] = {
    "size": N_("Subscribers"),
    "growth": N_("List growth"),
    "new": N_("New"),
    "lost": N_("Unsubscribed, bounced, complained"),
    "rates": N_("Click and reply rate per issue"),
    "click_rate": N_("Click rate"),
    "reply_rate": N_("Reply rate"),
    "no_data": N_("No data yet."),
}


#: Where a column heading may break (a soft hyphen): the table of all issues fits 1200 px
#: with its headings on two lines. (Chromium on Linux has no hyphenation dictionaries, so
#: CSS `hyphens: auto` alone does not break them.)
_HEADING_BREAKS = {
    "Empfänger": "Emp\xadfänger",
    "Zugestellt": "Zu\xadgestellt",
    "Unzustellbar": "Unzu\xadstell\xadbar",
    "Klickende": "Klick\xadende",
    "Klickrate": "Klick\xadrate",
    "Antworten": "Ant\xadworten",
    "Antwortrate": "Antwort\xadrate",
    "Abmeldungen": "Ab\xadmeldungen",
    "Beschwerden": "Be\xadschwerden",
    "Öffnungen*": "Öff\xadnungen*",
    "Öffnungsrate*": "Öffnungs\xadrate*",
    "Recipients": "Recip\xadients",
    "Unsubscribes": "Unsub\xadscribes",
    "Complaints": "Com\xadplaints",
}


_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)


def _svg(chart: Any) -> Markup:
    """pygal's SVG without its script and comments: nothing that could reach the network."""
    svg = chart.render(is_unicode=True)
    return Markup(_COMMENT.sub("", _SCRIPT.sub("", svg)))


#: One font size for every text in every chart, and one drawing size for every chart: the
#: page shows them all in equal grid tracks (at most 22rem wide), so their text comes out
#: the same size on screen, and at least 11 px on a 375 px phone (a 309 px track).
CHART_FONT_PX = 14
CHART_WIDTH, CHART_HEIGHT = 380, 290


def _style() -> Any:
    # deferred: pygal costs 60 ms at start-up; `stats` shares this command module and draws nothing
    from pygal.style import Style

    # Transparent, mid-grey text: readable on the light and the dark page alike.
    return Style(
        background="transparent",
        plot_background="transparent",
        foreground="#8a8f98",
        foreground_strong="#8a8f98",
        foreground_subtle="rgba(138,143,152,0.35)",
        colors=("#2f7dd1", "#e0803a", "#3aa76d", "#c0504d"),
        font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
        label_font_size=CHART_FONT_PX,
        major_label_font_size=CHART_FONT_PX,
        legend_font_size=CHART_FONT_PX,
        title_font_size=CHART_FONT_PX,
        value_font_size=CHART_FONT_PX,
        tooltip_font_size=CHART_FONT_PX,
        no_data_font_size=CHART_FONT_PX,
    )


def _chart_options(words: dict[str, str]) -> dict[str, Any]:
    # The SVG scales to its box (every chart's box is as wide: see CHART_FONT_PX).
    # The legend below the chart, one series a line and never cut ("Abgemeldet, ..."); at
    # most 6 steps on the y-axis, so its labels do not run into each other.
    return {
        "js": [],
        "disable_xml_declaration": True,
        "explicit_size": False,
        "style": _style(),
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "legend_at_bottom": True,
        "legend_at_bottom_columns": 1,
        "truncate_legend": -1,
        "max_scale": 6,
        "x_label_rotation": 30,
        "show_minor_x_labels": False,
        "truncate_label": 12,
        "no_data_text": words["no_data"],  # pygal's own is a huge English "No data"
    }


def _sparse_labels(labels: list[str], most: int = 12) -> list[str]:
    step = max(1, -(-len(labels) // most))
    return labels[::step]


def period_label(period: queries.GrowthPeriod, by: str) -> str:
    return period.start.strftime("%Y-%m") if by == "month" else period.start.isoformat()


def growth_charts(
    periods: list[queries.GrowthPeriod], by: str, words: dict[str, str], language: str
) -> list[Markup]:
    import pygal  # deferred: pygal costs 60 ms at start-up (see `_style`)

    if not periods:
        return []
    labels = [period_label(p, by) for p in periods]
    # Numbers as the page's text writes them (1.234 in German).
    options = {**_chart_options(words), "value_formatter": _number_formatter(language)}
    size = pygal.Line(title=words["size"], show_dots=len(periods) <= 60, **options)
    size.x_labels = labels
    size.x_labels_major = _sparse_labels(labels)
    size.add(words["size"], [p.net_size for p in periods])
    moves = pygal.Bar(title=words["growth"], **options)
    moves.x_labels = labels
    moves.x_labels_major = _sparse_labels(labels)
    moves.add(
        words["new"],
        [sum(p.counts[k] for k in metrics.GROWTH_NEW) for p in periods],
    )
    moves.add(
        words["lost"],
        [-sum(p.counts[k] for k in metrics.GROWTH_LOST) for p in periods],
    )
    return [_svg(size), _svg(moves)]


def _number_formatter(language: str) -> Callable[[float], str]:
    def shown(value: float) -> str:
        return i18n.format_number(int(value) if float(value).is_integer() else value, language)

    return shown


def rates_chart(
    issues: list[queries.IssueSummary], tz: ZoneInfo, words: dict[str, str], language: str
) -> Markup | None:
    import pygal  # deferred: pygal costs 60 ms at start-up (see `_style`)

    if not any(i.rates["clicked"] is not None or i.rates["replied"] is not None for i in issues):
        return None  # nothing delivered yet: the page says so in its language
    oldest_first = list(reversed(issues))
    chart = pygal.Line(
        title=words["rates"],
        # "42,9 %" in German, as the page's text: the chart's values are percentage points.
        value_formatter=lambda v: i18n.format_percent(v / 100, language),
        **_chart_options(words),
    )
    labels = [
        (i.sent_at.astimezone(tz).strftime("%Y-%m-%d") if i.sent_at else i.slug)
        for i in oldest_first
    ]
    chart.x_labels = labels
    chart.x_labels_major = _sparse_labels(labels)
    chart.add(words["click_rate"], [_rate_value(i.rates["clicked"]) for i in oldest_first])
    chart.add(words["reply_rate"], [_rate_value(i.rates["replied"]) for i in oldest_first])
    return _svg(chart)


def _rate_value(rate: float | None) -> float | None:
    return None if rate is None else round(rate * 100, 2)


#: The headline compares the last issue with the median of this many (itself included).
MEDIAN_OF = 10


@dataclass(frozen=True)
class Headline:
    """The figures on top: the list and the last issue against the ones before."""

    list_size: int
    change_30d: int
    last_title: str | None = None
    compared: int = 0  # how many issues the medians are over
    click_rate: float | None = None
    click_median: float | None = None
    reply_rate: float | None = None
    reply_median: float | None = None


def headline(engine: Engine, tz: ZoneInfo, issues: list[queries.IssueSummary]) -> Headline:
    size, change = queries.list_size_change(engine, tz)
    if not issues:
        return Headline(size, change)
    recent = issues[:MEDIAN_OF]  # newest first

    def median(metric: str) -> float | None:
        rates = [r for i in recent if (r := i.rates[metric]) is not None]
        return statistics.median(rates) if rates else None

    last = issues[0]
    return Headline(
        size,
        change,
        last_title=last.title,
        compared=len(recent),
        click_rate=last.rates["clicked"],
        click_median=median("clicked"),
        reply_rate=last.rates["replied"],
        reply_median=median("replied"),
    )


@dataclass(frozen=True)
class ReplyLine:
    sender: str
    issue: str
    first_line: str
    received_at: datetime


def last_replies(engine: Engine, limit: int = LAST_REPLIES) -> list[ReplyLine]:
    """The newest replies, auto-replies left out."""
    r, i = schema.replies, schema.issues
    query = (
        select(r.c.from_email, r.c.from_name, r.c.text, r.c.subject, r.c.received_at, i.c.title)
        .select_from(r.outerjoin(i, i.c.id == r.c.issue_id))
        .order_by(r.c.received_at.desc(), r.c.id.desc())
        .limit(limit)
    )
    if "automatic" in r.c:  # the replies table's auto-reply flag (m008)
        query = query.where(r.c.automatic.is_not(True))
    out = []
    with engine.connect() as conn:
        for row in conn.execute(query):
            first = next(
                (line.strip() for line in (row.text or "").splitlines() if line.strip()),
                row.subject or "",
            )
            received = as_utc(row.received_at)
            out.append(
                ReplyLine(
                    sender=row.from_name or row.from_email,
                    issue=row.title or "–",
                    first_line=first[:200],
                    received_at=received,
                )
            )
    return out


def build_report(project: Project, engine: Engine, now: datetime | None = None) -> str:
    """The report page as HTML."""
    language = project.config.language if project.config.language in LANGUAGES else "en"
    words = i18n.texts(language, STRINGS)
    tz = queries.timezone(project)
    opens = queries.opens_tracked(project)
    issues = queries.sent_issues(engine)
    by = "month"
    periods = queries.list_growth(engine, tz, by)
    if 0 < len(periods) < 4:
        by = "week"
        periods = queries.list_growth(engine, tz, by)
    files = queries.issue_files(project) if issues else {}
    top_links = []
    for issue in issues[:LAST_ISSUES_FOR_LINKS]:
        clicks = queries.link_clicks(engine, issue.issue_id, limit=LINKS_PER_ISSUE)
        if not clicks:
            continue
        path = files.get(issue.slug)
        texts = queries.link_texts(project, path) if path else {}
        top_links.append((issue, queries.with_texts(clicks, texts)))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(builtin_templates_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.i18n"],
    )
    install(env, language)
    env.filters["number"] = lambda v: i18n.format_number(int(v), language)
    env.filters["percent"] = lambda v: "–" if v is None else i18n.format_percent(v, language)
    env.filters["day"] = lambda v: v.astimezone(tz).strftime("%Y-%m-%d") if v else "–"
    env.filters["heading"] = lambda v: _HEADING_BREAKS.get(v, v)
    env.filters["signed"] = lambda v: (
        ("+" if v > 0 else "−" if v < 0 else "±") + i18n.format_number(abs(int(v)), language)
    )
    now = now or datetime.now(UTC)
    return env.get_template(TEMPLATE).render(
        lang=language,
        name=project.config.name,
        generated=now.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
        timezone=tz.key,
        headline=headline(engine, tz, issues),
        opens=opens,
        issues=issues,
        growth=periods,
        growth_charts=growth_charts(periods, by, words, language),
        growth_rows=[(period_label(p, by), p) for p in reversed(periods)][:12],
        rates_chart=rates_chart(issues, tz, words, language),
        top_links=top_links,
        replies=last_replies(engine),
    )


def write_report(project: Project, engine: Engine, output: Path) -> Path:
    """Write the page atomically (a half-written report never replaces a good one)."""
    page = build_report(project, engine)
    output = output.expanduser()
    if output.parent and not output.parent.is_dir():
        raise NewsletterError(f"{output}: folder {output.parent} does not exist; create it first")
    temporary = output.with_name(f".{output.name}.tmp")
    temporary.write_text(page, encoding="utf-8")
    temporary.replace(output)
    return output
