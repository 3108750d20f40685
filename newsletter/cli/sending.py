"""`send`, `sends` and `cancel`: thin glue over `newsletter.sending`."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from newsletter.archive.catalog import front_matter_public
from newsletter.cli.context import get_project
from newsletter.cli.segment_options import chosen_segment, segment_options
from newsletter.durations import format_delay
from newsletter.errors import SendError
from newsletter.sending.execute import execute
from newsletter.sending.plan import SendRequest, plan_send
from newsletter.sending.resend import send_rounds
from newsletter.sending.run_due import run_due as carry_on
from newsletter.sending.run_due import send_arm
from newsletter.sending.schedule import cancel_scheduled, cancel_subject_test, parse_when
from newsletter.sending.single import send_test
from newsletter.sending.subject_test import (
    DEFAULT_SAMPLE,
    DEFAULT_WAIT,
    SubjectTestSetup,
    create_test,
    default_metric,
    parse_sample,
    parse_wait,
    setup_refusal,
    split,
    state_line,
    subject_test_summary,
)
from newsletter.sending.summary import recipients, send_summaries
from newsletter.sequences.clock import parse_now
from newsletter.store.engine import project_engine
from newsletter.store.issues import ensure_issue, find_issue_id, resolve_issue
from newsletter.wording import plural


@click.command()
@click.argument("issue")
# `--test a@x.de b@y.de`: the addresses after the first come as arguments of their own.
@click.argument("more_test_addresses", nargs=-1, metavar="[ADDRESS]...")
@click.option(
    "--test",
    "test_addresses",
    multiple=True,
    metavar="ADDRESS",
    help="Send a test copy ([Test] subject) to ADDRESS, and to the addresses after it; "
    "records nothing. Repeatable.",
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
@click.option(
    "--resend",
    type=click.Choice(["non-clickers", "non-openers", "new"]),
    help="Send the issue again: to readers who got it and neither clicked nor replied, who "
    "did not open it either, or who joined after the first send. Once per kind, at least "
    "[sending] resend_after (24h) after the first send.",
)
@click.option("--subject", metavar="TEXT", help="This send's subject instead of the issue's.")
@click.option(
    "--subject-b",
    metavar="TEXT",
    help="Test a second subject: A and B each to half of a sample, then the winner to the rest "
    "(`newsletter run-due` sends it after the decision).",
)
@click.option(
    "--sample",
    metavar="PERCENT",
    help="With --subject-b: the sample's share of the recipients, e.g. 20% (default).",
)
@click.option(
    "--decide-after",
    metavar="WAIT",
    help="With --subject-b: when to decide, e.g. 4h (default), 90m, 1d.",
)
@click.option(
    "--by",
    "metric",
    type=click.Choice(["clicks", "replies", "opens"]),
    help="With --subject-b: the rate that decides (default: clicks where click tracking is on "
    "and SendGrid reports them, else replies).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@segment_options
def send(
    issue: str,
    more_test_addresses: tuple[str, ...],
    test_addresses: tuple[str, ...],
    tags: tuple[str, ...],
    dry_run: bool,
    outbox: Path | None,
    when: str | None,
    yes: bool,
    resume: bool,
    include_uncertain: bool,
    resend: str | None,
    subject: str | None,
    subject_b: str | None,
    sample: str | None,
    decide_after: str | None,
    metric: str | None,
    quiet: bool,
    segment: str | None,
    where: str | None,
) -> None:
    """Send an issue to the subscribers (through [sending] transport: SendGrid, SMTP, or
    the outbox).

    \b
    Example:
        newsletter send 2024-07-meta-ki-creator --test me@example.com
        newsletter send 2024-07-meta-ki-creator --test me@example.com kollegin@example.de
        newsletter send 2024-07-meta-ki-creator --dry-run --yes
        newsletter send 2024-07-meta-ki-creator --yes
        newsletter send 2024-07-meta-ki-creator --resume --yes
        newsletter send 2024-07-meta-ki-creator --segment aktive --yes
        newsletter send 2024-07-meta-ki-creator --resend non-clickers --subject "Falls Sie es verpasst haben" --yes
        newsletter send 2024-07-meta-ki-creator --subject-b "Was Meta mit Creatorn vorhat" --sample 20% --decide-after 4h --yes
    """

    if more_test_addresses and not test_addresses:
        raise click.UsageError(
            f"unexpected argument {more_test_addresses[0]!r}: addresses go after --test"
        )
    test_addresses = (*test_addresses, *more_test_addresses)
    project = get_project()
    if include_uncertain and not resume:
        raise click.UsageError("--include-uncertain goes with --resume")
    chosen = chosen_segment(segment, where)
    for flag, given in (("--tag", tags), ("--segment", segment), ("--where", where)):
        if resend and given:
            raise click.UsageError(
                f"{flag} does not go with --resend (a resend keeps the first send's)"
            )
    if subject is not None and not subject.strip():
        raise click.UsageError("--subject needs a text")
    setup = _subject_test_setup(subject_b, sample, decide_after, metric)
    if setup is not None:
        clash = [
            flag
            for flag, given in (
                ("--resend", resend),
                ("--resume", resume),
                ("--dry-run", dry_run),
                ("--outbox", outbox),
                ("--schedule", when),
                ("--test", test_addresses),
            )
            if given
        ]
        if clash:
            raise click.UsageError(f"--subject-b does not go with {clash[0]}")
    request = SendRequest(
        tags=tags,
        dry_run=dry_run,
        resume=resume,
        include_uncertain=include_uncertain,
        send_at=parse_when(when) if when else None,
        outbox_dir=outbox,
        test_copy=bool(test_addresses),
        segment=chosen,
        resend=resend,
        subject=subject.strip() if subject else None,
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
    if setup is not None:
        _subject_test(project, issue, plan, setup, yes, quiet)
        return

    transport = plan.transport
    config = project.config
    tags = tuple(plan.request.tags)  # (a resend's: the first send's)
    segment_text = f" tagged {', '.join(tags)}" if tags else ""
    if chosen is not None:
        segment_text += f" in {_segment_shown(chosen)}"
    if plan.resend:
        segment_text += f" ({plan.resend}: resend)"
    what = "resume" if plan.request.resume else ("dry run" if dry_run else "send")
    if plan.resend and what == "send":
        what = "resend"
    click.echo(f"Subject:    {plan.subject or plan.prepared.rendered.subject}")
    click.echo(f"From:       {config.from_name} <{config.from_email}>")
    domain = config.section("replies")["domain"]
    shown_reply_to = (
        f"reply+TOKEN@{domain} (a signed token per reader)" if domain else plan.reply_to
    )
    click.echo(f"Reply-To:   {shown_reply_to}")
    click.echo(f"Recipients: {plan.recipients} subscribed{segment_text}")
    click.echo(f"Transport:  {transport.kind} ({transport.where}){' [dry run]' if dry_run else ''}")
    if plan.send_at:
        nothing = " [dry run: nothing is scheduled]" if dry_run else ""
        click.echo(f"Scheduled:  {plan.send_at.isoformat()}{nothing}")
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
    if plan.resend:
        resume_command = f"newsletter send {issue} --resend {plan.resend} --resume"
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
    if plan.send_at and not dry_run:  # (a dry run schedules nothing: nothing to cancel)
        verb = f"scheduled for {plan.send_at.isoformat()} (cancel with `newsletter cancel {issue}`)"
    click.echo(
        f"Send {report.send_id}: {report.accepted} {verb}"
        + ("" if transport.capabilities.delivers else f" ({report.where})")
    )
    if plan.send_at and dry_run:
        click.echo(
            f"Dry run: nothing was scheduled; without --dry-run it would go out at "
            f"{plan.send_at.isoformat()}."
        )
    left = plan.recipients - report.total
    if left > 0 and not report.error and not plan.send_at:
        click.echo(
            f"{plural(left, 'planned reader')} {'was' if left == 1 else 'were'} no longer "
            "subscribed when their turn came (unsubscribed, bounced or erased): they got nothing."
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
            f"{resume_command} --include-uncertain"
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
            data: dict[str, Any] = {"sends": out, "recipients": people}
            tested = subject_test_summary(engine, issue_id)
            if tested is not None:
                data["subject_test"] = tested
            click.echo(json.dumps(data, ensure_ascii=False, indent=2))
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
        if r.resend:
            about = f' (subject "{r.subject}")' if r.subject else ""
            click.echo(f"      resend to {r.resend}{about}")
        elif r.subject:
            click.echo(f'      subject "{r.subject}"')
        if r.error:
            click.echo(f"      {r.error}")
        if r.segment_shown:
            click.echo(f"      to {r.segment_shown}")
        if r.publish is not None:
            shown = "published" if r.publish.public else "not published"
            click.echo(f"      web archive: {shown} ({r.publish.reason})")
        if r.shown_status == "cancelling":
            click.echo(f"      being cancelled; finish with `newsletter cancel {r.issue}`")
        elif r.process_gone:
            again = f" --resend {r.resend}" if r.resend else ""
            click.echo(
                f"      its process is gone; run `newsletter send {r.issue}{again} --resume`"
            )
        if r.joined_since:
            click.echo(
                f"      {r.joined_since} subscribed after this send was planned and have not had "
                f"it; they get it with `newsletter send {r.issue} --resume`"
            )
    if issue_id is None:
        return
    tested = subject_test_summary(engine, issue_id)
    if tested is not None:
        click.echo(state_line(tested))
    if any(r.resend for r in summaries):
        rounds = send_rounds(engine, issue_id)
        parts = [f"{r.kind} {r.copies}" for r in rounds]
        total = sum(r.copies for r in rounds)
        click.echo(f"\nCopies handed over: {total} together ({', '.join(parts)})")
    click.echo()
    click.echo(f"{'SUBSCRIBER':>10}  {'STATE':<10} {'SEND':>4}  EMAIL")
    uncertain = 0
    for d in recipients(engine, issue_id):
        uncertain += d.state in ("uncertain", "in_flight")
        click.echo(
            f"{d.subscriber_id:>10}  {d.state:<10} {d.send_id:>4}  {d.email}"
            + (f"  ({d.error})" if d.error and d.state in ("failed",) else "")
            + (f"  (resend {d.send_round})" if d.send_round != "first" else "")
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
    """Cancel a scheduled send before it goes out (at least 10 minutes before), or a
    subject-line test under way.

    A `send --schedule` still handing the issue over is stopped first (after its current
    batch); then the schedule is cancelled at the provider. A subject-line test
    (`send --subject-b`) is stopped where it is: the sample keeps its copies, the rest gets
    nothing, and `run-due` leaves it alone.

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

    tested = cancel_subject_test(project, slug, wait=wait_seconds, waiting=waiting)
    if tested is not None:
        stopped = f"; its sender (pid {tested.stopped_pid}) stopped" if tested.stopped_pid else ""
        reached = f"; {tested.rest_sent} of the rest had the winner" if tested.rest_sent else ""
        click.echo(
            f"Cancelled the subject-line test of {slug}{stopped}: "
            f"{plural(tested.sample, 'reader')} of the sample got it (that stays sent){reached}; "
            f"{plural(tested.rest_left, 'reader')} of the rest get nothing, and "
            "`newsletter run-due` leaves it alone."
        )
        if tested.rest_left:
            click.echo(
                f"To send it to them after all (the issue's subject): newsletter send {slug} --resume"
            )
        return
    done = cancel_scheduled(project, slug, wait=wait_seconds, waiting=waiting)
    stopped = f"; its sender (pid {done.stopped_pid}) stopped" if done.stopped_pid else ""
    click.echo(
        f"Cancelled send {done.send_id} of {slug} ({plural(done.recipients, 'recipient')})"
        f"{stopped}; it can be sent again."
    )


