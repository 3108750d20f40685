"""Each command's module (and the core behind it) is loaded when that command runs, so
`newsletter --help` and `newsletter build` stay fast although every `cli.*` module imports
what it needs at its top (issue 23, layers)."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import newsletter.cli
from newsletter.cli import COMMANDS, main

REPO = Path(__file__).resolve().parent.parent
#: What neither `--help` nor `build` needs: the database layer, the web app, sending.
HEAVY = (
    "sqlalchemy",
    "starlette",
    "uvicorn",
    "newsletter.store",
    "newsletter.sending",
    "newsletter.web",
)


def _loaded_after(*args: str, cwd: Path) -> list[str]:
    """The heavy modules a fresh `newsletter ARGS` process has imported when it is done."""
    code = (
        "import json, sys\n"
        "from newsletter.cli import main\n"
        "try:\n"
        f"    main({list(args)!r}, prog_name='newsletter')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_every_command_is_in_the_table_with_its_module_and_summary() -> None:
    found: dict[str, tuple[str, str]] = {}
    for info in pkgutil.iter_modules(newsletter.cli.__path__):
        module = importlib.import_module(f"newsletter.cli.{info.name}")
        for command in getattr(module, "COMMANDS", []):
            summary = " ".join((command.help or "").split("\n\n")[0].split())
            found[command.name] = (info.name, summary)
    assert found == COMMANDS, "update COMMANDS in newsletter/cli/__init__.py"


def test_help_lists_every_command_without_loading_them(tmp_path: Path) -> None:
    assert _loaded_after("--help", cwd=tmp_path) == []
    listed = CliRunner().invoke(main, ["--help"]).output
    for name in COMMANDS:
        assert f"\n  {name} " in listed


def test_build_loads_neither_the_database_nor_sending(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, "-m", "newsletter", "init", "letter"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    project = tmp_path / "letter"
    issue = next((project / "issues").glob("*.md"))
    assert _loaded_after("build", str(issue), cwd=project) == []
    assert list((project / "build").glob("*.html"))
