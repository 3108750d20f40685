"""`newsletter replies fetch` against a real IMAP server (Dovecot on 127.0.0.1): an issue goes
out over SMTP to the tests' SMTP server, readers' answers, an out-of-office, a forged reply
token, a bounce report and mail that has nothing to do with the newsletter are put in the
mailbox, and the fetch stores each reply once, the bounce as a bounce, and leaves the rest."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import pytest
from sqlalchemy import select

from newsletter.store.engine import open_engine
from newsletter.store.schema import deliveries, events, replies, subscribers
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.imap_server import Dovecot
from tests.smtp_server import FakeSmtp

# A real IMAP server or Chromium per test: left out of the quick run.
pytestmark = pytest.mark.slow

ISSUE = EXAMPLE_ISSUE.stem
EXAMPLE = {EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text(encoding="utf-8")}
SMTP_PASSWORD = "smtp-geheim-do-not-print"
READERS = {
    "jörg.müller@example.de": "Jörg",
    "anna@example.com": "Anna",
    "weg@example.org": "Weg",
}


@pytest.fixture
def dovecot():
    with Dovecot() as server:
        yield server


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch):
    with FakeSmtp(users={"jens": SMTP_PASSWORD}, tls=True) as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", SMTP_PASSWORD)
        yield server


def config(smtp: FakeSmtp, imap: Dovecot, *, move_to: str | None = "Newsletter") -> str:
    moved = f'move_to = "{move_to}"\n' if move_to else ""
    return (
        CONFIG
        + '\n[sending]\ntransport = "smtp"\n'
        + f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "starttls"\n'
        + f'username = "jens"\nca_file = "{smtp.ca_file}"\n'
        + '\n[replies]\ndomain = "replies.example.com"\n'
        + f'\n[replies.imap]\nhost = "127.0.0.1"\nport = {imap.port}\nsecurity = "starttls"\n'
        + f'username = "{imap.user}"\nca_file = "{imap.ca_file}"\n'
        + moved
    )


def sent_copies(smtp: FakeSmtp) -> dict[str, EmailMessage]:
    """The issue as each reader got it, by address."""
    out = {}
    for received in smtp.messages:
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        out[received.rcpt_tos[0]] = message
    return out


def reply(
    sender: str,
    to: str,
    subject: str,
    text: str | None,
    *,
    html: str | None = None,
    in_reply_to: str | None = None,
    headers: dict[str, str] | None = None,
    attachment: tuple[str, bytes] | None = None,
) -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="leser.example")
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    for name, value in (headers or {}).items():
        message[name] = value
    if text is not None:
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
    else:
        message.set_content(html or "", subtype="html")
    if attachment:
        name, data = attachment
        message.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return message.as_bytes()


def delivery_report(recipient: str, original: EmailMessage) -> bytes:
    """An RFC 3464 bounce report, as a receiving server's MTA writes it."""
    boundary = "dsn-boundary-42"
    headers = "".join(
        f"{k}: {v}\r\n" for k, v in original.items() if k in ("From", "To", "Subject", "Message-ID")
    )
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        "To: jens@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: {make_msgid(domain='mx.example.org')}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "I'm sorry to have to inform you that your message could not be delivered.\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n"
        "Arrival-Date: Mon, 7 Dec 2026 10:00:00 +0000\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"{headers}\r\n"
        f"--{boundary}--\r\n"
    ).encode()


@pytest.fixture
def sent(make_project, smtp, dovecot, cli, monkeypatch):
    """A project that sent the example issue over SMTP to three readers."""
    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", Dovecot.password)
    root = make_project(config=config(smtp, dovecot), issues=EXAMPLE)
    engine = open_engine(f"sqlite:///{root / 'newsletter.db'}")
    for address, first in READERS.items():
        add_subscriber(engine, address, first_name=first)
    result = cli(root, "send", ISSUE, "--yes")
    assert result.exit_code == 0, result.output
    return root, engine, sent_copies(smtp)


