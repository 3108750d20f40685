"""Shared test helpers: stats. Its fixtures (`signer`, `newsletter`) are a pytest plugin that
tests/conftest.py loads, so test modules use them without importing them."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG
from tests.support.web import Signer, body_of, event, multipart, sent_issue

INBOUND_SECRET = "inbound-secret-stats-7c1"


LINKS = {
    "https://example.com/studie": "Studie über KI",
    "https://example.com/meta-bericht": "Metas „Creator“-Bericht",
    "https://example.org/podcast": "Podcast hören",
}


ISSUE_A = """---
title: Frühjahrsausgabe
subject: Frühling
slug: fruehjahr
language: de
---

Hallo {{ subscriber.first_name | default("zusammen") }},

lies die [Studie über KI](https://example.com/studie) und
[Metas „Creator“-Bericht](https://example.com/meta-bericht).
"""


ISSUE_B = """---
title: Sommerausgabe
subject: Sommer
slug: sommer
language: de
---

Diesmal zum [Podcast hören](https://example.org/podcast) und zur
[Studie über KI](https://example.com/studie).
"""


@pytest.fixture
def signer(monkeypatch: pytest.MonkeyPatch) -> Signer:
    s = Signer()
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", s.public_key)
    return s


@pytest.fixture
def newsletter(make_project, database_url, monkeypatch, signer):
    """A project with two sent issues and 30 readers, and a live server for it."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    monkeypatch.setenv("NEWSLETTER_INBOUND_SECRET", INBOUND_SECRET)
    root = make_project(
        CONFIG + "\n[tracking]\nopens = true\n",
        issues={"2025-03-fruehjahr.md": ISSUE_A, "2025-06-sommer.md": ISSUE_B},
    )
    proj = Project.load(root)
    engine = open_engine(proj.database_url)
    people = [add_subscriber(engine, f"leser{i}@example.de", name=f"Leser {i}") for i in range(30)]
    a = sent_issue(
        engine,
        [p.id for p in people],
        slug="fruehjahr",
        title="Frühjahrsausgabe",
        subject="Frühling",
    )
    b = sent_issue(
        engine, [p.id for p in people[:20]], slug="sommer", title="Sommerausgabe", subject="Sommer"
    )
    # Issue B went out later: its send starts a day after A's.
    with engine.begin() as conn:
        conn.execute(
            schema.sends.update()
            .where(schema.sends.c.issue_id == b)
            .values(started_at=datetime.now(UTC) + timedelta(days=1))
        )
    return proj, engine, people, {"fruehjahr": a, "sommer": b}


def post_events(base: str, signer: Signer, events: list[dict]) -> None:
    for start in range(0, len(events), 40):
        body = body_of(events[start : start + 40])
        response = httpx.post(
            f"{base}/webhooks/sendgrid/events", content=body, headers=signer.headers(body)
        )
        assert response.status_code == 200, response.text


def post_reply(base: str, sender: str, subject: str, text: str, extra_headers: str = "") -> None:
    fields = {
        "headers": f"From: {sender}\nTo: jens@example.com\nSubject: {subject}\n{extra_headers}",
        "from": sender,
        "to": "jens@example.com",
        "subject": subject,
        "text": text,
        "envelope": json.dumps({"to": ["jens@example.com"], "from": sender}),
        "charsets": json.dumps({"text": "UTF-8", "subject": "UTF-8", "from": "UTF-8"}),
        "spam_score": "0.1",
        "attachments": "0",
    }
    body, content_type = multipart(fields)
    response = httpx.post(
        f"{base}/webhooks/sendgrid/inbound/{INBOUND_SECRET}",
        content=body,
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 200, response.text


def synthetic_events(people, issues: dict[str, int], seed: int = 14) -> list[dict]:
    """Random events for both issues, with repeats (same reader twice), machine opens,
    clicks on several links, and some events a day earlier than others."""
    rng = random.Random(seed)
    out = []
    now = int(time.time())
    for slug, issue_id in issues.items():
        readers = people if slug == "fruehjahr" else people[:20]
        urls = list(LINKS)[:2] if slug == "fruehjahr" else [*list(LINKS)[2:], list(LINKS)[0]]
        for person in readers:

            def add(kind: str, when: int = now, person=person, issue_id=issue_id, **extra) -> None:
                out.append(
                    event(
                        kind,
                        person.email,
                        issue_id=issue_id,
                        subscriber_id=person.id,
                        timestamp=when,
                        **extra,
                    )
                )

            add("processed")
            if rng.random() < 0.1:
                add("bounce", type="bounce", reason="550 unknown")
                continue
            add("delivered")
            for _ in range(rng.randint(0, 3)):
                add("open", sg_machine_open=rng.random() < 0.3)
            for _ in range(rng.randint(0, 2)):
                add("click", when=now - 86400 * rng.randint(0, 1), url=rng.choice(urls))
            if rng.random() < 0.15:
                add("unsubscribe", when=now - 86400 * rng.randint(0, 2))
            if rng.random() < 0.05:
                add("spamreport")
    rng.shuffle(out)
    return out
