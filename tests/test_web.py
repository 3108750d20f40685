"""Unsubscribe, resubscribe, subscribe with double opt-in, confirm, the web version of an
issue: in-process (TestClient) and over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from bs4 import BeautifulSoup
from starlette.testclient import TestClient

from newsletter import tokens
from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import (
    add_subscriber,
    find_subscriber,
    forget_subscriber,
    get_subscriber,
)
from newsletter.web import create_app
from tests.conftest import CONFIG, TEST_SECRET
from tests.support.mail import outbox_messages, text_of
from tests.support.web import live_server, sent_issue


@pytest.fixture
def site(project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    proj = Project.load(project)
    engine = open_engine(proj.database_url)
    anna = add_subscriber(engine, "anna.mueller@example.de", name="Anna Müller")
    issue_id = sent_issue(engine, [anna.id])
    return proj, engine, anna, issue_id


def unsubscribe_token(subscriber_id: int, issue_id: int | None) -> str:
    return tokens.make_token(tokens.UNSUBSCRIBE, subscriber_id, issue_id, key=TEST_SECRET)


@pytest.mark.slow
def test_one_click_unsubscribe_over_http_and_resubscribe(site):
    proj, engine, anna, issue_id = site
    token = unsubscribe_token(anna.id, issue_id)
    with live_server(create_app(proj, engine)) as base:
        page = httpx.get(f"{base}/unsubscribe/{token}")
        assert page.status_code == 200
        soup = BeautifulSoup(page.text, "html.parser")
        assert soup.html["lang"] == "de"
        assert "Möchtest du „Jens' Briefing“ wirklich abbestellen?" in text_of(page.text)
        assert soup.find("form")["action"] == f"/unsubscribe/{token}"
        assert get_subscriber(engine, anna.id).status == "subscribed"  # GET changes nothing

        # RFC 8058: the mailbox provider POSTs this body, without cookies; no redirect.
        for _ in range(2):  # idempotent
            done = httpx.post(
                f"{base}/unsubscribe/{token}",
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                follow_redirects=False,
            )
            assert done.status_code == 200
            assert "set-cookie" not in done.headers
            assert "Du bekommst „Jens' Briefing“ nicht mehr" in text_of(done.text)
        assert get_subscriber(engine, anna.id).status == "unsubscribed"

        again = BeautifulSoup(done.text, "html.parser").find("form")
        assert again["action"] == f"/resubscribe/{token}"
        back = httpx.post(base + again["action"])
        assert back.status_code == 200 and "Willkommen zurück" in back.text
    assert get_subscriber(engine, anna.id).status == "subscribed"


@pytest.mark.slow
def test_unsubscribe_page_follows_issue_language_then_config(site):
    proj, engine, anna, _ = site
    english = sent_issue(engine, [], slug="in-english", subject="Hello", title="Hi", language="en")
    client = TestClient(create_app(proj, engine))
    page = client.get(f"/unsubscribe/{unsubscribe_token(anna.id, english)}")
    assert 'lang="en"' in page.text and "Do you really want to unsubscribe" in page.text
    # No issue in the token: the project's language (de).
    page = client.get(f"/unsubscribe/{unsubscribe_token(anna.id, None)}")
    assert 'lang="de"' in page.text and "abbestellen" in page.text


@pytest.mark.slow
@pytest.mark.parametrize("how", ["altered", "forged", "truncated", "other_purpose", "garbage"])
def test_forged_or_altered_tokens_get_400_and_change_nothing(site, how):
    proj, engine, anna, issue_id = site
    good = unsubscribe_token(anna.id, issue_id)
    bad = {
        "altered": unsubscribe_token(anna.id + 1, issue_id).split(".")[0]
        + "."
        + good.split(".")[1],
        "forged": tokens.make_token(tokens.UNSUBSCRIBE, anna.id, issue_id, key="attacker-key"),
        "truncated": good[:-3],
        "other_purpose": tokens.make_token(tokens.CONFIRM, anna.id, issue_id, key=TEST_SECRET),
        "garbage": "' OR 1=1 --",
    }[how]
    client = TestClient(create_app(proj, engine))
    for method in ("get", "post"):
        response = getattr(client, method)(f"/unsubscribe/{bad}")
        assert response.status_code == 400
        assert "Ungültiger Link" in response.text
    assert client.post(f"/resubscribe/{bad}").status_code == 400
    assert client.get(f"/confirm/{bad}").status_code == 400
    assert get_subscriber(engine, anna.id).status == "subscribed"


def test_forgotten_subscriber_gets_a_neutral_page(site):
    proj, engine, anna, issue_id = site
    token = unsubscribe_token(anna.id, issue_id)
    forget_subscriber(engine, anna.email)
    client = TestClient(create_app(proj, engine))
    for response in (client.get(f"/unsubscribe/{token}"), client.post(f"/unsubscribe/{token}")):
        assert response.status_code == 410
        assert "keine Daten mehr" in response.text
        assert "anna" not in response.text.lower()


def test_subscribe_double_opt_in_over_http(site):
    proj, engine, _, _ = site
    with live_server(create_app(proj, engine)) as base:
        response = httpx.post(
            f"{base}/subscribe", data={"email": "Jörg.Neu@Example.DE", "name": "Jörg „Jo“ Neu"}
        )
        assert response.status_code == 200
        assert "Bitte bestätige" in text_of(response.text)
        person = find_subscriber(engine, "jörg.neu@example.de")
        assert person is not None and person.status == "unconfirmed"
        assert person.name == "Jörg „Jo“ Neu" and person.source == "form"

        [mail] = outbox_messages(proj.root)
        assert mail["To"] == person.email
        assert "„Jens' Briefing“" in mail["Subject"]
        text = mail.get_body(("plain",)).get_content()
        link = re.search(r"https://news\.example\.com(/confirm/\S+)", text).group(1)
        html = mail.get_body(("html",)).get_content()
        assert link in html and "Hallo Jörg „Jo“ Neu," in text

        # GET (what a mail scanner fetches) shows the button and changes nothing.
        page = httpx.get(base + link)
        assert page.status_code == 200 and "Anmeldung bestätigen" in page.text
        assert BeautifulSoup(page.text, "html.parser").find("form")["method"] == "post"
        assert find_subscriber(engine, person.email).status == "unconfirmed"
        confirmed = httpx.post(base + link)
        assert confirmed.status_code == 200 and "Anmeldung bestätigt" in confirmed.text
        assert find_subscriber(engine, person.email).status == "subscribed"
        assert httpx.post(base + link).status_code == 200  # a second press: still confirmed


def test_subscribe_does_not_reveal_or_touch_existing_subscribers(site):
    proj, engine, anna, _ = site
    client = TestClient(create_app(proj, engine))
    new = client.post("/subscribe", data={"email": "someone.new@example.de"})
    known = client.post("/subscribe", data={"email": anna.email, "name": "Eve"})
    assert new.status_code == known.status_code == 200
    assert new.text == known.text
    assert get_subscriber(engine, anna.id).status == "subscribed"
    assert get_subscriber(engine, anna.id).name == "Anna Müller"
    assert len(outbox_messages(proj.root)) == 1  # only the new person got a mail


def test_honeypot_rate_limit_and_bad_addresses(site, make_project, monkeypatch):
    proj, engine, _, _ = site
    client = TestClient(create_app(proj, engine))
    bot = client.post("/subscribe", data={"email": "bot@example.de", "website": "http://spam"})
    assert bot.status_code == 200 and "Bitte bestätige" in bot.text
    assert find_subscriber(engine, "bot@example.de") is None
    invalid = client.post("/subscribe", data={"email": "not-an-address"})
    assert invalid.status_code == 400 and "scheint nicht zu stimmen" in invalid.text
    sql = client.post("/subscribe", data={"email": "x'); DROP TABLE subscribers;--@example.de"})
    assert sql.status_code in (200, 400)
    assert find_subscriber(engine, "anna.mueller@example.de") is not None

    root = make_project(CONFIG + "\n[subscribe]\nrate_limit_per_hour = 3\n", name="limited")
    limited = Project.load(root)
    client = TestClient(create_app(limited, open_engine(limited.database_url)))
    answers = [client.post("/subscribe", data={"email": f"p{i}@example.de"}) for i in range(5)]
    # Issue 26 item 4: over the limit the answer is the same as below it; nobody is added.
    assert [a.status_code for a in answers] == [200] * 5
    assert len({a.text for a in answers}) == 1
    engine = open_engine(limited.database_url)
    assert [find_subscriber(engine, f"p{i}@example.de") is not None for i in range(5)] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_single_opt_in_and_redirect(make_project):
    root = make_project(
        CONFIG
        + '\n[subscribe]\ndouble_opt_in = false\nredirect_url = "https://blog.example.com/danke"\n',
        name="single",
    )
    proj = Project.load(root)
    engine = open_engine(proj.database_url)
    client = TestClient(create_app(proj, engine))
    response = client.post(
        "/subscribe", data={"email": "leserin@example.de"}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "https://blog.example.com/danke"
    assert find_subscriber(engine, "leserin@example.de").status == "subscribed"
    assert not (root / "outbox").exists()


def test_expired_confirmation_link(site, monkeypatch):
    proj, engine, _, _ = site
    person = add_subscriber(engine, "spaet@example.de", status="unconfirmed", source="form")
    from itsdangerous.timed import TimestampSigner

    with monkeypatch.context() as m:  # a link made eight days ago
        m.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 8 * 86400)
        token = tokens.make_timed_token(tokens.CONFIRM, person.id, key=TEST_SECRET)
    response = TestClient(create_app(proj, engine)).get(f"/confirm/{token}")
    assert response.status_code == 400 and "abgelaufen" in response.text
    assert get_subscriber(engine, person.id).status == "unconfirmed"


def test_subscribers_add_confirm_sends_the_same_mail(project, cli):
    result = cli(project, "subscribers", "add", "cli.person@example.de", "--confirm")
    assert result.exit_code == 0, result.output
    proj = Project.load(project)
    engine = open_engine(proj.database_url)
    assert find_subscriber(engine, "cli.person@example.de").status == "unconfirmed"
    [mail] = outbox_messages(project)
    link = re.search(
        r"https://news\.example\.com(/confirm/\S+)", mail.get_body(("plain",)).get_content()
    ).group(1)
    assert TestClient(create_app(proj, engine)).post(link).status_code == 200
    assert find_subscriber(engine, "cli.person@example.de").status == "subscribed"


def test_web_version_of_an_issue_is_anonymous(site):
    proj, engine, anna, _ = site
    client = TestClient(create_app(proj, engine))
    page = client.get("/issues/meta-ki-creator")
    assert page.status_code == 200
    text = text_of(page.text)
    assert "Hallo zusammen," in text  # the personal field fell back to its default
    assert "Warum Metas KI Creator verdrängen könnte" in page.text or "Metas" in text
    assert "Anna" not in text and anna.email not in page.text
    assert "/unsubscribe/" not in page.text.replace("/unsubscribe/{token}", "")
    assert client.get("/issues/no-such-issue").status_code == 404
    assert client.get("/issues/..%2Fnewsletter.toml").status_code == 404


def test_web_version_of_an_unsent_draft_is_not_served(site):
    proj, engine, _, _ = site
    draft = proj.issues_dir / "2024-08-entwurf.md"
    draft.write_text(
        "---\ntitle: Geheimer Entwurf\nslug: entwurf\n---\nNoch nicht fertig.\n", "utf-8"
    )
    client = TestClient(create_app(proj, engine))
    page = client.get("/issues/entwurf")
    assert page.status_code == 404 and "Noch nicht fertig" not in page.text
    assert client.get("/issues/meta-ki-creator").status_code == 200  # the sent one is served


def test_web_version_follows_a_new_template_without_a_restart(site):
    proj, engine, _, _ = site
    client = TestClient(create_app(proj, engine))
    assert "Eigene Zeile" not in client.get("/issues/meta-ki-creator").text
    from newsletter.project import builtin_templates_dir

    # (The email's footer is replaced on the web: the change goes into the layout's card.)
    layout = (builtin_templates_dir() / "email.mjml.j2").read_text(encoding="utf-8")
    proj.templates_dir.mkdir(exist_ok=True)
    (proj.templates_dir / "email.mjml.j2").write_text(
        layout.replace("{{ content }}", "<p>Eigene Zeile</p>\n{{ content }}"), encoding="utf-8"
    )
    assert "Eigene Zeile" in client.get("/issues/meta-ki-creator").text


@pytest.mark.slow
def test_oversized_form_gets_413(site):
    proj, engine, _, _ = site
    client = TestClient(create_app(proj, engine))
    response = client.post("/subscribe", data={"email": "a@example.de", "name": "x" * 1_100_000})
    assert response.status_code == 413
    assert find_subscriber(engine, "a@example.de") is None


def test_unexpected_errors_are_a_bare_500_and_logged_without_details(project, caplog):
    import logging

    from sqlalchemy import text

    proj = Project.load(project)
    engine = open_engine(proj.database_url)
    anna = add_subscriber(engine, "anna.geheim@example.de")
    token = unsubscribe_token(anna.id, None)
    client = TestClient(create_app(proj, engine), raise_server_exceptions=False)
    with engine.begin() as conn:
        conn.execute(text("PRAGMA foreign_keys=OFF"))
        conn.execute(text("DROP TABLE subscribers"))  # something nobody planned for
    caplog.set_level(logging.INFO)
    response = client.post(f"/unsubscribe/{token}")
    assert response.status_code == 500 and response.text == "Internal Server Error\n"
    server_log = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore"))  # the test client's own log
    )
    assert "unhandled OperationalError" in server_log
    assert "POST /unsubscribe/{token} 500" in server_log
    assert token not in server_log and "subscribers" not in server_log
