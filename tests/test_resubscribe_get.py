"""`GET /resubscribe/<token>` (CONTRACT.md: GET/POST): the page with the button that subscribes
again, changing nothing, as `GET /unsubscribe` does not; the POST subscribes. It answered
405 before. SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from starlette.testclient import TestClient

from newsletter import tokens
from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber, get_subscriber
from newsletter.web import create_app
from tests.conftest import TEST_SECRET
from tests.support.mail import text_of
from tests.support.web import sent_issue


@pytest.fixture
def site(project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    proj = Project.load(project)
    engine = open_engine(proj.database_url)
    jörg = add_subscriber(engine, "jörg.weg@example.de", name="Jörg Weg", status="unsubscribed")
    issue_id = sent_issue(engine, [jörg.id])
    token = tokens.make_token(tokens.UNSUBSCRIBE, jörg.id, issue_id, key=TEST_SECRET)
    return TestClient(create_app(proj, engine)), engine, jörg, token


def test_get_shows_the_button_and_changes_nothing_then_post_subscribes(site) -> None:  # type: ignore[no-untyped-def]
    client, engine, jörg, token = site
    for _ in range(2):  # a mail scanner may open it more than once
        page = client.get(f"/resubscribe/{token}")
        assert page.status_code == 200
        form = BeautifulSoup(page.text, "html.parser").find("form")
        assert form["action"] == f"/resubscribe/{token}" and form["method"].lower() == "post"
        assert get_subscriber(engine, jörg.id).status == "unsubscribed"
    back = client.post(form["action"])
    assert back.status_code == 200 and "Willkommen zurück" in text_of(back.text)
    assert get_subscriber(engine, jörg.id).status == "subscribed"
    again = client.get(f"/resubscribe/{token}")  # now subscribed: said so, no form
    assert again.status_code == 200 and "Willkommen zurück" in text_of(again.text)
    assert BeautifulSoup(again.text, "html.parser").find("form") is None


def test_get_with_a_bad_token_is_the_invalid_link_page(site) -> None:  # type: ignore[no-untyped-def]
    client, engine, jörg, token = site
    response = client.get(f"/resubscribe/{token[:-3]}")
    assert response.status_code == 400 and "Ungültiger Link" in response.text
    assert get_subscriber(engine, jörg.id).status == "unsubscribed"
