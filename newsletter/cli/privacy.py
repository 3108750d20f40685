"""`newsletter privacy ...`: data minimization (the purge `serve` also runs daily)."""

from __future__ import annotations

import click

from newsletter.cli.context import get_project
from newsletter.privacy import purge as run_purge
from newsletter.replies.threads import purge_closed
from newsletter.store.engine import project_engine
from newsletter.wording import noun, plural


@click.group("privacy")
def privacy() -> None:
    """Keep only what the list needs.

    \b
    Example:
        newsletter privacy purge
    """


@privacy.command("purge")
def purge() -> None:
    """Delete webhook events and automatic replies older than [privacy] keep_events_days,
    and closed conversations older than [privacy] keep_replies_days (when set).

    `serve` does this once a day by itself. The counts `stats` shows are kept as
    aggregates, so they stay.

    \b
    Example:
        newsletter privacy purge
    """

    project = get_project()
    engine = project_engine(project)
    days = project.config.section("privacy")["keep_events_days"]
    result = run_purge(engine, days)
    click.echo(
        f"purged {result.events:,} webhook {noun(result.events, 'event')} and "
        f"{result.automatic_replies:,} automatic {noun(result.automatic_replies, 'reply', 'replies')} "
        f"older than {plural(days, 'day')} (before {result.cutoff:%Y-%m-%d})"
    )
    keep_replies = project.config.section("privacy")["keep_replies_days"]
    if keep_replies is not None:
        closed = purge_closed(engine, keep_replies)
        click.echo(
            f"purged {closed:,} closed {noun(closed, 'conversation')} with readers "
            f"older than {plural(keep_replies, 'day')}"
        )


COMMANDS: list[click.Command] = [privacy]
