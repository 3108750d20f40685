"""`newsletter stats`: issue lookup, empty sends, and counts from web unsubscribes and replies."""

from __future__ import annotations

import json

from starlette.testclient import TestClient

from newsletter import tokens
from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from newsletter.web import create_app
from tests.conftest import TEST_SECRET
from tests.support.web import sent_issue


def test_stats_of_an_unsent_or_unknown_issue_is_a_one_line_error(project, cli):
    result = cli(project, "stats", "meta-ki-creator")
    assert result.exit_code == 1
    assert "has not been sent yet" in result.output
    result = cli(project, "stats", "no-such-issue")
    assert result.exit_code == 1 and "no such issue" in result.output


def test_stats_found_by_file_and_counts_link_unsubscribes(project, cli):
    proj = Project.load(project)
    engine = open_engine(proj.database_url)
    people = [add_subscriber(engine, f"p{i}@example.de") for i in range(4)]
    issue_id = sent_issue(engine, [p.id for p in people])
    client = TestClient(create_app(proj, engine))
    for person in people[:2]:
        token = tokens.make_token(tokens.UNSUBSCRIBE, person.id, issue_id, key=TEST_SECRET)
        assert client.post(f"/unsubscribe/{token}").status_code == 200
        assert client.post(f"/unsubscribe/{token}").status_code == 200  # counted once
    result = cli(project, "stats", "issues/2024-07-meta-ki-creator.md", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["issue"] == "meta-ki-creator"
    assert data["counts"]["recipients"] == 4
    assert data["counts"]["unsubscribed"] == 2
    assert data["counts"]["delivered"] == 0
    assert data["rates"]["unsubscribed"] is None  # nothing delivered yet: no rate, not 0/0
    table = cli(project, "stats", "2024-07-meta-ki-creator")
    assert "unsubscribed" in table.output and "Warum Metas KI Creator" in table.output
