"""Resending an issue to who missed it (issue 24, item 2): `send ISSUE --resend
non-clickers|non-openers|new [--subject TEXT]`, end to end through the real CLI, the local
SendGrid server or a real SMTP server, with clicks, opens, unsubscribes and bounces fed
through the real Event Webhook and replies through the real Inbound Parse endpoint.
Nobody gets the issue twice except by the resend they qualify for; nobody who left does."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.web import create_app
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.sendgrid_server import copies
from tests.support.smtp import smtp_config
from tests.support.stats import INBOUND_SECRET, post_events, post_reply
from tests.support.web import event, live_server

ISSUE = EXAMPLE_ISSUE.stem
SUBJECT = "Meta, KI und das Ende der Creator?"
TRACKING = "\n[tracking]\nopens = true\nclicks = true\n"


def _project(issue_project, monkeypatch, config: str) -> Path:
    monkeypatch.setenv("NEWSLETTER_INBOUND_SECRET", INBOUND_SECRET)
    return issue_project(config)


def _add(cli, root: Path, *addresses: str, status: str = "subscribed") -> None:
    for address in addresses:
        result = cli(root, "subscribers", "add", address, "--status", status)
        assert result.exit_code == 0, result.output


def _send(cli, root: Path, *flags: str):
    result = cli(root, "send", ISSUE, "--yes", *flags)
    assert result.exit_code == 0, result.output
    return result


def _a_day_ago(engine) -> None:
    """Everything so far happened 25 hours ago: the first send, and the readers' sign-ups."""
    day = timedelta(hours=25)
    with engine.begin() as conn:
        for table, column in ((schema.sends, "started_at"), (schema.subscribers, "created_at")):
            for row_id, when in conn.execute(select(table.c.id, table.c[column])).all():
                conn.execute(update(table).where(table.c.id == row_id).values({column: when - day}))


def _ids(engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(schema.subscribers.c.email, schema.subscribers.c.id)).all()
    return {email: sid for email, sid in rows}


def _sendgrid_copies(sg) -> list[dict]:
    return [copy for message in sg.messages for copy in copies(message)]


READERS = [f"leser{i}@example.de" for i in range(9)]


