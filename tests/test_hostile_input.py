"""Hostile input through the real CLI (issue 28, item 14): each ends within seconds in one
line on stderr that names the thing and the fix, exit code 1, and no traceback. Before,
these ended in a traceback or hung (a FIFO, /dev/zero, an impossible SMTP port).

Each case runs `python -m newsletter` in a subprocess with a timeout, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_ISSUE, REPO

#: A hang shows as this timeout; a working answer takes well under a second plus startup.
TIMEOUT = 8
ISSUE = EXAMPLE_ISSUE.stem

Setup = Callable[[Path], list[str]]


def config(root: Path, extra: str) -> None:
    path = root / "newsletter.toml"
    path.write_text(path.read_text("utf-8") + extra, "utf-8")


def step_delay(root: Path) -> list[str]:
    config(root, '\n[sequences.welcome]\ntrigger = "subscribed"\n')
    folder = root / "sequences" / "welcome"
    folder.mkdir(parents=True)
    (folder / "01-hallo.md").write_text(
        "---\ntitle: Hallo\ndelay: 99999999999w\n---\n\nWillkommen!\n", "utf-8"
    )
    return ["sequences", "preview", "welcome/01", "--no-open"]


def keep_events_days(root: Path) -> list[str]:
    config(root, "\n[privacy]\nkeep_events_days = 99999999999\n")
    return ["privacy", "purge"]


SMTP = '\n[sending]\ntransport = "smtp"\n\n[smtp]\nhost = "127.0.0.1"\nsecurity = "none"\n'


def smtp_ca_file(root: Path) -> list[str]:
    config(root, SMTP + 'port = 2525\nca_file = "/nonexistent/ca.pem"\n')
    return ["send", ISSUE, "--test", "jens@example.com"]


def smtp_port(root: Path) -> list[str]:
    config(root, SMTP + "port = 99999\n")
    return ["send", ISSUE, "--test", "jens@example.com"]


def issue_folder(root: Path) -> list[str]:
    (root / "issues" / "ordner.md").mkdir()
    return ["build", "issues/ordner.md"]


def issue_symlink_loop(root: Path) -> list[str]:
    (root / "issues" / "a.md").symlink_to("b.md")
    (root / "issues" / "b.md").symlink_to("a.md")
    return ["build", "issues/a.md"]


def issue_fifo(root: Path) -> list[str]:
    os.mkfifo(root / "issues" / "pipe.md")
    return ["build", "issues/pipe.md"]


def issue_dev_zero(root: Path) -> list[str]:
    (root / "issues" / "null.md").symlink_to("/dev/zero")
    return ["build", "issues/null.md"]


def csv_wide_header(root: Path) -> list[str]:
    path = root / "wide.csv"
    columns = ["email"] + [f"spalte{i}" for i in range(100_000)]
    path.write_text(",".join(columns) + "\na@example.org" + "," * 100_000 + "\n", "utf-8")
    return ["subscribers", "import", str(path)]


def json_deep(root: Path) -> list[str]:
    path = root / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000, "utf-8")
    return ["subscribers", "import", str(path)]


def import_fifo(root: Path) -> list[str]:
    os.mkfifo(root / "liste.csv")
    return ["subscribers", "import", str(root / "liste.csv")]


def reply_id(root: Path) -> list[str]:
    return ["replies", "show", "99999999999999999999999"]


def schedule_far(root: Path) -> list[str]:
    return ["send", ISSUE, "--schedule", "in 99999999999999d", "--yes"]


CASES: dict[str, tuple[Setup, list[str]]] = {
    # id: (setup returning the arguments, what the one error line must say)
    "step delay 99999999999w": (step_delay, ["01-hallo.md:3", "bad delay", "at most 520w"]),
    "keep_events_days 99999999999": (
        keep_events_days,
        ["newsletter.toml", "[privacy] keep_events_days", "out of range", "1 to 36500"],
    ),
    "smtp ca_file missing": (smtp_ca_file, ["[smtp] ca_file", "no such file", "remove the key"]),
    "smtp port 99999": (smtp_port, ["[smtp] port = 99999", "out of range", "1 to 65535"]),
    "issue is a folder": (issue_folder, ["ordner.md", "is a folder", "Markdown file"]),
    "issue is a symlink loop": (issue_symlink_loop, ["a.md", "symlink loop", "delete it"]),
    "issue is a FIFO": (issue_fifo, ["pipe.md", "named pipe", "Markdown file"]),
    "issue links to /dev/zero": (issue_dev_zero, ["null.md", "is a device", "Markdown file"]),
    "CSV header of 100,000 columns": (
        csv_wide_header,
        ["wide.csv:1", "100,001 columns", "at most 1,000", "delete the columns"],
    ),
    "JSON 100,000 deep": (json_deep, ["deep.json", "nested too deeply", "--format json"]),
    "import from a FIFO": (import_fifo, ["liste.csv", "named pipe", "CSV file itself"]),
    "replies show a huge id": (reply_id, ["no reply with id 99999999999999999999999", "replies"]),
    "schedule in 99999999999999d": (schedule_far, ["in 99999999999999d", "more than 72 hours"]),
}


def run_cli(root: Path, args: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "--project", str(root), *args],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return done, time.monotonic() - started


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_one_line_and_exit_1(case: str, make_project) -> None:
    setup, needles = CASES[case]
    root = make_project(issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")})
    args = setup(root)
    try:
        done, _seconds = run_cli(root, args)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`newsletter {' '.join(args)}` still ran after {TIMEOUT} s")
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-2000:]
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_a_sequence_with_a_huge_delay_does_not_stop_the_others(make_project) -> None:
    """`sequences run` from cron: the broken sequence is named and skipped (as any broken
    sequence is); before, the overflow stopped every sequence with a traceback."""
    root = make_project()
    step_delay(root)
    config(root, '\n[sequences.tipps]\ntrigger = "subscribed"\n')
    (root / "sequences" / "tipps").mkdir()
    (root / "sequences" / "tipps" / "01-tipp.md").write_text(
        "---\ntitle: Ein Tipp\ndelay: 2d\n---\n\nTipp.\n", "utf-8"
    )
    done, _seconds = run_cli(root, ["sequences", "run"])
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-2000:]
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "sequence welcome skipped" in output and "01-hallo.md:3: bad delay" in output


def test_a_long_slug_or_title_is_refused_where_the_front_matter_is_read(make_project) -> None:
    root = make_project(
        issues={
            "lang.md": "---\ntitle: Kurz\nslug: " + "a" * 201 + "\n---\n\nText.\n",
            "titel.md": "---\ntitle: " + "Ü" * 1001 + "\n---\n\nText.\n",
        }
    )
    slug, _ = run_cli(root, ["build", "issues/lang.md"])
    assert slug.returncode == 1 and "lang.md:3: the slug has 201 characters" in slug.stderr
    title, _ = run_cli(root, ["build", "issues/titel.md"])
    assert title.returncode == 1 and "titel.md:2: `title` has 1,001 characters" in title.stderr


def test_values_at_the_ends_of_the_ranges_are_accepted(make_project) -> None:
    root = make_project()
    config(root, "\n[privacy]\nkeep_events_days = 36500\n\n[smtp]\nport = 65535\n")
    done, _seconds = run_cli(root, ["subscribers", "count"])
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr
