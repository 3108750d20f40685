"""The `newsletter` command: a thin layer over the core modules.

Each command lives in a `cli.*` module that imports the core it needs at its top. This
module imports only click, the standard library and the few light modules of the
foundation, and loads a command's module when that command runs (click's lazy group), so
`newsletter --help` and `newsletter build` never load the core behind `send` or `serve`.
A `NewsletterError` from the core becomes a one-line message and exit code 1.
"""

from __future__ import annotations

import gc
import importlib
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from newsletter import __version__
from newsletter.cli.context import (
    INTERRUPTED,
    INTERRUPTED_EXIT_CODE,
    ON_INTERRUPT_KEY,
    PROJECT_HELP,
    accept_project_option,
    stopped_by,
)
from newsletter.errors import NewsletterError, database_error
from newsletter.secrets_file import load_secrets, loose_permissions, secrets_path

#: Every command: the `newsletter.cli` module that defines it (in its COMMANDS list), and the
#: summary `newsletter --help` lists without importing that module. tests/test_cli_lazy.py
#: checks both against the commands themselves, so a new command fails there until it is here.
COMMANDS: dict[str, tuple[str, str]] = {
    "archive": ("archive", "The public archive of sent issues (also served by `newsletter serve` at /)."),
    "build": ("authoring", "Render ISSUE to an HTML and a text file, as a reader sees it."),
    "cancel": ("sending", "Cancel a scheduled send before it goes out (at least 10 minutes before), or a subject-line test under way."),
    "check": ("authoring", "List problems in ISSUE before you send it."),
    "doctor": ("doctor", "Check what decides whether mail arrives: DNS, setup and the list; exit 1 on any ✗."),
    "init": ("authoring", "Create a project with a sample issue; never overwrites."),
    "new": ("authoring", "Create issues/<date>-<slug>.md from TITLE; never overwrites."),
    "preview": ("preview", "Serve a live preview of ISSUE that reloads whenever you save."),
    "privacy": ("privacy", "Keep only what the list needs."),
    "replies": ("serving", "List conversations with readers: their replies and your answers, newest activity first."),
    "report": ("insights", "Write one self-contained HTML page: charts, top links, last replies, all issues."),
    "run-due": ("sending", "Do what is due: a subject-line test's sample that a crash left unfinished, its decision when the time has come, and the winner to the rest. Safe to run from cron on several machines at once: one sender per issue, nobody gets a second copy."),
    "screenshot": ("preview", "Save desktop and phone PNGs of ISSUE's email, taken in headless chromium."),
    "secrets": ("doctor", "Keep the keys out of the project: a 0600 file every command reads."),
    "segments": ("segments", "Saved segments: [segments.<name>] where = \"…\" in newsletter.toml."),
    "send": ("sending", "Send an issue to the subscribers (through [sending] transport: SendGrid, SMTP, or the outbox)."),
    "sends": ("sending", "Show each send's progress; with ISSUE, each recipient's state."),
    "sequences": ("sequences", "Welcome sequences: emails that go out by themselves after someone subscribes."),
    "serve": ("serving", "Run the web endpoints: unsubscribe, subscribe/confirm, SendGrid webhooks."),
    "stats": ("insights", "Show how issues did (newest first), one issue in detail, or list growth."),
    "subscribers": ("subscribers", "Keep the subscriber list: add, import, list, tag, export, remove."),
    "sync": ("serving", "Pull SendGrid's unsubscribes, bounces, spam reports and invalid emails into the list."),
}  # fmt: skip


