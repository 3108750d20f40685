"""`send --resend new` after a send to a segment goes to the readers who joined the segment
since, not to everyone who joined the list since."""

from __future__ import annotations

import json

from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE

ISSUE = EXAMPLE_ISSUE.stem
SEGMENT = 'field:stadt="Köln"'


def test_resend_new_keeps_to_the_first_sends_segment(issue_project, database_url, cli, sg):
    config = CONFIG + "\n[sending]\nresend_after = 0\n"
    config += f'\n[segments."köln"]\nwhere = {json.dumps(SEGMENT, ensure_ascii=False)}\n'
    root = issue_project(config)
    engine = open_engine(database_url)
    add_subscriber(engine, "jörg@example.de", fields={"stadt": "Köln"})
    add_subscriber(engine, "bert@example.de", fields={"stadt": "Bad Tölz"})
    first = cli(root, "send", ISSUE, "--segment", "köln", "--yes")
    assert first.exit_code == 0, first.output
    assert sg.recipients() == ["jörg@example.de"]

    add_subscriber(engine, "neu-köln@example.de", fields={"stadt": "Köln"})
    add_subscriber(engine, "neu-tölz@example.de", fields={"stadt": "Bad Tölz"})
    again = cli(root, "send", ISSUE, "--resend", "new", "--yes")
    assert again.exit_code == 0, again.output
    assert sg.recipients() == ["jörg@example.de", "neu-köln@example.de"]


def test_a_resend_of_a_segment_send_is_recorded_with_its_segment(
    issue_project, database_url, cli, sg
):
    """The resend went to the right readers, but was recorded as "to the whole list": `sends`
    said "web archive: published (sent to the whole list)", and `archive build` published
    an issue meant for one segment."""
    config = CONFIG + "\n[sending]\nresend_after = 0\n"
    config += f'\n[segments."köln"]\nwhere = {json.dumps(SEGMENT, ensure_ascii=False)}\n'
    root = issue_project(config)
    engine = open_engine(database_url)
    add_subscriber(engine, "jörg@example.de", fields={"stadt": "Köln"})
    assert cli(root, "send", ISSUE, "--segment", "köln", "--yes").exit_code == 0
    add_subscriber(engine, "neu-köln@example.de", fields={"stadt": "Köln"})
    assert cli(root, "send", ISSUE, "--resend", "new", "--yes").exit_code == 0

    shown = cli(root, "sends", ISSUE).output
    assert "sent to the whole list" not in shown, shown
    lines = [line.strip() for line in shown.splitlines()]
    assert lines.count('to segment köln (field:stadt="Köln")') == 2, shown


def test_resume_goes_on_with_the_first_sends_segment(issue_project, database_url, cli, sg):
    """`send ISSUE --resume`, which `send` prints after an interruption, mailed the whole
    list when the first send went to a segment or a tag."""
    config = CONFIG + f'\n[segments."köln"]\nwhere = {json.dumps(SEGMENT, ensure_ascii=False)}\n'
    root = issue_project(config)
    engine = open_engine(database_url)
    add_subscriber(engine, "jörg@example.de", fields={"stadt": "Köln"}, tags=["leser"])
    add_subscriber(engine, "bert@example.de", fields={"stadt": "Bad Tölz"}, tags=["leser"])
    assert cli(root, "send", ISSUE, "--segment", "köln", "--yes").exit_code == 0
    assert sg.recipients() == ["jörg@example.de"]

    add_subscriber(engine, "neu-köln@example.de", fields={"stadt": "Köln"})
    add_subscriber(engine, "neu-tölz@example.de", fields={"stadt": "Bad Tölz"})
    resumed = cli(root, "send", ISSUE, "--resume", "--yes")
    assert resumed.exit_code == 0, resumed.output
    assert sg.recipients() == ["jörg@example.de", "neu-köln@example.de"]

    other = cli(root, "send", ISSUE, "--resume", "--tag", "leser", "--yes")
    assert other.exit_code == 1
    assert other.output.startswith(
        "Error: --resume goes on with the audience of send 2 (segment köln "
        '(field:stadt="Köln")); leave out --tag, --segment and --where'
    ), other.output
    assert sg.recipients() == ["jörg@example.de", "neu-köln@example.de"]
