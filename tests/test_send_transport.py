"""The fake SendGrid server, the SendGrid transport's answers, and one-off mail."""

from __future__ import annotations

import email
import json
import urllib.request
from email import policy
from pathlib import Path

import pytest

from newsletter.project import Project
from newsletter.sending.message import Batch, Message, Recipient
from newsletter.sending.single import send_transactional
from newsletter.sending.transports.sendgrid import SendGridTransport, mail_body
from tests.sendgrid_server import FakeSendGrid, validate_mail

KEY = "SG.test-key"


@pytest.fixture
def server():
    with FakeSendGrid(api_key=KEY, verified_senders=["jens@example.com"]) as s:
        yield s


def body_for(addresses: list[str], **message_kw) -> dict:
    message = Message(
        from_email=message_kw.pop("from_email", "jens@example.com"),
        from_name="Jens",
        reply_to="jens@example.com",
        subject="Grüße „zum“ Test",
        text="Hallo -first-",
        html="<p>Hallo -first-</p>",
        categories=("meta-ki-creator",),
        **message_kw,
    )
    people = [
        Recipient(
            email=a,
            substitutions={"-first-": "Jörg"},
            unsubscribe_url=f"https://news.example.com/unsubscribe/t{i}",
            ids={"newsletter_issue_id": "1", "newsletter_subscriber_id": str(i)},
        )
        for i, a in enumerate(addresses)
    ]
    return mail_body(Batch(message, people))


def transport(server: FakeSendGrid, key: str = KEY, **kw) -> SendGridTransport:
    return SendGridTransport(key, server.url, timeout=kw.pop("timeout", 5), backoff=0.01, **kw)


def test_accepted_with_message_id(server):
    outcome = transport(server).post_mail(body_for(["a@example.org", "b@example.org"]))
    assert outcome.state == "accepted"
    assert outcome.message_id == server.messages[0]["_message_id"]
    assert server.recipients() == ["a@example.org", "b@example.org"]


def test_sandbox_validates_and_records_nothing(server):
    outcome = transport(server).post_mail(body_for(["a@example.org"], sandbox=True))
    assert outcome.state == "accepted"
    assert server.messages == []
    assert server.requests[0]["status"] == 200


def test_bad_key_message_never_shows_the_key(server):
    outcome = transport(server, key="SG.wrong-secret").post_mail(body_for(["a@example.org"]))
    assert (outcome.state, outcome.fatal) == ("failed", True)
    assert outcome.error == "SendGrid rejected the API key (check SENDGRID_API_KEY)"


def test_unverified_sender_names_the_address(server):
    outcome = transport(server).post_mail(body_for(["a@example.org"], from_email="x@nope.de"))
    assert outcome.state == "failed"
    assert "x@nope.de" in outcome.error and "verif" in outcome.error


def test_bad_payload_lists_field_errors(server):
    body = body_for(["a@example.org", "A@example.org"])
    body["categories"] = ["x"] * 11
    outcome = transport(server).post_mail(body)
    assert outcome.state == "failed"
    assert "categories" in outcome.error and "personalizations.1.to.0.email" in outcome.error


def test_429_waits_and_retries(server):
    server.inject("429", count=2, reset_in=0)
    outcome = transport(server).post_mail(body_for(["a@example.org"]))
    assert outcome.state == "accepted" and outcome.attempts == 3
    assert [r["status"] for r in server.requests] == [429, 429, 202]


def test_5xx_retries_then_stops(server):
    server.inject("503", count=10)
    outcome = transport(server, max_retries=2).post_mail(body_for(["a@example.org"]))
    assert (outcome.state, outcome.fatal, outcome.attempts) == ("failed", True, 3)
    assert "503" in outcome.error and server.messages == []


def test_dropped_answer_is_uncertain(server):
    server.inject("drop")
    outcome = transport(server).post_mail(body_for(["a@example.org"]))
    assert outcome.state == "uncertain"
    assert len(server.requests) == 1  # never retried automatically


def test_timeout_is_uncertain(server):
    server.inject("delay", seconds=1.0)
    outcome = transport(server, timeout=0.2).post_mail(body_for(["a@example.org"]))
    assert outcome.state == "uncertain" and "timed out" in outcome.error


def test_refused_connection_retries_then_names_host():
    t = SendGridTransport(KEY, "http://127.0.0.1:9", timeout=1, backoff=0.001, max_retries=2)
    outcome = t.post_mail(body_for(["a@example.org"]))
    assert (outcome.state, outcome.attempts) == ("failed", 3)
    assert "127.0.0.1:9" in outcome.error and "check the network" in outcome.error


def test_server_enforces_limits():
    body = body_for([f"p{i}@example.org" for i in range(1000)])
    body["personalizations"].append(dict(body["personalizations"][-1]))
    body["personalizations"][0]["substitutions"] = {"-x-": "y" * 10000}
    body["content"].reverse()
    fields = {e["field"] for e in validate_mail(body)}
    assert {
        "personalizations",
        "personalizations.0.substitutions",
        "personalizations.1000.to.0.email",
        "content",
    } <= fields
    assert validate_mail(body_for(["a@example.org"])) == []


def test_suppression_paging(server):
    server.suppressions["bounces"] = [
        {
            "email": f"b{i}@example.org",
            "created": 1700000000 + i,
            "reason": "550",
            "status": "5.1.1",
        }
        for i in range(5)
    ]
    req = urllib.request.Request(
        f"{server.url}/v3/suppression/bounces?limit=2&offset=2",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    page = json.load(urllib.request.urlopen(req, timeout=5))
    assert [b["email"] for b in page] == ["b2@example.org", "b3@example.org"]


def test_transactional_outbox_without_key(project: Path):
    where = send_transactional(
        Project.load(project),
        "jörg@example.org",
        "Bitte bestätigen „jetzt“",
        "<p>Klick & fertig</p>",
        "Klick & fertig",
        headers={"X-Test": "1"},
    )
    files = list((project / "outbox").glob("*.eml"))
    assert len(files) == 1 and str(files[0]) in where
    msg = email.message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert msg["Subject"] == "Bitte bestätigen „jetzt“"
    assert msg["X-Test"] == "1"
    assert msg.get_body(("plain",)).get_content().strip() == "Klick & fertig"
    assert msg.get_body(("html",)).get_content().strip() == "<p>Klick & fertig</p>"


def test_transactional_through_sendgrid(project: Path, server, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    monkeypatch.setenv("SENDGRID_API_HOST", server.url)
    where = send_transactional(Project.load(project), "a@example.org", "Hi", "<p>x</p>", "x")
    assert server.recipients() == ["a@example.org"]
    assert server.messages[0]["_message_id"] in where
    assert not (project / "outbox").exists()
