"""`sequences status` counts each active reader under the step the run would send them next,
by the run's own rule, so that what it shows waiting is what the next run sends. Before, it
counted by the step their row names: someone who joined while a step did not load (no step
named yet) and readers waiting for a step that was removed or renamed were shown nowhere,
while the run sent them a step. SQLite and PostgreSQL, through the CLI."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONFIG
from tests.support.sequences import (
    SEQUENCE,
    STEP1,
    STEP2,
    STEP3,
    T0,
    join,
    received,
    run,
    write_steps,
)

WELCOME = "Willkommen bei „Jens' Briefing“"
VOICES = "Was andere Leser sagen"


@pytest.fixture
def root(make_project, database_url, monkeypatch) -> Path:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(CONFIG + SEQUENCE)
    write_steps(root, {"01-willkommen.md": STEP1, "02-tipps.md": STEP2, "03-stimmen.md": STEP3})
    for address in ("anna@example.de", "ben@example.de", "cem@example.de"):
        join(root, address, T0)
    run(root, T0)  # all three get step 01 and wait for step 02, three days later
    return root


def steps_shown(cli, root: Path, at) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """step key -> its row of `sequences status --format json` at `at`."""
    result = cli(root, "sequences", "status", "--format", "json", "--now", at.isoformat())
    assert result.exit_code == 0, result.output
    [welcome] = json.loads(result.output)["sequences"]
    return {step["key"]: step for step in welcome["steps"]}


def waiting(step: dict[str, Any]) -> list[str]:
    return [person["email"] for person in step["waiting_people"]]


def test_a_reader_who_joined_while_a_step_did_not_load_is_shown_waiting(root, cli) -> None:  # type: ignore[no-untyped-def]
    step1 = root / "sequences" / "welcome" / "01-willkommen.md"
    step1.write_text(STEP1.replace("title: Willkommen", "title: Willkommen: hier"), "utf-8")
    join(root, "gina@example.de", T0 + timedelta(hours=1))  # no step to name: it does not load
    step1.write_text(STEP1, "utf-8")

    at = T0 + timedelta(hours=2)
    shown = steps_shown(cli, root, at)
    assert (shown["willkommen"]["waiting"], shown["willkommen"]["due"]) == (1, 1)
    assert waiting(shown["willkommen"]) == ["gina@example.de"]
    assert (shown["tipps"]["waiting"], shown["tipps"]["due"]) == (3, 0)
    table = cli(root, "sequences", "status", "--now", at.isoformat())
    assert "waiting: gina@example.de" in table.output

    run(root, at)  # what status said: Gina gets step 01, nobody else anything
    assert [(a, s) for a, s in received(root) if a == "gina@example.de"] == [
        ("gina@example.de", WELCOME)
    ]
    assert len(received(root)) == 4


def test_readers_waiting_for_a_removed_step_are_shown_under_the_next_one(root, cli) -> None:  # type: ignore[no-untyped-def]
    write_steps(root, {"01-willkommen.md": STEP1, "03-stimmen.md": STEP3})
    at = T0 + timedelta(days=5)  # step 03 comes 4 days after step 01
    shown = steps_shown(cli, root, at)
    assert (shown["stimmen"]["waiting"], shown["stimmen"]["due"]) == (3, 3)
    assert shown["stimmen"]["next_due"] == (T0 + timedelta(days=4)).isoformat()
    assert sorted(waiting(shown["stimmen"])) == [
        "anna@example.de",
        "ben@example.de",
        "cem@example.de",
    ]

    run(root, at)
    assert sorted(a for a, s in received(root) if s == VOICES) == [
        "anna@example.de",
        "ben@example.de",
        "cem@example.de",
    ]


def test_readers_waiting_for_a_renamed_step_are_shown_under_its_new_name(root, cli) -> None:  # type: ignore[no-untyped-def]
    # Nobody had "tipps" yet, so this is no suspected rename: the run sends "tricks".
    write_steps(root, {"01-willkommen.md": STEP1, "02-tricks.md": STEP2, "03-stimmen.md": STEP3})
    at = T0 + timedelta(days=3, hours=1)
    shown = steps_shown(cli, root, at)
    assert (shown["tricks"]["waiting"], shown["tricks"]["due"]) == (3, 3)
    assert shown["stimmen"]["waiting"] == 0

    run(root, at)
    tips = [a for a, s in received(root) if s == "Drei Tipps für den Anfang"]
    assert sorted(tips) == ["anna@example.de", "ben@example.de", "cem@example.de"]
    after = steps_shown(cli, root, at)
    assert (after["tricks"]["waiting"], after["stimmen"]["waiting"]) == (0, 3)
