"""A renamed step file (issue 28, item 8): `01-hello.md` becoming `01-hallo.md` without a
`slug:` must not send step 1 again to everyone who had it. `sequences check` warns,
`sequences run` holds the sequence back (exit 1, one line, nothing sent), until the author
says which it is: `sequences rename` or `slug: hello` (the same email), `slug: hallo` (a new
one). Real CLI, outbox transport, SQLite and PostgreSQL; and m011 on an older database."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select

from newsletter.project import Project
from newsletter.sequences import hooks
from newsletter.sequences.clock import FixedClock
from newsletter.sequences.runner import run_due
from newsletter.store import migrations, schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG
from tests.support.sequences import SEQUENCE, STEP1, received, write_steps

TIPS = (
    "---\ntitle: Drei Tipps für den Anfang\npreheader: Was sich lohnt\ndelay: 3d\n---\n\n"
    "Hier sind drei Tipps.\n"
)
WELCOME_SUBJECT = "Willkommen bei „Jens' Briefing“"
TIPS_SUBJECT = "Drei Tipps für den Anfang"


@pytest.fixture
def root(make_project, database_url, monkeypatch, cli) -> Path:
    """Anna and Ben had step 01 (`hello`); then the author renamed its file to 01-hallo.md."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(CONFIG + SEQUENCE)
    write_steps(root, {"01-hello.md": STEP1, "02-tipps.md": TIPS})
    for address in ("anna@example.de", "ben@example.de"):
        join(root, address)
    assert cli(root, "sequences", "run").exit_code == 0
    assert sorted(received(root)) == [
        ("anna@example.de", WELCOME_SUBJECT),
        ("ben@example.de", WELCOME_SUBJECT),
    ]
    folder = root / "sequences" / "welcome"
    (folder / "01-hello.md").rename(folder / "01-hallo.md")
    return root


def join(root: Path, address: str) -> None:
    project = Project.load(root)
    engine = open_engine(project.database_url)
    person = add_subscriber(engine, address)
    hooks.joined(project, engine, person.id, clock=FixedClock(datetime.now(UTC)))


def days_later(root: Path, days: int) -> int:
    """A run `days` later (both clocks); how many it handed over."""
    clock = FixedClock(datetime.now(UTC) + timedelta(days=days))
    return run_due(Project.load(root), clock=clock, wall=clock).accepted


def test_check_warns_and_run_refuses_until_renamed_then_nobody_gets_it_twice(root, cli):
    check = cli(root, "sequences", "check")
    assert check.exit_code == 0, check.output  # a warning
    warning = (
        "sequences/welcome/01-hallo.md: warning: step 01 was 'hello' until now (2 readers had "
        "it) and is now 'hallo', which nobody has had: a run would send it to them again. If "
        "it is the same email under a new file name, run `newsletter sequences rename welcome "
        "hello hallo` (or add `slug: hello` to its front matter); if it is a new email for "
        "everyone, add `slug: hallo`"
    )
    assert warning in check.output.splitlines()
    assert cli(root, "sequences", "check", "--strict").exit_code == 1

    status = cli(root, "sequences", "status").output
    assert "  problem: 01-hallo.md: step 01 was 'hello' until now (2 readers had it)" in status

    join(root, "cem@example.de")
    held = cli(root, "sequences", "run")
    assert held.exit_code == 1
    lines = held.output.strip().splitlines()
    assert len(lines) == 1, held.output
    assert lines[0].startswith(
        "Error: sequence welcome held back: sequences/welcome/01-hallo.md: step 01 was 'hello'"
    )
    assert len(received(root)) == 2  # nothing went out, not even Cem's welcome

    renamed = cli(root, "sequences", "rename", "welcome", "hello", "hallo")
    assert renamed.exit_code == 0, renamed.output
    assert renamed.output == (
        "Renamed welcome/hello to welcome/hallo: the 2 readers who had it will not get it again.\n"
    )
    assert "warning" not in cli(root, "sequences", "check").output

    assert cli(root, "sequences", "run").exit_code == 0
    assert days_later(root, 3) == 3  # everyone's tips
    assert Counter(received(root)) == {
        ("anna@example.de", WELCOME_SUBJECT): 1,
        ("ben@example.de", WELCOME_SUBJECT): 1,
        ("cem@example.de", WELCOME_SUBJECT): 1,
        ("anna@example.de", TIPS_SUBJECT): 1,
        ("ben@example.de", TIPS_SUBJECT): 1,
        ("cem@example.de", TIPS_SUBJECT): 1,
    }
    status = cli(root, "sequences", "status").output
    assert "removed step" not in status  # the history moved with the name


