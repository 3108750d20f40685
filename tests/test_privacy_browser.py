"""A reader signs up through the form in headless Chromium and presses the confirmation
button: the consent record holds what the law asks for."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from newsletter.privacy import erase
from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.consent import text_hash
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import find_subscriber
from newsletter.store.suppressions import KEY_CHECK
from newsletter.web import create_app
from tests.browser import chromium
from tests.conftest import CONFIG
from tests.support.mail import outbox_messages
from tests.support.web import live_server

#: The default consent text in German, as the catalogue has it (the sign-up records its hash).
GERMAN_CONSENT = (
    "Ja, ich möchte den Newsletter „Jens' Briefing“ per E-Mail erhalten. Meine E-Mail-Adresse "
    "wird nur dafür verwendet. Ich kann mich jederzeit über den Abmeldelink in jeder Ausgabe "
    "oder per Antwort an den Absender wieder abmelden."
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.mark.slow
def test_signup_and_confirmation_click_in_chromium(make_project, database_url, browser) -> None:
    config = CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    proj = Project.load(make_project(config))
    engine = open_engine(proj.database_url)
    erase(engine, "lea@example.de")  # she asked to be erased once; now she comes back herself
    shown = GERMAN_CONSENT
    with live_server(create_app(proj, engine)) as base:
        page = browser.new_page()
        try:
            page.goto(f"{base}/subscribe")
            assert shown in page.locator("main").inner_text()
            user_agent = page.evaluate("navigator.userAgent")
            page.get_by_label("E-Mail-Adresse").fill("Lea@Example.de")
            page.get_by_label("Name (freiwillig)").fill("Lea Größe")
            # A person takes a few seconds; a form sent back sooner is a bot's (min_fill_seconds).
            page.wait_for_timeout(2200)
            page.get_by_role("button", name="Anmelden").click()
            page.wait_for_selector("text=Bitte bestätige")
            assert find_subscriber(engine, "lea@example.de").status == "unconfirmed"

            [mail] = outbox_messages(proj.root)
            text = mail.get_body(("plain",)).get_content()
            link = re.search(r"https://news\.example\.com(/confirm/\S+)", text).group(1)
            page.goto(base + link)
            assert find_subscriber(engine, "lea@example.de").status == "unconfirmed"
            page.get_by_role("button", name="Anmeldung bestätigen").click()
            page.wait_for_selector("text=Anmeldung bestätigt")
        finally:
            page.close()

    person = find_subscriber(engine, "lea@example.de")
    assert person.status == "subscribed" and person.name == "Lea Größe"
    with engine.connect() as conn:
        signup, confirmation = conn.execute(
            select(schema.consent_records)
            .where(schema.consent_records.c.subscriber_id == person.id)
            .order_by(schema.consent_records.c.id)
        ).all()
        erased = select(schema.suppressions).where(schema.suppressions.c.reason != KEY_CHECK)
        assert conn.execute(erased).all() == []  # the opt-in lifted it
    assert (signup.kind, confirmation.kind) == ("signup", "confirmation")
    assert signup.ip == confirmation.ip == "127.0.0.0"
    assert signup.user_agent == confirmation.user_agent == user_agent
    assert signup.page_url == f"{base}/subscribe"
    assert signup.consent_text_hash == confirmation.consent_text_hash == text_hash(shown)
    assert confirmation.proves_consent and not signup.proves_consent
