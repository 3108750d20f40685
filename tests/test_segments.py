"""Segments end to end: a list whose clicks and opens arrive through the real signed Event
Webhook and whose replies arrive through the real Inbound Parse endpoint, then `subscribers
list/count --where` and `--segment` checked against a plain-Python reading of the same data,
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from newsletter.privacy import add_by_author
from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from newsletter.web import create_app
from tests.conftest import CONFIG
from tests.support.stats import INBOUND_SECRET, post_events, post_reply
from tests.support.web import event, live_server, record_sent

DAY = 86400
CITIES = ["Köln", "Bad Tölz", "München", "", None]

SEGMENTS = """
[segments.aktive]
where = "status:subscribed (clicked:last-2 OR replied:30d)"

[segments."tölz"]
where = 'field:stadt="Bad Tölz"'
"""


@dataclass
class Reader:
    id: int
    email: str
    tags: set[str]
    city: str | None
    source: str
    created_at: datetime
    consent: bool
    status: str = "subscribed"
    issues: list[int] = field(default_factory=list)  # received, ascending
    clicks: list[tuple[int, int]] = field(default_factory=list)  # (issue, unix time)
    opens: list[tuple[int, int]] = field(default_factory=list)  # human opens only
    replies: list[int] = field(default_factory=list)  # issues replied to


@pytest.fixture
def world(make_project, database_url, monkeypatch, signer):
    """40 readers, 6 issues sent to changing parts of the list, and random clicks, opens
    (some by machines) and replies posted to a live `serve` app. Returns (project dir,
    readers, now)."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    monkeypatch.setenv("NEWSLETTER_INBOUND_SECRET", INBOUND_SECRET)
    root = make_project(CONFIG + "\n[tracking]\nopens = true\nclicks = true\n" + SEGMENTS)
    project = Project.load(root)
    engine = open_engine(project.database_url)
    rng = random.Random(24)
    now = datetime.now(UTC)
    readers: list[Reader] = []
    for i in range(40):
        tags = {t for t in ("leser", "test", "vip") if rng.random() < 0.4}
        city = rng.choice(CITIES)
        source = rng.choice(["form", "import:mailchimp", "cli"])
        fields = {} if city is None else {"stadt": city}
        email = f"leser{i}@example.de"
        if rng.random() < 0.5:
            person = add_by_author(
                engine, email, source=source, consent_text="Ja, bitte.", tags=tags, fields=fields
            )
            consent = True
        else:
            person = add_subscriber(engine, email, source=source, tags=tags, fields=fields)
            consent = False
        created = now - timedelta(days=rng.choice([1, 10, 45, 400]))
        with engine.begin() as conn:
            conn.execute(
                update(schema.subscribers)
                .where(schema.subscribers.c.id == person.id)
                .values(created_at=created)
            )
        readers.append(Reader(person.id, email, tags, city, source, created, consent))
    issue_ids = []
    with engine.begin() as conn:
        for n in range(6):
            got = [r for r in readers if rng.random() < 0.8]
            issue_id = record_sent(
                conn,
                [r.id for r in got],
                slug=f"ausgabe-{n}",
                title=f"Ausgabe {n}",
                subject=f"Ausgabe Nummer {n} über Köln",
                when=now - timedelta(days=60 - 10 * n),
            )
            issue_ids.append(issue_id)
            for r in got:
                r.issues.append(issue_id)
    events = []
    clock = int(time.time())
    for r in readers:
        for issue_id in r.issues:
            roll = rng.random()
            when = clock - DAY * rng.choice([2, 20, 50])
            if roll < 0.25:
                events.append(
                    event(
                        "click",
                        r.email,
                        issue_id=issue_id,
                        subscriber_id=r.id,
                        timestamp=when,
                        url="https://example.com/a",
                    )
                )
                r.clicks.append((issue_id, when))
            elif roll < 0.45:
                events.append(
                    event("open", r.email, issue_id=issue_id, subscriber_id=r.id, timestamp=when)
                )
                r.opens.append((issue_id, when))
            elif roll < 0.6:  # Apple's prefetch: nobody read it
                events.append(
                    event(
                        "open",
                        r.email,
                        issue_id=issue_id,
                        subscriber_id=r.id,
                        timestamp=when,
                        sg_machine_open=True,
                    )
                )
    app = create_app(project, engine)
    with live_server(app) as base:
        post_events(base, signer, events)
        for r in readers:
            if r.issues and rng.random() < 0.2:
                issue_id = rng.choice(r.issues)
                n = issue_ids.index(issue_id)
                post_reply(base, r.email, f"Re: Ausgabe Nummer {n} über Köln", "Danke, sehr gut!")
                r.replies.append(issue_id)
    # Someone who left: `status:` and the segments' own `status:subscribed` tell them apart.
    leaver = readers[0]
    with engine.begin() as conn:
        conn.execute(
            update(schema.subscribers)
            .where(schema.subscribers.c.id == leaver.id)
            .values(status="unsubscribed")
        )
    leaver.status = "unsubscribed"
    return root, readers, now


