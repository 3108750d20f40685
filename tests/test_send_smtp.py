"""SMTP, the second transport, against a real SMTP server on 127.0.0.1 (aiosmtpd) with
STARTTLS (a self-signed certificate made in the test) and AUTH: the same ledger, lease,
--resume, --include-uncertain and already-sent guard as SendGrid, and one-line errors."""

from __future__ import annotations

import email
import re
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.schema import deliveries, sends
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.smtp_server import FakeSmtp
from tests.support.smtp import PASSWORD, smtp_config

ISSUE = EXAMPLE_ISSUE.stem


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch):
    with FakeSmtp(users={"jens": PASSWORD}, tls=True) as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", PASSWORD)
        monkeypatch.setenv("NEWSLETTER_SEND_BACKOFF", "0.01")
        yield server


@pytest.fixture
def root(make_project, smtp, database_url, monkeypatch) -> Path:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(config=smtp_config(smtp))
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    return root


def add_people(root: Path, n: int, start: int = 0) -> list[str]:
    engine = open_engine(Project.load(root).database_url)
    out = []
    for i in range(start, start + n):
        add_subscriber(engine, f"leser{i}@example.org", first_name=f"Leser{i}")
        out.append(f"leser{i}@example.org")
    return out


def states(root: Path) -> dict[str, str]:
    from newsletter.store.schema import subscribers

    engine = open_engine(Project.load(root).database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(subscribers.c.email, deliveries.c.state).join(
                subscribers, subscribers.c.id == deliveries.c.subscriber_id
            )
        ).all()
    return {r.email: r.state for r in rows}


def parsed(message) -> email.message.EmailMessage:
    return email.message_from_bytes(message.data, policy=policy.default)  # type: ignore[return-value]


@pytest.mark.slow
def test_send_over_starttls_with_auth_sets_every_header(root, smtp, cli):
    people = add_people(root, 5)
    result = cli(root, "send", ISSUE, "--yes")
    assert result.exit_code == 0, result.output
    assert "Transport:  smtp (127.0.0.1:" in result.output
    assert "5 accepted by the SMTP server" in result.output
    assert PASSWORD not in result.output
    assert sorted(smtp.recipients()) == people
    assert set(smtp.logins) == {"jens"}
    by_to = {m.rcpt_tos[0]: parsed(m) for m in smtp.messages}
    msg = by_to["leser1@example.org"]
    assert msg["Subject"] == "Meta, KI und das Ende der Creator?"
    assert msg["Reply-To"] == "jens@example.com"
    assert msg["Date"] and re.fullmatch(r"<\w+@example\.com>", msg["Message-ID"])
    assert re.fullmatch(
        r"<https://news\.example\.com/unsubscribe/[\w.-]+>", msg["List-Unsubscribe"]
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"] == '"Jens\' Briefing" <jens-briefing.news.example.com>'
    assert msg["Precedence"] == "bulk"
    assert msg["Feedback-ID"].startswith("meta-ki-creator:")
    assert "X-Custom-Args" not in msg and "X-Categories" not in msg
    text = msg.get_body(("plain",)).get_content()
    assert "Hallo Leser1," in text and "außerhalb" in text
    assert msg["List-Unsubscribe"][1:-1] in text  # the footer link is the header's URL
    # The ledger: everyone accepted, each with the Message-ID it was sent with.
    engine = open_engine(Project.load(root).database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.state, deliveries.c.message_id)).all()
    assert {r.state for r in rows} == {"accepted"}
    assert {r.message_id for r in rows} == {str(m["Message-ID"]) for m in by_to.values()}
    # The already-sent guard, as for SendGrid.
    again = cli(root, "send", ISSUE, "--yes")
    assert again.exit_code == 1 and "already sent" in again.output
    assert "smtp" in cli(root, "sends").output