def _segment_shown(chosen: Any) -> str:
    if chosen.name:
        return f"segment {chosen.name} ({chosen.definition})"
    return f"--where {chosen.definition}"


def _subject_test_setup(
    subject_b: str | None, sample: str | None, decide_after: str | None, metric: str | None
) -> Any:
    """The subject-line test asked for, or None; bad values are bad usage."""
    if subject_b is None:
        for flag, given in (
            ("--sample", sample),
            ("--decide-after", decide_after),
            ("--by", metric),
        ):
            if given is not None:
                raise click.UsageError(f"{flag} goes with --subject-b")
        return None
    if not subject_b.strip():
        raise click.UsageError("--subject-b needs a text")
    try:
        percent = parse_sample(sample) if sample is not None else DEFAULT_SAMPLE
    except ValueError:
        raise click.UsageError(
            f"--sample {sample!r}: write a share of 1% to 100%, e.g. 20%"
        ) from None
    try:
        wait = parse_wait(decide_after or DEFAULT_WAIT)
    except ValueError:
        raise click.UsageError(
            f"--decide-after {decide_after!r}: write a wait such as 4h, 90m or 1d"
        ) from None
    # (without --by: chosen once the transport is known, `default_metric`)
    return SubjectTestSetup(subject_b.strip(), percent, wait, metric or "")