# --- the same conditions, in plain Python ------------------------------------------------


def last(r: Reader, n: int) -> set[int]:
    return set(r.issues[-n:])


def days_ago(n: int) -> int:
    return int(time.time()) - n * DAY


EXPECTED = {
    "clicked:ever": lambda r: bool(r.clicks),
    "-clicked:ever": lambda r: not r.clicks,
    "clicked:never": lambda r: not r.clicks,
    "opened:ever": lambda r: bool(r.opens),
    "replied:ever": lambda r: bool(r.replies),
    "clicked:last-2": lambda r: any(i in last(r, 2) for i, _ in r.clicks),
    "opened:last-3": lambda r: any(i in last(r, 3) for i, _ in r.opens),
    "replied:last-1": lambda r: any(i in last(r, 1) for i in r.replies),
    "clicked:30d": lambda r: any(t >= days_ago(30) for _, t in r.clicks),
    "opened:10d": lambda r: any(t >= days_ago(10) for _, t in r.opens),
    "received:>=5": lambda r: len(r.issues) >= 5,
    "received:<4": lambda r: len(r.issues) < 4,
    "received:=6": lambda r: len(r.issues) == 6,
    "tag:leser -tag:test": lambda r: "leser" in r.tags and "test" not in r.tags,
    'field:stadt="Bad Tölz"': lambda r: r.city == "Bad Tölz",
    "field:stadt~tölz": lambda r: r.city == "Bad Tölz",
    "field:stadt=": lambda r: not r.city,
    "source:import": lambda r: r.source.startswith("import"),
    "source:added": lambda r: r.source == "cli",
    "consent:yes": lambda r: r.consent,
    "consent:no source:form": lambda r: not r.consent and r.source == "form",
    "joined:30d": lambda r: r.created_at >= datetime.now(UTC) - timedelta(days=30),
    "status:unsubscribed": lambda r: r.status == "unsubscribed",
    "(clicked:last-2 OR replied:30d) tag:leser": lambda r: (
        "leser" in r.tags and (any(i in last(r, 2) for i, _ in r.clicks) or bool(r.replies))
    ),
    "-(tag:vip OR opened:ever) received:>=1": lambda r: (
        not ("vip" in r.tags or r.opens) and len(r.issues) >= 1
    ),
}


def test_where_matches_a_plain_python_reading_of_the_same_data(world, cli):
    root, readers, _ = world
    wrong = []
    for where, holds in EXPECTED.items():
        expected = sorted(r.email for r in readers if holds(r))
        assert expected, f"{where}: the data set has nobody for it; the check would prove little"
        result = cli(root, "subscribers", "list", "--where", where, "--format", "json")
        assert result.exit_code == 0, result.output
        listed = sorted(p["email"] for p in json.loads(result.output))
        counted = cli(root, "subscribers", "count", "--where", where).output.strip()
        if listed != expected or counted != str(len(expected)):
            wrong.append(
                f"{where}: listed {len(listed)}, counted {counted}, expected {len(expected)}"
            )
    assert not wrong, "\n".join(wrong)


def test_joined_before_and_after_a_day(world, cli):
    root, readers, now = world
    day = (now - timedelta(days=30)).date()
    after = cli(root, "subscribers", "count", "--where", f"joined:>{day.isoformat()}")
    before = cli(root, "subscribers", "count", "--where", f"joined:<{day.isoformat()}")
    assert int(after.output) == sum(r.created_at.date() > day for r in readers)
    assert int(before.output) == sum(r.created_at.date() < day for r in readers)


def test_saved_segments_list_count_export_and_segments_list(world, cli, tmp_path):
    root, readers, _ = world
    aktive = sorted(
        r.email
        for r in readers
        if r.status == "subscribed"
        and (any(i in last(r, 2) for i, _ in r.clicks) or bool(r.replies))
    )
    listed = cli(root, "subscribers", "list", "--segment", "aktive", "--format", "json")
    assert sorted(p["email"] for p in json.loads(listed.output)) == aktive
    out = tmp_path / "tölz.csv"
    cli(root, "subscribers", "export", "--segment", "tölz", "-o", str(out))
    lines = out.read_text(encoding="utf-8").splitlines()[1:]
    assert len(lines) == sum(r.city == "Bad Tölz" for r in readers)
    assert all("Bad Tölz" in line for line in lines)
    shown = cli(root, "segments", "list")
    assert shown.exit_code == 0
    row = next(line for line in shown.output.splitlines() if line.startswith("aktive"))
    assert row.split()[1] == str(len(aktive))
    assert "status:subscribed (clicked:last-2 OR replied:30d)" in row
    tolz = sum(r.city == "Bad Tölz" and r.status == "subscribed" for r in readers)
    assert any(
        line.startswith("tölz") and line.split()[1] == str(tolz)
        for line in shown.output.splitlines()
    )