class NewsletterGroup(click.Group):
    """Turns domain errors into one-line click errors; never shows a traceback for them.
    Every command added to it accepts `--project DIR` after its name too. Commands listed in
    COMMANDS are loaded from their module when first asked for."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(cmd, name)
        accept_project_option(cmd)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = importlib.import_module(f"newsletter.cli.{COMMANDS[cmd_name][0]}")
            for command in module.COMMANDS:
                if command.name not in self.commands:
                    self.add_command(command)
        _resume_gc()  # the command's modules are loaded: it runs with the collector on
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            accept_project_option(command)  # subcommands added to a group after it was added
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's command list, with the summaries of commands not loaded from COMMANDS."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            # a stand-in with the command's summary, shortened the way click shortens
            command = self.commands.get(name) or click.Command(name, help=COMMANDS[name][1])
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt as exc:
            _interrupted(ctx, exc)
        except click.Abort as exc:
            # Ctrl-C at a question ("Send to 3 subscribers? [y/N]"): click's prompt turns it
            # into Abort ("Aborted!", exit 1); it is an interrupt like any other. (End of input
            # at a question stays click's Abort.)
            if not isinstance(exc.__context__, KeyboardInterrupt):
                raise
            click.echo(err=True)  # (after the question's line)
            _interrupted(ctx, exc.__context__)
        except Exception as exc:
            message = _database_error(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


def _interrupted(ctx: click.Context, exc: KeyboardInterrupt) -> NoReturn:
    """One line saying what is kept and how to go on (set by the command), no traceback."""
    click.echo(stopped_by(ctx.meta.get(ON_INTERRUPT_KEY, INTERRUPTED), exc), err=True)
    ctx.exit(INTERRUPTED_EXIT_CODE)


def _database_error(exc: Exception) -> str | None:
    """A database failure mid-command (locked, damaged, connection lost) as one line:
    a traceback would show SQL and subscribers' addresses."""
    if "sqlalchemy" not in sys.modules:
        return None
    # deferred: SQLAlchemy costs 250 ms; a command that failed without it has no such error
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return None
    return (
        f"database error: {database_error(exc)}; if another program is using the database, "
        "retry when it is done, else check [database] url or NEWSLETTER_DATABASE_URL"
    )


@click.group(cls=NewsletterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="newsletter")
@click.option(
    "--project",
    "project_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="NEWSLETTER_PROJECT",
    help=PROJECT_HELP + " Also accepted after the command: newsletter build --project DIR x.md",
)
@click.pass_context
def main(ctx: click.Context, project_dir: Path | None) -> None:
    """Write an email newsletter in Markdown, preview it, keep the list, send it safely.

    \b
    Example:
        newsletter init my-letter && cd my-letter
        newsletter build issues/*.md
    """
    ctx.obj = {"project_dir": project_dir}
    _load_secrets_file()


def _load_secrets_file() -> None:
    """Variables of ~/.config/newsletter/env that the environment does not set (it wins)."""
    try:
        added = load_secrets()
    except NewsletterError as exc:
        raise click.ClickException(str(exc)) from None
    if added and loose_permissions(secrets_path()):
        click.echo(f"Warning: {secrets_path()} can be read by others; chmod 600 it", err=True)


#: Whether `run` paused the cyclic garbage collector while the command's modules load.
_gc_paused = False


def _resume_gc() -> None:
    """Turn the collector back on (if `run` paused it), with what the imports made moved out
    of its way (`gc.freeze`: modules, functions and classes live as long as the process)."""
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()


def run() -> None:
    """The `newsletter` command (console script and `python -m newsletter`)."""
    global _gc_paused
    # Loading a command's modules (Jinja, markdown-it, SQLAlchemy ...) makes many objects and
    # no garbage; the collections that allocation sets off found nothing and cost `build` 7
    # ms. So the collector is paused until the command is resolved (`get_command`).
    if gc.isenabled():
        gc.disable()
        _gc_paused = True
    try:
        main(prog_name="newsletter")
    finally:
        _resume_gc()  # no command was resolved (--help, a usage error): on again all the same
        # The process ends here: leave what is left to the operating system. Without this,
        # the interpreter's last collections walk every object of SQLAlchemy, Jinja and the
        # rest (0.1-0.15 s of every command). atexit handlers still run; objects freed by
        # reference counting still close their files and connections.
        gc.freeze()
