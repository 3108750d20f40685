"""A confirmation link works once, however fast the reader is (issue 28, item 7).

Token times have whole seconds; before, a link used within the second it was made stayed
valid after an unsubscribe and a new sign-up. Here the link's clock and the database's
clock are pinned to one second, so "fast" is certain rather than likely."""

from __future__ import annotations

import email
import email.policy
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import find_subscriber, set_status
from newsletter.web import create_app
from tests.conftest import CONFIG


def newest_confirm_link(root: Path) -> str:
    newest = max((root / "outbox").glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    mail = email.message_from_bytes(newest.read_bytes(), policy=email.policy.default)
    text = mail.get_body(("plain",)).get_content()
    return re.search(r"https://news\.example\.com(/confirm/\S+)", text).group(1)


@pytest.fixture
def one_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything (links made, confirmations recorded) happens in the same second."""
    from itsdangerous.timed import TimestampSigner

    from newsletter.store import consent

    second = int(time.time())

    class FrozenDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return datetime.fromtimestamp(second + 0.5, tz or UTC)

    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: second)
    monkeypatch.setattr(consent, "datetime", FrozenDatetime)


def test_a_used_link_is_spent_even_within_its_second(
    make_project: Any, database_url: str, one_second: None
) -> None:
    root = make_project(
        CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    )
    proj = Project.load(root)
    engine = open_engine(proj.database_url)
    client = TestClient(create_app(proj, engine))

    client.post("/subscribe", data={"email": "schnell@example.de"})
    first = newest_confirm_link(root)
    assert client.post(first).status_code == 200
    person = find_subscriber(engine, "schnell@example.de")
    assert person.status == "subscribed"

    # Unsubscribed and signed up again, all in the same second: the old link is spent.
    set_status(engine, person.id, "unsubscribed")
    client.post("/subscribe", data={"email": "schnell@example.de"})
    second = newest_confirm_link(root)
    for method in ("get", "post"):
        again = getattr(client, method)(first)
        assert again.status_code == 410 and "schon benutzt" in again.text
    assert find_subscriber(engine, person.email).status == "unconfirmed"

    # The new link (another one, though made in the same second) works, once.
    assert second != first
    assert client.post(second).status_code == 200
    assert find_subscriber(engine, person.email).status == "subscribed"
    set_status(engine, person.id, "unsubscribed")
    assert client.post(second).status_code == 410
    assert find_subscriber(engine, person.email).status == "unsubscribed"
