"""Addresses are compared in one normalized form everywhere (issue 28, item 4): the IDNA
domain as Unicode, NFC, lower-cased, as the store keys subscribers. A webhook event, a reply
or export-person naming `jörg@xn--exmple-cua.de` or its NFD spelling finds Jörg."""

from __future__ import annotations

import json
import unicodedata
import uuid
from datetime import UTC, datetime

import pytest

from newsletter.events import ingest
from newsletter.project import Project
from newsletter.store.emails import address_key
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber, get_subscriber
from tests.conftest import CONFIG

NFC = "jörg@exämple.de"
SPELLINGS = [
    "jörg@xn--exmple-cua.de",
    unicodedata.normalize("NFD", NFC),
    "JÖRG@EXÄMPLE.DE",
    " Jörg@Xn--Exmple-Cua.De ",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_has_the_stores_key(spelling: str) -> None:
    assert address_key(spelling) == NFC
    assert address_key("not an address") is None


@pytest.fixture
def engine(make_project, database_url, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    project = Project.load(make_project(CONFIG))
    return open_engine(project.database_url)


def test_an_event_without_our_ids_finds_the_reader_by_a_punycode_address(engine) -> None:
    jorg = add_subscriber(engine, NFC)
    bounce = {
        "email": "jörg@xn--exmple-cua.de",
        "timestamp": int(datetime.now(UTC).timestamp()),
        "event": "bounce",
        "type": "bounce",
        "sg_event_id": uuid.uuid4().hex,
    }
    assert ingest(engine, [bounce]).stored == 1
    assert get_subscriber(engine, jorg.id).status == "bounced"


def test_export_person_by_any_spelling_lists_replies_in_every_spelling(engine, cli, make_project):
    from sqlalchemy import insert

    from newsletter.store import schema

    add_subscriber(engine, NFC)
    with engine.begin() as conn:
        for sender in SPELLINGS[:2]:  # as stored before replies were matched in this form
            conn.execute(
                insert(schema.replies).values(
                    subscriber_id=None,
                    from_email=sender,
                    subject="Frage",
                    text="Hallo",
                    received_at=datetime.now(UTC),
                )
            )
    project = make_project(CONFIG, name="cli")  # NEWSLETTER_DATABASE_URL: the same database
    for spelling in SPELLINGS:
        shown = cli(project, "subscribers", "export-person", spelling.strip())
        assert shown.exit_code == 0, shown.output
        document = json.loads(shown.output)
        assert sorted(r["from_email"] for r in document["tables"]["replies"]) == sorted(
            SPELLINGS[:2]
        )
