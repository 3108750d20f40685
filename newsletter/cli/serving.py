"""Commands of the web side: serve, replies, sync."""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

import click

from newsletter.cli import INTERRUPTED_EXIT_CODE, get_project, on_interrupt, sigterm_like_ctrl_c

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
def serve(host: str, port: int, run_sequences: bool | None) -> None:
    """Run the web endpoints: unsubscribe, subscribe/confirm, SendGrid webhooks.

    Binds 127.0.0.1 by default; put it behind an HTTPS reverse proxy (README: "Deploying behind HTTPS").

    \b
    Example:
        export NEWSLETTER_SECRET_KEY=...  SENDGRID_WEBHOOK_PUBLIC_KEY=...
        newsletter serve --port 8000
        newsletter serve --sequences       # and send welcome sequences
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
    from newsletter.masking import mask_log_addresses

    mask_log_addresses()  # no log line keeps a reader's address
    app = create_app(project)
    stopped = (
        "Stopped (Ctrl-C). Everything received so far is stored; "
        "start `newsletter serve` again to go on."
    )
    on_interrupt(stopped)
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
    mask_log_addresses("uvicorn", "uvicorn.error", "uvicorn.access")  # set up by Config
    server = uvicorn.Server(config)
    uvicorn_exit = server.handle_exit
    announced = False

    def handle_exit(sig: int, frame: Any) -> None:
        # The line at the first Ctrl-C or SIGTERM, not once the requests still open have
        # finished (which may take a while, in silence).
        nonlocal announced
        if not announced:
            announced = True
            by_sigterm = sig == signal.SIGTERM
            click.echo(
                stopped.replace("(Ctrl-C)", "(SIGTERM)") if by_sigterm else stopped, err=True
            )
        uvicorn_exit(sig, frame)

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    try:
        # Server.run, not uvicorn.run: after a graceful shutdown it raises Ctrl-C (or SIGTERM)
        # again, which becomes exit 130 (uvicorn.run would swallow it and exit 0);
        # `sigterm_like_ctrl_c` keeps SIGTERM's default from killing a sequence run mid-batch.
        with sigterm_like_ctrl_c():
            server.run()
    except KeyboardInterrupt:  # Ctrl-C, and SIGTERM as `Terminated`
        if not announced:
            raise  # before the server took over the signal: the group prints the line
        sys.exit(INTERRUPTED_EXIT_CODE)  # the line is out already
    finally:
        if runner is not None:
            runner.stop()  # the run in progress settles what it has in flight, then ends


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
    from newsletter.store.engine import project_engine
    from newsletter.store.issues import find_sent_issue

    on_interrupt("Stopped (Ctrl-C). Listing replies changes nothing.")
    project = get_project()
    engine = project_engine(project)
    issue_id = find_sent_issue(project, engine, issue_name).id if issue_name else None
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
