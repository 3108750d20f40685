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


def newsletter_key(root: Path, old: str, new: str) -> None:
    """Change a line of the [newsletter] table (`old` "" adds `new` to it)."""
    path = root / "newsletter.toml"
    text = path.read_text("utf-8")
    if old:
        assert old in text, old
        text = text.replace(old, new, 1)
    else:
        text = text.replace("[newsletter]\n", f"[newsletter]\n{new}\n", 1)
    path.write_text(text, "utf-8")


def timezone_folder(root: Path) -> list[str]:
    newsletter_key(root, "", 'timezone = "Europe"')
    return ["check", ISSUE]


def base_url_ipv6(root: Path) -> list[str]:
    newsletter_key(
        root, 'base_url = "https://news.example.com"', 'base_url = "https://[news.example.net"'
    )
    return ["send", ISSUE, "--test", "jens@example.com"]


def empty_name(root: Path) -> list[str]:
    newsletter_key(root, 'name = "Jens\' Briefing"', 'name = ""')
    return ["archive", "build", "-o", str(root / "site")]


def control_character_in_name(root: Path) -> list[str]:
    newsletter_key(root, 'name = "Jens\' Briefing"', 'name = "Jens\\u0001 Briefing"')
    return ["check", ISSUE]


def web_font_ipv6(root: Path) -> list[str]:
    config(root, '\n[theme]\nweb_font_name = "Foo"\nweb_font_url = "http://[::1"\n')
    return ["build", f"issues/{EXAMPLE_ISSUE.name}"]


def site_url_ipv6(root: Path) -> list[str]:
    config(root, '\n[archive]\nsite_url = "http://[::1"\n')
    return ["archive", "build", "-o", str(root / "site")]


IMAP = '\n[replies.imap]\nhost = "127.0.0.1"\nusername = "jens"\n'


def imap_timeout_zero(root: Path) -> list[str]:
    config(root, IMAP + "timeout = 0\n")
    return ["replies", "fetch"]


def imap_host_empty(root: Path) -> list[str]:
    config(root, IMAP.replace('"127.0.0.1"', '""'))
    return ["replies", "fetch"]


def imap_flag_with_space(root: Path) -> list[str]:
    config(root, IMAP + 'flag = "a b"\n')
    return ["replies", "fetch"]


def reply_domain_with_space(root: Path) -> list[str]:
    config(root, '\n[replies]\ndomain = "a b"\n')
    return ["check", ISSUE]


def smtp_host_too_long(root: Path) -> list[str]:
    config(root, SMTP.replace('"127.0.0.1"', '"' + "a" * 300 + '"') + "port = 2525\n")
    return ["send", ISSUE, "--test", "jens@example.com"]


def empty_segment(root: Path) -> list[str]:
    config(root, '\n[segments.aktive]\nwhere = ""\n')
    return ["send", ISSUE, "--segment", "aktive", "--outbox", str(root / "ob"), "--yes"]


def empty_where(root: Path) -> list[str]:
    return ["send", ISSUE, "--where", " ", "--outbox", str(root / "ob"), "--yes"]


def segment_nested_400_deep(root: Path) -> list[str]:
    config(root, f'\n[segments.tief]\nwhere = "{"(" * 400}tag:a{")" * 400}"\n')
    return ["subscribers", "count"]


def segment_negated_40_deep(root: Path) -> list[str]:
    # (SQLite's own parser overflows near 40 nested NOTs: refused before it gets there)
    return ["subscribers", "count", "--where", "NOT " * 40 + "tag:a"]


def imap_system_flag(root: Path) -> list[str]:
    config(root, IMAP + 'flag = "\\\\Seen"\n')
    return ["replies", "fetch"]


def min_fill_seconds_negative(root: Path) -> list[str]:
    config(root, "\n[subscribe]\nmin_fill_seconds = -5\n")
    return ["check", ISSUE]


