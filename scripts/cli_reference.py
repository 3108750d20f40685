"""Write docs/reference/cli.md from the commands themselves: every command, its usage,
its help text and its options. `tests/test_docs.py` fails when the page is out of date.

    python scripts/cli_reference.py            # rewrite the page
    python scripts/cli_reference.py --check    # exit 1 when it is out of date
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import click

from newsletter.cli import main

PAGE = Path(__file__).resolve().parent.parent / "docs" / "reference" / "cli.md"

HEAD = """# Commands

Generated from the commands' own help by `scripts/cli_reference.py`; `newsletter COMMAND
--help` prints the same. Every project command accepts `--project DIR`, before or after the
command's name (`newsletter --project DIR build x.md` and `newsletter build --project DIR
x.md` are the same; one after the name wins over one before it and over
`NEWSLETTER_PROJECT`); otherwise the nearest folder upwards holding `newsletter.toml` is
used. Exit codes: 0 done, 1 a user error (one line, no traceback), 2 bad usage, 130 Ctrl-C.
"""


def _commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    context = click.Context(group)
    for name in sorted(group.list_commands(context)):
        command = group.get_command(context, name)  # the main group loads commands lazily
        assert command is not None
        if command.hidden:
            continue
        path = f"{prefix} {name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += _commands(command, path)
    return found


def _option_row(param: click.Parameter) -> str:
    names = ", ".join(f"`{n}`" for n in [*param.opts, *param.secondary_opts])
    text = (getattr(param, "help", None) or "").replace("|", "\\|").replace("\n", " ")
    return f"| {names} | {text} |"


def _help_text(help: str) -> str:
    """The docstring as Markdown: the prose, then its example(s) in a shell block."""
    text = inspect.cleandoc(click.unstyle(help).replace("\b\n", "\n"))
    prose, example = (re.split(r"^\s*Examples?:\s*$", text, maxsplit=1, flags=re.M) + [""])[:2]
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", prose) if p.strip()]
    out = "\n\n".join(paragraphs) + "\n"
    commands = [line.strip() for line in example.splitlines() if line.strip()]
    if commands:
        out += "\n```sh\n" + "\n".join(commands) + "\n```\n"
    return out


def render() -> str:
    parts = [HEAD]
    for path, command in _commands(main, "newsletter"):
        context = click.Context(command, info_name=path)
        usage = " ".join(command.collect_usage_pieces(context))
        level = "##" if path.count(" ") == 1 else "###"
        parts.append(f"{level} `{path}`\n")
        parts.append(f"```\n{path} {usage}\n```\n")
        if command.help:
            parts.append(_help_text(command.help))
        options = [
            p
            for p in command.params
            if isinstance(p, click.Option) and not p.hidden and p.name != "project_dir"
        ]
        if options:
            parts.append("| option | meaning |\n|---|---|")
            parts.append("\n".join(_option_row(p) for p in options) + "\n")
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    text = render()
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if PAGE.read_text(encoding="utf-8") == text else 1)
    PAGE.write_text(text, encoding="utf-8")