@pytest.mark.slow
def test_each_resend_kind_through_sendgrid_with_events_through_the_webhook(
    issue_project, monkeypatch, sg, signer, cli
):
    root = _project(issue_project, monkeypatch, CONFIG + TRACKING)
    _add(cli, root, *READERS)
    _send(cli, root)
    assert Counter(sg.recipients()) == Counter(READERS)
    proj = Project.load(root)
    engine = open_engine(proj.database_url)

    # Too soon: one line saying when it becomes possible.
    early = cli(root, "send", ISSUE, "--resend", "non-clickers", "--yes")
    assert early.exit_code == 1
    assert "too soon" in early.output and "possible from" in early.output
    assert "Traceback" not in early.output
    assert len(sg.messages) == 1

    _a_day_ago(engine)
    ids = _ids(engine)
    with engine.connect() as conn:
        issue_id = conn.execute(select(schema.issues.c.id)).scalar_one()

    def ev(kind: str, n: int, **extra):
        address = READERS[n]
        return event(kind, address, issue_id=issue_id, subscriber_id=ids[address], **extra)

    with live_server(create_app(proj, engine)) as base:
        post_events(
            base,
            signer,
            [ev("delivered", n) for n in range(9)]
            + [
                ev("click", 0, url="https://example.com/x"),
                ev("open", 0, sg_machine_open=False),
                ev("open", 2, sg_machine_open=False),  # opened, clicked nothing
                ev("open", 3, sg_machine_open=True),  # Apple's prefetch only
                ev("unsubscribe", 4),
                ev("bounce", 5, type="bounce", reason="550 unknown user"),
                ev("spamreport", 8),
            ],
        )
        post_reply(base, f"Leser 1 <{READERS[1]}>", f"Re: {SUBJECT}", "Danke für die Ausgabe!")
    # Joined since the first send: two subscribed, one who never confirmed, one who left.
    _add(cli, root, "neu0@example.de", "neu1@example.de")
    _add(cli, root, "offen@example.de", status="unconfirmed")
    _add(cli, root, "weg@example.de", status="unsubscribed")

    sg.messages.clear()
    dry = cli(root, "send", ISSUE, "--resend", "non-clickers", "--dry-run", "--yes")
    assert dry.exit_code == 0, dry.output
    assert "Recipients: 4 subscribed (non-clickers: resend)" in dry.output
    sg.messages.clear()

    resent = _send(
        cli, root, "--resend", "non-clickers", "--subject", "Falls Sie es verpasst haben"
    )
    assert "Recipients: 4 subscribed (non-clickers: resend)" in resent.output
    assert "Subject:    Falls Sie es verpasst haben" in resent.output
    got = _sendgrid_copies(sg)
    assert sorted(c["to"][0]["email"] for c in got) == [READERS[n] for n in (2, 3, 6, 7)]
    assert {c["subject"] for c in got} == {"Falls Sie es verpasst haben"}

    again = cli(root, "send", ISSUE, "--resend", "non-clickers", "--yes")
    assert again.exit_code == 1 and "already resent to non-clickers" in again.output
    assert "--resend non-clickers --resume" in again.output

    sg.messages.clear()
    _send(cli, root, "--resend", "non-openers")
    got = _sendgrid_copies(sg)
    assert sorted(c["to"][0]["email"] for c in got) == [READERS[n] for n in (3, 6, 7)]
    assert {c["subject"] for c in got} == {SUBJECT}

    sg.messages.clear()
    _send(cli, root, "--resend", "new")
    assert sorted(sg.recipients()) == ["neu0@example.de", "neu1@example.de"]
    # The first send's --resume finds nobody left: the new readers have their first copy.
    sg.messages.clear()
    resumed = _send(cli, root, "--resume")
    assert "Nobody to send to." in resumed.output and sg.messages == []
    plain = cli(root, "send", ISSUE, "--yes")  # counts readers' first copies, not resends
    assert plain.exit_code == 1 and "was already sent (11 recorded)" in plain.output
    for kind in ("non-openers", "new"):
        twice = cli(root, "send", ISSUE, "--resend", kind, "--yes")
        assert twice.exit_code == 1 and f"already resent to {kind}" in twice.output

    with engine.connect() as conn:
        rows = conn.execute(
            select(schema.subscribers.c.email, schema.deliveries.c.send_round).join(
                schema.subscribers,
                schema.subscribers.c.id == schema.deliveries.c.subscriber_id,
            )
        ).all()
    copies_of = Counter(email for email, _ in rows)
    assert copies_of == {
        **{READERS[n]: 1 for n in (0, 1, 4, 5, 8)},
        READERS[2]: 2,
        **{READERS[n]: 3 for n in (3, 6, 7)},
        "neu0@example.de": 1,
        "neu1@example.de": 1,
    }
    assert Counter(round_ for _, round_ in rows) == {
        "first": 11,
        "non-clickers": 4,
        "non-openers": 3,
    }

    listing = cli(root, "sends", ISSUE)
    assert 'resend to non-clickers (subject "Falls Sie es verpasst haben")' in listing.output
    assert "resend to non-openers" in listing.output and "resend to new" in listing.output
    assert (
        "Copies handed over: 18 together (first 9, non-clickers 4, non-openers 3, new 2)"
        in listing.output
    )
    stats = cli(root, "stats", ISSUE)
    assert stats.exit_code == 0, stats.output
    assert "First send and resends:" in stats.output
    lines = {" ".join(line.split()[:4]) for line in stats.output.splitlines()}
    assert "first send 9 copies" in lines  # (the bounced one included: it was handed over)
    assert "resend non-clickers 4 copies" in lines and "resend new 2 copies" in lines
    assert "together 18 copies" in lines
    assert 'subject "Falls Sie es verpasst haben"' in stats.output
    as_json = json.loads(cli(root, "stats", ISSUE, "--format", "json").output)
    # Rates stay over readers: the 9 first copies and the 2 new readers', not the 18 copies.
    assert as_json["counts"]["recipients"] == 11
    assert [(r["kind"], r["copies"]) for r in as_json["sends"]] == [
        ("first", 9),
        ("non-clickers", 4),
        ("non-openers", 3),
        ("new", 2),
    ]


@pytest.mark.slow
def test_resends_through_smtp_never_reach_who_unsubscribed_through_the_link(
    issue_project, monkeypatch, cli, tmp_path
):
    """SMTP: no opens are tracked, so non-openers is refused; a reader who used the
    unsubscribe link of their copy, and one who replied, get no resend; `new` reaches only
    the readers who joined since."""
    from tests.smtp_server import FakeSmtp

    with FakeSmtp() as smtp:
        root = _project(issue_project, monkeypatch, smtp_config(smtp, security="none"))
        _add(cli, root, *READERS[:5])
        _send(cli, root)
        assert sorted(smtp.recipients()) == READERS[:5]
        proj = Project.load(root)
        engine = open_engine(proj.database_url)
        _a_day_ago(engine)

        no_opens = cli(root, "send", ISSUE, "--resend", "non-openers", "--yes")
        assert no_opens.exit_code == 1
        assert "open tracking was off" in no_opens.output

        leaving = next(m for m in smtp.messages if READERS[0] in m.rcpt_tos)
        header = message_from_bytes(leaving.data, policy=default)["List-Unsubscribe"]
        link = str(header).split("<https://news.example.com", 1)[1].split(">", 1)[0]
        with live_server(create_app(proj, engine)) as base:
            answer = httpx.post(
                base + link,
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert answer.status_code == 200, answer.text
            post_reply(base, READERS[1], f"Re: {SUBJECT}", "Sehr gut, danke.")
        _add(cli, root, "neu@example.de")

        smtp.messages.clear()
        _send(cli, root, "--resend", "non-clickers")
        assert sorted(smtp.recipients()) == READERS[2:5]
        smtp.messages.clear()
        _send(cli, root, "--resend", "new")
        assert smtp.recipients() == ["neu@example.de"]
