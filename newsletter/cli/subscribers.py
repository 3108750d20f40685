"""`newsletter subscribers ...`: keep the list (add, remove, list, count, show, tag,
untag, import, export). The work lives in `newsletter.store`; this only parses options."""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from newsletter.cli.context import INTERRUPTED_EXIT_CODE, get_project
from newsletter.cli.segment_options import segment_options
from newsletter.cli.segments import segment_where
from newsletter.errors import StoreError
from newsletter.optin import send_confirmation
from newsletter.person import export_person as collect
from newsletter.privacy import add_by_author, erase, store_full_ip
from newsletter.segments import sunset as core
from newsletter.sequences.hooks import joined, tagged
from newsletter.store.consent import records_for
from newsletter.store.engine import project_engine
from newsletter.store.exporter import (
    EXCEL_DELIMITER,
    csv_header,
    csv_row,
    json_chunks,
    write_csv,
    write_json,
)
from newsletter.store.importer import ImportInterrupted, import_file
from newsletter.store.subscribers import (
    add_tags,
    count_subscribers,
    find_subscriber,
    forget_subscriber,
    iter_subscribers,
    remove_tags,
    set_status,
)
from newsletter.store.suppressions import checked_key
from newsletter.wording import noun, plural

STATUS_CHOICES = ["subscribed", "unconfirmed", "unsubscribed", "bounced", "complained"]


def _engine() -> Any:
    return project_engine(get_project())


