"""Issue 15 item 8: an issue's web version is public only once it has really gone out, at
its scheduled `send_at` or at the first accepted delivery. Sends through the real CLI to the
fake SendGrid; pages fetched over real HTTP; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.issues import is_published, published_issues
from newsletter.web import create_app
from tests.conftest import EXAMPLE_ISSUE
from tests.support import archive as support
from tests.support.archive import add_readers, send
from tests.support.web import live_server

ISSUE = EXAMPLE_ISSUE.stem
SLUG = "meta-ki-creator"
sg = support.sg  # the fake SendGrid fixture


def status_of(project: Path, path: str) -> int:
    proj = Project.load(project)
    with live_server(create_app(proj)) as base:
        return httpx.get(base + path).status_code


@pytest.mark.slow
def test_a_send_scheduled_70_hours_ahead_is_not_public_until_then(project, db, sg, cli):
    add_readers(project)
    result = send(cli, project, ISSUE, "--schedule", "in 70h")
    assert result.exit_code == 0, result.output
    assert status_of(project, f"/issues/{SLUG}") == 404
    engine = open_engine(Project.load(project).database_url)
    assert published_issues(engine) == []
    later = datetime.now(UTC) + timedelta(hours=70, minutes=5)
    assert is_published(engine, SLUG, now=later)
    [published] = published_issues(engine, now=later)
    assert published.slug == SLUG
    # The date used is the scheduled time, not when the command ran.
    assert abs(published.published_at - (later - timedelta(minutes=5))) < timedelta(minutes=2)


@pytest.mark.slow
def test_an_issue_rejected_for_every_recipient_is_not_public(project, db, sg, cli):
    add_readers(project, 3)
    sg.inject("400", errors=[{"message": "The from address is blocked", "field": "from"}])
    result = send(cli, project, ISSUE)
    assert result.exit_code == 1, result.output
    assert status_of(project, f"/issues/{SLUG}") == 404
    engine = open_engine(Project.load(project).database_url)
    assert not is_published(engine, SLUG)
    # Once a resend is accepted, the issue is public.
    assert send(cli, project, ISSUE, "--resume").exit_code == 0
    assert is_published(engine, SLUG)
    assert status_of(project, f"/issues/{SLUG}") == 200


@pytest.mark.slow
@pytest.mark.parametrize("how", [("--dry-run",), ("--outbox", "OUTBOX")])
def test_dry_runs_and_outbox_sends_are_not_public(project, db, sg, cli, how, tmp_path):
    add_readers(project)
    args = [str(tmp_path / "out") if a == "OUTBOX" else a for a in how]
    result = send(cli, project, ISSUE, *args)
    assert result.exit_code == 0, result.output
    assert status_of(project, f"/issues/{SLUG}") == 404
    assert published_issues(open_engine(Project.load(project).database_url)) == []


def test_test_copies_are_not_public(project, db, sg, cli):
    result = cli(project, "send", ISSUE, "--test", "jens@example.com")
    assert result.exit_code == 0, result.output
    assert status_of(project, f"/issues/{SLUG}") == 404


def test_an_accepted_send_is_public_at_once(project, db, sg, cli):
    add_readers(project)
    before = datetime.now(UTC)
    assert send(cli, project, ISSUE).exit_code == 0
    assert status_of(project, f"/issues/{SLUG}") == 200
    [published] = published_issues(open_engine(Project.load(project).database_url))
    assert before - timedelta(seconds=5) <= published.published_at <= datetime.now(UTC)
