"""`newsletter sequences ...`: welcome sequences (list, check, status, preview, run, start).
The work lives in `newsletter.sequences`; this parses options and prints."""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from newsletter.cli.context import get_project, sigterm_like_ctrl_c
from newsletter.cli.segment_options import segment_options
from newsletter.durations import format_delay
from newsletter.errors import NewsletterError, SendError
from newsletter.sequences.clock import SYSTEM, FixedClock, parse_now, refuse_far_ahead
from newsletter.sequences.runner import run_due, summary
from newsletter.wording import plural


def _clock(now: str | None) -> Any:
    return FixedClock(parse_now(now)) if now else SYSTEM


def _when(value: datetime | None, timezone: str = "UTC") -> str:
    """A time in the newsletter's timezone ([newsletter] timezone)."""

    return value.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M %Z") if value else "-"


NOW_HELP = "Act as if it were this ISO time (catching up after downtime; tests)."


@click.group("sequences")
def sequences() -> None:
    """Welcome sequences: emails that go out by themselves after someone subscribes.

    Steps are sequences/NAME/NN-title.md (issue format plus `delay:`); a
    [sequences.NAME] table in newsletter.toml enables one.

    \b
    Example:
        newsletter sequences check
        newsletter sequences status welcome
        newsletter sequences run
    """


@sequences.command("list")
def list_() -> None:
    """List the sequences, their trigger and their steps.

    \b
    Example:
        newsletter sequences list
    """
    # deferred: SQLAlchemy, which `sequences run` with nothing due never loads
    from newsletter.sequences.status import describe

    infos = describe(get_project())
    if not infos:
        click.echo("No sequences; add sequences/welcome/01-willkommen.md and [sequences.welcome].")
        return
    for info in infos:
        if info.config is None:
            how = "not enabled (no [sequences." + info.name + "] in newsletter.toml)"
        else:
            how = info.config.describe()
        click.echo(f"{info.name}: {how}")
        if info.problem:
            click.echo(f"  problem: {info.problem}")
        for step in info.steps:
            hour = f", at {step.send_at_hour}:00" if step.send_at_hour is not None else ""
            click.echo(
                f"  {step.number:02d} {step.key:<24} delay {format_delay(step.delay)}{hour}  "
                f"{step.issue.subject}"
            )


@sequences.command("check")
@click.argument("name", required=False)
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
def check(name: str | None, strict: bool) -> None:
    """Run `newsletter check` on every step (and check delays, numbering, config).

    \b
    Example:
        newsletter sequences check
        newsletter sequences check welcome --strict
    """
    # deferred: SQLAlchemy, which `sequences run` with nothing due never loads
    from newsletter.sequences.status import check_sequences

    project = get_project()
    findings = check_sequences(project, name)
    for f in findings:
        where = str(f.path)
        with contextlib.suppress(ValueError):
            where = str(f.path.resolve().relative_to(project.root))
        where += f":{f.line}" if f.line else ""
        click.echo(f"{where}: {f.severity}: {f.message}")
    errors = sum(1 for f in findings if f.severity == "error")
    if not findings:
        click.echo("sequences: no problems found")
        return
    warnings = len(findings) - errors
    click.echo(f"{plural(errors, 'error')}, {plural(warnings, 'warning')}", err=True)
    if errors or (strict and findings):
        raise SystemExit(1)


