"""`sequences start NAME --existing` starts only the readers the sequence is for, as a new
reader would start it: a sequence limited to a tag (`tag = "leser"`, or `trigger =
"tagged:kunde"`) only those with that tag. When it starts nobody it says why: the limits
match nobody, or everyone they match has been in it. Before, it offered everyone on the list
to a tag-limited sequence, and said "every subscriber has been in it" when a --where matched
nobody. SQLite and PostgreSQL, through the CLI."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG
from tests.support.sequences import STEP1, T0, received, write_steps

SEQUENCES = """
[sequences.welcome]
trigger = "subscribed"

[sequences.kunden]
trigger = "tagged:kunde"

[sequences.leser]
trigger = "subscribed"
tag = "leser"
"""


@pytest.fixture
def root(make_project, database_url, monkeypatch) -> Path:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(CONFIG + SEQUENCES)
    write_steps(root, {"01-willkommen.md": STEP1}, "welcome")
    write_steps(root, {"01-danke.md": STEP1.replace("Willkommen", "Danke")}, "kunden")
    write_steps(root, {"01-hallo.md": STEP1.replace("Willkommen", "Hallo Leser")}, "leser")
    # On the list before the sequences were enabled: added straight to the store, as an
    # import would, so nothing started.
    engine = open_engine(Project.load(root).database_url)
    add_subscriber(engine, "alt@example.de", fields={"stadt": "Bad Tölz"})
    add_subscriber(engine, "kunde@example.de", tags=["kunde"])
    add_subscriber(engine, "leserin@example.de", tags=["leser"])
    return root


def start(cli, root: Path, *args: str) -> str:  # type: ignore[no-untyped-def]
    result = cli(root, "sequences", "start", *args, "--existing", "--yes", "--now", T0.isoformat())
    assert result.exit_code == 0, result.output
    return str(result.output)


def sent(cli, root: Path) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    ran = cli(root, "sequences", "run", "--now", (T0 + timedelta(minutes=1)).isoformat())
    assert ran.exit_code == 0, ran.output
    return sorted(received(root))


def test_a_filter_that_matches_nobody_says_so(root, cli) -> None:  # type: ignore[no-untyped-def]
    nobody = start(cli, root, "welcome", "--where", 'field:stadt="Niemandsland"')
    assert nobody == (
        'Nobody to start welcome for: no subscriber matches --where field:stadt="Niemandsland".\n'
    )
    assert start(cli, root, "welcome", "--where", 'field:stadt="Bad Tölz"').startswith(
        "Started welcome for 1 subscriber;"
    )
    again = start(cli, root, "welcome", "--where", 'field:stadt="Bad Tölz"')
    assert again == (
        "Nobody to start welcome for: every subscriber who matches "
        '--where field:stadt="Bad Tölz" has been in it.\n'
    )
    assert sent(cli, root) == [("alt@example.de", "Willkommen bei „Jens' Briefing“")]


def test_a_sequence_limited_to_a_tag_starts_only_who_has_it(root, cli) -> None:  # type: ignore[no-untyped-def]
    assert start(cli, root, "kunden").startswith("Started kunden for 1 subscriber;")
    assert start(cli, root, "leser").startswith("Started leser for 1 subscriber;")
    assert sent(cli, root) == [
        ("kunde@example.de", "Danke bei „Jens' Briefing“"),
        ("leserin@example.de", "Hallo Leser bei „Jens' Briefing“"),
    ]
    assert start(cli, root, "leser") == (
        "Nobody to start leser for: every subscriber who has the tag leser "
        "(the tag of [sequences.leser]) has been in it.\n"
    )
    assert start(cli, root, "leser", "--tag", "kunde") == (
        "Nobody to start leser for: no subscriber has the tag leser "
        "(the tag of [sequences.leser]) and has the tag kunde (--tag).\n"
    )
