"""`newsletter stats` across issues, per issue and for the list, fed through the real endpoints:
signed Event Webhook posts and Inbound Parse multipart posts over HTTP to a uvicorn server,
on SQLite and PostgreSQL. Every expected number is computed here from what was posted."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import delete, func, select

from newsletter.insights import counters, metrics, queries
from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from newsletter.web import create_app
from tests.conftest import CONFIG
from tests.support.stats import (
    ISSUE_A,
    ISSUE_B,
    LINKS,
    post_events,
    post_reply,
    synthetic_events,
)
from tests.support.web import event, live_server, sent_issue


def expected_from(events: list[dict], issue_id: int) -> dict:
    """The numbers `stats` must show, computed from the posted events alone."""
    mine = [e for e in events if e["newsletter_issue_id"] == str(issue_id)]

    def readers(kind: str, keep=lambda e: True) -> set[str]:
        return {e["newsletter_subscriber_id"] for e in mine if e["event"] == kind and keep(e)}

    unsub_first: dict[str, int] = {}
    for e in mine:
        if e["event"] == "unsubscribe":
            sid = e["newsletter_subscriber_id"]
            unsub_first[sid] = min(unsub_first.get(sid, e["timestamp"]), e["timestamp"])
    per_day = Counter(
        datetime.fromtimestamp(ts, UTC).date().isoformat() for ts in unsub_first.values()
    )
    return {
        "delivered": len(readers("delivered")),
        "bounced": len(readers("bounce")),
        "opened": len(readers("open", lambda e: not e.get("sg_machine_open"))),
        "clicked": len(readers("click")),
        "unsubscribed": len(readers("unsubscribe")),
        "complained": len(readers("spamreport")),
        "links": Counter(e["url"] for e in mine if e["event"] == "click"),
        "unsubscribes_per_day": dict(sorted(per_day.items())),
    }


@pytest.mark.slow
def test_stats_match_events_and_replies_posted_over_http(newsletter, signer, cli):
    proj, engine, people, issues = newsletter
    events = synthetic_events(people, issues)
    with live_server(create_app(proj, engine)) as base:
        post_events(base, signer, events)
        post_events(base, signer, events[:60])  # SendGrid retries a post: nothing counts twice
        post_reply(base, "Leser 1 <leser1@example.de>", "Re: Frühling", "Danke!\nGruß")
        post_reply(base, "leser1@example.de", "Re: Frühling", "Noch etwas")  # same reader
        post_reply(base, "Leser 2 <leser2@example.de>", "Re: Frühling", "Toll")
        post_reply(base, "Leser 3 <leser3@example.de>", "Re: Sommer", "Schön")

    result = cli(proj.root, "stats", "--format", "json")
    assert result.exit_code == 0, result.output
    shown = {row["issue"]: row for row in json.loads(result.output)["issues"]}
    assert list(shown) == ["sommer", "fruehjahr"]  # newest first
    for slug, issue_id in issues.items():
        want = expected_from(events, issue_id)
        counts = shown[slug]["counts"]
        assert counts["recipients"] == (30 if slug == "fruehjahr" else 20)
        for stat in ("delivered", "bounced", "opened", "clicked", "unsubscribed", "complained"):
            assert counts[stat] == want[stat], (slug, stat)
        assert counts["replied"] == (2 if slug == "fruehjahr" else 1)
        assert shown[slug]["rates"]["clicked"] == pytest.approx(want["clicked"] / want["delivered"])

    detail = json.loads(cli(proj.root, "stats", "fruehjahr", "--format", "json").output)
    want = expected_from(events, issues["fruehjahr"])
    assert {link["url"]: link["clicks"] for link in detail["links"]} == dict(want["links"])
    assert {link["url"]: link["text"] for link in detail["links"]} == {
        url: LINKS[url] for url in want["links"]
    }
    assert {d["day"]: d["unsubscribed"] for d in detail["unsubscribes_per_day"]} == want[
        "unsubscribes_per_day"
    ]
    assert detail["opens_are_estimates"] is True

    # The table and CSV show the same rows; the table says opens are estimates.
    table = cli(proj.root, "stats").output
    assert table.index("sommer") < table.index("fruehjahr")
    assert "OPENS*" in table and "Opens are estimates" in table
    rows = list(csv.DictReader(io.StringIO(cli(proj.root, "stats", "--format", "csv").output)))
    assert [r["issue"] for r in rows] == ["sommer", "fruehjahr"]
    assert int(rows[1]["unique_clicks"]) == want["clicked"]
    text = cli(proj.root, "stats", "fruehjahr").output
    assert "Studie über KI" in text and "Unsubscribes per day" in text

    # --rebuild recomputes the same numbers from the stored events.
    rebuilt = cli(proj.root, "stats", "--rebuild", "--format", "json")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads(rebuilt.stdout) == json.loads(result.output)


def test_opens_are_hidden_unless_tracked(make_project, database_url, monkeypatch, cli):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(CONFIG, issues={"a.md": ISSUE_A})
    engine = open_engine(Project.load(root).database_url)
    person = add_subscriber(engine, "leser@example.de")
    sent_issue(engine, [person.id], slug="fruehjahr")
    data = json.loads(cli(root, "stats", "--format", "json").output)
    assert "opened" not in data["issues"][0]["counts"]
    assert "OPEN" not in cli(root, "stats").output
    assert "opens_estimate" not in cli(root, "stats", "--format", "csv").output


@pytest.mark.slow
def test_counters_survive_the_event_purge_and_a_rebuild_keeps_purged_days(newsletter, signer):
    proj, engine, people, issues = newsletter
    old = int((datetime.now(UTC) - timedelta(days=400)).timestamp())
    issue_id = issues["fruehjahr"]
    early = [
        event(
            "click",
            p.email,
            issue_id=issue_id,
            subscriber_id=p.id,
            timestamp=old,
            url="https://example.com/studie",
        )
        for p in people[:4]
    ]
    late = [
        event(
            "click",
            p.email,
            issue_id=issue_id,
            subscriber_id=p.id,
            url="https://example.com/studie",
        )
        for p in people[3:6]
    ]
    with live_server(create_app(proj, engine)) as base:
        post_events(base, signer, early + late)
    before = queries.issue_summary(engine, issue_id).counts["clicked"]
    assert before == 6  # people 0-5; person 3 clicked twice
    # What `[privacy] keep_events_days = 365` purges: the events, not the counters.
    with engine.begin() as conn:
        conn.execute(
            delete(schema.events).where(
                schema.events.c.occurred_at < datetime.now(UTC) - timedelta(days=365)
            )
        )
    assert queries.issue_summary(engine, issue_id).counts["clicked"] == 6
    result = counters.rebuild(engine, counters.complete_since(365))
    # (The days before the oldest stored event's, and that day, which the purge may have
    # cut into, keep their counters.)
    assert result.since == datetime.now(UTC).date() + timedelta(days=1)
    assert queries.issue_summary(engine, issue_id).counts["clicked"] == 6
    assert dict(queries.link_clicks(engine, issue_id)) == {"https://example.com/studie": 7}


@pytest.mark.slow
def test_a_rebuild_keeps_purged_days_after_keep_events_days_was_raised(newsletter, signer, cli):
    """Purged with `keep_events_days = 5`, then the setting removed: `stats --rebuild`
    counted the purged days again from nothing, and the issue's delivered, clicks and opens
    went to 0 (docs/stats.md promises that older days keep their counters)."""
    proj, engine, people, issues = newsletter
    issue_id = issues["fruehjahr"]
    nine_days_ago = int((datetime.now(UTC) - timedelta(days=9)).timestamp())
    clicks = [
        event("click", p.email, issue_id=issue_id, subscriber_id=p.id, timestamp=nine_days_ago,
              url="https://example.com/studie")
        for p in people[:4]
    ]  # fmt: skip
    recent = [
        event("click", people[5].email, issue_id=issue_id, subscriber_id=people[5].id,
              url="https://example.com/studie")
    ]  # fmt: skip
    with live_server(create_app(proj, engine)) as base:
        post_events(base, signer, clicks + recent)
    assert queries.issue_summary(engine, issue_id).counts["clicked"] == 5
    with engine.begin() as conn:  # what `privacy purge` with keep_events_days = 5 deletes
        conn.execute(
            delete(schema.events).where(
                schema.events.c.occurred_at < datetime.now(UTC) - timedelta(days=5)
            )
        )
    rebuilt = cli(proj.root, "stats", "--rebuild")  # no [privacy] setting any more
    assert rebuilt.exit_code == 0, rebuilt.output
    assert queries.issue_summary(engine, issue_id).counts["clicked"] == 5
    assert dict(queries.link_clicks(engine, issue_id)) == {"https://example.com/studie": 5}


@pytest.mark.slow
def test_events_of_one_reader_split_over_posts_count_once(newsletter, signer):
    proj, engine, people, issues = newsletter
    person, issue_id = people[0], issues["sommer"]
    with live_server(create_app(proj, engine)) as base:
        for _ in range(3):
            post_events(
                base,
                signer,
                [
                    event(
                        "click",
                        person.email,
                        issue_id=issue_id,
                        subscriber_id=person.id,
                        url="https://example.org/podcast",
                    )
                ],
            )
        # A machine open first, then a real one: the reader counts as one opener.
        post_events(
            base,
            signer,
            [
                event(
                    "open",
                    person.email,
                    issue_id=issue_id,
                    subscriber_id=person.id,
                    sg_machine_open=True,
                )
            ],
        )
        post_events(
            base,
            signer,
            [
                event(
                    "open",
                    person.email,
                    issue_id=issue_id,
                    subscriber_id=person.id,
                    sg_machine_open=False,
                )
            ],
        )
    counts = queries.issue_summary(engine, issue_id).counts
    assert (counts["clicked"], counts["opened"]) == (1, 1)
    assert queries.link_clicks(engine, issue_id) == [("https://example.org/podcast", 3)]


@pytest.mark.slow
def test_list_growth_counts_every_way_in_and_out(
    make_project, database_url, monkeypatch, cli, signer, tmp_path
):
    from newsletter import optin
    from newsletter.store.subscribers import find_subscriber

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(
        CONFIG.replace('language = "de"', 'language = "de"\ntimezone = "Europe/Berlin"')
    )
    proj = Project.load(root)
    engine = open_engine(proj.database_url)
    for i in range(3):
        assert cli(root, "subscribers", "add", f"neu{i}@example.de").exit_code == 0
    rows = "email\n" + "".join(f"import{i}@example.de\n" for i in range(5))
    (tmp_path / "list.csv").write_text(rows, encoding="utf-8")
    assert cli(root, "subscribers", "import", str(tmp_path / "list.csv")).exit_code == 0
    # Two form signups; one confirms.
    with live_server(create_app(proj, engine)) as base:
        for address in ("form1@example.de", "form2@example.de"):
            response = httpx.post(f"{base}/subscribe", data={"email": address})
            assert response.status_code < 400, response.text
        form1 = find_subscriber(engine, "form1@example.de")
        assert form1 is not None and form1.status == "unconfirmed"
        optin.confirm(
            proj,
            engine,
            optin.confirm_url(proj, form1).rsplit("/", 1)[1],
            optin.Visit(ip="203.0.113.7", user_agent="test"),
        )
        issue_id = sent_issue(engine, [find_subscriber(engine, "neu0@example.de").id])
        gone = [find_subscriber(engine, f"import{i}@example.de") for i in range(3)]
        post_events(
            base,
            signer,
            [
                event("unsubscribe", gone[0].email, issue_id=issue_id, subscriber_id=gone[0].id),
                event(
                    "bounce",
                    gone[1].email,
                    issue_id=issue_id,
                    subscriber_id=gone[1].id,
                    type="bounce",
                ),
                event("spamreport", gone[2].email, issue_id=issue_id, subscriber_id=gone[2].id),
            ],
        )
    assert cli(root, "subscribers", "remove", "neu2@example.de").exit_code == 0
    result = cli(root, "stats", "--list", "--by", "week", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["timezone"] == "Europe/Berlin" and data["by"] == "week"
    (period,) = data["periods"]
    today = datetime.now(ZoneInfo("Europe/Berlin")).date()
    assert period["period"] == (today - timedelta(days=today.weekday())).isoformat()
    assert {k: period[k] for k in metrics.GROWTH_METRICS} == {
        "new_form": 2,
        "new_import": 5,
        "new_added": 3,
        "confirmed": 1,
        "unsubscribed": 2,  # the webhook's and `remove`'s
        "bounced": 1,
        "complained": 1,
    }
    with engine.connect() as conn:
        subscribed = conn.execute(
            select(func.count()).where(schema.subscribers.c.status == "subscribed")
        ).scalar_one()
    assert period["net_size"] == subscribed == 3 + 5 + 1 - 4
    table = cli(root, "stats", "--list").output
    assert "NEW FORM" in table and "Europe/Berlin" in table


@pytest.mark.slow
def test_growth_periods_follow_the_newsletter_timezone(make_project, database_url, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    engine = open_engine(Project.load(make_project()).database_url)
    # 22:30 UTC on Sunday 2025-03-30 is 00:30 on Monday in Berlin (summer time): a new week.
    sunday_night = int(datetime(2025, 3, 30, 22, 30, tzinfo=UTC).timestamp())
    with engine.begin() as conn:
        conn.execute(
            schema.list_counters.insert(),
            [
                {"bucket": sunday_night - 3600, "metric": "joined", "count": 5},
                {"bucket": sunday_night, "metric": "new_form", "count": 2},
            ],
        )
    now = datetime(2025, 4, 2, tzinfo=UTC)
    berlin = queries.list_growth(engine, ZoneInfo("Europe/Berlin"), "week", now=now)
    assert [(p.start.isoformat(), p.counts["new_form"], p.net_size) for p in berlin] == [
        ("2025-03-24", 0, 5),
        ("2025-03-31", 2, 7),
    ]
    utc = queries.list_growth(engine, ZoneInfo("UTC"), "week", now=now)
    assert [(p.start.isoformat(), p.net_size) for p in utc] == [
        ("2025-03-24", 7),
        ("2025-03-31", 7),
    ]
    months = queries.list_growth(engine, ZoneInfo("Europe/Berlin"), "month", now=now)
    assert [(p.start.isoformat(), p.net_size) for p in months] == [
        ("2025-03-01", 7),
        ("2025-04-01", 7),
    ]


def test_bad_timezone_is_a_one_line_error(make_project, cli):
    root = make_project(CONFIG.replace('language = "de"', 'language = "de"\ntimezone = "Berlin"'))
    result = cli(root, "stats", "--list")
    assert result.exit_code == 1
    assert "[newsletter] timezone 'Berlin' is not a known time zone" in result.output
    assert "Traceback" not in result.output


def test_stats_list_with_an_issue_is_a_usage_error(project, cli):
    result = cli(project, "stats", "meta-ki-creator", "--list")
    assert result.exit_code == 2 and "leave out ISSUE" in result.output


@pytest.mark.slow
def test_outbox_and_dry_run_sends_are_not_counted_as_sent(
    make_project, database_url, monkeypatch, cli, tmp_path
):
    """An author tries an issue on the outbox and as a dry run before the real send: `stats`
    counts and dates only the real send, and an issue only ever written to the outbox is no
    sent issue at all."""
    from tests.sendgrid_server import FakeSendGrid

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "stats-outbox-test-key")
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    root = make_project(
        CONFIG, issues={"2025-03-fruehjahr.md": ISSUE_A, "2025-06-sommer.md": ISSUE_B}
    )
    engine = open_engine(Project.load(root).database_url)
    for i in range(3):
        add_subscriber(engine, f"leser{i}@example.de", name=f"Leser {i}")
    for slug in ("fruehjahr", "sommer"):
        tried = cli(root, "send", slug, "--outbox", str(tmp_path / f"outbox-{slug}"), "--yes")
        assert tried.exit_code == 0, tried.output
    with FakeSendGrid(api_key="SG.stats-key", verified_senders=["jens@example.com"]) as sg:
        monkeypatch.setenv("SENDGRID_API_HOST", sg.url)
        monkeypatch.setenv("SENDGRID_API_KEY", "SG.stats-key")
        dry = cli(root, "send", "fruehjahr", "--dry-run", "--yes")
        assert dry.exit_code == 0, dry.output
        before_real_send = datetime.now(UTC) - timedelta(seconds=1)
        sent = cli(root, "send", "fruehjahr", "--yes")
        assert sent.exit_code == 0, sent.output
        assert len(sg.recipients()) == 3

    shown = json.loads(cli(root, "stats", "--format", "json").output)["issues"]
    assert [row["issue"] for row in shown] == ["fruehjahr"]
    assert shown[0]["counts"]["recipients"] == 3
    assert datetime.fromisoformat(shown[0]["sent_at"]) >= before_real_send
    one = json.loads(cli(root, "stats", "fruehjahr", "--format", "json").output)
    assert datetime.fromisoformat(one["sent_at"]) >= before_real_send
