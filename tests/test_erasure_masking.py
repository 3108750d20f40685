"""No address where nobody asked for one (issue 28, item 4): a clicked link carrying
`{{ subscriber.email | urlencode }}` is counted without it, and log lines (`serve
--sequences` refusing a recipient) never hold one."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select

from newsletter.events import ingest
from newsletter.masking import AddressMaskingFilter, addresses_in, mask_addresses
from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.issues import ensure_issue
from newsletter.store.subscribers import add_subscriber, find_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.smtp_server import FakeSmtp


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("https://x.de/p?e=anna%40example.com&n=1", "https://x.de/p?e=<address>&n=1"),
        ("https://x.de/p?e=ANNA%40EXAMPLE.COM", "https://x.de/p?e=<address>"),
        ("https://x.de/p?e=j%C3%B6rg%40ex%C3%A4mple.de", "https://x.de/p?e=<address>"),
        ("https://x.de/u/anna%2540example.com/x", "https://x.de/u/<address>/x"),
        ("https://x.de/p?e=anna@example.com&n=1", "https://x.de/p?e=<address>&n=1"),
        ("u42@example.com: 550 unknown", "<address>: 550 unknown"),
        ("https://x.de/100%25/a?b=c", "https://x.de/100%25/a?b=c"),
    ],
)
def test_addresses_are_masked_plain_or_percent_encoded(text: str, masked: str) -> None:
    assert mask_addresses(text) == masked
    assert len(addresses_in(text)) == (0 if masked == text else 1)


def test_a_clicked_link_carrying_the_address_is_counted_without_it(
    make_project, database_url, cli, monkeypatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text(encoding="utf-8")})
    engine = open_engine(Project.load(root).database_url)
    reader = add_subscriber(engine, "private.person@example.org")
    issue_id = ensure_issue(
        engine, slug="meta-ki-creator", title="Meta", subject="Meta", language="de"
    )
    url = f"https://news.example.com/profil?e={quote(reader.email, safe='')}&utm=nl"
    event = {
        "email": reader.email,
        "timestamp": int(datetime.now(UTC).timestamp()),
        "event": "click",
        "url": url,
        "sg_event_id": uuid.uuid4().hex,
        schema.CUSTOM_ARG_ISSUE: str(issue_id),
        schema.CUSTOM_ARG_SUBSCRIBER: str(reader.id),
    }
    assert ingest(engine, [event]).stored == 1
    with engine.connect() as conn:
        [link] = conn.execute(select(schema.link_day_counters.c.url)).scalars()
        [detail] = conn.execute(select(schema.events.c.detail)).scalars()
    assert link == detail["url"] == "https://news.example.com/profil?e=<address>&utm=nl"
    for args in (["stats", "meta-ki-creator"], ["stats", "meta-ki-creator", "--format", "json"]):
        shown = cli(root, *args)
        assert shown.exit_code == 0, shown.output
        assert "private.person" not in shown.output and "profil?e=<address>" in shown.output


STEP = """\
---
title: Willkommen
delay: 0
---

Hallo {{ subscriber.first_name | default("zusammen") }}!
"""


def test_a_refused_recipient_is_logged_without_the_address(
    make_project, database_url, monkeypatch, caplog
) -> None:
    """What `serve --sequences` logs when the SMTP server refuses a welcome step."""
    from newsletter.sequences.runner import BackgroundRunner

    with FakeSmtp() as smtp:
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
        root = make_project(
            CONFIG
            + '\n[sending]\ntransport = "smtp"\nmax_retries = 0\n'
            + f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "none"\n'
            + '\n[sequences.welcome]\ntrigger = "subscribed"\n'
        )
        (root / "sequences" / "welcome").mkdir(parents=True)
        (root / "sequences" / "welcome" / "01-willkommen.md").write_text(STEP, encoding="utf-8")
        project = Project.load(root)
        smtp.inject("RCPT", "550 5.1.1 <private.person@example.org>: unknown", count=5)
        from newsletter.sequences.hooks import joined

        engine = open_engine(project.database_url)
        person = add_subscriber(engine, "private.person@example.org")
        assert joined(project, engine, person.id) == ["welcome"]

        caplog.set_level(logging.INFO, logger="newsletter")
        runner = BackgroundRunner(project, interval=0.2).start()
        deadline = time.monotonic() + 30
        while runner.runs < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        runner.stop()
    logged = caplog.text
    assert "welcome/willkommen: 0 sent, 1 failed" in logged, logged
    assert "<address>: 550 5.1.1 <<address>>: unknown" in logged
    assert "private.person" not in logged
    assert find_subscriber(engine, "private.person@example.org") is not None


def test_serves_log_handler_masks_every_line_and_traceback() -> None:
    """`serve` puts this filter on its handlers: a message, its arguments and an
    exception's text (the last line of a traceback) lose their addresses."""
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(AddressMaskingFilter())
    log = logging.getLogger("tests.erasure_masking")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("mail to %s failed: %s", "anna@example.com", "550 <anna@example.com>")
        try:
            raise ValueError("no such subscriber bernd%40example.de")
        except ValueError:
            log.exception("lookup of %s failed", "bernd@example.de")
    finally:
        log.removeHandler(handler)
    text: Any = stream.getvalue()
    assert "mail to <address> failed: 550 <<address>>" in text
    assert "ValueError: no such subscriber <address>" in text
    assert "example.com" not in text and "example.de" not in text