def put_the_mailbox_together(dovecot: Dovecot, copies: dict[str, EmailMessage]) -> dict[str, bytes]:
    joerg, anna = copies["jörg.müller@example.de"], copies["anna@example.com"]
    subject = str(joerg["Subject"])
    mails = {
        # German, to the signed reply address, quoted history below, a PDF attached.
        "joerg": reply(
            "Jörg Müller <jörg.müller@example.de>",
            str(joerg["Reply-To"]),
            f"Re: {subject}",
            "Hallo Jens,\n\ndanke für „Meta, KI und die Creator“ – großartig!\n\n"
            "Grüße, Jörg\n\nAm 2. Juli schrieb Jens:\n> Hallo zusammen,\n> heute geht es um Meta.\n",
            attachment=("Notizen für Jens.pdf", b"%PDF-1.4 " + b"x" * 2048),
        ),
        # HTML only, answered to the author's own address: found by In-Reply-To.
        "anna": reply(
            "Anna <anna@example.com>",
            "jens@example.com",
            f"AW: {subject}",
            None,
            html="<p>Sehr <b>spannend</b>, danke!</p><blockquote>Hallo zusammen</blockquote>",
            in_reply_to=str(anna["Message-ID"]),
        ),
        "out of office": reply(
            "Anna <anna@example.com>",
            str(anna["Reply-To"]),
            f"Abwesenheitsnotiz: {subject}",
            "Ich bin bis zum 3. August nicht im Büro.",
            headers={"Auto-Submitted": "auto-replied"},
        ),
        # A reply address with a token nobody signed, from someone not on the list.
        "forged": reply(
            "Mallory <mallory@example.net>",
            "reply+eyJmYWtlIjoxfQ.forged.signature@replies.example.com",
            "abmelden",
            "abmelden",
        ),
        "bounce": delivery_report("weg@example.org", copies["weg@example.org"]),
        # The author's own mail: not a reply to the newsletter.
        "unrelated": reply(
            "Freund <freund@example.net>",
            "jens@example.com",
            "Grillen am Samstag?",
            "Kommst du am Samstag zum Grillen?",
        ),
    }
    for raw in mails.values():
        dovecot.append(raw)
    return mails


def test_fetch_stores_each_reply_once_reads_the_bounce_and_leaves_the_rest(sent, dovecot, cli):
    root, engine, copies = sent
    mails = put_the_mailbox_together(dovecot, copies)

    first = cli(root, "replies", "fetch")
    assert first.exit_code == 0, first.output
    assert first.output.strip() == (
        "6 messages looked at; 3 replies stored (1 automatic); 1 bounce; "
        "2 left in the mailbox (not replies to the newsletter)"
    )
    with engine.connect() as conn:
        stored = conn.execute(
            select(
                replies.c.from_email,
                replies.c.subject,
                replies.c.text,
                replies.c.automatic,
                replies.c.attachments,
                replies.c.issue_id,
                replies.c.subscriber_id,
            ).order_by(replies.c.id)
        ).all()
        ids = dict(conn.execute(select(subscribers.c.email, subscribers.c.id)).all())
        issue_ids = set(conn.execute(select(deliveries.c.issue_id)).scalars())
        bounced = conn.execute(
            select(subscribers.c.status).where(subscribers.c.email == "weg@example.org")
        ).scalar()
        ledger = conn.execute(
            select(deliveries.c.state).where(deliveries.c.subscriber_id == ids["weg@example.org"])
        ).scalar()
        bounce_events = conn.execute(
            select(events.c.event, events.c.detail).where(events.c.event == "bounce")
        ).all()
    (issue_id,) = issue_ids
    by_sender = {row.from_email: row for row in stored if not row.automatic}
    joerg = by_sender["jörg.müller@example.de"]
    assert "danke für „Meta, KI und die Creator“ – großartig!" in joerg.text
    assert (joerg.subscriber_id, joerg.issue_id) == (ids["jörg.müller@example.de"], issue_id)
    assert joerg.attachments == [{"name": "Notizen für Jens.pdf", "size": 2057}]
    anna = by_sender["anna@example.com"]
    assert "Sehr spannend, danke!" in anna.text and "<b>" not in anna.text
    assert (anna.subscriber_id, anna.issue_id) == (ids["anna@example.com"], issue_id)
    assert [row.subject.startswith("Abwesenheitsnotiz") for row in stored if row.automatic] == [
        True
    ]
    assert "mallory@example.net" not in {row.from_email for row in stored}
    # The bounce: the reader, the ledger and an event, as a SendGrid bounce would.
    assert bounced == "bounced" and ledger == "bounced"
    assert len(bounce_events) == 1
    assert "weg@example.org" not in str(bounce_events[0].detail)  # no address in events

    # What was ours moved to the folder; the author's own mail is untouched (not even seen).
    left = dovecot.messages("INBOX")
    assert sorted(raw for _, raw in left) == sorted([mails["forged"], mails["unrelated"]])
    assert all("\\Seen" not in flags for flags, _ in left)
    assert len(dovecot.messages("Newsletter")) == 4

    # Again: nothing new, nothing twice.
    again = cli(root, "replies", "fetch")
    assert again.exit_code == 0, again.output
    assert again.output.strip() == (
        "2 messages looked at; 0 replies stored; "
        "2 left in the mailbox (not replies to the newsletter)"
    )
    with engine.connect() as conn:
        assert conn.execute(select(replies.c.id)).all().__len__() == 3

    listed = cli(root, "replies")
    assert "jörg.müller@example.de" in listed.output and "anna@example.com" in listed.output


