"""What every command module shares: the project of this invocation, `--project` after a
command's name, and how Ctrl-C and SIGTERM end a command (one line, exit 130)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import click

from newsletter.project import Project

#: The shell's convention for a command stopped by SIGINT.
INTERRUPTED_EXIT_CODE = 130
INTERRUPTED = "Stopped (Ctrl-C)."
ON_INTERRUPT_KEY = "newsletter.on_interrupt"


def on_interrupt(message: str) -> None:
    """What the running command prints if Ctrl-C stops it from now on: one line saying what
    is kept and how to go on. It exits 130 either way."""
    click.get_current_context().meta[ON_INTERRUPT_KEY] = message


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd's stop and restart, docker stop, `kill`), raised where Ctrl-C would be."""


@contextlib.contextmanager
def sigterm_like_ctrl_c() -> Iterator[None]:
    """Within: SIGTERM stops the command the way Ctrl-C does (one line, exit 130, the same
    cleanup) instead of killing the process on the spot. Code that settles work in flight
    (`send`, `sequences run`) installs its own handler for both signals meanwhile."""

    def terminate(_signum: int, _frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stopped_by(message: str, exc: KeyboardInterrupt) -> str:
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


def get_project(ctx: click.Context | None = None) -> Project:
    """The current project, loaded once per invocation."""
    ctx = (ctx or click.get_current_context()).find_root()
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    if "project" not in obj:
        obj["project"] = Project.find(explicit=obj.get("project_dir"))
        ctx.obj = obj
    return obj["project"]
