"""`stats` counts readers who replied, not the addresses they wrote from: a reply to a reader's
own signed reply address is theirs whatever their From (docs/replies.md), so a second reply
from their other address does not count them twice. It did: 3 "replied" of 2 delivered."""

from __future__ import annotations

import email
import email.policy
import json
from email.message import EmailMessage
from email.utils import make_msgid

from newsletter.project import Project
from newsletter.replies import RawInbound, receive
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.smtp_server import FakeSmtp

JOERG = "jörg.müller@example.de"


def _writes(project: Project, engine, sender: str, to: str, text: str) -> None:  # type: ignore[no-untyped-def]
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Re: Meta, KI und das Ende der Creator?"
    message["Message-ID"] = make_msgid(domain="leser.example")
    message.set_content(text)
    receive(project, engine, RawInbound(fields={"email": message.as_bytes()}))


def test_a_reader_replying_from_two_addresses_counts_once(make_project, cli) -> None:  # type: ignore[no-untyped-def]
    with FakeSmtp() as smtp:
        root = make_project(
            config=CONFIG
            + f'\n[sending]\ntransport = "smtp"\n\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}'
            + '\nsecurity = "none"\n\n[replies]\ndomain = "replies.example.com"\nforward = false\n',
            issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text(encoding="utf-8")},
        )
        engine = open_engine(f"sqlite:///{root / 'newsletter.db'}")
        add_subscriber(engine, JOERG, first_name="Jörg")
        add_subscriber(engine, "anna@example.com", first_name="Anna")
        assert cli(root, "send", EXAMPLE_ISSUE.stem, "--yes").exit_code == 0
        reply_to = {
            m.rcpt_tos[0]: str(
                email.message_from_bytes(m.data, policy=email.policy.default)["Reply-To"]
            )
            for m in smtp.messages
        }
    project = Project.load(root)
    _writes(project, engine, f"Jörg Müller <{JOERG}>", reply_to[JOERG], "Danke für den Text!")
    _writes(project, engine, "Jörg <joerg.privat@example.net>", reply_to[JOERG], "Noch etwas …")
    _writes(project, engine, "Anna <anna@example.com>", reply_to["anna@example.com"], "Schön!")
    threads = json.loads(cli(root, "replies", "--format", "json").output)
    # Both of Jörg's replies are in his one conversation, whatever address they came from.
    assert {t["reader"]["email"]: t["messages"] for t in threads} == {
        JOERG: 2,
        "anna@example.com": 1,
    }

    shown = json.loads(cli(root, "stats", "--format", "json").output)
    [row] = shown["issues"]
    assert row["counts"]["replied"] == 2
    assert row["rates"]["replied"] == 1.0  # of the 2 delivered: both replied, once each
