"""`newsletter sync` against the fake SendGrid v3 server on loopback (real HTTP, paging)."""

from __future__ import annotations

import pytest

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber, find_subscriber
from tests.sendgrid_server import FakeSendGrid


@pytest.fixture
def sendgrid(monkeypatch):
    with FakeSendGrid(api_key="SG.sync-test") as server:
        monkeypatch.setenv("SENDGRID_API_HOST", server.url)
        monkeypatch.setenv("SENDGRID_API_KEY", "SG.sync-test")
        yield server


@pytest.mark.slow
def test_sync_applies_every_list_page_by_page(project, cli, sendgrid, database_url, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    engine = open_engine(Project.load(project).database_url)
    for name in ("unsub", "bounce", "spam", "invalid", "keep", "already"):
        add_subscriber(engine, f"{name}@example.de")
    add_subscriber(engine, "complained@example.de", status="complained")
    many = [{"email": f"other{i}@example.org", "created": 1700000000} for i in range(1200)]
    sendgrid.suppressions["unsubscribes"] = [
        *many,
        {"email": "UNSUB@example.de", "created": 1700000000},
        {"email": "complained@example.de", "created": 1700000000},  # never weakened
    ]
    sendgrid.suppressions["bounces"] = [
        {
            "email": "bounce@example.de",
            "created": 1700000000,
            "reason": "550 unknown",
            "status": "5.1.1",
        }
    ]
    sendgrid.suppressions["spam_reports"] = [
        {"email": "spam@example.de", "created": 1700000000, "ip": "10.0.0.1"}
    ]
    sendgrid.suppressions["invalid_emails"] = [
        {"email": "invalid@example.de", "created": 1700000000, "reason": "Mail domain mentioned"}
    ]
    result = cli(project, "sync")
    assert result.exit_code == 0, result.output
    status = {
        name: find_subscriber(engine, f"{name}@example.de").status
        for name in ("unsub", "bounce", "spam", "invalid", "keep", "complained")
    }
    assert status == {
        "unsub": "unsubscribed",
        "bounce": "bounced",
        "spam": "complained",
        "invalid": "bounced",
        "keep": "subscribed",
        "complained": "complained",
    }
    assert "unsubscribes" in result.output and "1202 at SendGrid" in result.output
    assert "1 now unsubscribed" in result.output
    unsub_pages = [r for r in sendgrid.suppression_requests if "unsubscribes" in r]
    assert len(unsub_pages) == 3  # 500 + 500 + 202
    assert "offset=1000" in unsub_pages[-1]

    again = cli(project, "sync")  # idempotent
    assert again.exit_code == 0 and "0 now unsubscribed" in again.output


def test_sync_errors_are_one_line(project, cli, sendgrid, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong")
    result = cli(project, "sync")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: SendGrid rejected the API key (check SENDGRID_API_KEY)"
    assert "SG.wrong" not in result.output

    monkeypatch.delenv("SENDGRID_API_KEY")
    result = cli(project, "sync")
    assert result.exit_code == 1 and "SENDGRID_API_KEY is not set" in result.output

    sendgrid.stop()
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.sync-test")
    result = cli(project, "sync")
    assert result.exit_code == 1 and "cannot reach SendGrid" in result.output
    assert len(result.output.strip().splitlines()) == 1
