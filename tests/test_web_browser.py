"""The unsubscribe and sign-up pages in headless Chromium, as a reader uses them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from newsletter import tokens
from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber, get_subscriber
from newsletter.web import create_app
from tests.browser import chromium
from tests.conftest import TEST_SECRET
from tests.support.web import live_server, sent_issue

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.mark.slow
def test_reader_unsubscribes_and_resubscribes_with_the_buttons(project, browser):
    proj = Project.load(project)
    engine = open_engine(proj.database_url)
    anna = add_subscriber(engine, "anna@example.de", name="Anna")
    issue_id = sent_issue(engine, [anna.id])
    token = tokens.make_token(tokens.UNSUBSCRIBE, anna.id, issue_id, key=TEST_SECRET)
    with live_server(create_app(proj, engine)) as base:
        page = browser.new_page()
        try:
            page.goto(f"{base}/unsubscribe/{token}")
            assert page.locator("h1").inner_text() == "Newsletter abbestellen"
            page.get_by_role("button", name="Abbestellen").click()
            page.wait_for_selector("text=Abgemeldet")
            assert "nicht mehr" in page.locator("main").inner_text()
            assert get_subscriber(engine, anna.id).status == "unsubscribed"
            assert page.context.cookies() == []
            page.get_by_role("button", name="Wieder anmelden").click()
            page.wait_for_selector("text=Willkommen zurück")
            assert get_subscriber(engine, anna.id).status == "subscribed"
        finally:
            page.close()