def _subject_test(project: Any, issue: str, plan: Any, setup: Any, yes: bool, quiet: bool) -> None:
    """`send --subject-b`: fix the sample and the rest, send A and B, leave the rest to run-due."""
    if not setup.metric:
        setup = dataclasses.replace(setup, metric=default_metric(project, plan.transport))
    if not plan.uses_ledger:
        refusal: str | None = (
            "a subject-line test needs a transport that keeps the ledger (SendGrid or SMTP)"
        )
    else:
        refusal = setup_refusal(project, setup, plan.transport)
    if refusal is not None:
        raise SendError(refusal)
    subject_a = plan.subject or plan.prepared.rendered.subject
    if " ".join(setup.subject_b.split()) == " ".join(subject_a.split()):
        # (Half the sample would get the same mail, and the "winner" would be chance.)
        raise SendError(
            f"--subject-b is the issue's own subject ({subject_a!r}); give the other subject "
            "to test it against"
        )
    arms = split(plan.planned, setup.sample_percent)
    sample = len(arms["a"]) + len(arms["b"])
    click.echo(f"Subject A:  {subject_a}")
    click.echo(f"Subject B:  {setup.subject_b}")
    click.echo(f"Recipients: {plan.recipients} subscribed")
    click.echo(
        f"Sample:     {sample} ({setup.sample_percent}%): A {len(arms['a'])}, B {len(arms['b'])}; "
        f"decided by {setup.metric} after {_wait_text(setup.decide_after)}"
    )
    click.echo(f"The rest:   {len(arms['rest'])} get the winner from `newsletter run-due`")
    click.echo(f"Transport:  {plan.transport.kind} ({plan.transport.where})")
    if plan.nobody:
        click.echo("Nobody to send to.")
        return
    if not yes:
        if not _interactive():
            raise SendError(
                "not sending without confirmation: no terminal to ask on; add --yes to send "
                f"the sample to {plural(sample, 'recipient')}"
            )
        click.confirm(f"Send the sample to {plural(sample, 'recipient')}?", abort=True)
    rendered = plan.prepared.rendered
    issue_id = plan.issue_id or ensure_issue(
        plan.engine,
        slug=plan.slug,
        title=rendered.issue.title,
        subject=rendered.subject,
        language=rendered.issue.language,
    )
    now = datetime.now(UTC)
    create_test(
        plan.engine, issue_id, subject_a, setup, plan.request.tags, arms, now, plan.request.segment
    )
    show = not quiet and sys.stderr.isatty()
    for arm in ("a", "b"):
        _, report = send_arm(project, plan.slug, arm, now)
        if show:
            click.echo(err=True)
        if report is None:
            continue
        click.echo(
            f"Subject {arm.upper()}: send {report.send_id}, {report.accepted} {report.accepted_label}"
        )
        if report.interrupted:
            click.echo(
                f"Interrupted: the sample of {issue} is not all sent; `newsletter run-due` "
                "carries it on",
                err=True,
            )
            sys.exit(130)
        if report.error:
            raise SendError(
                f"send stopped: {report.error}; fix it, then `newsletter run-due` carries it on"
            )
    decide_at = now + setup.decide_after
    click.echo(
        f"Decision due at {decide_at:%Y-%m-%d %H:%M} UTC: `newsletter run-due` (from cron) "
        "decides and sends the winner to the rest."
    )