def test_without_move_to_handled_messages_are_flagged_and_skipped(
    make_project, smtp, dovecot, cli, monkeypatch
):
    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", Dovecot.password)
    root = make_project(config=config(smtp, dovecot, move_to=None), issues=EXAMPLE)
    engine = open_engine(f"sqlite:///{root / 'newsletter.db'}")
    add_subscriber(engine, "anna@example.com", first_name="Anna")
    assert cli(root, "send", ISSUE, "--yes").exit_code == 0
    anna = sent_copies(smtp)["anna@example.com"]
    dovecot.append(reply("anna@example.com", str(anna["Reply-To"]), "Re: Hallo", "Danke!"))
    dovecot.append(reply("freund@example.net", "jens@example.com", "Hallo", "Na?"))

    assert cli(root, "replies", "fetch").output.startswith("2 messages looked at; 1 reply stored")
    flags = sorted(flags for flags, _ in dovecot.messages("INBOX"))
    assert ["$NewsletterFetched" in f for f in flags].count(True) == 1
    # The flagged one is not even looked at again.
    assert cli(root, "replies", "fetch").output.startswith("1 message looked at; 0 replies stored")


def test_a_wrong_password_is_one_line_and_changes_nothing(sent, dovecot, cli, monkeypatch):
    root, engine, copies = sent
    put_the_mailbox_together(dovecot, copies)
    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", "falsch")
    result = cli(root, "replies", "fetch")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: [replies.imap] 127.0.0.1:{dovecot.port}: login as '{dovecot.user}' refused; "
        "check username and NEWSLETTER_IMAP_PASSWORD"
    ]
    assert "falsch" not in result.output
    assert len(dovecot.messages("INBOX")) == 6


class GermanDovecot(Dovecot):
    password = "Pässwört-mit-ß-geheim"


def test_a_password_with_umlauts_logs_in(make_project, smtp, cli, monkeypatch):
    """IMAP's LOGIN takes ASCII only: "Pässwört" ended in a UnicodeEncodeError traceback.
    SASL PLAIN carries UTF-8 (RFC 4616), which Dovecot takes."""
    with GermanDovecot() as dovecot:
        monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", GermanDovecot.password)
        root = make_project(config=config(smtp, dovecot))
        result = cli(root, "replies", "fetch")
        assert result.exit_code == 0, result.output
        assert result.output.startswith("0 messages looked at")
        monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", "Pässwört-falsch")
        wrong = cli(root, "replies", "fetch")
        assert wrong.exit_code == 1 and "login as 'leserpost@example.com' refused" in wrong.output
        assert "Pässwört" not in wrong.output