def test_a_slug_in_the_front_matter_says_which_it_is(root, cli):
    step = root / "sequences" / "welcome" / "01-hallo.md"
    # The same email: its old key as its slug.
    step.write_text(STEP1.replace("delay: 0\n", "delay: 0\nslug: hello\n"), encoding="utf-8")
    assert "warning" not in cli(root, "sequences", "check").output
    assert cli(root, "sequences", "run").exit_code == 0
    assert len(received(root)) == 2

    # A new email for everyone: its own key as its slug, on purpose.
    step.write_text(
        STEP1.replace("delay: 0\n", "delay: 0\nslug: hallo\n").replace("Willkommen", "Hallo"),
        encoding="utf-8",
    )
    assert cli(root, "sequences", "run").exit_code == 0
    assert sorted(received(root))[:2] == [
        ("anna@example.de", "Hallo bei „Jens' Briefing“"),
        ("anna@example.de", WELCOME_SUBJECT),
    ]
    assert len(received(root)) == 4


def test_rename_refuses_what_it_cannot_mean(root, cli):
    cases = {
        ("nope", "hallo"): "no step 'nope' has been sent, so there is nothing to rename",
        ("hello", "tipp"): "no step file has the key 'tipp'",
        ("tipps", "hallo"): "'tipps' is still the key of 02-tipps.md",
    }
    for (old, new), message in cases.items():
        result = cli(root, "sequences", "rename", "welcome", old, new)
        assert result.exit_code == 1, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert message in result.output


def test_moving_a_step_to_another_number_is_not_taken_for_a_rename(root, cli):
    folder = root / "sequences" / "welcome"
    (folder / "01-hallo.md").rename(folder / "01-hello.md")  # back as it was
    (folder / "03-extra.md").write_text(TIPS.replace("Drei", "Vier"), encoding="utf-8")
    assert "warning" not in cli(root, "sequences", "check").output
    assert cli(root, "sequences", "run").exit_code == 0


def _raw_engine(url: str):
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url)


def test_m011_gives_an_older_database_step_numbers_and_keeps_its_steps(database_url, monkeypatch):
    old = _raw_engine(database_url)
    monkeypatch.setattr(migrations, "STEPS", migrations.STEPS[:10])
    migrations.migrate(old)
    with old.begin() as conn:
        # As m009 made the table before m011.
        conn.exec_driver_sql("ALTER TABLE sequence_steps DROP COLUMN step_number")
        conn.exec_driver_sql(
            "INSERT INTO issues (slug, title, subject, language, created_at) VALUES "
            "('sequences/welcome/hello', 'Hallo', 'Hallo', 'de', CURRENT_TIMESTAMP)"
        )
        conn.exec_driver_sql(
            "INSERT INTO sequence_steps (issue_id, sequence, step_key) "
            "SELECT id, 'welcome', 'hello' FROM issues"
        )
    old.dispose()
    monkeypatch.undo()

    engine = open_engine(database_url)
    columns = {c["name"] for c in inspect(engine).get_columns("sequence_steps")}
    assert "step_number" in columns
    with engine.connect() as conn:
        rows = conn.execute(
            select(schema.sequence_steps.c.step_key, schema.sequence_steps.c.step_number)
        ).all()
    assert [tuple(r) for r in rows] == [("hello", None)]
    assert migrations.migrate(engine) == []