def now_year_200(root: Path) -> list[str]:
    return ["sequences", "run", "--now", "0200-01-01T00:00:00"]


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
    # Found by a hostile-configuration walk (each ended in a traceback, or did harm quietly).
    "timezone is a folder": (timezone_folder, ["timezone 'Europe'", "not a known time zone"]),
    "base_url with an open [": (base_url_ipv6, ["[newsletter] base_url", "not a valid URL"]),
    "empty name": (empty_name, ["[newsletter] name is empty", "name the newsletter"]),
    "control character in name": (
        control_character_in_name,
        ["[newsletter] name", "control character U+0001", "remove it"],
    ),
    "web_font_url with an open [": (web_font_ipv6, ["[theme] web_font_url", "not a valid URL"]),
    "site_url with an open [": (site_url_ipv6, ["[archive] site_url", "not a valid URL"]),
    "imap timeout 0": (imap_timeout_zero, ["[replies.imap] timeout = 0", "0.1 to 600"]),
    "imap host empty": (imap_host_empty, ["[replies.imap] host ''", "not a host name"]),
    "imap flag with a space": (imap_flag_with_space, ["[replies.imap] flag 'a b'", "keyword"]),
    "reply domain with a space": (
        reply_domain_with_space,
        ["[replies] domain 'a b'", "not a domain name", "xn--"],
    ),
    "smtp host of 300 characters": (smtp_host_too_long, ["[smtp] host", "not a host name"]),
    "empty saved segment": (empty_segment, ["[segments.aktive] where is empty", "whole list"]),
    "empty --where": (empty_where, ["--where is empty", "leave it out"]),
    "segment nested 400 deep": (segment_nested_400_deep, ["nested more than 32 levels"]),
    "segment negated 40 deep": (segment_negated_40_deep, ["nested more than 32 levels"]),
    "imap system flag": (imap_system_flag, ["flag '\\\\Seen'", "system flags", "move_to"]),
    "min_fill_seconds -5": (
        min_fill_seconds_negative,
        ["[subscribe] min_fill_seconds = -5", "out of range"],
    ),
    "--now in the year 200": (now_year_200, ["--now '0200-01-01T00:00:00'", "before 2000"]),
}


def run_cli(
    root: Path, args: list[str], **extra_env: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **extra_env}
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


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-2000:]
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


SENDGRID = '\n[sending]\ntransport = "sendgrid"\n'


@pytest.mark.parametrize(
    "args",
    [
        ["send", ISSUE, "--test", "jens@example.com", "--yes"],
        ["send", ISSUE, "--dry-run", "--yes"],
        ["doctor", "--offline"],
    ],
    ids=["send --test", "send --dry-run", "doctor"],
)
def test_an_api_key_with_a_line_break_is_refused_and_never_shown(make_project, args) -> None:
    """Copied with the end of its line, the key went into an HTTP header, and the HTTP
    library's error quoted it whole: on the screen and in the ledger's error column."""
    root = make_project(issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")})
    config(root, SENDGRID)
    key = "SG.geheimer-schluessel-0123456789"
    done, _seconds = run_cli(root, args, SENDGRID_API_KEY=key + "\n")
    assert key not in done.stdout + done.stderr
    if args[0] == "doctor":  # (a table, exit 1 for its ✗ rows)
        assert "SENDGRID_API_KEY holds a line break or a space" in done.stdout
        return
    assert "SENDGRID_API_KEY holds a line break or a space" in one_line(done)
    assert (
        not (root / "newsletter.db").exists()
        or key.encode() not in (root / "newsletter.db").read_bytes()
    )


def test_a_sendgrid_api_host_that_is_no_url_is_refused(make_project) -> None:
    root = make_project(issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text("utf-8")})
    config(root, SENDGRID)
    for host in ("http://[::1", "127.0.0.1:35009"):
        done, _seconds = run_cli(
            root,
            ["send", ISSUE, "--dry-run", "--yes"],
            SENDGRID_API_KEY="SG.x",
            SENDGRID_API_HOST=host,
        )
        line = one_line(done)
        assert f"SENDGRID_API_HOST {host!r} is not a URL" in line, line


