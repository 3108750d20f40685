"""Data minimization: `newsletter privacy purge` and `serve`'s daily run delete raw webhook
events and automatic replies older than [privacy] keep_events_days, on both engines."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from starlette.testclient import TestClient

from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from newsletter.web import create_app
from tests.conftest import CONFIG


def site(make_project: Any, database_url: str, extra: str = "") -> tuple[Project, Any]:
    config = CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    proj = Project.load(make_project(config + extra))
    return proj, open_engine(proj.database_url)


def fill(engine: Any) -> int:
    """Events 10, 40 and 400 days old (and replies, automatic or not); the reader's id."""
    reader = add_subscriber(engine, "leser@example.de")
    now = datetime.now(UTC)
    has_automatic = "automatic" in schema.replies.c
    with engine.begin() as conn:
        for days in (10, 40, 400):
            at = now - timedelta(days=days)
            conn.execute(
                insert(schema.events).values(
                    sg_event_id=f"ev-{days}",
                    event="open",
                    subscriber_id=reader.id,
                    occurred_at=at,
                    received_at=at,
                    detail={},
                )
            )
            for automatic in (True, False):
                values: dict[str, Any] = {
                    "subscriber_id": reader.id,
                    "from_email": "leser@example.de",
                    "subject": f"Re: {days}",
                    "text": "Abwesenheitsnotiz" if automatic else "Danke!",
                    "received_at": at,
                }
                if has_automatic:
                    values["automatic"] = automatic
                elif automatic:
                    continue
                conn.execute(insert(schema.replies).values(**values))
    return reader.id


def left(engine: Any) -> tuple[list[str], list[str]]:
    with engine.connect() as conn:
        events = sorted(conn.execute(select(schema.events.c.sg_event_id)).scalars())
        replies = sorted(conn.execute(select(schema.replies.c.subject)).scalars())
    return events, replies


@pytest.mark.slow
def test_purge_deletes_only_old_raw_events_and_automatic_replies(
    make_project, database_url, cli
) -> None:
    proj, engine = site(make_project, database_url)
    fill(engine)
    result = cli(proj.root, "privacy", "purge")
    assert result.exit_code == 0, result.output
    cutoff = (datetime.now(UTC) - timedelta(days=365)).date()
    assert result.output.splitlines() == [
        f"purged 1 webhook event and "
        f"{'1 automatic reply' if 'automatic' in schema.replies.c else '0 automatic replies'} "
        f"older than 365 days (before {cutoff:%Y-%m-%d})"
    ]
    events, replies = left(engine)
    assert events == ["ev-10", "ev-40"]
    # A reader's own reply is theirs to keep (and `forget` to erase); only robots' go.
    assert "Re: 400" in replies and replies.count("Re: 400") == 1
    assert cli(proj.root, "privacy", "purge").output.startswith("purged 0 webhook events")


def test_keep_events_days_is_configurable_and_validated(make_project, database_url, cli) -> None:
    proj, engine = site(make_project, database_url, "\n[privacy]\nkeep_events_days = 30\n")
    fill(engine)
    assert cli(proj.root, "privacy", "purge").exit_code == 0
    assert left(engine)[0] == ["ev-10"]
    bad = make_project(CONFIG + "\n[privacy]\nkeep_events_days = 0\n", name="bad")
    result = cli(bad, "privacy", "purge")
    assert result.exit_code == 1
    assert "[privacy] keep_events_days must be 1 or more" in result.output


def test_serve_purges_when_it_starts(make_project, database_url) -> None:
    proj, engine = site(make_project, database_url)
    fill(engine)
    with TestClient(create_app(proj, engine)) as client:  # runs the app's lifespan
        deadline = time.monotonic() + 10
        while left(engine)[0] != ["ev-10", "ev-40"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/healthz").status_code == 200
    assert left(engine)[0] == ["ev-10", "ev-40"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.subscribers)).scalar() == 1
