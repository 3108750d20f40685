"""A reply to a welcome email is matched like a reply to an issue: the step's email carries the
reader's signed reply token in its Reply-To (the one recipient builder of `sending`), naming
the step's issue AND the reader. So a reply from the reader's other address (a work alias, a
forwarding account), posted to the Inbound Parse endpoint with a changed subject, is still
stored against the reader and the step's issue."""

from __future__ import annotations

import email
import email.policy
import json

import httpx
from sqlalchemy import select

from newsletter import tokens
from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.web import create_app
from tests.conftest import CONFIG, TEST_SECRET
from tests.support.sequences import SEQUENCE, STEP1, T0, join, run, write_steps
from tests.support.web import live_server, multipart

SECRET = "inbound-secret-welcome"
DOMAIN = "replies.example.com"


def _post_reply(base: str, to: str, text: str) -> httpx.Response:
    sender = "Anna <anna@privat.example>"  # not the address the welcome email went to
    data = {
        "headers": f"From: {sender}\nTo: {to}\nSubject: Eine Frage\n",
        "from": sender,
        "to": to,
        "subject": "Eine Frage",  # not the step's subject: only the address can tell
        "text": text.encode("utf-8"),
        "envelope": json.dumps({"to": [to], "from": "anna@privat.example"}),
        "charsets": json.dumps(
            {"to": "UTF-8", "from": "UTF-8", "subject": "UTF-8", "text": "UTF-8"}
        ),
        "SPF": "pass",
        "dkim": "{@privat.example : pass}",
        "attachments": "0",
    }
    body, content_type = multipart(data, [])
    return httpx.post(
        f"{base}/webhooks/sendgrid/inbound/{SECRET}",
        content=body,
        headers={"Content-Type": content_type},
    )


def test_a_reply_to_a_welcome_email_is_matched_to_the_reader_and_the_step(
    make_project, database_url, monkeypatch, cli
):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    monkeypatch.setenv("NEWSLETTER_INBOUND_SECRET", SECRET)
    root = make_project(CONFIG + SEQUENCE + f'\n[replies]\ndomain = "{DOMAIN}"\nforward = false\n')
    write_steps(root, {"01-willkommen.md": STEP1})
    anna = join(root, "anna.mueller@example.de", T0, first_name="Anna")
    report = run(root, T0)
    assert report.accepted == 1, report.errors

    [copy] = list((root / "outbox").glob("*.eml"))
    mail = email.message_from_bytes(copy.read_bytes(), policy=email.policy.default)
    reply_to = str(mail["Reply-To"].addresses[0].addr_spec)
    local, _, domain = reply_to.partition("@")
    assert domain == DOMAIN and local.startswith("reply+")
    assert "%" not in local, f"the reply token was never filled in: {reply_to}"
    named = tokens.read_token(tokens.REPLY, local[len("reply+") :], key=TEST_SECRET)
    assert named.subscriber is not None, "the reply address does not name the reader"

    project = Project.load(root)
    engine = open_engine(project.database_url)
    with engine.connect() as conn:
        step_issue = conn.execute(select(schema.sequence_steps.c.issue_id)).scalar_one()
    with live_server(create_app(project, engine)) as base:
        response = _post_reply(base, reply_to, "Danke für die Begrüßung! Eine Frage: …")
    assert response.status_code == 200, response.text
    with engine.connect() as conn:
        [row] = conn.execute(select(schema.replies)).all()
    assert row.subscriber_id == anna.id and row.issue_id == step_issue
    assert row.text.startswith("Danke für die Begrüßung!")

    listing = json.loads(cli(root, "replies", "--format", "json").output)
    assert [(r["issue"], r["reader"]["email"]) for r in listing] == [
        ("sequences/welcome/willkommen", "anna.mueller@example.de")
    ]
