"""How the newsletter is doing: `stats` (per issue, across issues, list growth) and `report`."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from newsletter import engagement, stats_text
from newsletter.cli.context import get_project
from newsletter.counters import complete_since
from newsletter.counters import rebuild as rebuild_counters
from newsletter.replies.threads import answered_count
from newsletter.report import write_report
from newsletter.store.engine import project_engine
from newsletter.store.issues import find_sent_issue

FORMATS = click.Choice(["table", "json", "csv"])


@click.command()
@click.argument("issue", required=False)
@click.option("--list", "growth", is_flag=True, help="Show list growth per period instead.")
@click.option(
    "--by",
    type=click.Choice(["day", "week", "month"]),
    default="month",
    show_default=True,
    help="Period of --list, in [newsletter] timezone.",
)
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option(
    "--rebuild",
    is_flag=True,
    help="Recompute the issue counters from the stored events first.",
)
def stats(issue: str | None, growth: bool, by: str, fmt: str, rebuild: bool) -> None:
    """Show how issues did (newest first), one issue in detail, or list growth.

    Counts are unique readers; rates are over delivered (bounces over recipients).
    Replies exclude auto-replies. Opens appear only with [tracking] opens = true, and
    are estimates (machine opens left out).

    \b
    Example:
        newsletter stats
        newsletter stats meta-ki-creator --format json
        newsletter stats --list --by week
        newsletter stats --rebuild
    """

    project = get_project()
    engine = project_engine(project)
    tz = engagement.timezone(project)
    if rebuild:
        keep = project.config.sections.get("privacy", {}).get("keep_events_days")
        try:
            done = rebuild_counters(engine, complete_since(keep))
        except KeyboardInterrupt:
            click.echo(
                "Interrupted: the counters are as they were (one transaction); "
                "run `newsletter stats --rebuild` again to recompute them.",
                err=True,
            )
            raise click.exceptions.Exit(130) from None
        since = f"from {done.since}" if done.since else "for every day"
        click.echo(
            f"Rebuilt the counters {since} ({done.issue_rows} issue rows, {done.link_rows} link rows).",
            err=True,
        )
    opens = engagement.opens_tracked(project)
    if growth:
        if issue:
            raise click.UsageError("--list shows the whole list; leave out ISSUE")
        periods = engagement.list_growth(engine, tz, by)
        click.echo(stats_text.growth(periods, by, tz, fmt))
        return
    if issue is None:
        click.echo(stats_text.overview(engagement.sent_issues(engine), tz, opens, fmt))
        return

    ref = find_sent_issue(project, engine, issue)
    summary = engagement.issue_summary(engine, ref.id)
    path = engagement.issue_files(project).get(ref.slug)
    texts = engagement.link_texts(project, path) if path else {}
    links = engagement.with_texts(engagement.link_clicks(engine, ref.id), texts)
    unsubscribes = engagement.per_day(engine, ref.id, "unsubscribed")
    # Opens show when tracked, or when some were counted while tracking was on.
    show_opens = opens or summary.counts["opened"] > 0

    answered = answered_count(engine, ref.id)
    click.echo(stats_text.issue_detail(summary, links, unsubscribes, show_opens, fmt, answered))


@click.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="Where to write the page.",
)
@click.option("--open", "open_it", is_flag=True, help="Open the page in the browser afterwards.")
def report(output: Path, open_it: bool) -> None:
    """Write one self-contained HTML page: charts, top links, last replies, all issues.

    The page needs no network and no JavaScript; it follows [newsletter] language
    (de or en) and the reader's dark mode.

    \b
    Example:
        newsletter report -o report.html --open
    """

    project = get_project()
    written = write_report(project, project_engine(project), output)
    click.echo(f"Wrote {written}")
    if open_it:
        webbrowser.open(written.resolve().as_uri())


COMMANDS: list[click.Command] = [stats, report]
