"""Authoring commands: init, new, build, check."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import click

from newsletter.check import check_issue, fields_nobody_has
from newsletter.cli.context import get_project
from newsletter.i18n import LANGUAGES, display_name
from newsletter.issue_names import resolve_issue
from newsletter.render import SAMPLE_SUBSCRIBER, render_file, sample_unsubscribe_url
from newsletter.scaffold import init_project, new_issue, write_file_atomic
from newsletter.secrets_file import secrets_hint
from newsletter.wording import plural


def _shown(path: Path) -> str:
    """A path relative to the current folder when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default="My Newsletter", show_default=True, help="The newsletter's name.")
@click.option(
    "--language",
    type=click.Choice(LANGUAGES),
    default=None,
    help=f"Default language of issues (footer wording): {' or '.join(LANGUAGES)}. Asked when "
    "run in a terminal; else en.",
)
def init(directory: Path, name: str, language: str | None) -> None:
    """Create a project with a sample issue; never overwrites.

    Writes newsletter.toml, issues/ with a sample issue, templates/README.md and a
    welcome sequence step (sequences/welcome/, off until enabled in newsletter.toml).
    Refuses when DIRECTORY already holds a newsletter.toml; keeps any existing file.
    Without --language it asks for one in a terminal (German or English).

    \b
    Example:
        newsletter init my-letter --name "Jens' Briefing" --language de
    """

    if language is None:
        # Ask only a person at a terminal; a script or CI gets English, as before.
        language = "en"
        if sys.stdin.isatty():
            language = click.prompt(
                "Language of the issues ("
                + ", ".join(f"{code} = {display_name(code)}" for code in LANGUAGES)
                + ")",
                type=click.Choice(LANGUAGES),
                default="en",
            )

    created, kept = init_project(directory, name, language)
    for path in created:
        click.echo(f"created {_shown(path)}")
    for path in kept:
        click.echo(f"kept existing {_shown(path)}")
    click.echo(
        f"Next: edit {_shown(directory / 'newsletter.toml')}, then `newsletter build ISSUE`."
    )

    click.echo(secrets_hint())


@click.command()
@click.argument("title")
@click.option(
    "--date",
    "date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="The issue's date (default: today).",
)
@click.option(
    "--language", type=click.Choice(LANGUAGES), default=None, help="Default: the project's."
)
def new(title: str, date: datetime.datetime | None, language: str | None) -> None:
    """Create issues/<date>-<slug>.md from TITLE; never overwrites.

    \b
    Example:
        newsletter new "Grüße aus Köln"     # issues/2024-07-02-gruesse-aus-koeln.md
    """

    project = get_project()
    path = new_issue(
        project.issues_dir,
        title,
        language or project.config.language,
        date.date() if date else None,
    )
    click.echo(_shown(path))


@click.command()
@click.argument("issue")
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the files (default: build/ in the project).",
)
def build(issue: str, output: Path | None) -> None:
    """Render ISSUE to an HTML and a text file, as a reader sees it.

    Writes DIR/<slug>.html and DIR/<slug>.txt, personalized for a sample
    subscriber, and prints both paths.

    \b
    Example:
        newsletter build issues/2024-07-meta-ki-creator.md -o build
    """

    project = get_project()
    rendered = render_file(project, resolve_issue(project, issue).require_path())
    html, text = rendered.personalize(SAMPLE_SUBSCRIBER, sample_unsubscribe_url(project))
    folder = output if output is not None else project.root / "build"
    html_path = folder / f"{rendered.issue.slug}.html"
    text_path = folder / f"{rendered.issue.slug}.txt"
    try:
        write_file_atomic(html_path, html)
        write_file_atomic(text_path, text)
    except OSError as exc:
        raise click.ClickException(
            f"{folder}: cannot write ({exc.strerror}); choose another -o DIR"
        ) from None
    click.echo(_shown(html_path))
    click.echo(_shown(text_path))

    for finding in fields_nobody_has(project, rendered):
        click.echo(str(finding), err=True)


@click.command()
@click.argument("issue")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
def check(issue: str, strict: bool) -> None:
    """List problems in ISSUE before you send it.

    Prints each as file:line: error|warning: message.

    Exits 1 when there are errors (with --strict, warnings too).

    \b
    Example:
        newsletter check issues/2024-07-meta-ki-creator.md --strict
    """

    project = get_project()
    path = resolve_issue(project, issue).require_path()
    findings = check_issue(project, path)
    for finding in findings:
        where = _shown(finding.path) + (f":{finding.line}" if finding.line else "")
        click.echo(f"{where}: {finding.severity}: {finding.message}")
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors
    if not findings:
        click.echo(f"{_shown(path)}: no problems found")
        return
    click.echo(f"{plural(errors, 'error')}, {plural(warnings, 'warning')}", err=True)
    if errors or (strict and warnings):
        raise SystemExit(1)


COMMANDS: list[click.Command] = [init, new, build, check]