@sequences.command("status")
@click.argument("name", required=False)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option("--now", metavar="ISO", help=NOW_HELP)
def status(name: str | None, fmt: str, now: str | None) -> None:
    """Per sequence and step: how many got it, how many are due, when the next is due, and
    who is waiting.

    \b
    Example:
        newsletter sequences status
        newsletter sequences status welcome --format json
    """
    # deferred: SQLAlchemy, which `sequences run` with nothing due never loads
    from newsletter.sequences.status import sequence_status

    # deferred: SQLAlchemy, which `sequences run` with nothing due never loads
    from newsletter.store.engine import project_engine

    project = get_project()
    at = _clock(now).now()
    found = sequence_status(
        project, project_engine(project), at, name, people_limit=None if fmt == "json" else 5
    )
    if fmt == "json":
        click.echo(
            json.dumps(
                {"now": at.isoformat(), "sequences": [s.as_dict() for s in found]},
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    if not found:
        click.echo("No sequences.")
        return
    zone = project.config.section("newsletter")["timezone"]
    for seq in found:
        people = ", ".join(f"{n} {s}" for s, n in sorted(seq.people.items())) or "nobody yet"
        shown = seq.trigger or "not enabled"
        click.echo(f"{seq.name} ({shown}): {people}")
        if seq.problem:
            click.echo(f"  problem: {seq.problem}")
        click.echo(
            f"  {'STEP':<28} {'DELAY':>6} {'GOT':>7} {'UNCERT':>6} {'FAILED':>6} "
            f"{'WAITING':>7} {'DUE':>6}  NEXT DUE"
        )
        for st in seq.steps:
            label = f"{st.number:02d} {st.key}"[:28]
            click.echo(
                f"  {label:<28} {st.delay:>6} {st.got:>7} {st.uncertain:>6} {st.failed:>6} "
                f"{st.waiting:>7} {st.due:>6}  {_when(st.next_due, zone)}"
            )
            if st.waiting_people:
                more = st.waiting - len(st.waiting_people)
                who = ", ".join(p["email"] for p in st.waiting_people)
                click.echo(f"      waiting: {who}" + (f" and {more} more" if more > 0 else ""))
        for key, n in sorted(seq.removed_steps.items()):
            click.echo(f"  (removed step {key}: {n} had it; it is skipped for everyone else)")


@sequences.command("preview")
@click.argument("step")
@click.option("--port", type=click.IntRange(0, 65535), default=8025, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--no-open", is_flag=True, help="Do not open the preview in the default browser.")
@click.option("--as", "as_email", metavar="EMAIL", help="Fill personal fields for this subscriber.")
@click.pass_context
def preview(
    ctx: click.Context, step: str, port: int, host: str, no_open: bool, as_email: str | None
) -> None:
    """Open the live preview of one step (NAME/STEP: by number or key).

    \b
    Example:
        newsletter sequences preview welcome/01
        newsletter sequences preview welcome/tipps --no-open
    """
    # deferred: SQLAlchemy, which `sequences run` with nothing due never loads
    from newsletter.sequences.status import step_path_for_preview

    path = step_path_for_preview(get_project(), step)
    # `newsletter preview` itself, asked of the root group by name: importing its module here
    # would load the preview server (and SQLAlchemy) into every `sequences` command.
    root = ctx.find_root().command
    assert isinstance(root, click.Group)
    preview_command = root.get_command(ctx, "preview")
    assert preview_command is not None
    ctx.invoke(
        preview_command, issue=str(path), port=port, host=host, no_open=no_open, as_email=as_email
    )


@sequences.command("run")
@click.option("--now", metavar="ISO", help=NOW_HELP)
@click.option("--quiet", "-q", is_flag=True, help="Print only problems.")
@click.option(
    "--include-uncertain",
    is_flag=True,
    help="Also send again the steps whose delivery is uncertain (they may have arrived).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Run at a --now more than a day ahead of the system clock (refused without it).",
)
def run(now: str | None, quiet: bool, include_uncertain: bool, force: bool) -> None:
    """Send every step that is due. Idempotent: safe from cron every minute.

    \b
    Example:
        newsletter sequences run
        * * * * *  cd /srv/letter && newsletter sequences run --quiet   # crontab
    """

    project = get_project()
    show = not quiet and sys.stderr.isatty()

    def progress(report: Any) -> None:
        if show:
            click.echo(f"\r{report.total} handed over", nl=False, err=True)

    try:
        # Before and after the sending, SIGTERM stops like Ctrl-C; while it sends, either
        # one lets the batches in flight be answered first (see `run_due`).
        with sigterm_like_ctrl_c():
            report = run_due(
                project,
                clock=_clock(now),
                progress=progress,
                include_uncertain=include_uncertain,
                force=force,
            )
    except KeyboardInterrupt:
        click.echo(
            "\nInterrupted: what was handed over is recorded; "
            "run `newsletter sequences run` again to go on.",
            err=True,
        )
        sys.exit(130)
    if show and report.total:
        click.echo(err=True)
    if report.interrupted:
        click.echo(
            f"Stopped: {report.accepted} handed over, {report.failed} failed, "
            f"{report.uncertain} uncertain; nothing is left in flight. The rest go out at the "
            "next `newsletter sequences run`.",
            err=True,
        )
        sys.exit(130)
    if report.note:
        click.echo(f"Using the outbox: {report.note}", err=True)
    if report.reaped:
        click.echo(
            f"{plural(report.reaped, 'email')} {'was' if report.reaped == 1 else 'were'} in "
            "flight when an earlier run stopped; now uncertain (not sent again). See `newsletter sequences status`; to send them "
            "again anyway: newsletter sequences run --include-uncertain"
        )
    if report.from_the_future:
        click.echo(
            f"Rescheduled {plural(report.from_the_future, 'reader')} whose next step a run with "
            "its clock far ahead had put in the future (their last step counts as sent now)."
        )
    if report.retried:
        click.echo(
            f"{plural(report.retried, 'uncertain email')} "
            f"{'is' if report.retried == 1 else 'are'} being sent again."
        )
    for error in report.errors[:5]:
        click.echo(f"  {error}", err=True)
    if report.error:
        raise SendError(f"sequences run stopped: {report.error}; fix it, then run it again")
    if (not quiet and not report.held_back) or report.total:
        click.echo(summary(report))
    if report.stopped and not quiet:
        click.echo(f"{report.stopped} left the list since they joined; their sequence ended.")
    if report.held_back:
        raise NewsletterError("; ".join(report.held_back))


@sequences.command("rename")
@click.argument("name")
@click.argument("old")
@click.argument("new")
def rename(name: str, old: str, new: str) -> None:
    """Tell a run that step OLD, whose file was renamed, is the step now called NEW: who
    had OLD does not get NEW.

    A step's key is its `slug:` or else its file name without the number, so renaming
    01-hello.md to 01-hallo.md makes `hello` into `hallo`. `sequences check` points this out
    and `sequences run` holds the sequence back until you run this (or add `slug: hello`).

    \b
    Example:
        newsletter sequences rename welcome hello hallo
    """
    # deferred: SQLAlchemy, which `sequences run` with nothing due never loads
    from newsletter.sequences.renames import rename_step

    # deferred: SQLAlchemy, which `sequences run` with nothing due never loads
    from newsletter.store.engine import project_engine

    project = get_project()
    had = rename_step(project, project_engine(project), name, old, new)
    click.echo(
        f"Renamed {name}/{old} to {name}/{new}: the {plural(had, 'reader')} who had it will "
        "not get it again."
    )


@sequences.command("start")
@click.argument("name")
@click.option(
    "--existing",
    is_flag=True,
    help="Start it for subscribers who were on the list before it was enabled.",
)
@click.option(
    "--tag", "tags", multiple=True, help="Only subscribers with this tag (any of several)."
)
@click.option("--now", metavar="ISO", help=NOW_HELP)
@click.option(
    "--force",
    is_flag=True,
    help="Start at a --now more than a day ahead of the system clock (refused without it).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@segment_options
def start(
    name: str,
    existing: bool,
    tags: tuple[str, ...],
    now: str | None,
    force: bool,
    yes: bool,
    segment: str | None,
    where: str | None,
) -> None:
    """Start a sequence for people already on the list (new subscribers start by themselves).

    \b
    Example:
        newsletter sequences start welcome --existing --tag leser --yes
        newsletter sequences start welcome --existing --segment aktive --yes
    """
    # deferred: SQLAlchemy, which `sequences run` with nothing due never loads
    from newsletter.cli.segments import segment_where
    from newsletter.sequences.start import count_existing, start_existing

    # deferred: SQLAlchemy, which `sequences run` with nothing due never loads
    from newsletter.store.engine import project_engine

    if not existing:
        raise click.UsageError(
            "new subscribers start a sequence by themselves; to start it for those already "
            "on the list, add --existing"
        )
    if not force:  # (their first step would be due only from then on)
        refuse_far_ahead(_clock(now).now(), SYSTEM.now())
    project = get_project()
    engine = project_engine(project)
    conditions = segment_where(engine, segment, where)
    label = f"segment {segment}" if segment else (f"--where {where}" if where else None)
    who = count_existing(project, engine, name, tags, conditions, where_label=label)
    nobody = who.nobody()
    if nobody:
        click.echo(nobody)
        return
    count = who.count
    if not yes:
        if not sys.stdin.isatty():
            raise NewsletterError(
                f"not starting without confirmation: no terminal to ask on; add --yes to start "
                f"{name} for {plural(count, 'subscriber')}"
            )
        click.confirm(
            f"Start {name} for {plural(count, 'subscriber')} already on the list?", abort=True
        )
    started = start_existing(project, engine, name, tags, clock=_clock(now), where=conditions)
    click.echo(
        f"Started {name} for {plural(started, 'subscriber')}; `newsletter sequences run` sends it."
    )


COMMANDS: list[click.Command] = [sequences]