def _fields(pairs: tuple[str, ...]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--field")
        fields[key.strip()] = value
    return fields


def _mapping(pairs: tuple[str, ...]) -> list[tuple[str, str]]:
    mapping = []
    for pair in pairs:
        column, sep, target = pair.partition("=")
        if not sep or not column.strip():
            raise click.BadParameter(
                f"{pair!r} is not COLUMN=FIELD (e.g. --map Vorname=first_name)",
                param_hint="--map",
            )
        mapping.append((column.strip(), target.strip()))
    return mapping


def _segment_where(engine: Any, segment: str | None, where: str | None) -> list[Any]:
    return segment_where(engine, segment, where)


@contextmanager
def _quiet_broken_pipe() -> Iterator[None]:
    """`subscribers list | head` closes the pipe early; stop quietly, like other tools."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(0) from None


@click.group("subscribers")
def subscribers() -> None:
    """Keep the subscriber list: add, import, list, tag, export, remove.

    \b
    Example:
        newsletter subscribers add anna@example.com --first-name Anna --tag leser
        newsletter subscribers import mailchimp.csv --dry-run
        newsletter subscribers list --tag leser | head
    """


@subscribers.command("add")
@click.argument("email")
@click.option("--name", help="Full name.")
@click.option("--first-name", help="First name (templates: {{ subscriber.first_name }}).")
@click.option("--last-name", help="Last name.")
@click.option("--tag", "tags", multiple=True, help="A tag; repeat for more.")
@click.option("--field", "fields", multiple=True, metavar="KEY=VALUE", help="A custom field.")
@click.option(
    "--status", type=click.Choice(STATUS_CHOICES), default="subscribed", show_default=True
)
@click.option(
    "--confirm",
    is_flag=True,
    help="Add as unconfirmed and email a confirmation link (double opt-in).",
)
@click.option(
    "--source",
    default="cli",
    show_default=True,
    help="Who added them or where their consent came from, kept as evidence "
    '(e.g. --source "Visitenkarte, Messe 2024").',
)
@click.option(
    "--consent",
    "consent_text",
    metavar="TEXT",
    help="The consent text the person agreed to, kept with its date as evidence "
    '(e.g. --consent "Ja, ich möchte den Newsletter erhalten.").',
)
def add(
    email: str,
    name: str | None,
    first_name: str | None,
    last_name: str | None,
    tags: tuple[str, ...],
    fields: tuple[str, ...],
    status: str,
    confirm: bool,
    source: str,
    consent_text: str | None,
) -> None:
    """Add one subscriber; the address must not be on the list yet.

    Who added them (--source), when, and the consent text (--consent) are kept as
    consent evidence (`subscribers show`). An address erased with `remove --forget` is
    refused: only a new double opt-in through the sign-up form brings it back.

    \b
    Example:
        newsletter subscribers add jörg@example.de --first-name Jörg --tag vip \\
            --field stadt=Köln --source "Messe 2024" --consent "Ja, bitte."
    """

    engine = _engine()
    subscriber = add_by_author(
        engine,
        email,
        source=source,
        consent_text=consent_text,
        name=name,
        first_name=first_name,
        last_name=last_name,
        tags=tags,
        fields=_fields(fields),
        status="unconfirmed" if confirm else status,
    )
    if confirm:
        try:
            where = send_confirmation(get_project(), engine, subscriber)
        except BaseException:
            # No confirmation went out: take the new row back, so a retry can add it again.
            forget_subscriber(engine, subscriber.email)
            raise
        # Where it went, as `send --test` says it: "accepted by SendGrid (...)", or "written
        # to outbox/..." with why (no key), so nobody waits for a mail that was never sent.
        click.echo(f"added {subscriber.email} (unconfirmed); confirmation email to {where}")
        return

    started = joined(get_project(), engine, subscriber.id)
    click.echo(f"added {subscriber.email} ({subscriber.status})" + _started(started))


@subscribers.command("remove")
@click.argument("email")
@click.option(
    "--forget",
    is_flag=True,
    help="Erase the person and all data about them (GDPR Art. 17); cannot be undone.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask before --forget (for scripts).")
@click.option("--reason", help="Why they left (kept with the unsubscribe).")
@click.option(
    "--outbox",
    "outboxes",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="With --forget: also delete their messages in this folder (one that `send --outbox "
    "DIR` wrote to); the project's outbox/ is always searched. Repeatable.",
)
def remove(
    email: str, forget: bool, yes: bool, reason: str | None, outboxes: tuple[Path, ...]
) -> None:
    """Unsubscribe someone; with --forget, erase them and every row about them.

    --forget keeps only a keyed hash of the address (suppression list), so `add` and
    imports refuse it later; a new double opt-in through the sign-up form lifts that.
    It also blanks the address in send errors and clicked links (their counts stay),
    deletes the replies from the address in any spelling and the outbox files addressed
    to it (in outbox/ and each --outbox DIR; it names them), and compacts a SQLite file so no copy is left in it or its
    -wal. It asks first; without a terminal it needs --yes.

    \b
    Example:
        newsletter subscribers remove tom@example.org --reason "asked by email"
        newsletter subscribers remove tom@example.org --forget --yes
        newsletter subscribers remove tom@example.org --forget --outbox /tmp/try --yes
    """

    if outboxes and not forget:
        raise click.UsageError("--outbox only goes with --forget (it deletes their messages there)")
    engine = _engine()
    if forget:
        with engine.connect() as conn:  # before asking: without the key nothing can be erased
            checked_key(conn, erasing=True)
        if not yes:
            if not sys.stdin.isatty():
                raise click.ClickException(
                    f"--forget erases {email} for good and cannot be undone; "
                    "run it in a terminal to confirm, or add --yes"
                )
            click.confirm(
                f"Erase {email} and everything stored about them? This cannot be undone.",
                abort=True,
            )
        erased = erase(engine, email, outboxes=(get_project().root / "outbox", *outboxes))
        if erased.was_stored:
            click.echo(
                f"erased {erased.email} and all data about them; a keyed hash of the address "
                "is kept so that imports and `add` skip it"
            )
        else:
            click.echo(
                f"nothing was stored about {erased.email}; suppressed the address so that "
                "imports and `add` skip it"
            )
        for path in erased.deleted_files:
            click.echo(f"deleted {path} (a message to or about them)")
        for path in erased.kept_files:
            click.echo(f"could not delete {path}: it holds their address; delete it yourself")
        if erased.compacted is False:
            click.echo(
                "Warning: another program (`newsletter serve`?) kept the database busy, so "
                "copies of the erased rows may remain in its -wal file; stop that program "
                "and run the same command again (it compacts the file)",
                err=True,
            )
        return
    subscriber = find_subscriber(engine, email)
    if subscriber is None:
        raise StoreError(
            f"{email} is not on the list; check the address with `newsletter subscribers list`"
        )
    if subscriber.status == "unsubscribed":
        click.echo(f"{subscriber.email} was already unsubscribed")
        return
    set_status(engine, subscriber.id, "unsubscribed", reason=reason or "removed by the author")
    click.echo(f"unsubscribed {subscriber.email}")


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def _one_line(value: Any) -> str:
    """A stored value for the terminal: newlines and escape sequences (from an import or
    the subscribe form) would break the table or drive the terminal."""
    return " ".join(_CONTROL_RE.sub(" ", str(value)).split())


def _table_line(subscriber: Any) -> str:
    name = _one_line(
        subscriber.name
        or " ".join(part for part in (subscriber.first_name, subscriber.last_name) if part)
    )
    return (
        f"{subscriber.id:>7}  {subscriber.email:<40}  {subscriber.status:<12}  "
        f"{name[:30]:<30}  {_one_line(', '.join(subscriber.tags))}"
    ).rstrip()


@subscribers.command("list")
@click.option("--status", type=click.Choice(STATUS_CHOICES), help="Only this status.")
@click.option("--tag", "tags", multiple=True, help="Only people with this tag (any of several).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--no-consent-evidence",
    "no_evidence",
    is_flag=True,
    help="Only people whose consent you cannot prove (no confirmed double opt-in, no "
    "consent text, no opt-in data from an import).",
)
@segment_options
def list_(
    status: str | None,
    tags: tuple[str, ...],
    fmt: str,
    no_evidence: bool,
    segment: str | None,
    where: str | None,
) -> None:
    """List subscribers in id order, streamed (a table, CSV or JSON).

    With several --tag options, a subscriber matches when they have ANY of them.

    \b
    Example:
        newsletter subscribers list --status subscribed --tag leser | head
        newsletter subscribers list --format json > list.json
        newsletter subscribers list --status subscribed --no-consent-evidence
        newsletter subscribers list --where 'tag:leser -clicked:ever'
    """

    engine = _engine()
    out = sys.stdout
    conditions = _segment_where(engine, segment, where)

    def matching() -> Iterator[Any]:
        return iter_subscribers(
            engine,
            status=status,
            tags=tags,
            without_consent_evidence=no_evidence,
            where=conditions,
        )

    with _quiet_broken_pipe():
        if fmt == "csv" and not no_evidence:
            write_csv(out, engine, status=status, tags=tags, where=conditions, consent=False)
        elif fmt == "csv":
            fields = sorted({name for subscriber in matching() for name in subscriber.fields})
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(csv_header(fields, consent=False))
            for subscriber in matching():
                writer.writerow(csv_row(subscriber, fields))
        elif fmt == "json":
            for chunk in json_chunks(subscriber.to_dict() for subscriber in matching()):
                out.write(chunk)
        else:
            click.echo(f"{'ID':>7}  {'EMAIL':<40}  {'STATUS':<12}  {'NAME':<30}  TAGS")
            for subscriber in matching():
                click.echo(_table_line(subscriber))


@subscribers.command("count")
@click.option("--status", type=click.Choice(STATUS_CHOICES), help="Only this status.")
@click.option("--tag", "tags", multiple=True, help="Only people with this tag (any of several).")
@segment_options
def count(
    status: str | None, tags: tuple[str, ...], segment: str | None, where: str | None
) -> None:
    """Print how many subscribers match.

    \b
    Example:
        newsletter subscribers count --status subscribed --tag leser
        newsletter subscribers count --where "status:subscribed clicked:last-5"
    """

    engine = _engine()
    conditions = _segment_where(engine, segment, where)
    click.echo(count_subscribers(engine, status=status, tags=tags, where=conditions))


@subscribers.command("show")
@click.argument("email")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def show(email: str, fmt: str) -> None:
    """Show everything stored about one subscriber.

    \b
    Example:
        newsletter subscribers show anna.schmidt@example.com
    """

    engine = _engine()
    subscriber = find_subscriber(engine, email)
    if subscriber is None:
        raise StoreError(
            f"{email} is not on the list; check the address with `newsletter subscribers list`"
        )
    with engine.connect() as conn:
        evidence = records_for(conn, subscriber.id)
    data = subscriber.to_dict()
    if fmt == "json":
        data["consent"] = [record.to_dict() for record in evidence]
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    for key, value in data.items():
        if key == "tags":
            value = ", ".join(value)
        elif key == "fields":
            for name, field_value in value.items():
                click.echo(f"{'field ' + _one_line(name) + ':':<20} {_one_line(field_value)}")
            continue
        click.echo(f"{key + ':':<20} {'' if value is None else _one_line(value)}")
    _show_evidence(evidence)


def _show_evidence(evidence: list[Any]) -> None:
    """The consent records, oldest first, one block each."""
    if not any(record.proves_consent for record in evidence):
        click.echo("consent:             NO EVIDENCE (consent cannot be proven)")
    else:
        click.echo("consent:             proven")
    for record in evidence:
        when = record.occurred_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        proof = " (proves consent)" if record.proves_consent else ""
        click.echo(f"  {when}  {record.kind}{proof}")
        for label, value in (
            ("source", record.source),
            ("ip", record.ip),
            ("user agent", record.user_agent),
            ("page", record.page_url),
            ("consent text", record.consent_text),
            ("text hash", record.consent_text_hash),
            *((name, value) for name, value in record.details.items()),
        ):
            if value not in (None, ""):
                click.echo(f"    {label + ':':<16} {_one_line(value)}")


@subscribers.command("export-person")
@click.argument("email")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (default: standard output).",
)
def export_person(email: str, output: Path | None) -> None:
    """Write everything stored about one person as one JSON document (GDPR Art. 15).

    The subscriber row, tags, fields, consent records and the texts they agreed to,
    deliveries, events, replies and every other row that refers to them; also the rows
    that name them without a reference: replies from their address in any spelling
    (punycode, NFD, any case), sends whose error names them, clicked links carrying
    their address or a value of theirs. These are the rows `remove --forget` erases.

    \b
    Example:
        newsletter subscribers export-person anna.schmidt@example.com -o anna.json
    """

    document = json.dumps(collect(_engine(), email), ensure_ascii=False, indent=2) + "\n"
    if output is None:
        with _quiet_broken_pipe():
            sys.stdout.write(document)
        return
    partial = output.with_name(output.name + ".partial")
    try:
        partial.write_text(document, encoding="utf-8")
        partial.replace(output)
    except OSError as exc:
        _remove_quietly(partial)
        raise click.ClickException(f"{output}: cannot write it ({exc.strerror})") from None
    click.echo(f"wrote everything stored about {email} to {output}", err=True)


@subscribers.command("tag")
@click.argument("email")
@click.argument("tags", nargs=-1, required=True)
def tag(email: str, tags: tuple[str, ...]) -> None:
    """Give a subscriber one or more tags.

    \b
    Example:
        newsletter subscribers tag anna.schmidt@example.com vip leser
    """

    engine = _engine()
    subscriber = add_tags(engine, email, tags)
    started = tagged(get_project(), engine, subscriber.id, tags)
    click.echo(
        f"{subscriber.email}: {', '.join(subscriber.tags) or '(no tags)'}" + _started(started)
    )


def _started(sequences: list[str]) -> str:
    """What `add` and `tag` say when a welcome sequence starts for the person."""
    return f"; started sequence {', '.join(sequences)}" if sequences else ""


@subscribers.command("untag")
@click.argument("email")
@click.argument("tags", nargs=-1, required=True)
def untag(email: str, tags: tuple[str, ...]) -> None:
    """Take one or more tags from a subscriber.

    \b
    Example:
        newsletter subscribers untag anna.schmidt@example.com vip
    """

    subscriber = remove_tags(_engine(), email, tags)
    click.echo(f"{subscriber.email}: {', '.join(subscriber.tags) or '(no tags)'}")


@subscribers.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--tag", "tags", multiple=True, help="Tag everyone imported; repeat for more.")
@click.option("--dry-run", is_flag=True, help="Only count what would change; change nothing.")
@click.option(
    "--map",
    "mapping",
    multiple=True,
    metavar="COLUMN=FIELD",
    help="Read COLUMN (a CSV column or a JSON key) as FIELD (email, name, first_name, "
    "last_name, tags, status, created_at, ignore, or a custom field name).",
)
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write rows that could not be imported here (CSV with line and reason).",
)
@click.option(
    "--resubscribe",
    is_flag=True,
    help="Subscribe everyone in the file, even people who unsubscribed, bounced or complained.",
)
@click.option("--source", help="Source recorded for new subscribers (default import:FORMAT).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def import_(
    file: Path,
    tags: tuple[str, ...],
    dry_run: bool,
    mapping: tuple[str, ...],
    rejects: Path | None,
    resubscribe: bool,
    source: str | None,
    quiet: bool,
) -> None:
    """Import a CSV export from Mailchimp, Substack, Buttondown, Ghost, listmonk or a sheet.

    The format, encoding (UTF-8, Windows-1252) and delimiter (, ; tab) are detected.
    Duplicates are merged; running the same import again changes nothing. Nobody who
    unsubscribed, bounced or complained is subscribed again unless --resubscribe.

    \b
    Example:
        newsletter subscribers import members.csv --dry-run
        newsletter subscribers import members.csv --tag mailchimp --rejects rejects.csv
        newsletter subscribers import liste.csv --map "Anrede=salutation"
    """

    engine = _engine()
    show_bar = not quiet and sys.stderr.isatty()
    progress: Callable[[int, int], None] | None = None
    bar: Any = None
    if show_bar:
        bar = click.progressbar(
            length=max(file.stat().st_size if file.is_file() else 1, 1),
            label="Importing",
            file=sys.stderr,
        )
        done = 0

        def progress(read: int, total: int) -> None:
            nonlocal done
            bar.update(read - done)
            done = read

    try:
        result = import_file(
            engine,
            file,
            tags=tags,
            dry_run=dry_run,
            mapping=_mapping(mapping),
            rejects_path=rejects,
            resubscribe=resubscribe,
            source=source,
            progress=progress,
            keep_full_ip=store_full_ip(get_project().config),
        )
    except ImportInterrupted as exc:
        if bar is not None:
            click.echo(err=True)  # end the progress bar's line
        click.echo(str(exc), err=True)
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None
    finally:
        if bar is not None:
            bar.render_finish()
    for reject in result.rejects:
        where = f"{file}:{reject.line}"
        click.echo(f"{where}: rejected: {reject.reason}", err=True)
    if result.rejected > len(result.rejects):
        click.echo(f"... and {result.rejected - len(result.rejects)} more rejected rows", err=True)
    for line in result.fallback_lines:
        click.echo(f"{file}:{line}: not UTF-8, read as Windows-1252; check its umlauts", err=True)
    if result.fallback_count > len(result.fallback_lines):
        more = result.fallback_count - len(result.fallback_lines)
        click.echo(f"... and {more} more {noun(more, 'line')} read as Windows-1252", err=True)
    if result.unread_keys:
        shown = ", ".join(
            f'"{key}" ({plural(n, "row")})' for key, n in list(result.unread_keys.items())[:10]
        )
        more = len(result.unread_keys) - 10
        shown += f" and {more} more" if more > 0 else ""
        first = next(iter(result.unread_keys))
        click.echo(
            f"{file}: left out keys this import does not read: {shown}; put them under "
            f'"fields" (custom fields) or read them with --map, e.g. --map "{first}=first_name" '
            f'or --map "{first}={first}" (a custom field)',
            err=True,
        )
    delimiter = {",": "comma", ";": "semicolon", "\t": "tab", "": "JSON"}[result.delimiter]
    click.echo(
        f"{file}: {result.format} format, {result.encoding}, {delimiter}; "
        f"{plural(result.rows, 'row')}"
    )
    counts = (
        f"new: {result.new}, updated: {result.updated}, unchanged: {result.unchanged}, "
        f"rejected: {result.rejected}, duplicates merged: {result.duplicates}"
    )
    if result.suppressed:
        counts += f"; {result.suppressed:,} erased earlier, skipped"
    click.echo(f"dry run, nothing changed: {counts}" if dry_run else counts)
    if result.suppressed:
        click.echo(
            (
                "1 row was not imported: its address was erased on request (suppressed); only "
                "a new double opt-in through the sign-up form brings it back"
            )
            if result.suppressed == 1
            else f"{result.suppressed:,} rows were not imported: their addresses were erased on "
            "request (suppressed); only a new double opt-in through the sign-up form brings "
            "them back"
        )
    if result.kept_stopped:
        click.echo(
            (
                "1 unsubscribed/bounced/complained person was left as they are; --resubscribe "
                "subscribes them again"
            )
            if result.kept_stopped == 1
            else f"{result.kept_stopped} unsubscribed/bounced/complained people were left as "
            "they are; --resubscribe subscribes them again"
        )
    if result.without_evidence:
        click.echo(
            f"{plural(result.without_evidence, 'new subscriber')} came without consent evidence "
            "(no opt-in time or IP in the file): keep the proof of their opt-in elsewhere; "
            "`newsletter subscribers list --no-consent-evidence` lists them"
        )
    if rejects is not None and result.rejected:
        click.echo(f"rejected rows written to {rejects}")


def _remove_quietly(path: Path) -> None:
    """Remove a partial file, if there is one (its folder may not even exist)."""
    with suppress(OSError):
        path.unlink()


@subscribers.command("export")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (default: standard output).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.option("--status", type=click.Choice(STATUS_CHOICES), help="Only this status.")
@click.option("--tag", "tags", multiple=True, help="Only people with this tag (any of several).")
@click.option(
    "--delimiter",
    type=click.Choice([",", ";", "tab"]),
    default=None,
    help="The CSV delimiter (default: a comma; with --excel a semicolon).",
)
@click.option(
    "--excel",
    is_flag=True,
    help="CSV for Excel (German and other locales): UTF-8 with BOM, semicolons.",
)
@segment_options
def export(
    output: Path | None,
    fmt: str,
    status: str | None,
    tags: tuple[str, ...],
    delimiter: str | None,
    excel: bool,
    segment: str | None,
    where: str | None,
) -> None:
    """Export the whole list with every field, as CSV or JSON (streamed).

    CSV cells that a spreadsheet would run as formulas get a leading apostrophe.
    `subscribers import` reads both formats back.

    \b
    Example:
        newsletter subscribers export -o list.csv
        newsletter subscribers export --excel -o liste.csv
        newsletter subscribers export --format json > list.json
        newsletter subscribers export --segment aktive -o aktive.csv
    """

    if fmt == "json" and (delimiter or excel):
        raise click.UsageError(
            "--delimiter and --excel are for CSV; leave them out with --format json"
        )
    engine = _engine()
    conditions = _segment_where(engine, segment, where)
    if delimiter is None:
        delimiter = EXCEL_DELIMITER if excel else ","
    write: Any = (
        functools.partial(write_csv, delimiter="\t" if delimiter == "tab" else delimiter, bom=excel)
        if fmt == "csv"
        else write_json
    )
    if output is None:
        try:
            with _quiet_broken_pipe():
                write(sys.stdout, engine, status=status, tags=tags, where=conditions)
        except KeyboardInterrupt:
            click.echo("export interrupted; the output is incomplete; export again", err=True)
            raise SystemExit(INTERRUPTED_EXIT_CODE) from None
        return
    # Write next to the target and rename, so a crash never leaves half a file.
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            written = write(handle, engine, status=status, tags=tags, where=conditions)
        partial.replace(output)
    except OSError as exc:
        _remove_quietly(partial)
        raise click.ClickException(f"{output}: cannot write it ({exc.strerror})") from None
    except KeyboardInterrupt:
        _remove_quietly(partial)
        click.echo(f"export interrupted; {output} is left as it was; export again", err=True)
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None
    except BaseException:
        _remove_quietly(partial)
        raise
    click.echo(f"exported {plural(written, 'subscriber')} to {output}", err=True)


def _days(value: str) -> int:
    match = re.fullmatch(r"\s*(\d{1,4})\s*d?\s*", value)
    if match is None:
        raise click.BadParameter(
            f"{value!r} is not a number of days, e.g. 14d", param_hint="--grace"
        )
    return int(match.group(1))


@subscribers.command("sunset")
@click.option(
    "--issues",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Cold: no click, reply or human open in this many of their last issues.",
)
@click.option(
    "--min-days",
    type=click.IntRange(0, 36500),
    default=30,
    show_default=True,
    help="Cold: on the list for at least this many days.",
)
@click.option(
    "--ask",
    is_flag=True,
    help='Mail the cold readers a "keep sending" link (it opens a page with the button).',
)
@click.option(
    "--apply",
    "apply_",
    is_flag=True,
    help="Unsubscribe (reason inactive) those asked at least --grace ago who stayed silent.",
)
@click.option(
    "--grace",
    default="14d",
    show_default=True,
    metavar="DAYS",
    help="How long an asked reader has to answer.",
)
@click.option("--dry-run", is_flag=True, help="Only show who it would be; send and change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before --ask or --apply.")
def sunset(
    issues: int, min_days: int, ask: bool, apply_: bool, grace: str, dry_run: bool, yes: bool
) -> None:
    """List cold readers; --ask mails them a "keep sending" link; --apply removes the silent.

    Cold means: subscribed, no click, no reply and no human open in their last --issues
    issues, on the list for at least --min-days days, and at least 3 issues received (the
    segment is printed). Pressing the button on the keep link's page, or any click or
    reply, makes a reader active again. The mail is templates/web/keep_email.html and .txt
    (override them in your project's templates/web/).

    \b
    Example:
        newsletter subscribers sunset
        newsletter subscribers sunset --ask --yes
        newsletter subscribers sunset --apply --grace 14d
    """
    if ask and apply_:
        raise click.UsageError("--ask and --apply are two steps; run them separately")
    grace_days = _days(grace)
    project = get_project()
    engine = _engine()
    if apply_:
        due = core.due(engine, grace=timedelta(days=grace_days))
        if not due:
            click.echo(
                f"Nobody to remove: nobody was asked {grace_days}+ days ago and stayed silent."
            )
            return
        click.echo(f"Asked at least {grace_days} days ago and silent since ({len(due)}):")
        for person in due:
            click.echo(f"  {person.email}  (asked {person.asked_at:%Y-%m-%d})")
        if dry_run:
            click.echo(
                f"Dry run: would unsubscribe {plural(len(due), 'reader')} (reason inactive)."
            )
            return
        _confirm(yes, f"Unsubscribe {plural(len(due), 'reader')} as inactive?", "--apply")
        removed = core.remove(engine, due)
        click.echo(f"Unsubscribed {plural(removed, 'reader')} (reason inactive).")
        return
    cold = core.cold_readers(project, engine, issues=issues, min_days=min_days)
    click.echo(f"Cold readers: {len(cold)} ({core.cold_definition(issues, min_days)})")
    asked = core.pending(engine, [r.id for r in cold])
    for reader in cold:
        note = "  (asked, no answer yet)" if reader.id in asked else ""
        click.echo(f"  {reader.email}  (joined {reader.created_at:%Y-%m-%d}){note}")
    if not ask:
        if cold:
            click.echo("Ask them whether they still want it: newsletter subscribers sunset --ask")
        return
    to_ask = [r for r in cold if r.id not in asked]
    if not to_ask:
        click.echo("Nobody to ask.")
        return
    core.refuse_unlawful(project)  # (before the dry run's "would mail")
    if dry_run:
        click.echo(f"Dry run: would mail {plural(len(to_ask), 'reader')} a keep link.")
        return
    _confirm(yes, f"Mail {plural(len(to_ask), 'reader')} a keep link?", "--ask")
    for line in core.ask(project, engine, to_ask, grace_days=grace_days):
        click.echo(f"Asked: {line}")
    click.echo(
        f"Those who do not answer within {grace_days} days: newsletter subscribers sunset --apply"
    )


def _confirm(yes: bool, question: str, flag: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.ClickException(
            f"not going on without confirmation: no terminal to ask on; add --yes to {flag}"
        )
    click.confirm(question, abort=True)


COMMANDS: list[click.Command] = [subscribers]