@pytest.mark.slow
def test_4xx_is_retried_and_421_reconnects(root, smtp, cli):
    add_people(root, 3)
    smtp.inject("RCPT", "451 4.7.1 Greylisted, try again later", address="leser0@example.org")
    smtp.inject("MAIL", "421 4.3.2 Too busy, closing")
    smtp.inject("DATA", "452 4.3.1 Insufficient storage", address="leser2@example.org")
    result = cli(root, "send", ISSUE, "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(smtp.recipients()) == [f"leser{i}@example.org" for i in range(3)]
    assert set(states(root).values()) == {"accepted"}


@pytest.mark.slow
def test_550_fails_that_recipient_only_and_resume_retries_it(root, smtp, cli):
    add_people(root, 4)
    # After DATA: at RCPT it would be a hard bounce (tests/test_smtp_delivered.py).
    smtp.inject("DATA", "550 5.1.1 Mailbox unknown", address="leser2@example.org")
    result = cli(root, "send", ISSUE, "--yes")
    assert result.exit_code == 0, result.output
    assert "3 accepted" in result.output and "1 failed." in result.output
    assert "550 5.1.1 Mailbox unknown" in result.output
    assert states(root)["leser2@example.org"] == "failed"
    assert sorted(smtp.recipients()) == [
        "leser0@example.org",
        "leser1@example.org",
        "leser3@example.org",
    ]
    resumed = cli(root, "send", ISSUE, "--resume", "--yes")
    assert resumed.exit_code == 0, resumed.output
    assert "Recipients: 1" in resumed.output
    assert set(states(root).values()) == {"accepted"}
    assert sorted(smtp.recipients()).count("leser2@example.org") == 1


@pytest.mark.slow
def test_4xx_that_never_clears_fails_after_max_retries(root, smtp, cli):
    add_people(root, 2)
    smtp.inject("RCPT", "450 4.2.1 Mailbox busy", count=10, address="leser0@example.org")
    result = cli(root, "send", ISSUE, "--yes")
    assert result.exit_code == 0, result.output
    assert states(root) == {"leser0@example.org": "failed", "leser1@example.org": "accepted"}
    assert "after 3 tries" in result.output


@pytest.mark.slow
def test_connection_dropped_after_data_is_uncertain(root, smtp, cli):
    add_people(root, 3)
    smtp.inject("DATA", "drop", address="leser1@example.org")
    result = cli(root, "send", ISSUE, "--yes")
    assert result.exit_code == 0, result.output
    assert "1 uncertain" in result.output and "--include-uncertain" in result.output
    assert states(root) == {
        "leser0@example.org": "accepted",
        "leser1@example.org": "uncertain",
        "leser2@example.org": "accepted",
    }
    assert "Nobody to send to" in cli(root, "send", ISSUE, "--resume", "--yes").output
    assert len(smtp.recipients()) == 3
    deliberate = cli(root, "send", ISSUE, "--resume", "--include-uncertain", "--yes")
    assert deliberate.exit_code == 0, deliberate.output
    assert smtp.recipients().count("leser1@example.org") == 2  # as asked
    assert set(states(root).values()) == {"accepted"}


@pytest.mark.slow
def test_wrong_password_is_one_line_without_the_password(root, smtp, cli, monkeypatch):
    add_people(root, 2)
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "wrong-secret-password")
    result = cli(root, "send", ISSUE, "--yes")
    assert result.exit_code == 1
    assert "refused the login for jens" in result.output
    assert "NEWSLETTER_SMTP_PASSWORD" in result.output and "--resume" in result.output
    assert "wrong-secret-password" not in result.output and "Traceback" not in result.output
    assert set(states(root).values()) == {"failed"} and smtp.messages == []
    engine = open_engine(Project.load(root).database_url)
    with engine.connect() as conn:
        stored = " ".join(str(e) for e in conn.execute(select(sends.c.error)).scalars())
    assert "wrong-secret-password" not in stored
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", PASSWORD)
    assert cli(root, "send", ISSUE, "--resume", "--yes").exit_code == 0
    assert set(states(root).values()) == {"accepted"}


@pytest.mark.slow
def test_untrusted_certificate_is_a_tls_failure(make_project, smtp, cli, monkeypatch, tmp_path):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{tmp_path / 'tls.db'}")
    smtp.ca_file = None  # the client no longer trusts the server's self-signed certificate
    root = make_project(config=smtp_config(smtp))
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    add_people(root, 1)
    result = cli(root, "send", ISSUE, "--yes")
    assert result.exit_code == 1
    assert "TLS with the SMTP server 127.0.0.1" in result.output
    assert "certificate" in result.output.lower() and len(result.output.strip().splitlines()) <= 8
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_connection_refused_names_the_server(make_project, cli, monkeypatch, tmp_path):
    from tests.smtp_server import free_port

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{tmp_path / 'refused.db'}")
    monkeypatch.setenv("NEWSLETTER_SEND_BACKOFF", "0.001")
    port = free_port()
    config = (
        CONFIG
        + f'\n[sending]\ntransport = "smtp"\nmax_retries = 1\n[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
    )
    root = make_project(config=config)
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    add_people(root, 2)
    result = cli(root, "send", ISSUE, "--yes")
    assert result.exit_code == 1
    assert f"cannot reach the SMTP server 127.0.0.1:{port}" in result.output
    assert set(states(root).values()) == {"failed"}


