"""The SendGrid Event Webhook, called over real HTTP as SendGrid calls it (signed with a real
ECDSA P-256 key made here), against SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber, forget_subscriber, get_subscriber
from newsletter.web import create_app
from tests.support.web import Signer, body_of, event, live_server, sent_issue

URL = "/webhooks/sendgrid/events"


@pytest.fixture
def setup(project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    proj = Project.load(project)
    engine = open_engine(proj.database_url)
    people = [add_subscriber(engine, f"leser{i}@example.de", name=f"Leser {i}") for i in range(5)]
    issue_id = sent_issue(engine, [p.id for p in people])
    return proj, engine, people, issue_id


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _states(engine, issue_id) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                select(schema.deliveries.c.subscriber_id, schema.deliveries.c.state).where(
                    schema.deliveries.c.issue_id == issue_id
                )
            ).all()
        )


@pytest.mark.slow
def test_signed_events_update_subscribers_ledger_and_stats(setup, signer, cli, project):
    proj, engine, people, issue_id = setup
    a, b, c, d, e = people
    batch = [
        event("processed", a.email, issue_id=issue_id, subscriber_id=a.id),
        event("delivered", a.email, issue_id=issue_id, subscriber_id=a.id),
        event(
            "open",
            a.email,
            issue_id=issue_id,
            subscriber_id=a.id,
            useragent="Mozilla",
            ip="203.0.113.9",
        ),
        event("open", a.email, issue_id=issue_id, subscriber_id=a.id),
        event("click", a.email, issue_id=issue_id, subscriber_id=a.id, url="https://example.com/x"),
        event(
            "bounce",
            b.email,
            issue_id=issue_id,
            subscriber_id=b.id,
            type="bounce",
            reason="550 5.1.1 <leser1@example.de>: user unknown",
        ),
        event(
            "bounce",
            c.email,
            issue_id=issue_id,
            subscriber_id=c.id,
            type="blocked",
            reason="try later",
        ),
        event("spamreport", d.email, issue_id=issue_id, subscriber_id=d.id),
        event("delivered", d.email, issue_id=issue_id, subscriber_id=d.id),
        event("group_unsubscribe", e.email, issue_id=issue_id, subscriber_id=e.id, asm_group_id=7),
        event(
            "dropped", e.email, issue_id=issue_id, subscriber_id=e.id, reason="Unsubscribed Address"
        ),
    ]
    body = body_of(batch)
    with live_server(create_app(proj, engine)) as base:
        response = httpx.post(base + URL, content=body, headers=signer.headers(body))
    assert response.status_code == 200, response.text

    status = {p.email: get_subscriber(engine, p.id).status for p in people}
    assert status == {
        a.email: "subscribed",
        b.email: "bounced",
        c.email: "subscribed",  # a blocked bounce is temporary: the address stays
        d.email: "complained",
        e.email: "unsubscribed",
    }
    assert _states(engine, issue_id) == {
        a.id: "delivered",
        b.id: "bounced",
        c.id: "bounced",
        d.id: "delivered",
        e.id: "dropped",
    }
    assert _count(engine, schema.events) == len(batch)
    with engine.connect() as conn:
        details = [row.detail for row in conn.execute(select(schema.events))]
    dumped = json.dumps(details)
    assert "leser1@example.de" not in dumped and "203.0.113.9" not in dumped
    assert "Mozilla" not in dumped
    assert "https://example.com/x" in dumped  # the clicked link is kept

    result = cli(project, "stats", "meta-ki-creator", "--format", "json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["counts"] == {
        "recipients": 5,
        "delivered": 2,
        "bounced": 2,
        "dropped": 1,
        "opened": 1,
        "clicked": 1,
        "unsubscribed": 1,
        "complained": 1,
        "replied": 0,
    }
    assert stats["rates"]["opened"] == pytest.approx(0.5)  # over delivered
    assert stats["rates"]["bounced"] == pytest.approx(0.4)  # over recipients
    table = cli(project, "stats", "meta-ki-creator")
    assert "opened" in table.output and "50.0 %" in table.output and "of delivered" in table.output


@pytest.mark.slow
def test_replayed_post_and_repeated_events_are_stored_once(setup, signer):
    proj, engine, people, issue_id = setup
    a = people[0]
    first = event("delivered", a.email, issue_id=issue_id, subscriber_id=a.id)
    batch = [first, first, event("open", a.email, issue_id=issue_id, subscriber_id=a.id)]
    body = body_of(batch)
    headers = signer.headers(body)
    with live_server(create_app(proj, engine)) as base:
        for _ in range(3):  # SendGrid retries; an attacker replays a captured post
            assert httpx.post(base + URL, content=body, headers=headers).status_code == 200
    assert _count(engine, schema.events) == 2


@pytest.mark.slow
def test_later_bounce_replay_does_not_undo_a_resubscribe(setup, signer):
    from newsletter.store.subscribers import set_status

    proj, engine, people, issue_id = setup
    b = people[1]
    body = body_of([event("bounce", b.email, issue_id=issue_id, subscriber_id=b.id, type="bounce")])
    with live_server(create_app(proj, engine)) as base:
        assert httpx.post(base + URL, content=body, headers=signer.headers(body)).status_code == 200
        set_status(engine, b.id, "subscribed")
        assert httpx.post(base + URL, content=body, headers=signer.headers(body)).status_code == 200
    assert get_subscriber(engine, b.id).status == "subscribed"


@pytest.mark.slow
def test_events_without_custom_args_match_by_address_and_unknown_ids_do_not_crash(setup, signer):
    proj, engine, people, issue_id = setup
    a, b = people[0], people[1]
    forget_subscriber(engine, b.email)
    batch = [
        event("unsubscribe", a.email.upper()),  # no custom_args: matched by address
        event("bounce", b.email, issue_id=issue_id, subscriber_id=b.id, type="bounce"),  # forgotten
        event("open", "stranger@example.org", issue_id=999999, subscriber_id=888888),
    ]
    body = body_of(batch)
    with live_server(create_app(proj, engine)) as base:
        response = httpx.post(base + URL, content=body, headers=signer.headers(body))
    assert response.status_code == 200
    assert get_subscriber(engine, a.id).status == "unsubscribed"
    assert _count(engine, schema.events) == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "change",
    [
        "no_headers",
        "wrong_key",
        "altered_body",
        "garbage_signature",
        "stale",
        "future",
        "bad_timestamp",
        "unset_key",
    ],
)
def test_unsigned_forged_or_stale_posts_get_403_and_change_nothing(
    setup, signer, monkeypatch, change
):
    proj, engine, people, issue_id = setup
    a = people[0]
    body = body_of([event("spamreport", a.email, issue_id=issue_id, subscriber_id=a.id)])
    headers = signer.headers(body)
    if change == "no_headers":
        headers = {"Content-Type": "application/json"}
    elif change == "wrong_key":
        headers = Signer().headers(body)
    elif change == "altered_body":
        body = body.replace(b"spamreport", b"delivered!")
    elif change == "garbage_signature":
        headers["X-Twilio-Email-Event-Webhook-Signature"] = "not*base64=="
    elif change == "not_der":  # valid base64, not an ECDSA signature: the helper raises
        headers["X-Twilio-Email-Event-Webhook-Signature"] = base64.b64encode(b"hello").decode()
    elif change == "stale":
        headers = signer.headers(body, timestamp=int(time.time()) - 11 * 60)
    elif change == "future":
        headers = signer.headers(body, timestamp=int(time.time()) + 11 * 60)
    elif change == "bad_timestamp":
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = "yesterday"
    elif change == "unset_key":
        monkeypatch.delenv("SENDGRID_WEBHOOK_PUBLIC_KEY")
    with live_server(create_app(proj, engine)) as base:
        response = httpx.post(base + URL, content=body, headers=headers)
    assert response.status_code == 403
    assert get_subscriber(engine, a.id).status == "subscribed"
    assert _count(engine, schema.events) == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"event": "open"}',
        b"[1, 2]",
        b'[{"event": "open"}]',
        b"\xff\xfe[]",
        b'[{"event": "open", "sg_event_id": 5}]',
        b"",
    ],
)
def test_malformed_signed_bodies_get_400_never_500(setup, signer, body):
    proj, engine, _, _ = setup
    headers = signer.headers(body)
    with live_server(create_app(proj, engine)) as base:
        response = httpx.post(base + URL, content=body, headers=headers)
    # A body that is not UTF-8 cannot carry a valid signature: 403 is as good as 400 there.
    assert response.status_code in ((400, 403) if body.startswith(b"\xff") else (400,))
    assert _count(engine, schema.events) == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "odd",
    [
        {"sg_event_id": "\ud800-surrogate", "reason": "ein \ud83d Ende"},  # lone surrogates
        {"sg_event_id": "nul-\u0000-id", "event": "bounce", "reason": "Post\u0000fach"},
        {"sg_event_id": "zu-gross", "newsletter_subscriber_id": 2**63},
        {"sg_event_id": "nan", "event": "bounce", "reason": float("nan")},
    ],
    ids=["lone surrogate", "NUL", "id beyond 2**63", "NaN"],
)
def test_one_odd_event_does_not_lose_the_batch(setup, signer, odd):
    """One such event answered the whole batch with a 500: SendGrid retries that for a day
    and then drops it, the good bounce beside it included."""
    proj, engine, people, issue_id = setup
    good = event("bounce", people[1].email, issue_id=issue_id, subscriber_id=people[1].id)
    strange = {**event("open", people[0].email, issue_id=issue_id), **odd}
    body = json.dumps([strange, good]).encode()  # (json writes NaN and \ud800 as they came)
    with live_server(create_app(proj, engine)) as base:
        response = httpx.post(base + URL, content=body, headers=signer.headers(body))
    assert response.status_code == 200, response.text
    assert get_subscriber(engine, people[1].id).status == "bounced"
    assert _count(engine, schema.events) == 2


@pytest.mark.slow
def test_a_body_nested_past_what_json_reads_is_a_400(setup, signer):
    proj, engine, _, _ = setup
    body = b'[{"event": "open", "sg_event_id": "tief", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}]"
    with live_server(create_app(proj, engine)) as base:
        response = httpx.post(base + URL, content=body, headers=signer.headers(body))
    assert response.status_code == 400 and _count(engine, schema.events) == 0


@pytest.mark.slow
def test_sql_like_values_are_stored_as_text(setup, signer):
    proj, engine, people, issue_id = setup
    a = people[0]
    evil = "x'); DROP TABLE subscribers; --"
    batch = [
        event(
            "click",
            a.email,
            issue_id=issue_id,
            subscriber_id=a.id,
            url=evil,
            sg_event_id="1' OR '1'='1",
        )
    ]
    batch.append(event("open", evil, issue_id=evil, subscriber_id=evil))
    body = body_of(batch)
    with live_server(create_app(proj, engine)) as base:
        assert httpx.post(base + URL, content=body, headers=signer.headers(body)).status_code == 200
    assert _count(engine, schema.subscribers) == 5
    with engine.connect() as conn:
        ids = set(conn.execute(select(schema.events.c.sg_event_id)).scalars())
    assert "1' OR '1'='1" in ids


@pytest.mark.slow
def test_stored_events_read_back_as_sent_on_both_databases(setup, signer):
    """Ingest writes rows with plain driver SQL: times, JSON details and ids read back through
    the schema as SendGrid sent them (umlauts, lists, flags, a fractional timestamp), with
    addresses masked."""
    from datetime import UTC, datetime

    proj, engine, people, issue_id = setup
    a, b = people[:2]
    sent_at = 1_764_000_000.25
    batch = [
        event(
            "open",
            a.email,
            issue_id=issue_id,
            subscriber_id=a.id,
            timestamp=sent_at,
            sg_machine_open=True,
            category=["newsletter", "März „Ausgabe“"],
            sg_event_id="read-back-1",
        ),
        event(
            "bounce",
            b.email,
            issue_id=issue_id,
            subscriber_id=b.id,
            type="bounce",
            reason=f"550 Empfänger <{b.email}> unbekannt",
            attempt=3,
            sg_event_id="read-back-2",
        ),
    ]
    body = body_of(batch)
    with live_server(create_app(proj, engine)) as base:
        response = httpx.post(base + URL, content=body, headers=signer.headers(body))
    assert response.text == "ok: 2 stored, 0 duplicates\n"
    with engine.connect() as conn:
        rows = {
            row.sg_event_id: row
            for row in conn.execute(select(schema.events).order_by(schema.events.c.id))
        }
    opened, bounced = rows["read-back-1"], rows["read-back-2"]
    assert (opened.event, opened.subscriber_id, opened.issue_id) == ("open", a.id, issue_id)
    assert opened.occurred_at.replace(tzinfo=UTC) == datetime.fromtimestamp(sent_at, UTC)
    assert opened.detail == {
        "category": '["newsletter", "März „Ausgabe“"]',
        "sg_machine_open": True,
    }
    assert bounced.detail == {
        "category": '["newsletter"]',
        "type": "bounce",
        "reason": "550 Empfänger <<address>> unbekannt",
        "attempt": 3,
    }
    assert bounced.received_at >= opened.occurred_at


@pytest.mark.slow
def test_oversized_webhook_body_gets_413(setup, signer):
    proj, engine, people, issue_id = setup
    big = [event("open", "x@example.de", padding="ü" * 1000) for _ in range(600)]
    body = body_of(big)
    assert len(body) > 1_000_000
    with live_server(create_app(proj, engine)) as base:
        response = httpx.post(base + URL, content=body, headers=signer.headers(body))
        # Without Content-Length (chunked), the limit is enforced while the body streams in.
        chunked = httpx.post(
            base + URL,
            content=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
            headers=signer.headers(body),
        )
    assert response.status_code == 413
    assert chunked.status_code == 413
    assert _count(engine, schema.events) == 0


@pytest.mark.slow
def test_log_has_route_templates_but_no_secrets_or_addresses(setup, signer, caplog, monkeypatch):
    from newsletter import tokens
    from tests.conftest import TEST_SECRET

    proj, engine, people, issue_id = setup
    monkeypatch.setenv("NEWSLETTER_INBOUND_SECRET", "inbound-s3cret-value")
    a = people[0]
    token = tokens.make_token(tokens.UNSUBSCRIBE, a.id, issue_id, key=TEST_SECRET)
    body = body_of([event("open", a.email, issue_id=issue_id, subscriber_id=a.id)])
    caplog.set_level(logging.DEBUG)
    with live_server(create_app(proj, engine)) as base:
        httpx.post(base + URL, content=body, headers=signer.headers(body))
        httpx.get(f"{base}/unsubscribe/{token}")
        httpx.post(f"{base}/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click")
        httpx.post(f"{base}/webhooks/sendgrid/inbound/inbound-s3cret-value", content=b"x")
        httpx.post(f"{base}/webhooks/sendgrid/inbound/wrong-guess", content=b"x")
    # The server side's records only (httpx, the client here, logs its own URLs).
    text = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore"))
    )
    assert "POST /webhooks/sendgrid/events 200" in text
    assert "GET /unsubscribe/{token} 200" in text
    assert "POST /webhooks/sendgrid/inbound/{secret} 404" in text
    for secret in (
        token,
        TEST_SECRET,
        "inbound-s3cret-value",
        "wrong-guess",
        a.email,
        signer.public_key,
    ):
        assert secret not in text


def test_database_trouble_answers_503_so_sendgrid_retries(project, signer, caplog):
    from sqlalchemy import text

    proj = Project.load(project)
    engine = open_engine(proj.database_url)  # SQLite
    body = body_of([event("open", "x@example.de")])
    app = create_app(proj, engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE events"))  # stands in for a broken or locked database
    with live_server(app) as base:
        response = httpx.post(base + URL, content=body, headers=signer.headers(body))
    assert response.status_code == 503 and response.headers["retry-after"] == "60"
