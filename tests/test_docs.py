"""Help is documentation: every command is in the README and its help ends with an example."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from newsletter.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def all_commands(
    group: click.Group = main, prefix: str = "newsletter"
) -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += all_commands(command, path)
    return found


COMMANDS = all_commands()


def test_the_contract_commands_exist() -> None:
    names = {path for path, _ in COMMANDS}
    for expected in [
        "newsletter init",
        "newsletter new",
        "newsletter build",
        "newsletter check",
        "newsletter preview",
        "newsletter screenshot",
        "newsletter send",
        "newsletter sends",
        "newsletter cancel",
        "newsletter serve",
        "newsletter replies",
        "newsletter stats",
        "newsletter sync",
        "newsletter subscribers add",
        "newsletter subscribers import",
        "newsletter subscribers export",
        "newsletter subscribers list",
        "newsletter subscribers remove",
        "newsletter subscribers count",
    ]:
        assert expected in names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_command_is_in_the_readme(path: str, command: click.Command) -> None:
    # A group's subcommands may be documented as "`newsletter subscribers tag ...` / `untag ...`".
    leaf = path.split()[-1]
    assert f"`{path}" in README or re.search(rf"`{re.escape(leaf)}\b", README), path


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_help_has_a_summary_and_an_example(path: str, command: click.Command) -> None:
    assert command.help, f"{path} has no help text"
    assert command.get_short_help_str(), path
    if not isinstance(command, click.Group) or path == "newsletter":
        assert "Example" in command.help, f"{path}'s help has no example"
