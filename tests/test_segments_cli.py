"""Segments at the command line: mistakes in one line pointing at the offending part, the
config checked when it loads, and a send to a segment through the local SendGrid server whose
membership is frozen when planned and which `sends` and `stats ISSUE` name afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.project import Project
from newsletter.segments import Segment
from newsletter.sending.execute import execute
from newsletter.sending.plan import SendRequest, plan_send
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE

ISSUE = EXAMPLE_ISSUE.stem


def with_segments(where: str, name: str = "aktive") -> str:
    return CONFIG + f'\n[segments."{name}"]\nwhere = {json.dumps(where, ensure_ascii=False)}\n'


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            "clikced:ever",
            '--where: unknown term "clikced:ever" (at column 1); terms are tag:, field:',
        ),
        ("tag:leser clicked:last-x", '--where: cannot read "clicked:last-x" (at column 11); use'),
        ("tag:a OR", "--where: nothing after OR (at column 7); put a term there"),
        ("(tag:a OR tag:b", "--where: unclosed ( (at column 1); close it with )"),
        ("tag:a)", "--where: unmatched ) (at column 6)"),
        ('field:stadt="Bad Tölz', '--where: unclosed quote (at column 13); close it with "'),
        ("joined:>2026-02-30", '--where: cannot read "joined:>2026-02-30" (at column 1); the date'),
        ("status:aktiv", '--where: cannot read "status:aktiv" (at column 1); unknown status'),
        ("Köln", '--where: "Köln" is not a term (at column 1); terms are'),
    ],
)
def test_a_mistake_is_one_line_naming_the_spot(project, cli, where, message):
    result = cli(project, "subscribers", "count", "--where", where)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith("Error: " + message), lines[0]


def test_a_broken_segment_in_the_config_stops_every_command(make_project, cli):
    root = make_project(with_segments("status:subscribed clikced:ever"))
    result = cli(root, "subscribers", "count")
    assert result.exit_code == 1
    assert result.output.strip() == (
        f'Error: {root / "newsletter.toml"}: segment "aktive": unknown term "clikced:ever" '
        "(at column 19); terms are tag:, field:, status:, source:, joined:, consent:, clicked:, "
        "replied:, opened:, received: (e.g. tag:leser clicked:last-5), joined by spaces, OR, ( ) "
        "and -"
    )


def test_a_segment_table_needs_where_and_nothing_else(make_project, cli):
    root = make_project(CONFIG + '\n[segments.x]\nwo = "tag:a"\n')
    result = cli(root, "segments", "list")
    assert result.exit_code == 1
    assert "unknown key `wo` in [segments.x]; known keys: where" in result.output


def test_unknown_segment_and_both_options(project, cli):
    result = cli(project, "subscribers", "list", "--segment", "aktive")
    assert result.exit_code == 1
    assert 'no segment "aktive" (defined: none yet); add [segments.aktive]' in result.output
    both = cli(project, "subscribers", "count", "--segment", "a", "--where", "tag:a")
    assert both.exit_code == 2
    assert "use --segment NAME or --where EXPR, not both" in both.output


def test_segments_list_without_segments(project, cli):
    result = cli(project, "segments", "list")
    assert result.exit_code == 0
    assert result.output.startswith("No segments yet")


@pytest.fixture
def koeln(make_project, database_url, monkeypatch) -> Path:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(with_segments('field:stadt="Köln" -tag:test', name="köln"))
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    engine = open_engine(Project.load(root).database_url)
    add_subscriber(engine, "jörg@example.de", fields={"stadt": "Köln"})
    add_subscriber(engine, "anna@example.de", fields={"stadt": "Köln"})
    add_subscriber(engine, "tester@example.de", fields={"stadt": "Köln"}, tags=["test"])
    add_subscriber(engine, "bert@example.de", fields={"stadt": "Bad Tölz"})
    add_subscriber(engine, "weg@example.de", fields={"stadt": "Köln"}, status="unsubscribed")
    return root


def test_send_to_a_segment_reaches_its_subscribed_members_and_says_so(koeln, cli, sg):
    result = cli(koeln, "send", ISSUE, "--segment", "köln", "--yes")
    assert result.exit_code == 0, result.output
    assert (
        'Recipients: 2 subscribed in segment köln (field:stadt="Köln" -tag:test)' in result.output
    )
    assert sorted(sg.recipients()) == ["anna@example.de", "jörg@example.de"]
    sends = cli(koeln, "sends")
    assert 'to segment köln (field:stadt="Köln" -tag:test)' in sends.output
    assert "web archive: not published (sent to segment köln" in sends.output
    shown = json.loads(cli(koeln, "sends", "--format", "json").output)
    assert shown[0]["segment_name"] == "köln"
    assert shown[0]["segment_where"] == 'field:stadt="Köln" -tag:test'
    stats = cli(koeln, "stats", "meta-ki-creator")
    assert stats.exit_code == 0, stats.output
    assert 'sent to segment köln (field:stadt="Köln" -tag:test) (send 1)' in stats.output
    data = json.loads(cli(koeln, "stats", "meta-ki-creator", "--format", "json").output)
    assert data["segments"] == [
        {"send": 1, "name": "köln", "where": 'field:stadt="Köln" -tag:test'}
    ]


def test_the_definition_shown_is_the_one_the_send_used(koeln, cli, sg):
    assert (
        cli(koeln, "send", ISSUE, "--where", "tag:nobody OR field:stadt~tölz", "--yes").exit_code
        == 0
    )
    config = koeln / "newsletter.toml"
    config.write_text(config.read_text("utf-8").replace("-tag:test", ""), "utf-8")
    sends = cli(koeln, "sends")
    assert "to --where tag:nobody OR field:stadt~tölz" in sends.output
    assert sg.recipients() == ["bert@example.de"]


def test_the_plan_freezes_who_is_in_the_segment(koeln, sg):
    """Someone who joins the segment between counting and sending waits for the next send."""
    project = Project.load(koeln)
    segment = Segment.parse('field:stadt="Köln" -tag:test', "köln")
    plan = plan_send(project, ISSUE, SendRequest(segment=segment))
    assert plan.recipients == 2
    engine = open_engine(project.database_url)
    add_subscriber(engine, "neu@example.de", fields={"stadt": "Köln"})
    report = execute(plan)
    assert report.accepted == 2
    assert sorted(sg.recipients()) == ["anna@example.de", "jörg@example.de"]
    with engine.connect() as conn:
        assert conn.execute(select(schema.deliveries.c.subscriber_id)).scalars().all() != []


def test_sequences_start_existing_for_a_segment(koeln, cli):
    sequence = koeln / "sequences" / "willkommen"
    sequence.mkdir(parents=True)
    (sequence / "01-hallo.md").write_text(
        "---\ntitle: Hallo\nsubject: Hallo\ndelay: 0d\n---\n\nHallo!\n", "utf-8"
    )
    config = koeln / "newsletter.toml"
    config.write_text(
        config.read_text("utf-8") + '\n[sequences.willkommen]\ntrigger = "subscribed"\n', "utf-8"
    )
    result = cli(
        koeln, "sequences", "start", "willkommen", "--existing", "--segment", "köln", "--yes"
    )
    assert result.exit_code == 0, result.output
    assert "Started willkommen for 2 subscribers" in result.output


def test_opened_without_open_tracking_warns(project, cli):
    result = cli(project, "subscribers", "count", "--where", "-opened:ever")
    assert result.exit_code == 0
    assert "Warning: --where uses opened:, but [tracking] opens is off" in result.output
    quiet = cli(project, "subscribers", "count", "--where", "clicked:ever")
    assert "Warning" not in quiet.output
