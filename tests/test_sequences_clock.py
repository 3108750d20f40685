"""A run with its clock far ahead (issue 28, item 9): `sequences run --now` more than a day
ahead of the system clock is refused unless `--force`; and when a run did send with a clock
far ahead (forced, or a wrong system clock), the next run with the right clock reschedules
the next steps it put in the future, counting from the last step as sent now. Outbox
transport, SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.project import Project
from newsletter.sequences import hooks
from newsletter.sequences.clock import FixedClock
from newsletter.sequences.precheck import nothing_to_do
from newsletter.sequences.runner import run_due
from newsletter.store.engine import open_engine
from newsletter.store.schema import sequence_enrollments
from newsletter.store.subscribers import add_subscriber
from newsletter.store.times import as_utc
from tests.conftest import CONFIG
from tests.support.sequences import SEQUENCE, STEP1, received, write_steps

TIPS = "---\ntitle: Drei Tipps für den Anfang\ndelay: 3d\n---\n\nHier sind drei Tipps.\n"
VOICES = "---\ntitle: Was andere Leser sagen\ndelay: 4d\n---\n\nStimmen anderer Leser.\n"
WELCOME_SUBJECT = "Willkommen bei „Jens' Briefing“"
#: The wrong clock of the issue: a year and more ahead.
AHEAD = datetime(2031, 1, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def root(make_project, database_url, monkeypatch) -> Path:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(CONFIG + SEQUENCE)
    write_steps(root, {"01-willkommen.md": STEP1, "02-tipps.md": TIPS, "03-stimmen.md": VOICES})
    return root


def join(root: Path, address: str, at: datetime) -> None:
    project = Project.load(root)
    engine = open_engine(project.database_url)
    person = add_subscriber(engine, address)
    hooks.joined(project, engine, person.id, clock=FixedClock(at))


def next_due(root: Path, address_number: int) -> datetime | None:
    engine = open_engine(Project.load(root).database_url)
    with engine.connect() as conn:
        value = conn.execute(
            select(sequence_enrollments.c.next_due_at).where(
                sequence_enrollments.c.subscriber_id == address_number
            )
        ).scalar()
    return as_utc(value) if value else None


def test_now_more_than_a_day_ahead_is_refused_unless_forced(root, cli):
    now = datetime.now(UTC)
    join(root, "anna@example.de", now - timedelta(hours=1))

    refused = cli(root, "sequences", "run", "--now", "2031-01-01")
    assert refused.exit_code == 1
    lines = refused.output.strip().splitlines()
    assert len(lines) == 1, refused.output
    assert "ahead of the system clock" in lines[0] and "add --force" in lines[0]
    assert "Traceback" not in refused.output
    assert received(root) == []  # nothing was sent or scheduled

    # Up to a day ahead is fine (sending tomorrow morning's steps tonight).
    soon = cli(root, "sequences", "run", "--now", (now + timedelta(hours=20)).isoformat())
    assert soon.exit_code == 0, soon.output
    assert received(root) == [("anna@example.de", WELCOME_SUBJECT)]

    forced = cli(root, "sequences", "run", "--now", "2031-01-01", "--force")
    assert forced.exit_code == 0, forced.output
    assert sorted(received(root)) == [
        ("anna@example.de", "Drei Tipps für den Anfang"),
        ("anna@example.de", WELCOME_SUBJECT),
    ]


def test_a_run_with_a_wrong_system_clock_is_undone_by_the_next_right_one(root, cli):
    now = datetime.now(UTC)
    join(root, "anna@example.de", now - timedelta(days=4))
    run_due(Project.load(root), clock=FixedClock(now - timedelta(days=4)))  # her welcome
    # The system clock says 2031 for one run: both clocks are wrong, nothing can refuse it.
    # Anna's second step goes out (it was due), the third is scheduled from "2031"; Ben
    # subscribes meanwhile and is enrolled "in 2031".
    wrong = FixedClock(AHEAD)
    join(root, "ben@example.de", AHEAD)
    report = run_due(Project.load(root), clock=wrong, wall=wrong)
    assert report.accepted == 2  # Anna's tips, Ben's welcome
    assert next_due(root, 1) == AHEAD + timedelta(days=4)

    # The clock is right again: the next run reschedules them from now (its cheap precheck
    # must not call that "nothing to do").
    assert not nothing_to_do(Project.load(root), datetime.now(UTC))
    fixed = cli(root, "sequences", "run")
    assert fixed.exit_code == 0, fixed.output
    assert nothing_to_do(Project.load(root), datetime.now(UTC))
    anna_due = next_due(root, 1)
    assert anna_due is not None
    assert now + timedelta(days=4) <= anna_due <= datetime.now(UTC) + timedelta(days=4)
    assert "Rescheduled 2 readers whose next step a run with its clock far ahead" in fixed.output

    # Four days later (both clocks): Anna's third step and Ben's second are due.
    later = FixedClock(datetime.now(UTC) + timedelta(days=4, hours=1))
    assert run_due(Project.load(root), clock=later, wall=later).accepted == 2
    assert sorted(received(root)) == [
        ("anna@example.de", "Drei Tipps für den Anfang"),
        ("anna@example.de", "Was andere Leser sagen"),
        ("anna@example.de", WELCOME_SUBJECT),
        ("ben@example.de", "Drei Tipps für den Anfang"),  # 3 days after his welcome
        ("ben@example.de", WELCOME_SUBJECT),
    ]


def test_a_catch_up_run_in_the_past_takes_nobody_s_next_step_earlier(root, cli):
    now = datetime.now(UTC)
    join(root, "anna@example.de", now - timedelta(minutes=5))
    assert cli(root, "sequences", "run").exit_code == 0
    due = next_due(root, 1)
    assert due is not None
    week_ago = (now - timedelta(days=7)).isoformat()
    caught_up = cli(root, "sequences", "run", "--now", week_ago)
    assert caught_up.exit_code == 0, caught_up.output
    assert "Rescheduled" not in caught_up.output
    assert next_due(root, 1) == due


def test_start_refuses_a_now_far_ahead_too(root, cli):
    join(root, "anna@example.de", datetime.now(UTC) - timedelta(hours=1))
    add_subscriber(open_engine(Project.load(root).database_url), "ben@example.de")
    refused = cli(
        root, "sequences", "start", "welcome", "--existing", "--yes", "--now", "2031-01-01"
    )
    assert refused.exit_code == 1
    assert "ahead of the system clock" in refused.output and "add --force" in refused.output
    assert next_due(root, 2) is None  # Ben was not started
