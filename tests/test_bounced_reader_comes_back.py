"""A reader whose address bounced (a full mailbox, a server down for a day) had no way back:
the "subscribe again" page said "please sign up again", and the sign-up form left a bounced
address alone. Now both mail them a confirmation link, even with single opt-in: their click
shows the address takes mail again, and the consent record has it. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from bs4 import BeautifulSoup
from starlette.testclient import TestClient

from newsletter import tokens
from newsletter.project import Project
from newsletter.store import consent
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber, get_subscriber, set_status
from newsletter.web import create_app
from tests.conftest import CONFIG, SENDGRID_KEY, TEST_SECRET
from tests.support.mail import outbox_messages, text_of
from tests.support.web import sent_issue


@pytest.fixture
def bounced(make_project, database_url, monkeypatch):
    def build(config: str = CONFIG):
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
        proj = Project.load(make_project(config))
        engine = open_engine(proj.database_url)
        anna = add_subscriber(engine, "anna.müller@example.de", first_name="Anna")
        issue_id = sent_issue(engine, [anna.id])
        set_status(engine, anna.id, "bounced", reason="552 Postfach voll")
        token = tokens.make_token(tokens.UNSUBSCRIBE, anna.id, issue_id, key=TEST_SECRET)
        return proj, engine, anna, token

    return build


def confirm_path(mail) -> str:
    text = mail.get_body(("plain",)).get_content()
    return re.search(r"https://news\.example\.com(/confirm/\S+)", text).group(1)


def test_the_subscribe_again_link_mails_a_bounced_reader_a_confirmation(bounced):
    proj, engine, anna, token = bounced()
    client = TestClient(create_app(proj, engine))

    page = client.get(f"/resubscribe/{token}")  # (a mail scanner's GET changes nothing)
    assert page.status_code == 200
    assert "An diese Adresse ließ sich nicht zustellen" in text_of(page.text)
    form = BeautifulSoup(page.text, "html.parser").find("form")
    assert form["action"] == f"/resubscribe/{token}" and "Link schicken" in form.text
    assert get_subscriber(engine, anna.id).status == "bounced"
    assert outbox_messages(proj.root) == []

    sent = client.post(form["action"])
    assert sent.status_code == 200
    assert "Bitte bestätige" in text_of(sent.text)
    assert get_subscriber(engine, anna.id).status == "bounced"  # until the click
    [mail] = outbox_messages(proj.root)
    assert mail["To"] == "anna.müller@example.de"
    assert "Hallo Anna," in mail.get_body(("plain",)).get_content()

    confirmed = client.post(confirm_path(mail))
    assert confirmed.status_code == 200 and "Anmeldung bestätigt" in confirmed.text
    assert get_subscriber(engine, anna.id).status == "subscribed"
    with engine.connect() as conn:
        assert consent.count(conn, anna.id, consent.CONFIRMATION) == 1


@pytest.mark.parametrize("double_opt_in", ["true", "false"])
def test_the_sign_up_form_mails_a_bounced_address_a_confirmation(bounced, double_opt_in):
    """Even with single opt-in: a bounced address is not put back on the list unseen."""
    proj, engine, anna, _ = bounced(CONFIG + f"\n[subscribe]\ndouble_opt_in = {double_opt_in}\n")
    client = TestClient(create_app(proj, engine))
    answer = client.post("/subscribe", data={"email": "Anna.Müller@example.de"})
    assert answer.status_code == 200
    # (Anyone may type an address into the form: a dead one stays bounced unless clicked.)
    assert get_subscriber(engine, anna.id).status == "bounced"
    [mail] = outbox_messages(proj.root)
    assert client.post(confirm_path(mail)).status_code == 200
    assert get_subscriber(engine, anna.id).status == "subscribed"


def test_a_complained_reader_is_still_left_alone_by_the_form(bounced):
    proj, engine, anna, _ = bounced()
    set_status(engine, anna.id, "complained")
    client = TestClient(create_app(proj, engine))
    assert client.post("/subscribe", data={"email": anna.email}).status_code == 200
    assert get_subscriber(engine, anna.id).status == "complained"
    assert outbox_messages(proj.root) == []


def test_through_sendgrid_the_link_passes_its_bounce_list_and_the_click_clears_it(bounced, sg):
    """SendGrid drops every mail to an address on its bounce list: the confirmation goes
    with `bypass_bounce_management`, and the confirmation takes the address off the list
    (DELETE /v3/suppression/bounces/...), so the next issue reaches them and `sync` does
    not bounce them again."""
    proj, engine, anna, token = bounced()
    sg.suppressions["bounces"] = [
        {"email": "anna.müller@example.de", "created": 1700000000, "reason": "552 Postfach voll"},
        {"email": "other@example.de", "created": 1700000000, "reason": "550"},
    ]
    client = TestClient(create_app(proj, engine))
    assert client.post(f"/resubscribe/{token}").status_code == 200
    [mail] = sg.messages
    assert mail["mail_settings"] == {"bypass_bounce_management": {"enable": True}}
    assert mail["personalizations"][0]["to"][0]["email"] == "anna.müller@example.de"
    text = next(c["value"] for c in mail["content"] if c["type"] == "text/plain")
    link = re.search(r"https://news\.example\.com(/confirm/\S+)", text).group(1)

    assert client.post(link).status_code == 200
    assert get_subscriber(engine, anna.id).status == "subscribed"
    assert sg.suppressions["bounces"] == [
        {"email": "other@example.de", "created": 1700000000, "reason": "550"}
    ]
    assert "DELETE /v3/suppression/bounces/anna.müller@example.de" in sg.suppression_requests
    assert "DELETE /v3/suppression/invalid_emails/anna.müller@example.de" in (
        sg.suppression_requests
    )


def test_a_confirmation_is_not_held_up_by_sendgrid_refusing_the_bounce_list(bounced, sg):
    proj, engine, anna, token = bounced()
    client = TestClient(create_app(proj, engine))
    assert client.post(f"/resubscribe/{token}").status_code == 200
    text = next(c["value"] for c in sg.messages[0]["content"] if c["type"] == "text/plain")
    link = re.search(r"https://news\.example\.com(/confirm/\S+)", text).group(1)
    sg.suppressions["bounces"] = [
        {"email": "anna.müller@example.de", "created": 1700000000, "reason": "552 Postfach voll"}
    ]
    sg.api_key = "SG.another-key"  # (the bounce list answers 401 now)
    assert client.post(link).status_code == 200
    assert get_subscriber(engine, anna.id).status == "subscribed"
    assert len(sg.suppressions["bounces"]) == 1  # (not lifted)


def test_sync_leaves_alone_a_reader_who_confirmed_after_the_bounce(bounced, sg, cli):
    """SendGrid kept the old bounce (the key could not lift it): `sync` set the reader, who
    had just confirmed their address, back to bounced. A bounce listed after someone's last
    confirmation still counts."""
    proj, engine, anna, token = bounced()
    client = TestClient(create_app(proj, engine))
    assert client.post(f"/resubscribe/{token}").status_code == 200
    text = next(c["value"] for c in sg.messages[0]["content"] if c["type"] == "text/plain")
    link = re.search(r"https://news\.example\.com(/confirm/\S+)", text).group(1)
    sg.api_key = "SG.another-key"
    assert client.post(link).status_code == 200
    sg.api_key = SENDGRID_KEY

    alt = add_subscriber(engine, "alt@example.de")
    with engine.begin() as conn:  # confirmed long before their address bounced
        consent.record(
            conn, alt.id, consent.CONFIRMATION, occurred_at=datetime(2023, 1, 1, tzinfo=UTC)
        )
    sg.suppressions["bounces"] = [
        {"email": "anna.müller@example.de", "created": 1700000000, "reason": "552"},
        {"email": "alt@example.de", "created": 1700000000, "reason": "550 unknown"},
    ]
    synced = cli(proj.root, "sync")
    assert synced.exit_code == 0, synced.output
    assert "1 now bounced, 1 left alone (they confirmed their address since)" in synced.output
    assert get_subscriber(engine, anna.id).status == "subscribed"
    assert get_subscriber(engine, alt.id).status == "bounced"


def test_a_new_readers_confirmation_keeps_to_sendgrids_bounce_list(
    make_project, database_url, monkeypatch, sg
):
    """Only a reader who bounced gets their confirmation past SendGrid's bounce list, and
    only their click asks SendGrid to forget a bounce: a bot typing dead addresses into
    the form must not make us mail them."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    proj = Project.load(make_project(CONFIG))
    engine = open_engine(proj.database_url)
    client = TestClient(create_app(proj, engine))
    assert client.post("/subscribe", data={"email": "neu@example.de"}).status_code == 200
    [mail] = sg.messages
    assert "bypass_bounce_management" not in str(mail.get("mail_settings"))
    text = next(c["value"] for c in mail["content"] if c["type"] == "text/plain")
    link = re.search(r"https://news\.example\.com(/confirm/\S+)", text).group(1)
    assert client.post(link).status_code == 200
    assert not [r for r in sg.suppression_requests if r.startswith("DELETE")]
