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
