"""The sign-up form, the confirmation page and the evidence they leave, over real HTTP
and in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from bs4 import BeautifulSoup
from sqlalchemy import select
from starlette.testclient import TestClient

from newsletter import tokens
from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.consent import text_hash
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import find_subscriber, set_status
from newsletter.web import create_app
from tests.conftest import CONFIG, TEST_SECRET
from tests.support.mail import confirm_link, outbox_messages, text_of
from tests.support.web import live_server

#: The default consent text in German, as the catalogue has it (the sign-up records its hash).
GERMAN_CONSENT = (
    "Ja, ich möchte den Newsletter „Jens' Briefing“ per E-Mail erhalten. Meine E-Mail-Adresse "
    "wird nur dafür verwendet. Ich kann mich jederzeit über den Abmeldelink in jeder Ausgabe "
    "oder per Antwort an den Absender wieder abmelden."
)

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) Testbrowser/1.0"


def make_site(make_project, database_url: str, extra: str = "", name: str = "site") -> Any:
    root = make_project(
        CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"') + extra,
        name=name,
    )
    proj = Project.load(root)
    engine = open_engine(proj.database_url)
    return proj, engine


def records(engine: Any, email: str) -> list[Any]:
    person = find_subscriber(engine, email)
    with engine.connect() as conn:
        return conn.execute(
            select(schema.consent_records)
            .where(schema.consent_records.c.subscriber_id == person.id)
            .order_by(schema.consent_records.c.id)
        ).all()


@pytest.mark.slow
def test_signup_and_confirmation_keep_the_evidence(make_project, database_url) -> None:
    proj, engine = make_site(make_project, database_url)
    with live_server(create_app(proj, engine)) as base:
        form = httpx.get(f"{base}/subscribe")
        assert form.status_code == 200
        assert GERMAN_CONSENT in text_of(form.text)
        assert BeautifulSoup(form.text, "html.parser").find("input", type="checkbox") is None

        posted = httpx.post(
            f"{base}/subscribe",
            data={"email": "leserin@example.de", "name": "Lea"},
            headers={"User-Agent": BROWSER_UA, "Referer": "https://blog.example.com/newsletter"},
        )
        assert posted.status_code == 200
        [signup] = records(engine, "leserin@example.de")
        shown = GERMAN_CONSENT
        assert signup.kind == "signup" and not signup.proves_consent
        assert signup.ip == "127.0.0.0"  # last octet zeroed
        assert signup.user_agent == BROWSER_UA
        assert signup.page_url == "https://blog.example.com/newsletter"
        assert signup.consent_text_hash == text_hash(shown)

        mail_text = outbox_messages(proj.root)[0].get_body(("plain",)).get_content()
        assert shown in mail_text
        link = confirm_link(proj.root)

        # A mail scanner fetches the link: nobody is confirmed, nothing is recorded.
        for _ in range(3):
            scanned = httpx.get(base + link, headers={"User-Agent": "Scanner/1.0"})
            assert scanned.status_code == 200 and "Anmeldung bestätigen" in scanned.text
        assert find_subscriber(engine, "leserin@example.de").status == "unconfirmed"
        assert len(records(engine, "leserin@example.de")) == 1

        pressed = httpx.post(base + link, headers={"User-Agent": BROWSER_UA})
        assert pressed.status_code == 200 and "Anmeldung bestätigt" in pressed.text
    assert find_subscriber(engine, "leserin@example.de").status == "subscribed"
    _, confirmation = records(engine, "leserin@example.de")
    assert confirmation.kind == "confirmation" and confirmation.proves_consent
    assert confirmation.ip == "127.0.0.0" and confirmation.user_agent == BROWSER_UA
    assert confirmation.consent_text_hash == text_hash(shown)
    with engine.connect() as conn:
        assert conn.execute(select(schema.consent_texts.c.text)).scalar_one() == shown


def test_hidden_page_field_full_ip_and_a_configured_consent_text(
    make_project, database_url
) -> None:
    text = "Ich will Jens' Briefing. Abmelden geht mit dem Link unten in jeder Mail."
    proj, engine = make_site(
        make_project,
        database_url,
        f'\n[subscribe]\nconsent_text = "{text}"\n\n[privacy]\nstore_full_ip = true\n',
    )
    client = TestClient(create_app(proj, engine), client=("203.0.113.77", 50000))
    assert text in text_of(client.get("/subscribe").text)
    client.post(
        "/subscribe",
        data={"email": "a@example.de", "page": "https://blog.example.com/ueber-mich"},
        headers={"Referer": "https://elsewhere.example.com/"},
    )
    [signup] = records(engine, "a@example.de")
    assert signup.ip == "203.0.113.77"
    assert signup.page_url == "https://blog.example.com/ueber-mich"
    assert signup.consent_text_hash == text_hash(text)
    assert text in outbox_messages(proj.root)[0].get_body(("plain",)).get_content()

    # Another text is another version.
    changed = text + " Versprochen."
    proj2, _ = make_site(
        make_project, database_url, f'\n[subscribe]\nconsent_text = "{changed}"\n', name="site2"
    )
    TestClient(create_app(proj2, engine)).post("/subscribe", data={"email": "b@example.de"})
    [other] = records(engine, "b@example.de")
    assert other.consent_text_hash == text_hash(changed) != signup.consent_text_hash


def test_a_confirmation_link_works_once_and_only_for_an_unconfirmed_person(
    make_project, database_url, monkeypatch
) -> None:
    """Before: the same link, POSTed or fetched again within 7 days, made a complained,
    bounced or unsubscribed person a subscriber again."""
    proj, engine = make_site(make_project, database_url)
    client = TestClient(create_app(proj, engine))
    client.post("/subscribe", data={"email": "wechsel@example.de"})
    link = confirm_link(proj.root)
    assert client.post(link).status_code == 200
    person = find_subscriber(engine, "wechsel@example.de")
    for status in ("unsubscribed", "bounced", "complained"):
        set_status(engine, person.id, status)
        for method in ("get", "post"):
            again = getattr(client, method)(link)
            assert again.status_code == 410 and "schon benutzt" in again.text
        assert find_subscriber(engine, person.email).status == status

    # Unsubscribed, then signed up again: the new link works; the old one is spent.
    set_status(engine, person.id, "unsubscribed")
    from itsdangerous.timed import TimestampSigner

    with monkeypatch.context() as m:  # the old link, made a minute before its confirmation
        m.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 60)
        old = "/confirm/" + tokens.make_timed_token(tokens.CONFIRM, person.id, key=TEST_SECRET)
    client.post("/subscribe", data={"email": "wechsel@example.de"})
    assert find_subscriber(engine, person.email).status == "unconfirmed"
    assert client.get(old).status_code == client.post(old).status_code == 410
    assert find_subscriber(engine, person.email).status == "unconfirmed"
    assert client.post(confirm_link(proj.root)).status_code == 200
    assert find_subscriber(engine, person.email).status == "subscribed"


def test_required_checkbox_is_unticked_and_enforced(make_project, database_url) -> None:
    proj, engine = make_site(make_project, database_url, "\n[subscribe]\nrequire_checkbox = true\n")
    client = TestClient(create_app(proj, engine))
    form = BeautifulSoup(client.get("/subscribe?lang=en").text, "html.parser")
    box = form.find("input", type="checkbox")
    assert box is not None and not box.has_attr("checked")
    assert "newsletter “Jens' Briefing” by email" in box.parent.get_text()

    refused = client.post("/subscribe", data={"email": "ohne@example.de", "lang": "en"})
    assert refused.status_code == 400 and "Please tick the box" in refused.text
    assert find_subscriber(engine, "ohne@example.de") is None
    assert not (proj.root / "outbox").exists()

    ok = client.post("/subscribe", data={"email": "mit@example.de", "consent": "yes"})
    assert ok.status_code == 200
    [signup] = records(engine, "mit@example.de")
    assert signup.details["checkbox_ticked"] is True


def test_imprint_and_privacy_links_on_pages_and_in_the_confirmation_mail(make_project) -> None:
    config = CONFIG.replace(
        'imprint_url = "https://news.example.com/impressum"\n',
        'imprint_url = "https://jens.example.com/impressum"\n'
        'privacy_url = "https://jens.example.com/datenschutz"\n',
    )
    root = make_project(config, name="imprint")
    proj = Project.load(root)
    client = TestClient(create_app(proj, open_engine(proj.database_url)))
    form = BeautifulSoup(client.get("/subscribe").text, "html.parser")
    links = {a.get_text(): a["href"] for a in form.footer.find_all("a")}
    assert links == {
        "Impressum": "https://jens.example.com/impressum",
        "Datenschutz": "https://jens.example.com/datenschutz",
    }
    client.post("/subscribe", data={"email": "x@example.de"})
    [mail] = outbox_messages(root)
    html = BeautifulSoup(mail.get_body(("html",)).get_content(), "html.parser")
    assert html.find("a", string="Impressum")["href"] == "https://jens.example.com/impressum"
    text = mail.get_body(("plain",)).get_content()
    assert "Datenschutz: https://jens.example.com/datenschutz" in text


def test_the_archive_sign_up_form_shows_the_consent_text_and_checkbox(make_project) -> None:
    for extra, has_box in (("", False), ("\n[subscribe]\nrequire_checkbox = true\n", True)):
        # Another base_url per project: the archive caches pages per site, not per config.
        config = CONFIG.replace("news.example.com", f"news{has_box}.example.com")
        root = make_project(config + extra, name=f"archive{has_box}")
        proj = Project.load(root)
        index = TestClient(create_app(proj, open_engine(proj.database_url))).get("/")
        assert index.status_code == 200
        form = BeautifulSoup(index.text, "html.parser").find("form", action="/subscribe")
        assert GERMAN_CONSENT in form.get_text(" ")
        box = form.find("input", type="checkbox")
        assert (box is not None) == has_box and (box is None or not box.has_attr("checked"))