@pytest.mark.slow
def test_sender_refused_stops_the_send(root, smtp, cli):
    add_people(root, 3)
    smtp.inject("MAIL", "553 5.7.1 Sender address rejected: not owned by user jens", count=5)
    result = cli(root, "send", ISSUE, "--yes")
    assert result.exit_code == 1
    assert "refused the sender jens@example.com" in result.output
    assert "from_email" in result.output
    assert smtp.messages == [] and "accepted" not in set(states(root).values())


@pytest.mark.slow
def test_schedule_refuses_naming_who_can(root, smtp, cli):
    add_people(root, 1)
    result = cli(root, "send", ISSUE, "--schedule", "in 2h", "--yes")
    assert result.exit_code == 1
    assert "--schedule needs a transport that can schedule (sendgrid)" in result.output
    assert "smtp" in result.output and smtp.messages == []
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_test_copy_and_confirmation_mail_go_through_smtp(root, smtp, cli):
    from newsletter.sending.single import send_transactional

    result = cli(root, "send", ISSUE, "--test", "me@example.org")
    assert result.exit_code == 0, result.output
    assert "accepted by the SMTP server" in result.output
    [copy] = smtp.messages
    assert parsed(copy)["Subject"] == "[Test] Meta, KI und das Ende der Creator?"
    where = send_transactional(
        Project.load(root), "jörg@example.org", "Bitte bestätigen", "<p>Klick</p>", "Klick"
    )
    assert "accepted by the SMTP server" in where
    confirm = parsed(smtp.messages[1])
    assert smtp.messages[1].rcpt_tos == ["jörg@example.org"]  # SMTPUTF8
    assert confirm["Subject"] == "Bitte bestätigen"
    assert not (root / "outbox").exists()


def test_missing_password_names_the_variable(root, smtp, cli, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SMTP_PASSWORD")
    add_people(root, 1)
    result = cli(root, "send", ISSUE, "--yes")
    assert result.exit_code == 1 and "NEWSLETTER_SMTP_PASSWORD is not set" in result.output
    assert smtp.messages == []


@pytest.mark.slow
def test_core_send_without_click(root, smtp):
    """Plan, then execute, through the core: no CLI involved."""
    from newsletter.sending.execute import execute
    from newsletter.sending.plan import SendRequest, plan_send

    add_people(root, 7)
    project = Project.load(root)
    plan = plan_send(project, "meta-ki-creator", SendRequest())
    assert (plan.recipients, plan.refusal, plan.transport.kind) == (7, None, "smtp")
    seen: list[int] = []
    report = execute(plan, lambda r: seen.append(r.total))
    assert (report.accepted, report.failed, report.uncertain, report.error) == (7, 0, 0, None)
    assert seen[-1] == 7 and seen == sorted(seen)
    assert len(smtp.messages) == 7


def test_rate_and_connection_reuse(root, smtp, cli, monkeypatch):
    """Messages share connections (a few at once), and `rate` paces them."""
    import time

    root_config = (root / "newsletter.toml").read_text("utf-8")
    (root / "newsletter.toml").write_text(
        root_config + "rate = 20\nmax_per_connection = 3\n", "utf-8"
    )
    add_people(root, 10)
    started = time.monotonic()
    result = cli(root, "send", ISSUE, "--yes")
    took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert len(smtp.messages) == 10
    assert took >= 9 / 20  # 10 messages at 20/s: at least 0.45 s
    # 10 messages, at most 3 per connection: at least 4 logins, far fewer than 10.
    assert 4 <= len(smtp.logins) <= 6


def test_the_fake_server_without_aiosmtpd_says_how_to_install_it() -> None:
    # After the quick start's plain `pip install -e .`, aiosmtpd (in the [test] extra) is
    # missing; `python -m tests.smtp_server` must say so in one line, not with a traceback.
    import subprocess
    import sys

    without_aiosmtpd = (
        "import runpy, sys; sys.modules['aiosmtpd'] = None; "
        "runpy.run_module('tests.smtp_server', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", without_aiosmtpd, "--port", "0"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "aiosmtpd is not installed; in your clone of newsletter run "
        "`.venv/bin/pip install -e '.[test]'` (the test extra has the fake SMTP server's deps)\n"
    )
