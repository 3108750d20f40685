"""`send`, `sends` and `cancel`: thin glue over `newsletter.sending`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from newsletter.cli import get_project


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
    """Send an issue to the subscribers (SendGrid, or the outbox without a key).

    \b
    Example:
        newsletter send 2024-07-meta-ki-creator --test me@example.com
        newsletter send 2024-07-meta-ki-creator --dry-run --yes
        newsletter send 2024-07-meta-ki-creator --yes
        newsletter send 2024-07-meta-ki-creator --resume --yes
    """
    from newsletter.errors import SendError
    from newsletter.sending import ledger, sender
    from newsletter.sending.schedule import parse_when
    from newsletter.store.engine import project_engine
    from newsletter.store.subscribers import count_subscribers

    project = get_project()
    path = _issue_path(project, issue)
    if include_uncertain and not resume:
        raise click.UsageError("--include-uncertain goes with --resume")
    send_at = parse_when(when) if when else None
    transport, why = sender.choose_transport(project, outbox)
    if why:
        click.echo(f"Using the outbox: {why}", err=True)
    if send_at and transport.name != "sendgrid":
        raise SendError(
            "--schedule needs SendGrid: set SENDGRID_API_KEY (the outbox cannot schedule)"
        )

    prepared = sender.prepare(project, path, run_check=not test_addresses)
    for warning in prepared.warnings:
        click.echo(f"Warning: {warning}", err=True)

    if test_addresses:
        for line in sender.send_test(project, prepared, transport, test_addresses):
            click.echo(f"Test sent: {line}")
        return

    engine = project_engine(project)
    issue_id = ledger.find_issue_id(engine, prepared.slug)
    if issue_id is None and project.config.section("replies")["domain"]:
        # The signed Reply-To names the issue's id: record the issue to show the real address.
        rendered = prepared.rendered
        issue_id = ledger.ensure_issue(
            engine,
            slug=prepared.slug,
            title=rendered.issue.title,
            subject=rendered.subject,
            language=rendered.issue.language,
        )
    use_ledger = transport.name == "sendgrid" and not dry_run
    if use_ledger:
        sender.refuse_without_base_url(project)
    if use_ledger and issue_id is not None:
        opts = sender.SendOptions(tags=tags, resume=resume)
        sender.refuse_if_already_sent(engine, issue_id, prepared.slug, opts)
    if use_ledger and resume and issue_id is not None:
        count = ledger.count_to_reach(engine, issue_id, tags, include_uncertain)
    else:
        count = count_subscribers(engine, status="subscribed", tags=tags)
    config = project.config
    segment = f" tagged {', '.join(tags)}" if tags else ""
    what = "resume" if resume else ("dry run" if dry_run else "send")
    click.echo(f"Subject:    {prepared.rendered.subject}")
    click.echo(f"From:       {config.from_name} <{config.from_email}>")
    click.echo(
        f"Reply-To:   {sender.reply_to_for(project, issue_id) if issue_id else config.reply_to}"
    )
    click.echo(f"Recipients: {count} subscribed{segment}")
    click.echo(f"Transport:  {transport.name} ({transport.where}){' [dry run]' if dry_run else ''}")
    if send_at:
        click.echo(f"Scheduled:  {send_at.isoformat()}")
    # Killed during its last batch: nobody is left, but --resume must still take over so
    # those in-flight rows become uncertain (and --include-uncertain can reach them).
    stranded = (
        use_ledger
        and resume
        and issue_id is not None
        and count == 0
        and ledger.issue_counts(engine, issue_id).get("in_flight", 0) > 0
    )
    if count == 0 and not stranded:
        click.echo("Nobody to send to.")
        return
    if not yes and not stranded:
        if not _interactive():
            raise SendError(
                f"not sending without confirmation: no terminal to ask on; add --yes to {what} "
                f"to {count} recipients"
            )
        click.confirm(f"{what.capitalize()} to {count} recipients?", abort=True)

    batch_id = None
    if send_at and not dry_run:
        batch_id = transport.create_batch()  # type: ignore[attr-defined]

    show = not quiet and sys.stderr.isatty()

    def progress(report: sender.SendReport) -> None:
        if show:
            click.echo(f"\r{report.total}/{count} handed over", nl=False, err=True)

    options = sender.SendOptions(
        tags=tags,
        dry_run=dry_run,
        resume=resume,
        include_uncertain=include_uncertain,
        send_at=send_at,
        expected=count,
    )
    report = sender.run_send(
        project, prepared, transport, options, progress=progress, batch_id=batch_id
    )
    if show:
        click.echo(err=True)
    if report.marked_uncertain:
        click.echo(
            f"{report.marked_uncertain} recipients were in flight when the previous send stopped; "
            "they are now uncertain (not re-sent)."
        )
    verb = {"outbox": "written to the outbox", "sendgrid": "accepted by SendGrid"}[report.transport]
    if dry_run and report.transport == "sendgrid":
        verb = "validated by SendGrid's sandbox (nothing delivered)"
    if send_at:
        verb = f"scheduled for {send_at.isoformat()} (cancel with `newsletter cancel {issue}`)"
    click.echo(
        f"Send {report.send_id}: {report.accepted} {verb}"
        + (f" ({report.where})" if report.transport == "outbox" else "")
    )
    if report.failed:
        click.echo(f"{report.failed} failed.")
    if report.uncertain:
        click.echo(
            f"{report.uncertain} uncertain: SendGrid's answer was lost; they may have it. "
            f"See `newsletter sends {issue}`; to send to them anyway: "
            f"newsletter send {issue} --resume --include-uncertain"
        )
    if report.error:
        raise SendError(
            f"send stopped: {report.error}; fix it, then run `newsletter send {issue} --resume`"
        )
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
    import json

    from newsletter.sending import ledger
    from newsletter.store.engine import project_engine

    project = get_project()
    engine = project_engine(project)
    issue_id = None
    slug = None
    if issue:
        slug = _slug(project, issue)
        issue_id = ledger.find_issue_id(engine, slug)
        if issue_id is None:
            click.echo(f"{slug} has not been sent yet.")
            return
    rows = ledger.list_sends(engine, issue_id)
    counts = ledger.counts_by_state(engine, issue_id=issue_id)
    sums = ledger.totals(engine)
    live = ledger.live_sends(engine)
    if fmt == "json":
        out = [
            {
                "id": r.id,
                "issue": r.slug,
                "started": r.started_at.isoformat(),
                "status": r.status,
                "transport": r.transport,
                "dry_run": r.dry_run,
                "segment": r.segment,
                "send_at": r.send_at.isoformat() if r.send_at else None,
                "counts": counts.get(r.id, {}),
                "recipients": sums[r.id].recipients if r.id in sums else None,
                "handed_over": (
                    {
                        "accepted": sums[r.id].accepted,
                        "failed": sums[r.id].failed,
                        "uncertain": sums[r.id].uncertain,
                    }
                    if r.id in sums
                    else None
                ),
                "error": r.error,
            }
            for r in rows
        ]
        if issue_id is not None:
            recipients = [
                {
                    "subscriber_id": d.subscriber_id,
                    "email": d.email,
                    "state": d.state,
                    "send_id": d.send_id,
                    "message_id": d.message_id,
                    "error": d.error,
                }
                for d in ledger.iter_deliveries(engine, issue_id)
            ]
            click.echo(
                json.dumps({"sends": out, "recipients": recipients}, ensure_ascii=False, indent=2)
            )
        else:
            click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    if not rows:
        click.echo("No sends yet.")
        return
    click.echo(f"{'ID':>4}  {'ISSUE':<28} {'STARTED':<17} {'STATUS':<10} {'TRANSPORT':<16} COUNTS")
    for r in rows:
        transport = r.transport + (" dry-run" if r.dry_run else "")
        c = counts.get(r.id, {})
        t = sums.get(r.id)
        if c:
            shown = ", ".join(f"{state} {n}" for state, n in sorted(c.items()))
        elif t is not None:
            # Outbox and dry-run sends keep no ledger rows: their totals are all there is.
            label = "written" if r.transport == "outbox" else "validated (sandbox)"
            done = {label: t.accepted, "failed": t.failed, "uncertain": t.uncertain}
            shown = ", ".join(f"{k} {n}" for k, n in done.items() if n) or "none handed over"
        else:
            shown = "-"
        if t is not None and r.status == "sending":
            shown += f" (of {t.recipients})"
        click.echo(
            f"{r.id:>4}  {r.slug[:28]:<28} {r.started_at:%Y-%m-%d %H:%M} "
            f"{r.status:<10} {transport:<16} {shown}"
        )
        if r.error:
            click.echo(f"      {r.error}")
        if (
            r.status == "sending"
            and r.transport == "sendgrid"
            and not r.dry_run
            and r.id not in live
        ):
            click.echo(f"      its process is gone; run `newsletter send {r.slug} --resume`")
    if issue_id is None:
        return
    click.echo()
    click.echo(f"{'SUBSCRIBER':>10}  {'STATE':<10} {'SEND':>4}  EMAIL")
    uncertain = 0
    for d in ledger.iter_deliveries(engine, issue_id):
        uncertain += d.state in ("uncertain", "in_flight")
        click.echo(
            f"{d.subscriber_id:>10}  {d.state:<10} {d.send_id:>4}  {d.email}"
            + (f"  ({d.error})" if d.error and d.state in ("failed",) else "")
        )
    if uncertain:
        click.echo(
            f"\n{uncertain} uncertain: SendGrid may or may not have taken them. To send to them "
            f"deliberately: newsletter send {issue} --resume --include-uncertain"
        )


@click.command()
@click.argument("issue")
def cancel(issue: str) -> None:
    """Cancel a scheduled send before it goes out (at least 10 minutes before).

    \b
    Example:
        newsletter send 2024-07-meta-ki-creator --schedule "in 2h" --yes
        newsletter cancel 2024-07-meta-ki-creator
    """
    from newsletter.sending.schedule import cancel_scheduled

    project = get_project()
    slug = _slug(project, issue)
    done = cancel_scheduled(project, slug)
    click.echo(
        f"Cancelled send {done.send_id} of {slug} ({done.recipients} recipients); "
        "it can be sent again."
    )


def _interactive() -> bool:
    """Is there a person at a terminal to answer the confirmation?"""
    return sys.stdin.isatty()


def _issue_path(project: Any, issue: str) -> Path:
    """An ISSUE argument: a file path or name in issues/ (see Project.issue_path), or a slug."""
    from newsletter.errors import NewsletterError
    from newsletter.issue import load_issue

    try:
        return project.issue_path(issue)  # type: ignore[no-any-return]
    except NewsletterError:
        for candidate in sorted(project.issues_dir.glob("*.md")):
            try:
                if load_issue(project, candidate).slug == issue:
                    return candidate
            except NewsletterError:
                continue
        raise


def _slug(project: Any, issue: str) -> str:
    """An ISSUE argument as a slug: the issue file's slug if it exists, else the name itself."""
    from newsletter.errors import NewsletterError
    from newsletter.issue import load_issue

    try:
        return load_issue(project, _issue_path(project, issue)).slug
    except NewsletterError:
        return issue


COMMANDS: list[click.Command] = [send, sends, cancel]
