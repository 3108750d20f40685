"""The `newsletter` command: a thin layer over the core modules.

Only click and the standard library are imported at module level here and in the
`cli.*` modules, so `newsletter --help` stays fast; commands import the core lazily.
A `NewsletterError` from the core becomes a one-line message and exit code 1.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from newsletter import __version__

if TYPE_CHECKING:
    from newsletter.project import Project


#: The shell's convention for a command stopped by SIGINT.
INTERRUPTED_EXIT_CODE = 130
INTERRUPTED = "Stopped (Ctrl-C)."
_ON_INTERRUPT = "newsletter.on_interrupt"


def on_interrupt(message: str) -> None:
    """What the running command prints if Ctrl-C stops it from now on: one line saying what
    is kept and how to go on. It exits 130 either way."""
    click.get_current_context().meta[_ON_INTERRUPT] = message


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd's stop and restart, docker stop, `kill`), raised where Ctrl-C would be."""


@contextlib.contextmanager
def sigterm_like_ctrl_c() -> Iterator[None]:
    """Within: SIGTERM stops the command the way Ctrl-C does (one line, exit 130, the same
    cleanup) instead of killing the process on the spot. Code that settles work in flight
    (`send`, `sequences run`) installs its own handler for both signals meanwhile."""
    import signal

    def terminate(_signum: int, _frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped_by(message: str, exc: KeyboardInterrupt) -> str:
    """The command's interrupt line, naming SIGTERM when that is what stopped it."""
    return message.replace("(Ctrl-C)", "(SIGTERM)") if isinstance(exc, Terminated) else message


PROJECT_HELP = "The project folder (default: the nearest folder holding newsletter.toml)."


def _remember_project(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    """`--project` given after a subcommand: it wins over one given before, and over
    NEWSLETTER_PROJECT (the project is loaded only when the command body asks for it)."""
    if value is None:
        return
    root = ctx.find_root()
    obj = root.obj if isinstance(root.obj, dict) else {}
    obj["project_dir"] = value
    obj.pop("project", None)
    root.obj = obj


def accept_project_option(command: click.Command, top_level: bool = True) -> None:
    """Give `command` (and a group's subcommands) its own `--project DIR`, as the README
    promises: `newsletter build --project DIR x.md` works like `newsletter --project DIR build x.md`.
    `newsletter init` makes a project, so it takes none (`secrets init` does)."""
    if command.name == "init" and top_level:
        return
    if not any(p.name == "project_dir" for p in command.params):
        command.params.append(
            click.Option(
                ["--project", "project_dir"],
                type=click.Path(file_okay=False, path_type=Path),
                expose_value=False,
                callback=_remember_project,
                help=PROJECT_HELP,
            )
        )
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            accept_project_option(subcommand, top_level=False)


class NewsletterGroup(click.Group):
    """Turns domain errors into one-line click errors; never shows a traceback for them.
    Every command added to it accepts `--project DIR` after its name too."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(cmd, name)
        accept_project_option(cmd)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            accept_project_option(command)  # subcommands added to a group after it was added
        return command

    def invoke(self, ctx: click.Context) -> Any:
        from newsletter.errors import NewsletterError

        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt as exc:
            # One line saying what is kept and how to go on (set by the command), no traceback.
            click.echo(_stopped_by(ctx.meta.get(_ON_INTERRUPT, INTERRUPTED), exc), err=True)
            ctx.exit(INTERRUPTED_EXIT_CODE)
        except Exception as exc:
            message = _database_error(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


def _database_error(exc: Exception) -> str | None:
    """A database failure mid-command (locked, damaged, connection lost) as one line:
    a traceback would show SQL and subscribers' addresses."""
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return None
    from newsletter.store.engine import database_error

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
    from newsletter.errors import NewsletterError
    from newsletter.secrets_file import load_secrets, loose_permissions, secrets_path

    try:
        added = load_secrets()
    except NewsletterError as exc:
        raise click.ClickException(str(exc)) from None
    if added and loose_permissions(secrets_path()):
        click.echo(f"Warning: {secrets_path()} can be read by others; chmod 600 it", err=True)


def get_project(ctx: click.Context | None = None) -> Project:
    """The current project, loaded once per invocation."""
    from newsletter.project import Project

    ctx = (ctx or click.get_current_context()).find_root()
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    if "project" not in obj:
        obj["project"] = Project.find(explicit=obj.get("project_dir"))
        ctx.obj = obj
    return obj["project"]


def _register() -> None:
    from newsletter.cli import (
        archive,
        authoring,
        doctor,
        insights,
        preview,
        privacy,
        segments,
        sending,
        sequences,
        serving,
        subscribers,
    )

    for module in (
        authoring,
        preview,
        subscribers,
        segments,
        sending,
        serving,
        archive,
        insights,
        sequences,
        privacy,
        doctor,
    ):
        for command in module.COMMANDS:
            main.add_command(command)


_register()


def run() -> None:
    """The `newsletter` command (console script and `python -m newsletter`)."""
    import gc

    try:
        main(prog_name="newsletter")
    finally:
        # The process ends here: leave what is left to the operating system. Without this,
        # the interpreter's last collections walk every object of SQLAlchemy, Jinja and the
        # rest (0.1-0.15 s of every command). atexit handlers still run; objects freed by
        # reference counting still close their files and connections.
        gc.freeze()
