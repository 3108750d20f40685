"""A bulk send's SendGrid requests are written from its readers without a `Recipient` each
(`Builder.readers`, `SendGridTransport.prepare_readers`): byte for byte the request the
general path writes from the same rows, and the same readers refused, on awkward names,
first names that HTML escapes, custom fields and every shape of page."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from newsletter.project import Project
from newsletter.sending.execute import Preparer, recipient_builder
from newsletter.sending.message import Message
from newsletter.sending.plan import prepare
from newsletter.sending.transports.sendgrid import SendGridTransport
from newsletter.store.engine import open_engine
from newsletter.store.issues import ensure_issue
from tests.conftest import CONFIG, TEST_SECRET

ISSUE = """---
title: Leserbrief
subject: Hallo
---

Hallo {{ subscriber.first_name | default("zusammen") }} {{ subscriber.last_name }},

in {{ subscriber.stadt | default("deiner Stadt") }} ist es „kalt“.
"""

#: Names and fields drawn from what JSON, HTML and header cleaning treat specially.
AWKWARD = [
    "Jörg",
    "Jörg",
    "Anna",
    '<b>Tom & "Jerry"</b>',
    "O'Brien",
    "emoji 🎉",
    "tab\there",
    "line\nbreak",
    " spaced ",
    "   ",
    "",
    "%%nl:t:0%%",
    "100 %",
    "\u2028",
    "back\\slash",
]


def _preparer(project_dir: Path, base_url: str = "https://news.example.com") -> Preparer:
    config = CONFIG.replace('base_url = "https://news.example.com"', f'base_url = "{base_url}"')
    (project_dir / "newsletter.toml").write_text(config, "utf-8")
    (project_dir / "issues" / "leserbrief.md").write_text(ISSUE, "utf-8")
    project = Project.load(project_dir)
    rendered = prepare(project, project_dir / "issues" / "leserbrief.md").rendered
    engine = open_engine(project.database_url)
    issue_id = ensure_issue(
        engine, slug="leserbrief", title="Leserbrief", subject="Hallo", language="de"
    )
    builder = recipient_builder(project, engine, rendered, issue_id, 7, key=TEST_SECRET)
    message = Message(
        from_email="jens@example.com",
        from_name="Jens",
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        ids={"newsletter_campaign": "herbst"},
    )
    return Preparer(builder, SendGridTransport("SG.x", "http://127.0.0.1:9", backoff=0), message)


def _rows(pick: random.Random, start: int, count: int) -> list[tuple[Any, ...]]:
    def value() -> str | None:
        return pick.choice([None, *AWKWARD])

    rows = []
    for i in range(start, start + count):
        stadt = pick.choice([None, "Bad Tölz", "<Köln>", ""])
        fields: Any = {} if stadt is None else {"stadt": stadt}
        # SQLite's driver hands the JSON column over as text, psycopg as a dict.
        fields = pick.choice([json.dumps(fields), fields, fields or None])
        public_id = pick.choice([None, None, "AbCdEfGhIjKl"])
        rows.append((i, f"leser{i}@example.org", value(), value(), value(), fields, public_id))
    return rows


def _both(preparer: Preparer, rows: list[tuple[Any, ...]]) -> tuple[Any, Any, bool]:
    """(the general path's request, the request `preparer` makes, whether it took the fast
    path)."""
    assert preparer.builder is not None
    page = (rows, frozenset[int]())
    general = preparer.prepare(preparer.builder.build(page))
    readers = preparer.builder.readers(page, preparer.message)
    fast = readers is not None and preparer.transport.prepare_readers(readers) is not None  # type: ignore[attr-defined]
    return general, preparer(page), fast


def test_the_request_is_byte_for_byte_the_general_one(project: Path):
    preparer = _preparer(project)
    pick = random.Random(27)
    fast_pages = 0
    for page in range(60):
        rows = _rows(pick, 1 + page * 40, pick.choice([1, 2, 3, 40]))
        general, made, fast = _both(preparer, rows)
        assert made == general
        fast_pages += fast
        if made.body is not None:
            body = json.loads(made.body)
            assert [p["to"][0]["email"] for p in body["personalizations"]] == [
                row[1] for index, row in enumerate(rows) if index not in made.refused
            ]
    assert fast_pages > 30  # (pages of one reader, say, go the general way)


def test_one_reader_too_big_for_sendgrid_is_refused_alone_as_before(project: Path):
    preparer = _preparer(project)
    rows = _rows(random.Random(1), 1, 5)
    # Each value is cut to 500 characters; six of them (first and last name, city, in the
    # HTML and the text part) of 4-byte characters are over SendGrid's 10,000 bytes.
    big = "🎉" * 600
    rows[2] = (*rows[2][:3], big, big, {"stadt": big}, None)
    general, made, fast = _both(preparer, rows)
    assert fast
    assert made == general
    assert list(made.refused) == [2]
    assert "leser3@example.org" in made.refused[2].error
    assert "leser3@example.org" not in made.body.decode()


@pytest.mark.parametrize(
    "base_url", ["https://news.example.com/a&b", "https://news.example.com/%%x"]
)
def test_an_unsubscribe_url_html_would_escape_goes_the_general_way(project: Path, base_url):
    preparer = _preparer(project, base_url)
    general, made, fast = _both(preparer, _rows(random.Random(2), 1, 10))
    assert not fast
    assert made == general


def test_unsubscribe_urls_with_the_public_id_derived_inline_are_make_tokens():
    """`token_maker` derives each row id's public id itself (`public_id`, written in); at
    the edges of the derived range and beyond it the URLs are still `unsubscribe_url`'s."""
    from newsletter.tokens import unsubscribe_url, unsubscribe_url_maker

    for issue in (None, 7, "AbCdEfGhIjKl"):
        fast = unsubscribe_url_maker("https://news.example.com", issue, key=TEST_SECRET)
        for sid in (0, 1, 2, 255, 256, 2**32, 2**40 - 1, 2**40, 2**41, "AbCdEfGhIjKl"):
            assert fast(sid) == unsubscribe_url(
                "https://news.example.com", sid, issue, key=TEST_SECRET
            )
