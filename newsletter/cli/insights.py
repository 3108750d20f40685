"""How the newsletter is doing: `stats` (per issue, across issues, list growth) and `report`."""

from __future__ import annotations

import json
import webbrowser
from pathlib import Path
from typing import Any

import click

from newsletter.cli.context import get_project
from newsletter.insights import queries, text
from newsletter.insights.counters import complete_since
from newsletter.insights.counters import rebuild as rebuild_counters
from newsletter.insights.report import write_report
from newsletter.replies.threads import answered_count
from newsletter.segments.sends import for_issue
from newsletter.segments.sunset import split_inactive
from newsletter.sending.resend import rounds_table, send_rounds
from newsletter.sending.subject_test import subject_test_summary, summary_table
from newsletter.store.engine import project_engine
from newsletter.store.issues import find_issue, find_sent_issue

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
    tz = queries.timezone(project)
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
    opens = queries.opens_tracked(project)
    if growth:
        if issue:
            raise click.UsageError("--list shows the whole list; leave out ISSUE")
        periods = queries.list_growth(engine, tz, by)

        split_inactive(engine, periods, tz)
        click.echo(text.growth(periods, by, tz, fmt))
        return
    if issue is None:
        click.echo(text.overview(queries.sent_issues(engine), tz, opens, fmt))
        return

    ref = find_sent_issue(project, engine, issue)
    summary = queries.issue_summary(engine, ref.id)
    path = queries.issue_files(project).get(ref.slug)
    texts = queries.link_texts(project, path) if path else {}
    links = queries.with_texts(queries.link_clicks(engine, ref.id), texts)
    unsubscribes = queries.per_day(engine, ref.id, "unsubscribed")
    # Opens show when tracked, or when some were counted while tracking was on.
    show_opens = opens or summary.counts["opened"] > 0

    answered = answered_count(engine, ref.id)
    shown = text.issue_detail(summary, links, unsubscribes, show_opens, fmt, answered)
    shown = _with_segments(engine, ref.id, shown, fmt)

    rounds = send_rounds(engine, ref.id)
    resent = len(rounds) > 1  # the first send and the resends, apart and together
    tested = subject_test_summary(engine, ref.id)  # a subject-line test: both subjects, the winner
    if fmt == "json" and (resent or tested):
        data = json.loads(shown)
        if resent:
            data["sends"] = [r.as_dict() for r in rounds]
        if tested:
            data["subject_test"] = tested
        shown = json.dumps(data, ensure_ascii=False, indent=2)
    elif fmt == "table":
        if resent:
            shown += "\n\n" + rounds_table(rounds, find_issue(engine, ref.slug).subject)
        if tested:
            shown += "\n\n" + summary_table(tested)
    click.echo(shown)


def _with_segments(engine: Any, issue_id: int, text: str, fmt: str) -> str:
    """The segments the issue's sends went to, as defined when each was planned."""
    chosen = for_issue(engine, issue_id)
    if not chosen or fmt == "csv":
        return text
    if fmt == "json":
        data = json.loads(text)
        data["segments"] = [
            {"send": c.send_id, "name": c.name, "where": c.definition} for c in chosen
        ]
        return json.dumps(data, ensure_ascii=False, indent=2)
    title, _, rest = text.partition("\n")
    lines = [f"  sent to {c.shown} (send {c.send_id})" for c in chosen]
    return "\n".join([title, *lines, rest])


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
