"""Coming back through the signed link (`POST /resubscribe/<token>` from the unsubscribed page)
stores a consent record that proves the renewed consent (the token proves the address, the
click the wish), with the truncated IP and user agent as the form's records have; before, the
reader was subscribed again with no trace of it in `subscribers show`. SQLite and PostgreSQL,
over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from newsletter import tokens
from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import find_subscriber
from newsletter.web import create_app
from tests.conftest import TEST_SECRET
from tests.support.web import live_server, sent_issue

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"


@pytest.fixture
def reader(project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, cli):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    assert (
        cli(project, "subscribers", "add", "jörg.weg@example.de", "--name", "Jörg Weg").exit_code
        == 0
    )
    proj = Project.load(project)
    engine = open_engine(proj.database_url)
    jörg = find_subscriber(engine, "jörg.weg@example.de")
    issue_id = sent_issue(engine, [jörg.id])
    token = tokens.make_token(tokens.UNSUBSCRIBE, jörg.id, issue_id, key=TEST_SECRET)
    return create_app(proj, engine), token


def test_a_resubscribe_through_the_link_is_recorded_as_proven_consent(reader, project, cli) -> None:  # type: ignore[no-untyped-def]
    app, token = reader
    before = cli(project, "subscribers", "show", "jörg.weg@example.de")
    assert "consent:             NO EVIDENCE" in before.output  # added by the author, no text
    with live_server(app) as base:
        headers = {"User-Agent": BROWSER}
        assert httpx.post(f"{base}/unsubscribe/{token}", headers=headers).status_code == 200
        for _ in range(2):  # the second press changes nothing: one record
            back = httpx.post(f"{base}/resubscribe/{token}", headers=headers)
            assert back.status_code == 200 and "Willkommen zurück" in back.text

    shown = cli(project, "subscribers", "show", "jörg.weg@example.de")
    assert shown.exit_code == 0, shown.output
    assert "status:              subscribed" in shown.output
    assert "consent:             proven" in shown.output
    lines = shown.output.splitlines()
    [at] = [i for i, line in enumerate(lines) if line.endswith("  resubscribe (proves consent)")]
    assert lines[at + 1 : at + 5] == [
        "    source:          link",
        "    ip:              127.0.0.0",
        f"    user agent:      {BROWSER}",
        "    status_before:   unsubscribed",
    ]
    data = json.loads(
        cli(project, "subscribers", "show", "jörg.weg@example.de", "--format", "json").output
    )
    assert [r["kind"] for r in data["consent"]] == ["added", "resubscribe"]
    unproven = cli(project, "subscribers", "list", "--no-consent-evidence", "--format", "csv")
    assert "jörg.weg@example.de" not in unproven.output
