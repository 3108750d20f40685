"""Commands of the web side: serve, replies, sync."""

from __future__ import annotations

import json
import sys

import click

from newsletter.cli import get_project, on_interrupt

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--sequences",
    "run_sequences",
    is_flag=True,
    default=None,
    help="Also send due welcome-sequence steps every minute (default: [serve] run_sequences).",
)
@click.option(
    "--fetch-replies",
    "fetch_every",
    metavar="INTERVAL",
    help="Also read replies from the [replies.imap] mailbox this often, e.g. 5m "
    "(default: [serve] fetch_replies).",
)
def serve(host: str, port: int, run_sequences: bool | None, fetch_every: str | None) -> None:
    """Run the web endpoints: unsubscribe, subscribe/confirm, SendGrid webhooks.

    Binds 127.0.0.1 by default; put it behind an HTTPS reverse proxy (README: "Deploying behind HTTPS").

    \b
    Example:
        export NEWSLETTER_SECRET_KEY=...  SENDGRID_WEBHOOK_PUBLIC_KEY=...
        newsletter serve --port 8000
        newsletter serve --sequences       # and send welcome sequences
        newsletter serve --fetch-replies 5m   # and read replies from the mailbox
    """
    import logging

    import uvicorn

    from newsletter import tokens
    from newsletter.web import create_app

    tokens.secret_key(required=True)  # refuse to start without it
    project = get_project()
    if host not in LOOPBACK:
        click.echo(
            f"Warning: binding {host} makes the server reachable from other machines; "
            "serve it behind an HTTPS reverse proxy.",
            err=True,
        )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    fetch_replies = None
    if fetch_every is not None:
        from newsletter.replies.mailbox import imap_settings
        from newsletter.sequences.steps import parse_delay

        interval = parse_delay(fetch_every)
        if interval is None or interval.total_seconds() < 60:
            raise click.BadParameter(
                f"{fetch_every!r} is not an interval of a minute or more; e.g. 5m or 1h",
                param_hint="--fetch-replies",
            )
        imap_settings(project)  # refuse to start without [replies.imap]
        fetch_replies = interval.total_seconds()
    app = create_app(project, fetch_replies=fetch_replies)
    on_interrupt(
        "Stopped (Ctrl-C). Everything received so far is stored; "
        "start `newsletter serve` again to go on."
    )
    click.echo(f"Serving {project.config.name} on http://{host}:{port} (Ctrl+C to stop)", err=True)
    runner = None
    if run_sequences or (
        run_sequences is None and project.config.section("serve")["run_sequences"]
    ):
        from newsletter.sequences.runner import BackgroundRunner

        runner = BackgroundRunner(project).start()
        click.echo("Sending due sequence steps every minute.", err=True)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,  # uvicorn's access log prints full paths, i.e. tokens and secrets
        log_level="warning",  # its start/stop chatter; our own line per request stays
        server_header=False,
    )
    try:
        # Server.run, not uvicorn.run: after a graceful shutdown it raises Ctrl-C again, which
        # becomes our one line and exit 130 (uvicorn.run would swallow it and exit 0).
        uvicorn.Server(config).run()
    finally:
        if runner is not None:
            runner.stop()


def _when(value: object) -> str:
    from datetime import datetime

    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else str(value)


@click.group(invoke_without_command=True)
@click.option("--issue", "issue_name", help="Only replies to this issue (slug, file or path).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also list auto-replies (out-of-office notices), which are hidden by default.",
)
@click.pass_context
def replies(ctx: click.Context, issue_name: str | None, fmt: str, show_all: bool) -> None:
    """List readers' replies (received through SendGrid Inbound Parse).

    Auto-replies ("Abwesenheitsnotiz", "Out of office") are kept but hidden unless --all.

    \b
    Example:
        newsletter replies --issue meta-ki-creator
        newsletter replies --all
        newsletter replies show 3
    """
    if ctx.invoked_subcommand is not None:
        return
    from newsletter.replies import list_replies, strip_terminal_controls
    from newsletter.stats import find_issue
    from newsletter.store.engine import project_engine

    on_interrupt("Stopped (Ctrl-C). Listing replies changes nothing.")
    project = get_project()
    engine = project_engine(project)
    issue_id = find_issue(project, engine, issue_name).id if issue_name else None
    every = list_replies(engine, issue_id, include_automatic=True)
    rows = every if show_all else [row for row in every if not row.automatic]
    if fmt == "json":
        click.echo(json.dumps([row.as_dict() for row in rows], ensure_ascii=False, indent=2))
        return
    hidden = len(every) - len(rows)
    if not rows:
        click.echo("No replies yet.")
    else:
        click.echo(f"{'ID':>4}  {'RECEIVED':16}  {'FROM':32}  {'ISSUE':24}  SUBJECT")
    for row in rows:
        line = (
            f"{row.id:>4}  {_when(row.received_at):16}  {row.from_email[:32]:32}  "
            f"{(row.issue_slug or '-')[:24]:24}  {row.subject[:60]}"
        )
        if row.note:
            line += f"  [{row.note}]"
        click.echo(strip_terminal_controls(line))
    if hidden:
        click.echo(f"({hidden} auto-replies hidden; `newsletter replies --all` shows them)")


