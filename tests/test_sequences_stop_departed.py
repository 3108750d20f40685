"""Someone who leaves the list stops their welcome sequence at once, as docs/sequences.md
says: `sequences status` no longer shows them waiting (before, they showed as waiting until
their next step fell due, days later), and the next run ends their sequence and says so.
SQLite and PostgreSQL, through the CLI."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from newsletter.project import Project
from newsletter.sequences.precheck import nothing_to_do
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import set_status
from tests.conftest import CONFIG
from tests.support.sequences import SEQUENCE, STEP1, STEP2, T0, join, received, run, write_steps


@pytest.mark.parametrize("status", ["unsubscribed", "bounced", "complained"])
def test_a_reader_who_left_stops_at_the_next_run(
    make_project, database_url, monkeypatch, cli, status
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(CONFIG + SEQUENCE)
    write_steps(root, {"01-willkommen.md": STEP1, "02-tipps.md": STEP2})
    jürgen = join(root, "jürgen@example.com", T0)
    join(root, "anna@example.com", T0)
    run(root, T0)  # both get step 01; step 02 is due three days later
    set_status(open_engine(Project.load(root).database_url), jürgen.id, status)

    soon = (T0 + timedelta(hours=1)).isoformat()
    shown = cli(root, "sequences", "status", "--now", soon)
    assert shown.exit_code == 0, shown.output
    assert "jürgen@example.com" not in shown.output and "anna@example.com" in shown.output
    data = json.loads(cli(root, "sequences", "status", "--format", "json", "--now", soon).output)
    [welcome] = data["sequences"]
    assert welcome["people"] == {"active": 1, "stopped": 1}
    assert welcome["steps"][1]["waiting"] == 1  # Anna alone waits for step 02

    later = (T0 + timedelta(days=4)).isoformat()
    ran = cli(root, "sequences", "run", "--now", later)
    assert ran.exit_code == 0, ran.output
    assert "1 left the list since they joined; their sequence ended." in ran.output
    got = [address for address, _ in received(root)]
    assert got.count("jürgen@example.com") == 1 and got.count("anna@example.com") == 2
    again = cli(root, "sequences", "run", "--now", later)
    assert "left the list" not in again.output  # ended once, not counted again


def test_a_run_with_nothing_due_still_ends_the_sequence_of_who_left(
    make_project, database_url, monkeypatch, cli
) -> None:  # type: ignore[no-untyped-def]
    """Before, `sequences run` said "nothing was due" and kept the sequence of someone who
    had left until a run found someone else due: its cheap precheck looked only for due
    steps."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(CONFIG + SEQUENCE)
    write_steps(root, {"01-willkommen.md": STEP1, "02-tipps.md": STEP2})
    join(root, "anna@example.de", T0)
    join(root, "ben@example.de", T0)
    run(root, T0)  # both get step 01; step 02 is due three days later
    assert cli(root, "subscribers", "remove", "anna@example.de").exit_code == 0

    soon = (T0 + timedelta(hours=1)).isoformat()  # nobody is due
    ran = cli(root, "sequences", "run", "--now", soon)
    assert ran.exit_code == 0, ran.output
    assert ran.output.splitlines() == [
        "nothing was due",
        "1 left the list since they joined; their sequence ended.",
    ]
    assert idle(root, T0 + timedelta(hours=1))  # and the next run is the cheap one again
    again = cli(root, "sequences", "run", "--now", soon)
    assert again.output.splitlines() == ["nothing was due"]
    data = json.loads(cli(root, "sequences", "status", "--format", "json", "--now", soon).output)
    assert data["sequences"][0]["people"] == {"active": 1, "stopped": 1}
    assert [address for address, _ in received(root)] == ["anna@example.de", "ben@example.de"]


def idle(root, at) -> bool:  # type: ignore[no-untyped-def]
    """What the cheap precheck of `sequences run` says: nothing to do."""
    return nothing_to_do(Project.load(root), at)