def test_without_the_imap_table_fetch_says_what_to_add(project, cli):
    result = cli(project, "replies", "fetch")
    assert result.exit_code == 1
    assert "no [replies.imap] table; add one with host and username" in result.output


def test_without_the_password_fetch_says_which_variable(
    make_project, smtp, dovecot, cli, monkeypatch
):
    monkeypatch.delenv("NEWSLETTER_IMAP_PASSWORD", raising=False)
    root = make_project(config=config(smtp, dovecot))
    result = cli(root, "replies", "fetch")
    assert result.exit_code == 1
    assert "NEWSLETTER_IMAP_PASSWORD is not set" in result.output


def test_a_delivery_report_names_the_failed_recipient_and_the_message():
    from newsletter.replies.bounces import read_delivery_report

    original = EmailMessage()
    original["Message-ID"] = "<abc@example.com>"
    original["Subject"] = "x"
    report = email.message_from_bytes(
        delivery_report("weg@example.org", original), policy=email.policy.default
    )
    (bounce,) = read_delivery_report(report)
    assert (bounce.address, bounce.status, bounce.original_message_id) == (
        "weg@example.org",
        "5.1.1",
        "<abc@example.com>",
    )
    assert bounce.diagnostic.startswith("550 5.1.1")


def test_a_delay_report_is_no_bounce():
    from newsletter.replies.bounces import read_delivery_report

    delayed = (
        delivery_report("weg@example.org", EmailMessage())
        .replace(b"Action: failed", b"Action: delayed")
        .replace(b"Status: 5.1.1", b"Status: 4.4.7")
    )
    assert (
        read_delivery_report(email.message_from_bytes(delayed, policy=email.policy.default)) == []
    )


def test_serve_fetches_replies_by_itself(make_project, smtp, dovecot, cli, monkeypatch):
    """`serve --fetch-replies 1m` reads the mailbox at start and then every minute."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import TEST_SECRET
    from tests.smtp_server import free_port

    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", Dovecot.password)
    root = make_project(config=config(smtp, dovecot), issues=EXAMPLE)
    engine = open_engine(f"sqlite:///{root / 'newsletter.db'}")
    add_subscriber(engine, "anna@example.com", first_name="Anna")
    assert cli(root, "send", ISSUE, "--yes").exit_code == 0
    anna = sent_copies(smtp)["anna@example.com"]
    dovecot.append(reply("anna@example.com", str(anna["Reply-To"]), "Re: Hallo", "Sehr gut!"))

    env = {**os.environ, "NEWSLETTER_SECRET_KEY": TEST_SECRET}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter",
            "--project",
            str(root),
            "serve",
            "--port",
            str(free_port()),
            "--fetch-replies",
            "1m",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        stored: list = []
        while time.monotonic() < deadline and not stored:
            with engine.connect() as conn:
                stored = conn.execute(select(replies.c.text)).scalars().all()
            time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=20)
    assert [text.strip() for text in stored] == ["Sehr gut!"]
    assert "Sehr gut" not in err and "anna@example.com" not in err  # no reply in the log
    assert "replies fetch: 1 stored (0 automatic), 0 bounces" in err


def test_serve_refuses_a_fetch_interval_without_a_mailbox(project, cli):
    result = cli(project, "serve", "--fetch-replies", "5m")
    assert result.exit_code == 1
    assert "no [replies.imap] table" in result.output


def test_handled_messages_are_named_to_the_server_as_uid_ranges():
    from newsletter.replies.mailbox import uid_ranges

    assert uid_ranges(["7", "1", "2", "3", "9", "10"]) == "1:3,7,9:10"
    assert uid_ranges(["42"]) == "42"