@replies.command("fetch")
@click.option("--dry-run", is_flag=True, help="Say what would be stored; change nothing.")
def replies_fetch(dry_run: bool) -> None:
    """Read new replies from the mailbox in [replies.imap] (for authors who send by SMTP).

    Stores each reply to the newsletter once, applies bounce reports, and moves (move_to) or
    flags what it handled; anything else stays in the mailbox untouched. The password comes
    from NEWSLETTER_IMAP_PASSWORD.

    \b
    Example:
        export NEWSLETTER_IMAP_PASSWORD=...
        newsletter replies fetch
    """
    from newsletter.replies.mailbox import fetch_replies
    from newsletter.store.engine import project_engine

    on_interrupt(
        "Stopped (Ctrl-C). What was stored is stored; `newsletter replies fetch` again goes on."
    )
    project = get_project()
    report = fetch_replies(project, project_engine(project), dry_run=dry_run)
    stored = "would store" if dry_run else "stored"
    parts = [
        f"{report.looked_at} {'message' if report.looked_at == 1 else 'messages'} looked at",
        f"{report.stored} {'reply' if report.stored == 1 else 'replies'} {stored}"
        + (f" ({report.automatic} automatic)" if report.automatic else ""),
    ]
    if report.already_stored:
        parts.append(f"{report.already_stored} stored before")
    if report.bounces:
        parts.append(f"{report.bounces} {'bounce' if report.bounces == 1 else 'bounces'}")
    if report.unsubscribed:
        parts.append(f"{report.unsubscribed} unsubscribed by reply")
    if report.unmatched:
        parts.append(f"{report.unmatched} left in the mailbox (not replies to the newsletter)")
    click.echo("; ".join(parts))


@replies.command("show")
@click.argument("reply_id", type=int)
def replies_show(reply_id: int) -> None:
    """Show one reply as plain text (HTML or script in it is shown literally).

    \b
    Example:
        newsletter replies show 3
    """
    from newsletter.replies import get_reply, strip_terminal_controls
    from newsletter.store.engine import project_engine

    row = get_reply(project_engine(get_project()), reply_id)
    sender = f"{row.from_name} <{row.from_email}>" if row.from_name else row.from_email
    lines = [
        f"From:     {sender}",
        f"Subject:  {row.subject}",
        f"Received: {_when(row.received_at)}",
        f"Issue:    {row.issue_slug or '-'}",
    ]
    if row.attachments:
        names = ", ".join(f"{a.get('name')} ({a.get('size')} bytes)" for a in row.attachments)
        lines.append(f"Attached: {names}")
    if row.spam_score:
        lines.append(f"Spam:     {row.spam_score}")
    if row.automatic:
        lines.append("Note:     auto-reply (not forwarded, not counted)")
    if row.unsubscribe_request == "unverified":
        then = (
            f"if it is really them: newsletter subscribers remove {row.subscriber_email}"
            if row.subscriber_email
            else "the sender is not on the list"
        )
        lines.append(
            "Note:     asks to unsubscribe (unverified): nothing was changed, since nothing "
            f"proves the sender; {then}"
        )
    elif row.unsubscribe_request == "verified":
        lines.append("Note:     unsubscribed by reply")
    lines += ["", row.text]
    click.echo(strip_terminal_controls("\n".join(lines)))


@click.command()
def sync() -> None:
    """Pull SendGrid's unsubscribes, bounces, spam reports and invalid emails into the list.

    \b
    Example:
        SENDGRID_API_KEY=... newsletter sync
    """
    from newsletter.store.engine import project_engine
    from newsletter.sync import LISTS
    from newsletter.sync import sync as run_sync

    on_interrupt(
        "Stopped (Ctrl-C) before anything was changed: sync changes the list only once it "
        "has read every list from SendGrid. Run `newsletter sync` again."
    )
    project = get_project()
    result = run_sync(project, project_engine(project))
    on_interrupt("Stopped (Ctrl-C). The list is up to date; only this summary is missing.")
    for name, status in LISTS.items():
        click.echo(
            f"{name:15} {result.fetched[name]:>6} at SendGrid, {result.matched[name]:>6} on the list, "
            f"{result.changed[name]:>6} now {status}"
        )
    sys.stdout.flush()


COMMANDS: list[click.Command] = [serve, replies, sync]