def test_a_database_password_with_an_at_sign_is_hidden_whole(make_project) -> None:
    """`postgres:PgGe@heim99@host`: the URL parser took "heim99@127.0.0.1" for the host,
    and the error showed that half of the password."""
    root = make_project()
    url = "postgresql://postgres:PgGe@heim99@127.0.0.1:1/nt_7"
    done, _seconds = run_cli(root, ["stats"], NEWSLETTER_DATABASE_URL=url)
    line = one_line(done)
    assert "heim99" not in line and "PgGe" not in line
    assert "write each @ in the password as %40" in line


def test_a_secrets_file_that_is_a_pipe_or_has_a_bom(make_project) -> None:
    """Every command reads ~/.config/newsletter/env at start: a named pipe there made every
    command wait for good, and a BOM (which newsletter.toml may have) failed line 1."""
    root = make_project()
    home = root / "konfiguration"
    (home / "newsletter").mkdir(parents=True)
    secrets = home / "newsletter" / "env"
    os.mkfifo(secrets)
    try:
        done, _seconds = run_cli(root, ["subscribers", "count"], XDG_CONFIG_HOME=str(home))
    except subprocess.TimeoutExpired:
        pytest.fail("a named pipe as the secrets file still hangs every command")
    line = one_line(done)
    assert str(secrets) in line and "named pipe" in line and "NAME=value" in line
    secrets.unlink()
    secrets.write_bytes("\ufeffNEWSLETTER_SECRET_KEY=ein-schluessel-mit-bom\n".encode())
    counted, _seconds = run_cli(root, ["subscribers", "count"], XDG_CONFIG_HOME=str(home))
    assert counted.returncode == 0 and counted.stdout.strip() == "0", counted.stderr


def test_a_newsletter_toml_that_is_a_folder_is_named_so(make_project, tmp_path) -> None:
    root = tmp_path / "projekt"
    (root / "newsletter.toml").mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "subscribers", "count"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    line = one_line(done)
    assert "newsletter.toml" in line and "is a folder" in line, line


def test_the_deepest_segment_allowed_runs_on_the_database(make_project) -> None:
    root = make_project()
    for where in ("NOT " * 32 + "tag:a", "-(tag:a OR " * 16 + "tag:b" + ")" * 16):
        done, _seconds = run_cli(root, ["subscribers", "count", "--where", where])
        assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr


def test_a_sqlite_path_may_hold_at_signs_and_colons(make_project, tmp_path) -> None:
    """Only a server's URL has a password to hide; a file's path may hold any "@"."""
    folder = tmp_path / "a@b:c" / "@d"
    folder.mkdir(parents=True)
    root = make_project()
    url = f"sqlite:///{folder / 'news.db'}"
    done, _seconds = run_cli(root, ["subscribers", "count"], NEWSLETTER_DATABASE_URL=url)
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr


def test_doctor_names_a_bad_sendgrid_host_and_a_password_with_a_line_break(make_project) -> None:
    root = make_project()
    config(root, SENDGRID + '\n[replies.imap]\nhost = "127.0.0.1"\nusername = "jens"\n')
    done, _seconds = run_cli(
        root, ["doctor"], SENDGRID_API_KEY="SG.x", SENDGRID_API_HOST="http://[::1",
        NEWSLETTER_IMAP_PASSWORD="postfach\n",
    )  # fmt: skip
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-2000:]
    assert done.returncode == 1  # (its ✗ rows)
    assert "SENDGRID_API_HOST 'http://[::1' is not a URL" in done.stdout
    assert "NEWSLETTER_IMAP_PASSWORD holds a line break" in done.stdout
    assert "postfach" not in done.stdout
