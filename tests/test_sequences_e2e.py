"""End to end over real HTTP: a reader signs up through /subscribe and confirms, the welcome
sequence goes out through the local SendGrid server step by step (`sequences run --now`),
webhook events and a reply are matched to their step, and unsubscribing stops the rest."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import find_subscriber
from newsletter.web import create_app
from tests.conftest import CONFIG
from tests.sendgrid_server import FakeSendGrid, copies
from tests.support.sequences import SEQUENCE, STEP1, STEP2, STEP3, write_steps
from tests.support.web import Signer, body_of, event, live_server, multipart

KEY = "SG.sequences-e2e"


def header_of(message: dict) -> str:
    """The https URL of the List-Unsubscribe header (a mailto may follow it)."""
    header = message["personalizations"][0]["headers"]["List-Unsubscribe"]
    return re.search(r"<(https://[^>]+)>", header).group(1)


def step_messages(server: FakeSendGrid) -> list[dict]:
    return [m for m in server.messages if "sequence" in m.get("categories", [])]


@pytest.mark.slow
def test_signup_confirm_then_steps_through_sendgrid_until_unsubscribe(
    make_project, cli, monkeypatch, database_url
):
    root = make_project(
        CONFIG + SEQUENCE + '\n[replies]\ndomain = "replies.example.com"\nforward = false\n'
    )
    write_steps(root, {"01-willkommen.md": STEP1, "02-tipps.md": STEP2, "03-stimmen.md": STEP3})
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    project = Project.load(root)
    engine = open_engine(project.database_url)
    signer = Signer()
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", signer.public_key)
    monkeypatch.setenv("NEWSLETTER_INBOUND_SECRET", "inbound-seq")
    with FakeSendGrid(api_key=KEY) as sendgrid, live_server(create_app(project, engine)) as base:
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", sendgrid.url)

        # Sign up through the form; the confirmation mail goes through SendGrid too.
        signup = httpx.post(f"{base}/subscribe", data={"email": "anna@example.de", "name": "Anna"})
        assert signup.status_code == 200
        [confirmation] = sendgrid.messages
        link = re.search(
            r"https://news\.example\.com(/confirm/\S+)", confirmation["content"][0]["value"]
        )
        assert link is not None
        assert cli(root, "sequences", "run").output.strip() == "nothing was due"  # not yet
        assert httpx.post(base + link.group(1)).status_code == 200
        assert find_subscriber(engine, "anna@example.de").status == "subscribed"

        t = datetime.now(UTC) + timedelta(minutes=1)
        first = cli(root, "sequences", "run", "--now", t.isoformat())
        assert first.exit_code == 0, first.output
        assert "welcome/willkommen: 1 sent (sendgrid" in first.output
        [step1] = step_messages(sendgrid)
        assert step1["subject"] == "Willkommen bei „Jens' Briefing“"
        [p1] = step1["personalizations"]
        assert p1["to"] == [{"email": "anna@example.de", "name": "Anna"}]
        # The reply address Anna sees (SendGrid fills in her own signed token, as for an issue).
        [seen] = copies(step1)
        assert re.fullmatch(r"reply\+[\w.-]+@replies\.example\.com", seen["reply_to"])
        assert "sequences/welcome/willkommen" in step1["categories"]
        # No "view in browser": a welcome email has no public page.
        assert "/issues/" not in step1["content"][1]["value"]
        assert "Musterstraße 1" in step1["content"][0]["value"]  # the footer

        # A welcome email is personal mail: not in the public archive or its feed.
        for path in ("/", "/feed.xml"):
            page = httpx.get(base + path)
            assert page.status_code == 200 and "Willkommen bei" not in page.text, path
        from newsletter.store.issues import is_published, published_issues

        assert not is_published(engine, "sequences/welcome/willkommen")
        assert published_issues(engine) == []

        # Running again (cron, a minute later) sends nothing twice.
        again = cli(root, "sequences", "run", "--now", (t + timedelta(minutes=1)).isoformat())
        assert again.exit_code == 0 and len(step_messages(sendgrid)) == 1

        # SendGrid reports delivery and an open; Anna answers the welcome email.
        [ids] = [copy["custom_args"] for copy in copies(step1)]
        events = [event("delivered", "anna@example.de", **ids),
                  event("open", "anna@example.de", **ids)]  # fmt: skip
        body = body_of(events)
        posted = httpx.post(
            f"{base}/webhooks/sendgrid/events", content=body, headers=signer.headers(body)
        )
        assert posted.status_code == 200
        reply_to = seen["reply_to"]
        data, content_type = multipart({
            "from": "Anna <anna@example.de>",
            "to": reply_to,
            "subject": "Re: " + step1["subject"],
            "text": "Danke für die Begrüßung!",
            "envelope": json.dumps({"to": [reply_to], "from": "anna@example.de"}),
            "charsets": json.dumps({"text": "UTF-8", "subject": "UTF-8", "from": "UTF-8"}),
        })  # fmt: skip
        inbound = httpx.post(
            f"{base}/webhooks/sendgrid/inbound/inbound-seq",
            content=data,
            headers={"Content-Type": content_type},
        )
        assert inbound.status_code == 200

        # Three days later: step 2.
        second = cli(
            root,
            "sequences",
            "run",
            "--now",
            (t + timedelta(days=3, minutes=1)).isoformat(),
            "--force",
        )
        assert "welcome/tipps: 1 sent" in second.output, second.output
        step2 = step_messages(sendgrid)[-1]
        assert step2["subject"] == "Drei Tipps für den Anfang"
        # Personal fields travel as SendGrid substitutions, filled in per recipient (the form
        # gave a name, not a first name: the greeting's default).
        values = step2["personalizations"][0]["substitutions"].values()
        assert "zusammen" in values and header_of(step2) in values

        # Anna unsubscribes with the one-click header of step 2.
        header = header_of(step2)
        one_click = httpx.post(
            base + urlsplit(header).path,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert one_click.status_code == 200

        third = cli(
            root, "sequences", "run", "--now", (t + timedelta(days=30)).isoformat(), "--force"
        )
        assert third.exit_code == 0
        assert [m["subject"] for m in step_messages(sendgrid)] == [
            "Willkommen bei „Jens' Briefing“",
            "Drei Tipps für den Anfang",
        ]

    stats = json.loads(cli(root, "stats", "sequences/welcome/01", "--format", "json").output)
    assert stats["issue"] == "sequences/welcome/willkommen"
    assert {k: stats["counts"][k] for k in ("recipients", "delivered", "opened", "replied")} == {
        "recipients": 1, "delivered": 1, "opened": 1, "replied": 1,
    }  # fmt: skip
    replies = json.loads(cli(root, "replies", "--format", "json").output)
    assert [r["issue"] for r in replies] == ["sequences/welcome/willkommen"]
    status = json.loads(cli(root, "sequences", "status", "--format", "json").output)
    steps = status["sequences"][0]["steps"]
    assert [s["got"] for s in steps] == [1, 1, 0]
    assert status["sequences"][0]["people"] == {"stopped": 1}


def test_the_same_over_smtp(make_project, cli, monkeypatch):
    """Sign up and confirm over HTTP; the confirmation and each step go through a real SMTP
    server (STARTTLS, AUTH); unsubscribing with a step's one-click header stops the rest."""
    import email
    from email.policy import default as default_policy

    from tests.smtp_server import FakeSmtp
    from tests.support.smtp import PASSWORD, smtp_config

    with FakeSmtp(users={"jens": PASSWORD}, tls=True) as smtp:
        monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", PASSWORD)
        root = make_project(smtp_config(smtp) + SEQUENCE)
        write_steps(root, {"01-willkommen.md": STEP1, "02-tipps.md": STEP2, "03-stimmen.md": STEP3})
        project = Project.load(root)
        engine = open_engine(project.database_url)

        def mails() -> list[email.message.EmailMessage]:
            return [
                email.message_from_bytes(m.data, policy=default_policy)  # type: ignore[misc]
                for m in smtp.messages
            ]

        with live_server(create_app(project, engine)) as base:
            assert (
                httpx.post(f"{base}/subscribe", data={"email": "jörg@example.de"}).status_code
                == 200
            )
            [confirmation] = mails()
            text = confirmation.get_body(("plain",)).get_content()
            link = re.search(r"https://news\.example\.com(/confirm/\S+)", text)
            assert link is not None
            assert httpx.post(base + link.group(1)).status_code == 200

            t = datetime.now(UTC) + timedelta(minutes=1)
            first = cli(root, "sequences", "run", "--now", t.isoformat())
            assert "welcome/willkommen: 1 sent (smtp" in first.output, first.output
            welcome = mails()[-1]
            assert welcome["Subject"] == "Willkommen bei „Jens' Briefing“"
            assert (
                "Hallo zusammen, schön, dass du da bist!"
                in welcome.get_body(("plain",)).get_content()
            )
            assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

            cli(
                root,
                "sequences",
                "run",
                "--now",
                (t + timedelta(days=3, minutes=1)).isoformat(),
                "--force",
            )
            tips = mails()[-1]
            assert tips["Subject"] == "Drei Tipps für den Anfang"
            url = re.search(r"<(https://[^>]+)>", str(tips["List-Unsubscribe"])).group(1)
            one_click = httpx.post(
                base + urlsplit(url).path,
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert one_click.status_code == 200
            cli(root, "sequences", "run", "--now", (t + timedelta(days=30)).isoformat(), "--force")
        subjects = [m["Subject"] for m in mails()[1:]]
        assert subjects == ["Willkommen bei „Jens' Briefing“", "Drei Tipps für den Anfang"]
        assert smtp.recipients()[1:] == ["jörg@example.de", "jörg@example.de"]
