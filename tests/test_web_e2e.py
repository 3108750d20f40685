"""End to end: send the example issue through the fake SendGrid, then use what the readers
received (List-Unsubscribe URL, Reply-To, custom_args, view-in-browser link) against the
running server, and read the outcome with `newsletter stats`."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import httpx
import pytest

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber, find_subscriber
from newsletter.web import create_app
from tests.conftest import CONFIG, EXAMPLE_ISSUE, FIXTURES
from tests.sendgrid_server import FakeSendGrid, copies
from tests.support.web import Signer, body_of, event, live_server, multipart

KEY = "SG.e2e-test-key"


def test_send_then_webhooks_unsubscribe_reply_and_stats(make_project, cli, monkeypatch):
    root = make_project(
        CONFIG + '\n[replies]\ndomain = "replies.example.com"\nforward = false\n',
        issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text(encoding="utf-8")},
    )
    proj = Project.load(root)
    engine = open_engine(proj.database_url)
    add_subscriber(engine, "anna.mueller@example.de", name="Anna Müller", first_name="Anna")
    add_subscriber(engine, "jörg@example.de", first_name="Jörg")
    signer = Signer()
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", signer.public_key)
    monkeypatch.setenv("NEWSLETTER_INBOUND_SECRET", "inbound-e2e")
    with FakeSendGrid(api_key=KEY) as sendgrid:
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", sendgrid.url)
        result = cli(root, "send", EXAMPLE_ISSUE.stem, "--yes")
        assert result.exit_code == 0, result.output
        [message] = sendgrid.messages
    monkeypatch.delenv("SENDGRID_API_KEY")
    by_address = {copy["to"][0]["email"]: copy for copy in copies(message)}
    anna, joerg = by_address["anna.mueller@example.de"], by_address["jörg@example.de"]

    with live_server(create_app(proj, engine)) as base:
        # SendGrid reports what happened, echoing the custom_args as top-level keys.
        batch = []
        for p in (anna, joerg):
            args = p["custom_args"]
            batch.append(event("delivered", p["to"][0]["email"], **args))
        batch.append(event("open", "anna.mueller@example.de", **anna["custom_args"]))
        body = body_of(batch)
        assert (
            httpx.post(
                base + "/webhooks/sendgrid/events", content=body, headers=signer.headers(body)
            ).status_code
            == 200
        )

        # Jörg's mail client uses the one-click header.
        # A list (RFC 2369): the https URL, and with [replies] domain a mailto: as well.
        targets = [t.strip().strip("<>") for t in joerg["headers"]["List-Unsubscribe"].split(",")]
        [header_url] = [t for t in targets if t.startswith("https://")]
        assert any(t.startswith("mailto:reply+") for t in targets)
        assert header_url.startswith("https://news.example.com/unsubscribe/")
        one_click = httpx.post(
            base + urlsplit(header_url).path,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert one_click.status_code == 200
        assert find_subscriber(engine, "jörg@example.de").status == "unsubscribed"

        # Anna answers to the Reply-To of the issue.
        # SendGrid fills the per-reader token into the Reply-To from her substitutions.
        from newsletter.tokens import REPLY_TOKEN_TAG

        assert REPLY_TOKEN_TAG in message["reply_to"]["email"]
        reply_to = anna["reply_to"]
        assert re.fullmatch(r"reply\+[\w.-]+@replies\.example\.com", reply_to)
        text = (FIXTURES / "reply-meta-ki-creator.txt").read_text(encoding="utf-8")
        data, content_type = multipart(
            {
                "from": "Anna Müller <anna.mueller@example.de>",
                "to": reply_to,
                "subject": "Re: " + message["subject"],
                "text": text,
                "envelope": json.dumps({"to": [reply_to], "from": "anna.mueller@example.de"}),
                "charsets": json.dumps({"text": "UTF-8", "subject": "UTF-8", "from": "UTF-8"}),
            }
        )
        assert (
            httpx.post(
                base + "/webhooks/sendgrid/inbound/inbound-e2e",
                content=data,
                headers={"Content-Type": content_type},
            ).status_code
            == 200
        )

        # The "view in browser" link of the issue works and shows no one's data.
        html = message["content"][1]["value"]
        view = re.search(r'href="https://news\.example\.com(/issues/[\w-]+)"', html)
        if view is None:
            pytest.fail(
                "the issue has no view-in-browser link to https://news.example.com/issues/…"
            )
        page = httpx.get(base + view.group(1))
        assert page.status_code == 200
        assert "Hallo zusammen" in page.text and "Anna" not in page.text

    stats = json.loads(cli(root, "stats", "meta-ki-creator", "--format", "json").output)
    assert stats["counts"] == {
        "recipients": 2,
        "delivered": 2,
        "bounced": 0,
        "dropped": 0,
        "opened": 1,
        "clicked": 0,
        "unsubscribed": 1,
        "complained": 0,
        "replied": 1,
    }
    listing = cli(root, "replies", "--issue", "meta-ki-creator")
    assert "anna.mueller@example.de" in listing.output
    sends = cli(root, "sends", "meta-ki-creator")
    assert sends.exit_code == 0 and "delivered" in sends.output
