"""Commands of the web side: serve, replies, sync."""

from __future__ import annotations

import json
import logging
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from newsletter import tokens
from newsletter.check import imprint_missing
from newsletter.cli.context import (
    INTERRUPTED_EXIT_CODE,
    get_project,
    on_interrupt,
    sigterm_like_ctrl_c,
)
from newsletter.durations import parse_delay
from newsletter.listen import bind, url_of
from newsletter.mail_templates import mail_template_problems
from newsletter.masking import mask_log_addresses
from newsletter.replies import strip_terminal_controls
from newsletter.replies.answer import answer, compose, editor_template
from newsletter.replies.mailbox import fetch_replies, imap_settings
from newsletter.replies.store import new_text
from newsletter.replies.threads import close, get_thread, list_threads
from newsletter.sending.run_due import DueRunner
from newsletter.sequences.runner import BackgroundRunner
from newsletter.store.engine import project_engine
from newsletter.store.issues import find_sent_issue
from newsletter.store.subscribers import find_subscriber
from newsletter.store.suppressions import any_suppressed, checked_key
from newsletter.sync import LISTS
from newsletter.sync import sync as run_sync
from newsletter.web import create_app

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
    "--run-due",
    "run_due",
    is_flag=True,
    help="Also do what `newsletter run-due` does, every minute: subject-line tests' "
    "decisions and the winner to the rest.",
)
@click.option(
    "--fetch-replies",
    "fetch_every",
    metavar="INTERVAL",
    help="Also read replies from the [replies.imap] mailbox this often, e.g. 5m "
    "(default: [serve] fetch_replies).",
)
def serve(
    host: str, port: int, run_sequences: bool | None, run_due: bool, fetch_every: str | None
) -> None:
    """Run the web endpoints: unsubscribe, subscribe/confirm, SendGrid webhooks.

    Binds 127.0.0.1 by default; put it behind an HTTPS reverse proxy (README: "Deploying behind HTTPS").

    \b
    Example:
        export NEWSLETTER_SECRET_KEY=...  SENDGRID_WEBHOOK_PUBLIC_KEY=...
        newsletter serve --port 8000
        newsletter serve --sequences       # and send welcome sequences
        newsletter serve --fetch-replies 5m   # and read replies from the mailbox
        newsletter serve --run-due         # and decide subject-line tests, send the rest
    """

    # deferred: uvicorn costs 68 ms at start-up
    import uvicorn

    tokens.secret_key(required=True)  # refuse to start without it
    project = get_project()
    with project_engine(project).connect() as conn:
        if any_suppressed(conn):
            checked_key(conn)  # another key than the erasures' lets erased addresses sign up
    if project.config.language == "de" and (missing := imprint_missing(project, "de")):
        # (Not a refusal: the unsubscribe links readers already have must keep working.)
        click.echo(f"Warning: {missing}; until then confirmation mails lack it.", err=True)
    for problem in mail_template_problems(project):
        # (Not a refusal either: a sign-up then fails, the pages and unsubscribes work.)
        click.echo(f"Warning: {problem}; until then readers do not get that mail.", err=True)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    mask_log_addresses()  # no log line keeps a reader's address
    fetch_replies = None
    if fetch_every is not None:
        interval = parse_delay(fetch_every)
        if interval is None or interval.total_seconds() < 60:
            raise click.BadParameter(
                f"{fetch_every!r} is not an interval of a minute or more; e.g. 5m or 1h",
                param_hint="--fetch-replies",
            )
        fetch_replies = interval.total_seconds()
    if fetch_replies or project.config.section("serve")["fetch_replies"]:
        imap_settings(project)  # refuse to start without [replies.imap], or with a bad ca_file
    app = create_app(project, fetch_replies=fetch_replies)
    stopped = (
        "Stopped (Ctrl-C). Everything received so far is stored; "
        "start `newsletter serve` again to go on."
    )
    on_interrupt(stopped)
    # Bound before the announcement: a taken port or a wrong --host is one line (exit 1),
    # and the URL printed is the one that answers (--port 0 names the port it got). No
    # other port instead: the reverse proxy and SendGrid's webhooks point at this one.
    sock, _moved = bind(host, port, take_free_port=False)
    if host not in LOOPBACK:
        click.echo(
            f"Warning: binding {host} makes the server reachable from other machines; "
            "serve it behind an HTTPS reverse proxy.",
            err=True,
        )
    click.echo(f"Serving {project.config.name} on {url_of(sock)} (Ctrl+C to stop)", err=True)
    config = uvicorn.Config(
        app,
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
    runner = None
    due_runner = None
    try:
        # Server.run, not uvicorn.run: after a graceful shutdown it raises Ctrl-C (or SIGTERM)
        # again, which becomes exit 130 (uvicorn.run would swallow it and exit 0);
        # `sigterm_like_ctrl_c` keeps SIGTERM's default from killing a sequence run mid-batch.
        with sigterm_like_ctrl_c():
            # Started here, where SIGTERM already settles it instead of killing a claim.
            runner = _start_sequences(project, run_sequences)
            if run_due:
                due_runner = DueRunner(project).start()
                click.echo("Doing what is due (subject-line tests) every minute.", err=True)
            server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C, and SIGTERM as `Terminated`
        if not announced:
            raise  # before the server took over the signal: the group prints the line
        sys.exit(INTERRUPTED_EXIT_CODE)  # the line is out already
    finally:
        if runner is not None:
            runner.stop()  # the run in progress settles what it has in flight, then ends
        if due_runner is not None:
            due_runner.stop()


def _start_sequences(project: Any, run_sequences: bool | None) -> Any:
    """`serve --sequences` (or [serve] run_sequences): the background runner, started."""
    if not (
        run_sequences
        or (run_sequences is None and project.config.section("serve")["run_sequences"])
    ):
        return None

    runner = BackgroundRunner(project).start()
    click.echo("Sending due sequence steps every minute.", err=True)
    return runner


def _when(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else str(value)


@click.group(invoke_without_command=True)
@click.option(
    "--issue", "issue_name", help="Only conversations about this issue (slug, file or path)."
)
@click.option("--reader", "reader", metavar="EMAIL", help="Only conversations with this reader.")
@click.option("--unanswered", is_flag=True, help="Only conversations waiting for an answer.")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also list auto-replies (out-of-office notices), which are hidden by default.",
)
@click.option(
    "--limit",
    type=click.IntRange(0),
    default=50,
    show_default=True,
    help="At most this many, newest activity first (0: all).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.pass_context
def replies(
    ctx: click.Context,
    issue_name: str | None,
    reader: str | None,
    unanswered: bool,
    show_all: bool,
    limit: int,
    fmt: str,
) -> None:
    """List conversations with readers: their replies and your answers, newest activity first.

    Each line: the thread's ID, when it last moved, its state (new: a reply waits for your
    answer; answered; done), the reader with their tags, the issue, and the first line.
    Auto-replies ("Abwesenheitsnotiz", "Out of office") are kept but hidden unless --all.

    \b
    Example:
        newsletter replies --unanswered
        newsletter replies show 3
        newsletter replies answer 3 -m "Danke, Jörg!"
        newsletter replies done 3
    """
    if ctx.invoked_subcommand is not None:
        return

    on_interrupt("Stopped (Ctrl-C). Listing replies changes nothing.")
    project = get_project()
    engine = project_engine(project)
    issue_id = find_sent_issue(project, engine, issue_name).id if issue_name else None
    subscriber_id = None
    if reader is not None:
        found = find_subscriber(engine, reader)
        if found is None:
            raise click.ClickException(f"{reader} is not on the list; check the address")
        subscriber_id = found.id
    rows, total = list_threads(
        engine,
        issue_id=issue_id,
        subscriber_id=subscriber_id,
        unanswered=unanswered,
        include_automatic=show_all,
        limit=limit or None,
    )
    if fmt == "json":
        click.echo(json.dumps([row.as_dict() for row in rows], ensure_ascii=False, indent=2))
        return
    readers = []
    for row in rows:
        who = f"{row.reader_name} <{row.reader_email}>" if row.reader_name else row.reader_email
        readers.append(who + (f" [{', '.join(row.tags)}]" if row.tags else ""))
    width = min(60, max((len(who) for who in readers), default=6))
    if not rows:
        click.echo("No unanswered replies." if unanswered else "No replies yet.")
    else:
        click.echo(
            f"{'ID':>4}  {'LAST':16}  {'STATE':8}  {'MSGS':>4}  {'READER':{width}}  "
            f"{'ISSUE':22}  FIRST LINE"
        )
    for row, who in zip(rows, readers, strict=True):
        line = (
            f"{row.id:>4}  {_when(row.last_at):16}  {row.state:8}  {row.messages:>4}  "
            f"{who[:width]:{width}}  {(row.issue_slug or '-')[:22]:22}  {row.first_line[:60]}"
        )
        if row.note:
            line += f"  [{row.note}]"
        click.echo(strip_terminal_controls(line))
    if total > len(rows):
        click.echo(f"({total - len(rows)} more; --limit 0 shows all)")
    if not show_all:
        _, everything = list_threads(
            engine,
            issue_id=issue_id,
            subscriber_id=subscriber_id,
            unanswered=unanswered,
            include_automatic=True,
            limit=1,
        )
        if everything > total:
            click.echo(
                f"({everything - total} auto-replies hidden; `newsletter replies --all` shows them)"
            )


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
@click.argument("reply_id", type=int, metavar="ID")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def replies_show(reply_id: int, fmt: str) -> None:
    """Show a whole conversation in order: the reader's replies and your answers.

    ID is the thread's or any of its replies'. Quoted history is folded to one line, HTML is
    shown as text, attachments by name and size.

    \b
    Example:
        newsletter replies show 3
    """

    thread = get_thread(project_engine(get_project()), reply_id)
    if fmt == "json":
        click.echo(json.dumps(thread.as_dict(), ensure_ascii=False, indent=2))
        return
    who = (
        f"{thread.reader_name} <{thread.reader_email}>"
        if thread.reader_name
        else thread.reader_email
    )
    lines = [
        f"Thread {thread.id}: {who}" + (f" [{', '.join(thread.tags)}]" if thread.tags else ""),
        f"Issue:    {thread.issue_slug or '-'}",
        f"State:    {thread.state}",
    ]
    if thread.reader_status and thread.reader_status != "subscribed":
        lines.append(f"Reader:   {thread.reader_status}")
    for entry in thread.entries:
        lines.append("")
        if entry.kind == "answer":
            lines.append(f"--- {_when(entry.at)}  your answer: {entry.subject}")
        else:
            sender = (
                f"{entry.from_name} <{entry.from_email}>" if entry.from_name else entry.from_email
            )
            lines.append(f"--- {_when(entry.at)}  #{entry.id} from {sender}: {entry.subject}")
        if entry.attachments:
            names = ", ".join(f"{a.get('name')} ({a.get('size')} bytes)" for a in entry.attachments)
            lines.append(f"Attached: {names}")
        if entry.automatic:
            lines.append("Note:     auto-reply (not forwarded, not counted)")
        if entry.unsubscribe_request == "unverified":
            then = (
                f"if it is really them: newsletter subscribers remove {thread.reader_email}"
                if thread.subscriber_id is not None
                else "the sender is not on the list"
            )
            lines.append(
                "Note:     asks to unsubscribe (unverified): nothing was changed, since nothing "
                f"proves the sender; {then}"
            )
        elif entry.unsubscribe_request == "verified":
            lines.append("Note:     unsubscribed by reply")
        lines.append(entry.text if entry.kind == "answer" else _fold_quotes(entry.text))
    click.echo(strip_terminal_controls("\n".join(lines)))


def _fold_quotes(text: str) -> str:
    """Quoted history ("> ..." lines, and what follows "Am ... schrieb ...:") as one line."""

    own = new_text(text)
    lines = [line for line in text.splitlines() if line.strip()]
    hidden = len(lines) - len([line for line in own.splitlines() if line.strip()])
    return own + (f"\n[{hidden} quoted lines folded]" if hidden > 0 and own.strip() else "")


@replies.command("done")
@click.argument("reply_id", type=int, metavar="ID")
def replies_done(reply_id: int) -> None:
    """Close a conversation: nothing more to do. A new reply from the reader opens it again.

    \b
    Example:
        newsletter replies done 3
    """

    thread = close(project_engine(get_project()), reply_id)
    click.echo(f"Thread {thread.id} with {thread.reader_email}: done")


@replies.command("answer")
@click.argument("reply_id", type=int, metavar="ID")
@click.option("-m", "--message", "text", help="The answer's text (else --file, or $EDITOR).")
@click.option(
    "--file",
    "text_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the answer's text from this file.",
)
@click.option("--dry-run", is_flag=True, help="Show the message; send and record nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask, even for a reader who left the list.")
def replies_answer(
    reply_id: int, text: str | None, text_file: Path | None, dry_run: bool, yes: bool
) -> None:
    """Answer a reader personally, from your address, in their thread.

    A personal mail, not a bulk one: `Re:` subject, In-Reply-To/References so it threads in
    their mail program, no unsubscribe headers, no tracking, a short signature. Without -m or
    --file, $EDITOR opens with their reply quoted.

    \b
    Example:
        newsletter replies answer 3 -m "Danke, Jörg! Teil 2 kommt im August."
        newsletter replies answer 3 --file antwort.txt --dry-run
        newsletter replies answer 3            # write it in $EDITOR
    """

    project = get_project()
    engine = project_engine(project)
    thread = get_thread(engine, reply_id)
    if text is None and text_file is not None:
        try:
            text = text_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.ClickException(
                f"{text_file}: cannot read it ({exc}); give a UTF-8 text file"
            ) from None
    if text is None:
        written = click.edit(editor_template(thread), extension=".txt")
        if written is None:
            raise click.ClickException("the editor was closed without saving; nothing was sent")
        text = "\n".join(line for line in written.splitlines() if not line.startswith("#")).strip()
    if not text.strip():
        raise click.ClickException("the answer is empty; nothing was sent")
    draft = compose(project, thread, text)
    for warning in draft.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if dry_run:
        click.echo(draft.preview())
        click.echo("(dry run: nothing was sent or recorded)")
        return
    if draft.warnings and not yes and sys.stdin.isatty():
        click.confirm("Send it all the same?", abort=True)
    on_interrupt("Stopped (Ctrl-C) before the answer was sent; nothing was recorded.")
    where = answer(project, engine, thread, draft)
    click.echo(f"Answered thread {thread.id}: {where}")


@click.command()
def sync() -> None:
    """Pull SendGrid's unsubscribes, bounces, spam reports and invalid emails into the list.

    \b
    Example:
        SENDGRID_API_KEY=... newsletter sync
    """

    on_interrupt(
        "Stopped (Ctrl-C) before anything was changed: sync changes the list only once it "
        "has read every list from SendGrid. Run `newsletter sync` again."
    )
    project = get_project()
    result = run_sync(project, project_engine(project))
    on_interrupt("Stopped (Ctrl-C). The list is up to date; only this summary is missing.")
    for name, status in LISTS.items():
        back = result.came_back.get(name, 0)
        click.echo(
            f"{name:15} {result.fetched[name]:>6} at SendGrid, {result.matched[name]:>6} on the list, "
            f"{result.changed[name]:>6} now {status}"
            + (f", {back} left alone (they confirmed their address since)" if back else "")
        )
    sys.stdout.flush()


COMMANDS: list[click.Command] = [serve, replies, sync]
