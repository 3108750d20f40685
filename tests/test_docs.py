"""Help is documentation: every command is in the guide, its help ends with an example, the
command reference is generated from the help, and every command the README and the docs
show parses as written."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import click
import pytest

from newsletter.cli import main

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
DOCS = sorted((REPO / "docs").rglob("*.md"))
# The guide: every page but the generated command reference.
GUIDE = "\n".join(p.read_text(encoding="utf-8") for p in DOCS if p.parent.name != "reference")


def all_commands(
    group: click.Group = main, prefix: str = "newsletter"
) -> list[tuple[str, click.Command]]:
    found = []
    context = click.Context(group)
    for name in sorted(group.list_commands(context)):
        command = group.get_command(context, name)  # the main group loads commands lazily
        assert command is not None
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
def test_command_is_in_the_guide(path: str, command: click.Command) -> None:
    # A group's subcommands may be documented as "`newsletter subscribers tag ...` / `untag ...`".
    leaf = path.split()[-1]
    assert f"`{path}" in GUIDE or re.search(rf"`{re.escape(leaf)}\b", GUIDE), path


def test_the_command_reference_is_generated_from_the_help() -> None:
    checked = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "cli_reference.py"), "--check"], cwd=REPO
    )
    assert checked.returncode == 0, "run: python scripts/cli_reference.py"


def _shown_commands() -> list[tuple[str, list[str]]]:
    """(where, command line) for each `newsletter ...` in a shell block of the README or docs."""
    found = []
    for path in [REPO / "README.md", *DOCS]:
        text = path.read_text(encoding="utf-8")
        for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
                lexer.whitespace_split = True
                lexer.commenters = "#"
                try:
                    tokens = list(lexer)
                except ValueError:  # not shell: output shown in a shell block
                    assert not re.match(r"\s*(\S*/)?newsletter\s", line), f"{path}: {line}"
                    continue
                words: list[str] = []
                redirected = False
                for word in [*tokens, ";"]:
                    if word not in ("&&", "||", ";", "|", "&"):
                        redirected = redirected or word in (">", ">>", "<", "2>")
                        if not redirected:
                            words.append(word)
                        continue
                    redirected = False
                    if words and words[0].split("/")[-1] == "newsletter":
                        found.append((f"{path.relative_to(REPO)}: {shlex.join(words)}", words))
                    words = []
    return found


SHOWN = _shown_commands()


def test_the_docs_show_commands() -> None:
    assert len(SHOWN) > 40


@pytest.mark.parametrize(("where", "line"), SHOWN, ids=[w for w, _ in SHOWN])
def test_every_command_in_the_docs_parses_as_written(where: str, line: list[str]) -> None:
    """Each documented command line names a real command with options it has."""
    context = main.make_context("newsletter", line[1:], resilient_parsing=False)
    command: click.Command = main
    while isinstance(command, click.Group):
        with warnings.catch_warnings():  # Click 8.2 moved protected_args into args
            warnings.simplefilter("ignore", DeprecationWarning)
            pending = [*context.protected_args, *context.args]
        if not pending:
            break
        name, sub, rest = command.resolve_command(context, pending)
        assert sub is not None, where
        context = sub.make_context(name, rest, parent=context)
        command = sub


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="MkDocs is not installed")
def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "troubleshooting" / "index.html").exists()


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_help_has_a_summary_and_an_example(path: str, command: click.Command) -> None:
    assert command.help, f"{path} has no help text"
    assert command.get_short_help_str(), path
    if not isinstance(command, click.Group) or path == "newsletter":
        assert "Example" in command.help, f"{path}'s help has no example"


def test_every_config_key_is_in_the_configuration_reference() -> None:
    """docs/reference/configuration.md has a row for each key newsletter.toml may hold."""
    from newsletter.project import SCHEMA, SEQUENCE_SCHEMA, SUBTABLES

    page = (REPO / "docs" / "reference" / "configuration.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## `\[([\w.<>]+)\]`\n(.*?)(?=^## |\Z)", page, re.S | re.M))
    wanted = {name: list(keys) for name, keys in SCHEMA.items() if keys}
    wanted |= {
        f"{s}.{t}": list(keys) for s, tables in SUBTABLES.items() for t, keys in tables.items()
    }
    wanted["sequences.<name>"] = list(SEQUENCE_SCHEMA)
    missing = [
        f"[{section}] {key}"
        for section, keys in wanted.items()
        for key in keys
        if key not in SUBTABLES.get(section, {}) and f"| `{key}` |" not in sections.get(section, "")
    ]
    assert missing == [], "document these in docs/reference/configuration.md"


def test_every_sequence_trigger_is_in_the_sequences_guide() -> None:
    """docs/sequences.md shows each trigger a `[sequences.<name>]` table accepts (the config
    error names them all); `replied` was missing."""
    from newsletter.project import check_sequence_table

    problem = check_sequence_table("x", {"trigger": "no-such-trigger", "tag": None})
    assert problem is not None
    triggers = re.findall(r'"([^"]+)"', problem.split(";", 1)[1])
    assert "replied" in triggers and len(triggers) >= 3, problem
    page = (REPO / "docs" / "sequences.md").read_text(encoding="utf-8")
    for trigger in triggers:
        assert (
            check_sequence_table("x", {"trigger": trigger.replace("<tag>", "kunde"), "tag": None})
            is None
        )
        shown = trigger.replace("<tag>", "")
        assert f'trigger = "{shown}' in page, f"document trigger = {trigger!r} in docs/sequences.md"