def _wait_text(wait: Any) -> str:
    return format_delay(wait)


@click.command("run-due")
@click.option("--now", metavar="ISO", help="Act as if it were this time (ISO 8601; tests).")
def run_due(now: str | None) -> None:
    """Do what is due: a subject-line test's sample that a crash left unfinished, its decision
    when the time has come, and the winner to the rest. Safe to run from cron on several
    machines at once: one sender per issue, nobody gets a second copy.

    \b
    Example:
        newsletter run-due
        */10 * * * * cd /srv/newsletter && newsletter run-due
    """
    project = get_project()
    at = parse_now(now) if now else datetime.now(UTC)
    outcomes = carry_on(project, at)
    if not outcomes:
        click.echo("Nothing is due.")
        return
    for outcome in outcomes:
        for line in outcome.lines:
            click.echo(line)
    if any(o.interrupted for o in outcomes):
        click.echo("Interrupted: `newsletter run-due` carries on where this stopped.", err=True)
        sys.exit(130)
    failed = [o for o in outcomes if o.error]
    if failed:
        raise SendError(
            f"{failed[0].slug}: {failed[0].error}; fix it, then run `newsletter run-due` again"
        )


def _interactive() -> bool:
    """Is there a person at a terminal to answer the confirmation?"""
    return sys.stdin.isatty()


COMMANDS: list[click.Command] = [send, sends, cancel, run_due]
