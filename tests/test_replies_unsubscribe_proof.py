"""An "abmelden" reply unsubscribes only a proven sender (issue 28, item 11): the signed
per-reader reply address, or DKIM for the From address's domain with that very address as
the SMTP envelope sender. SPF, or DKIM of a shared provider, alone proves nothing.

Each reply goes through the whole Inbound Parse step (`replies.receive`: decode the posted
fields, match, store, apply) into a real SQLite or PostgreSQL database."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from newsletter import replies, tokens
from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber, get_subscriber
from tests.conftest import CONFIG, TEST_SECRET

REPLIES = '\n[replies]\ndomain = "replies.example.com"\nforward = false\n'


@pytest.fixture
def inbox(make_project, database_url, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    project = Project.load(make_project(CONFIG + REPLIES))
    engine = open_engine(project.database_url)
    victim = add_subscriber(engine, "victim2@gmail.com", name="Vicky")
    return project, engine, victim


def posted(
    sender: str,
    *,
    envelope_from: str,
    spf: str = "pass",
    dkim: str = "",
    to: str = "jens@example.com",
    text: str = "abmelden",
) -> replies.RawInbound:
    """The fields SendGrid's Inbound Parse posts (parsed mode), as bytes."""
    fields = {
        "headers": f"From: {sender}\nTo: {to}\nSubject: Re: Meta\n",
        "from": sender,
        "to": to,
        "subject": "Re: Meta",
        "text": text,
        "envelope": json.dumps({"to": [to], "from": envelope_from}),
        "charsets": json.dumps({"from": "UTF-8", "text": "UTF-8", "subject": "UTF-8"}),
        "SPF": spf,
        "dkim": dkim,
    }
    return replies.RawInbound(fields={k: v.encode("utf-8") for k, v in fields.items()})


def request_of(engine) -> list[str | None]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(schema.replies.c.unsubscribe_request).order_by(schema.replies.c.id)
            ).scalars()
        )


@pytest.mark.parametrize(
    ("envelope_from", "spf", "dkim"),
    [
        # Someone else at the same provider: SPF and gmail's DKIM pass for their own mail.
        ("someone.else@gmail.com", "pass", ""),
        ("someone.else@gmail.com", "pass", "{@gmail.com : pass}"),
        # SPF for the very address, but no DKIM: SPF vouches for the envelope only.
        ("victim2@gmail.com", "pass", ""),
        # DKIM by another domain (the provider's relay, a forger's own domain).
        ("victim2@gmail.com", "pass", "{@sendgrid.info : pass, @forger.example : pass}"),
        # gmail's DKIM failed.
        ("victim2@gmail.com", "pass", "{@gmail.com : fail}"),
    ],
)
def test_abmelden_across_a_shared_provider_unsubscribes_nobody(inbox, envelope_from, spf, dkim):
    project, engine, victim = inbox
    raw = posted("Vicky <victim2@gmail.com>", envelope_from=envelope_from, spf=spf, dkim=dkim)
    stored = replies.receive(project, engine, raw)
    assert (stored.subscriber_id, stored.unsubscribed) == (victim.id, False)
    assert get_subscriber(engine, victim.id).status == "subscribed"
    assert request_of(engine) == ["unverified"]


@pytest.mark.parametrize(
    ("sender", "envelope_from", "dkim"),
    [
        ("victim2@gmail.com", "victim2@gmail.com", "{@gmail.com : pass}"),
        # The same address, spelled differently in From and envelope.
        ("Victim2@GMail.com", "victim2@gmail.com", "{@sendgrid.info : fail, @gmail.com : pass}"),
    ],
)
def test_dkim_for_the_from_domain_and_the_same_envelope_sender_unsubscribes(
    inbox, sender, envelope_from, dkim
):
    project, engine, victim = inbox
    raw = posted(sender, envelope_from=envelope_from, spf="softfail", dkim=dkim)
    assert replies.receive(project, engine, raw).unsubscribed
    assert get_subscriber(engine, victim.id).status == "unsubscribed"
    assert request_of(engine) == ["verified"]


def test_the_readers_own_reply_address_unsubscribes_without_spf_or_dkim(inbox):
    project, engine, victim = inbox
    own = tokens.reply_address_for("replies.example.com", 7, victim.id, TEST_SECRET)
    raw = posted("victim2@gmail.com", envelope_from="", spf="fail", to=own)
    assert replies.receive(project, engine, raw).unsubscribed
    assert get_subscriber(engine, victim.id).status == "unsubscribed"


def test_another_readers_reply_address_proves_nothing(inbox):
    project, engine, victim = inbox
    other = add_subscriber(engine, "someone.else@gmail.com")
    theirs = tokens.reply_address_for("replies.example.com", 7, other.id, TEST_SECRET)
    raw = posted("victim2@gmail.com", envelope_from="someone.else@gmail.com", to=theirs)
    assert not replies.receive(project, engine, raw).unsubscribed
    assert get_subscriber(engine, victim.id).status == "subscribed"
    assert get_subscriber(engine, other.id).status == "subscribed"
