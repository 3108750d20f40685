"""SMTP as a first-class path (issue 26, item 3), against a real aiosmtpd server and both
databases: a 250 counts as delivered ("accepted by the mail server") in `stats`, `report` and
the archive; a 5xx at RCPT marks the reader bounced and suppressed, as a SendGrid bounce
event does (through the same `events.ingest`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.issues import is_published
from newsletter.store.schema import deliveries, events, subscribers
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.smtp_server import FakeSmtp

ISSUE = EXAMPLE_ISSUE.stem
SECOND = """---
title: Die zweite Ausgabe
date: 2024-07-09
language: de
---
Noch ein „Brief“ für alle.
"""


@pytest.fixture
def smtp(monkeypatch):
    with FakeSmtp() as server:
        monkeypatch.setenv("NEWSLETTER_SEND_BACKOFF", "0.01")
        yield server


@pytest.fixture
def root(make_project, smtp, database_url, monkeypatch) -> Path:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    config = CONFIG + (
        '\n[sending]\ntransport = "smtp"\nbatch_size = 2\n'
        f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "none"\n'
    )
    root = make_project(config=config, issues={"2024-07-09-zweite.md": SECOND})
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    engine = open_engine(Project.load(root).database_url)
    for address in ("anna@example.org", "bernd@example.org", "carla@example.org"):
        add_subscriber(engine, address)
    return root


def state_of(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(subscriber status, delivery state) by address."""
    engine = open_engine(Project.load(root).database_url)
    with engine.connect() as conn:
        status = dict(conn.execute(select(subscribers.c.email, subscribers.c.status)).all())
        ledger = dict(
            conn.execute(
                select(subscribers.c.email, deliveries.c.state).join(
                    deliveries, deliveries.c.subscriber_id == subscribers.c.id
                )
            ).all()
        )
    return status, ledger


def test_accepted_counts_as_delivered_and_a_refused_address_bounces(cli, root, smtp):
    smtp.inject(
        "RCPT", "550 5.1.1 <bernd@example.org>: Mailbox unknown", address="bernd@example.org"
    )
    smtp.inject("RCPT", "554 5.7.1 Rejected by policy", address="carla@example.org")
    sent = cli(root, "send", ISSUE, "--yes")
    assert sent.exit_code == 0, sent.output
    assert [m.rcpt_tos for m in smtp.messages] == [["anna@example.org"]]

    status, ledger = state_of(root)
    assert status == {
        "anna@example.org": "subscribed",
        "bernd@example.org": "bounced",  # the address is dead: as SendGrid's bounce event
        "carla@example.org": "subscribed",  # a policy refusal (5.7.x) is not the address
    }
    assert ledger == {
        "anna@example.org": "accepted",  # what the server said; stats count it delivered
        "bernd@example.org": "bounced",
        "carla@example.org": "failed",
    }

    detail = cli(root, "stats", ISSUE)
    assert detail.exit_code == 0, detail.output
    lines = {line.split()[0]: line for line in detail.output.splitlines()[1:] if line.strip()}
    assert lines["recipients"].split()[1] == "1"
    assert lines["delivered"].split()[1] == "1"
    assert "(accepted by the mail server, until a bounce says otherwise)" in lines["delivered"]
    assert lines["bounced"].split()[1] == "1"

    data = json.loads(cli(root, "stats", ISSUE, "--format", "json").output)
    assert data["counts"]["delivered"] == 1
    assert data["delivered_means"] == "accepted by the mail server"

    overview = cli(root, "stats")
    assert "1†" in overview.output
    assert "delivered means accepted by the mail server" in overview.output

    engine = open_engine(Project.load(root).database_url)
    with engine.connect() as conn:
        kept = conn.execute(select(events.c.event, events.c.detail)).all()
    bounce = next(detail for name, detail in kept if name == "bounce")
    assert bounce["status"] == "5.1.1"
    assert "bernd@example.org" not in json.dumps(bounce)  # no address in the stored event
    assert is_published(engine, "meta-ki-creator")


def test_a_bounced_reader_gets_no_later_issue(cli, root, smtp):
    smtp.inject("RCPT", "550 5.1.1 Mailbox unknown", address="bernd@example.org")
    assert cli(root, "send", ISSUE, "--yes").exit_code == 0
    smtp.messages.clear()
    second = cli(root, "send", "2024-07-09-zweite", "--yes")
    assert second.exit_code == 0, second.output
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == [
        "anna@example.org",
        "carla@example.org",
    ]


def test_a_refusal_after_data_is_not_a_bounce(cli, root, smtp):
    smtp.inject("DATA", "550 5.6.0 Message content rejected", address="anna@example.org")
    assert cli(root, "send", ISSUE, "--yes").exit_code == 0
    status, ledger = state_of(root)
    assert status["anna@example.org"] == "subscribed"
    assert ledger["anna@example.org"] == "failed"
    assert ledger["bernd@example.org"] == "accepted"


def test_report_marks_delivered_as_accepted(cli, root, tmp_path):
    assert cli(root, "send", ISSUE, "--yes").exit_code == 0
    out = tmp_path / "report.html"
    assert cli(root, "report", "-o", str(out)).exit_code == 0
    page = out.read_text("utf-8")
    assert "3†" in page
    assert "„zugestellt“ heißt vom Mailserver angenommen" in page


WELCOME = """\
---
title: Willkommen
delay: 0
---

Hallo, schön, dass du da bist!
"""


def test_a_welcome_step_over_smtp_bounces_and_counts_alike(cli, root, smtp):
    """The sequences' own delivery path applies the answers too."""
    config = root / "newsletter.toml"
    config.write_text(
        config.read_text("utf-8") + '\n[sequences.welcome]\ntrigger = "subscribed"\n', "utf-8"
    )
    folder = root / "sequences" / "welcome"
    folder.mkdir(parents=True)
    (folder / "01-willkommen.md").write_text(WELCOME, "utf-8")
    started = cli(root, "sequences", "start", "welcome", "--existing", "--yes")
    assert started.exit_code == 0, started.output
    smtp.inject("RCPT", "550 5.1.1 Mailbox unknown", address="carla@example.org")
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    ran = cli(root, "sequences", "run", "--now", later)
    assert ran.exit_code == 0, ran.output
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == [
        "anna@example.org",
        "bernd@example.org",
    ]
    status, _ = state_of(root)
    assert status["carla@example.org"] == "bounced"
    detail = json.loads(
        cli(root, "stats", "sequences/welcome/willkommen", "--format", "json").output
    )
    assert detail["counts"]["delivered"] == 2
    assert detail["counts"]["bounced"] == 1
