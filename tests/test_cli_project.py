"""`--project DIR` works before or after the subcommand, for every command (issue 12, item 11)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from newsletter.cli import main
from tests.conftest import EXAMPLE_ISSUE


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    context = click.Context(group)
    for name in sorted(group.list_commands(context)):
        command = group.get_command(context, name)  # the main group loads commands lazily
        assert command is not None
        path = (*prefix, name)
        paths.append(path)
        if isinstance(command, click.Group):
            paths += _command_paths(command, path)
    return paths


# `init` makes a project in its DIRECTORY argument; it reads none.
PROJECT_COMMANDS = [path for path in _command_paths(main) if path != ("init",)]


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize("path", PROJECT_COMMANDS, ids=" ".join)
def test_every_command_accepts_project_after_its_name(path, tmp_path):
    result = run(*path, "--project", str(tmp_path), "--help")
    assert result.exit_code == 0, result.output
    assert "--project DIRECTORY" in result.output


@pytest.fixture
def elsewhere(project, tmp_path, monkeypatch):
    """The project, while the current folder holds none (not the repository's example)."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    return project


def test_build_with_project_after_the_subcommand(elsewhere):
    result = run("build", "--project", str(elsewhere), EXAMPLE_ISSUE.name)
    assert result.exit_code == 0, result.output
    assert (elsewhere / "build" / "meta-ki-creator.html").exists()
    # ... and after the argument, and as --project=DIR
    (elsewhere / "build" / "meta-ki-creator.html").unlink()
    assert run("build", EXAMPLE_ISSUE.name, f"--project={elsewhere}").exit_code == 0
    assert (elsewhere / "build" / "meta-ki-creator.html").exists()


def test_nested_commands_and_groups_read_the_named_project(elsewhere):
    added = run("subscribers", "add", "anna@example.de", "--project", str(elsewhere))
    assert added.exit_code == 0, added.output
    assert run("subscribers", "count", "--project", str(elsewhere)).output.strip() == "1"
    assert run("replies", "--project", str(elsewhere)).output.strip() == "No replies yet."
    missing = run("replies", "show", "--project", str(elsewhere), "7")
    assert missing.exit_code == 1 and "no reply with id 7" in missing.output


def test_the_later_project_wins_over_the_earlier_and_the_environment(elsewhere, tmp_path):
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    result = run(
        "--project",
        str(decoy),
        "build",
        "--project",
        str(elsewhere),
        EXAMPLE_ISSUE.name,
        env={"NEWSLETTER_PROJECT": str(decoy)},
    )
    assert result.exit_code == 0, result.output
    assert (elsewhere / "build" / "meta-ki-creator.html").exists()


def test_without_a_project_the_error_names_the_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("subscribers", "count")
    assert result.exit_code == 1
    assert "--project" in result.output and "Traceback" not in result.output
