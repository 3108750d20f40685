"""`send`, `sends` and `cancel`: thin glue over `newsletter.sending`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from newsletter.archive.catalog import front_matter_public
from newsletter.cli.context import get_project
from newsletter.errors import SendError
from newsletter.sending.execute import execute
from newsletter.sending.plan import SendRequest, plan_send
from newsletter.sending.schedule import cancel_scheduled, parse_when
from newsletter.sending.single import send_test
from newsletter.sending.summary import recipients, send_summaries
from newsletter.store.engine import project_engine
from newsletter.store.issues import find_issue_id, resolve_issue
from newsletter.wording import plural


@click.command()
@click.argument("issue")
@click.option(
    "--test",
    "test_addresses",
    multiple=True,
    metavar="ADDRESS",
    help="Send a test copy ([Test] subject) to ADDRESS; records nothing. Repeatable.",
)
@click.option(
    "--tag", "tags", multiple=True, help="Only subscribers with this tag (any of several)."
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Do everything but deliver (with a key: SendGrid's sandbox mode validates each request).",
)
@click.option(
    "--outbox",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one .eml per recipient to this folder instead of sending.",
)
@click.option(
    "--schedule",
    "when",
    metavar="WHEN",
    help='Deliver later: an ISO time with timezone, or "in 2h" (at most 72 h ahead).',
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--resume",
    is_flag=True,
    help="Send only to subscribers who have not had this issue (new ones included).",
)
@click.option(
    "--include-uncertain",
    is_flag=True,
    help="With --resume: also re-send to recipients whose delivery is uncertain.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def send(
    issue: str,
    test_addresses: tuple[str, ...],
    tags: tuple[str, ...],
    dry_run: bool,
    outbox: Path | None,
    when: str | None,
    yes: bool,
    resume: bool,
    include_uncertain: bool,
    quiet: bool,
) -> None:
    """Send an issue to the subscribers (through [sending] transport: SendGrid, SMTP, or
    the outbox).

    \b
    Example:
        newsletter send 2024-07-meta-ki-creator --test me@example.com
        newsletter send 2024-07-meta-ki-creator --dry-run --yes
        newsletter send 2024-07-meta-ki-creator --yes
        newsletter send 2024-07-meta-ki-creator --resume --yes
    """

    project = get_project()
    if include_uncertain and not resume:
        raise click.UsageError("--include-uncertain goes with --resume")
    request = SendRequest(
        tags=tags,
        dry_run=dry_run,
        resume=resume,
        include_uncertain=include_uncertain,
        send_at=parse_when(when) if when else None,
        outbox_dir=outbox,
        test_copy=bool(test_addresses),
    )
    plan = plan_send(project, issue, request)
    if plan.chosen.note:
        click.echo(f"Note: {plan.chosen.note}", err=True)
    for warning in plan.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if test_addresses:
        done = "Test sent" if plan.transport.capabilities.delivers else "Test written"
        for line in send_test(plan, test_addresses):
            click.echo(f"{done}: {line}")
        return
    if plan.refusal:
        raise SendError(plan.refusal)

    transport = plan.transport
    config = project.config
    segment = f" tagged {', '.join(tags)}" if tags else ""
    what = "resume" if resume else ("dry run" if dry_run else "send")
    click.echo(f"Subject:    {plan.prepared.rendered.subject}")
    click.echo(f"From:       {config.from_name} <{config.from_email}>")
    domain = config.section("replies")["domain"]
    shown_reply_to = (
        f"reply+TOKEN@{domain} (a signed token per reader)" if domain else plan.reply_to
    )
    click.echo(f"Reply-To:   {shown_reply_to}")
    click.echo(f"Recipients: {plan.recipients} subscribed{segment}")
    click.echo(f"Transport:  {transport.kind} ({transport.where}){' [dry run]' if dry_run else ''}")
    if plan.send_at:
        click.echo(f"Scheduled:  {plan.send_at.isoformat()}")
    if plan.nobody:
        click.echo("Nobody to send to.")
        return
    count = plan.recipients
    if not yes and not plan.stranded and not dry_run:  # a dry run delivers nothing: no need
        if not _interactive():
            raise SendError(
                f"not sending without confirmation: no terminal to ask on; add --yes to {what} "
                f"to {plural(count, 'recipient')}"
            )
        click.confirm(f"{what.capitalize()} to {plural(count, 'recipient')}?", abort=True)

    show = not quiet and sys.stderr.isatty()

    def progress(report: Any) -> None:
        if show:
            click.echo(f"\r{report.total}/{count} handed over", nl=False, err=True)

    report = execute(plan, progress)  # Ctrl-C / SIGTERM: it stops cleanly, see below
    if show:
        click.echo(err=True)
    resume_command = f"newsletter send {issue} --resume"
    if report.cancelled:
        raise SendError(
            f"send {report.send_id} stopped: `newsletter cancel` stopped it after "
            f"{report.accepted} of {count} were handed over; see `newsletter sends {issue}`"
        )
    if report.interrupted:
        uncertain = f", {report.uncertain} uncertain" if report.uncertain else ""
        click.echo(
            f"Interrupted: send {report.send_id} handed over {report.accepted} of {count}"
            f"{uncertain}, {report.failed} failed; the rest: {resume_command}",
            err=True,
        )
        sys.exit(130)
    if report.marked_uncertain:
        click.echo(
            f"{plural(report.marked_uncertain, 'recipient')} "
            f"{'was' if report.marked_uncertain == 1 else 'were'} in flight when the previous "
            f"send stopped; {'it is' if report.marked_uncertain == 1 else 'they are'} now "
            "uncertain (not re-sent)."
        )
    verb = report.accepted_label
    if plan.sandbox:
        verb = "validated by the sandbox (nothing delivered)"
    if plan.send_at:
        verb = f"scheduled for {plan.send_at.isoformat()} (cancel with `newsletter cancel {issue}`)"
    click.echo(
        f"Send {report.send_id}: {report.accepted} {verb}"
        + ("" if transport.capabilities.delivers else f" ({report.where})")
    )
    if report.replaced:
        click.echo(
            f"{plural(report.replaced, 'file')} of an earlier send of this issue "
            f"{'was' if report.replaced == 1 else 'were'} replaced."
        )
    if report.failed:
        click.echo(f"{report.failed} failed.")
    if report.uncertain:
        click.echo(
            f"{report.uncertain} uncertain: the answer was lost; they may have it. "
            f"See `newsletter sends {issue}`; to send to them anyway: "
            f"newsletter send {issue} --resume --include-uncertain"
        )
    if report.error:
        raise SendError(f"send stopped: {report.error}; fix it, then run `{resume_command}`")
    for error in report.errors[:5]:
        click.echo(f"  {error}", err=True)


@click.command()
@click.argument("issue", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def sends(issue: str | None, fmt: str) -> None:
    """Show each send's progress; with ISSUE, each recipient's state.

    \b
    Example:
        newsletter sends
        newsletter sends 2024-07-meta-ki-creator
    """

    project = get_project()
    engine = project_engine(project)
    issue_id = None
    if issue:
        slug = resolve_issue(project, issue, engine).slug
        issue_id = find_issue_id(engine, slug)
        if issue_id is None:
            click.echo(f"{slug} has not been sent yet.")
            return
    summaries = send_summaries(engine, issue_id, front_matter_public(project))
    if fmt == "json":
        out = [s.to_json() for s in summaries]
        if issue_id is not None:
            people = [r.__dict__ for r in recipients(engine, issue_id)]
            click.echo(
                json.dumps({"sends": out, "recipients": people}, ensure_ascii=False, indent=2)
            )
        else:
            click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    if not summaries:
        click.echo("No sends yet.")
        return
    click.echo(f"{'ID':>4}  {'ISSUE':<28} {'STARTED':<17} {'STATUS':<10} {'TRANSPORT':<16} COUNTS")
    for r in summaries:
        transport = r.transport + (" dry-run" if r.dry_run else "")
        click.echo(
            f"{r.id:>4}  {r.issue[:28]:<28} {r.started_at:%Y-%m-%d %H:%M} "
            f"{r.shown_status:<10} {transport:<16} {r.shown_counts()}"
        )
        if r.error:
            click.echo(f"      {r.error}")
        if r.publish is not None:
            shown = "published" if r.publish.public else "not published"
            click.echo(f"      web archive: {shown} ({r.publish.reason})")
        if r.shown_status == "cancelling":
            click.echo(f"      being cancelled; finish with `newsletter cancel {r.issue}`")
        elif r.process_gone:
            click.echo(f"      its process is gone; run `newsletter send {r.issue} --resume`")
        if r.joined_since:
            click.echo(
                f"      {r.joined_since} subscribed after this send was planned and have not had "
                f"it; they get it with `newsletter send {r.issue} --resume`"
            )
    if issue_id is None:
        return
    click.echo()
    click.echo(f"{'SUBSCRIBER':>10}  {'STATE':<10} {'SEND':>4}  EMAIL")
    uncertain = 0
    for d in recipients(engine, issue_id):
        uncertain += d.state in ("uncertain", "in_flight")
        click.echo(
            f"{d.subscriber_id:>10}  {d.state:<10} {d.send_id:>4}  {d.email}"
            + (f"  ({d.error})" if d.error and d.state in ("failed",) else "")
        )
    if uncertain:
        click.echo(
            f"\n{uncertain} uncertain: the provider may or may not have taken them. To send to "
            f"them deliberately: newsletter send {issue} --resume --include-uncertain"
        )


@click.command()
@click.argument("issue")
@click.option(
    "--wait",
    "wait_seconds",
    type=click.FloatRange(min=0),
    default=120,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for a process still sending the issue to stop.",
)
def cancel(issue: str, wait_seconds: float) -> None:
    """Cancel a scheduled send before it goes out (at least 10 minutes before).

    A `send --schedule` still handing the issue over is stopped first (after its current
    batch); then the schedule is cancelled at the provider.

    \b
    Example:
        newsletter send 2024-07-meta-ki-creator --schedule "in 2h" --yes
        newsletter cancel 2024-07-meta-ki-creator
    """

    project = get_project()
    slug = resolve_issue(project, issue, project_engine(project)).slug

    def waiting(lease: Any) -> None:
        click.echo(
            f"Stopping send {lease.send_id} (pid {lease.pid} on {lease.host}) after its "
            "current batch...",
            err=True,
        )

    done = cancel_scheduled(project, slug, wait=wait_seconds, waiting=waiting)
    stopped = f"; its sender (pid {done.stopped_pid}) stopped" if done.stopped_pid else ""
    click.echo(
        f"Cancelled send {done.send_id} of {slug} ({plural(done.recipients, 'recipient')})"
        f"{stopped}; it can be sent again."
    )


def _interactive() -> bool:
    """Is there a person at a terminal to answer the confirmation?"""
    return sys.stdin.isatty()


COMMANDS: list[click.Command] = [send, sends, cancel]
