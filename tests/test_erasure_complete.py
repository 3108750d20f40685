"""Erasure leaves nothing behind (issue 28, item 4). One person leaves traces everywhere the
tool writes: replies from their address in punycode and NFD spellings, a send's error naming
them, a clicked link carrying `{{ subscriber.email | urlencode }}` and a field of theirs,
outbox copies (test copy, confirmation mail, the author's copy of their reply). Then
`export-person` must list every such row, and `remove --forget` must leave no table, no
SQLite file (`-wal`, `-shm`, free pages) and no outbox file with their data.

Through the real CLI, on SQLite and PostgreSQL; replies through the whole Inbound Parse step.
"""

from __future__ import annotations

import json
import unicodedata
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import insert, select

from newsletter import replies
from newsletter.events import ingest
from newsletter.project import Project
from newsletter.sending.ledger import Ledger
from newsletter.sending.single import send_transactional
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.issues import ensure_issue
from newsletter.store.subscribers import find_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE

ADDRESS = "jörg.privat@exämple.de"
PUNYCODE = "jörg.privat@xn--exmple-cua.de"
NAME = "Jörg Quastenbrecher"
CITY = "Zwickelhausen-Süd"
CUSTOMER = "K-77123-Q"
LINK = "https://news.example.com/profil?e={email}&ort={city}"
REPLIES = '\n[replies]\ndomain = "replies.example.com"\n'


@pytest.fixture
def proj(make_project, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(CONFIG + REPLIES)
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(
        EXAMPLE_ISSUE.read_text(encoding="utf-8"), encoding="utf-8"
    )
    return Project.load(root)


def spellings(text: str) -> set[str]:
    """The ways a value may be written into a row or a file."""
    forms = {text, text.lower(), unicodedata.normalize("NFD", text)}
    forms |= {quote(form, safe="") for form in list(forms)}
    forms |= {quote(form, safe="").lower() for form in list(forms)}
    return forms


NEEDLES = (
    spellings(ADDRESS)
    | spellings(PUNYCODE)
    | spellings("jörg.privat")
    | spellings(NAME)
    | spellings("Quastenbrecher")
    | spellings(CITY)
    | spellings(CUSTOMER)
)


def inbound(sender: str, text: str) -> replies.RawInbound:
    fields = {
        "headers": f"From: {sender}\nSubject: Re: Meta\n",
        "from": sender,
        "to": "jens@example.com",
        "subject": "Re: Meta, KI und das Ende der Creator?",
        "text": text,
        "envelope": json.dumps({"to": ["jens@example.com"], "from": sender}),
        "charsets": json.dumps({"from": "UTF-8", "text": "UTF-8", "subject": "UTF-8"}),
    }
    return replies.RawInbound(fields={k: v.encode("utf-8") for k, v in fields.items()})


def click(issue_id: int, subscriber_id: int, url: str) -> dict[str, Any]:
    return {
        "email": "ignored@example.org",
        "timestamp": int(datetime.now(UTC).timestamp()),
        "event": "click",
        "url": url,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": "m1.filter0001",
        schema.CUSTOM_ARG_ISSUE: str(issue_id),
        schema.CUSTOM_ARG_SUBSCRIBER: str(subscriber_id),
    }


def leave_traces(proj: Project, cli: Any) -> tuple[Any, Any, int]:
    """Jörg and Ben, each with the traces a reader leaves."""
    added = cli(
        proj.root, "subscribers", "add", ADDRESS, "--name", NAME, "--tag", "leser",
        "--field", f"stadt={CITY}", "--field", f"kunde={CUSTOMER}", "--consent", "Ja, gerne",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert cli(proj.root, "subscribers", "add", "ben@example.com", "--name", "Ben").exit_code == 0
    engine = open_engine(proj.database_url)
    jorg, ben = find_subscriber(engine, ADDRESS), find_subscriber(engine, "ben@example.com")

    # Outbox copies: a test copy, a confirmation-style mail, and (below) the reply's copy.
    tested = cli(proj.root, "send", "meta-ki-creator", "--test", ADDRESS)
    assert tested.exit_code == 0, tested.output
    send_transactional(proj, ADDRESS, "Bitte bestätigen", "<p>Hallo Jörg</p>", "Hallo Jörg")
    send_transactional(proj, "ben@example.com", "Bitte bestätigen", "<p>Hallo</p>", "Hallo")

    issue_id = ensure_issue(
        engine, slug="meta-ki-creator", title="Meta", subject="Meta, KI und das Ende der Creator?",
        language="de",
    )  # fmt: skip
    ledger = Ledger(engine)
    send_id = ledger.create_send(issue_id, transport="smtp", segment=[], dry_run=False)
    ledger.finish_send(
        send_id,
        "stopped",
        f"{ADDRESS}: cannot reach the SMTP server 127.0.0.1:2525 (after 3 tries)",
    )
    stopped_at = f"{ADDRESS}: cannot reach the SMTP server 127.0.0.1:2525 (after 3 tries)"
    with engine.begin() as conn:  # the rows a batch stopped at Jörg leaves: Ben's names him
        conn.execute(
            insert(schema.deliveries),
            [
                {"issue_id": issue_id, "subscriber_id": sid, "send_id": send_id,
                 "state": "failed", "error": stopped_at, "updated_at": datetime.now(UTC)}
                for sid in (jorg.id, ben.id)
            ],
        )  # fmt: skip
    other = ledger.create_send(issue_id, transport="smtp", segment=[], dry_run=False)
    ledger.finish_send(other, "stopped", "ben@example.com: 550 mailbox unavailable")

    # Clicks on a link carrying the address and a field, for both readers.
    for person in (jorg, ben):
        city = CITY if person is jorg else "Köln"
        url = LINK.format(email=quote(person.email, safe=""), city=quote(city))
        assert ingest(engine, [click(issue_id, person.id, url)]).stored == 1
    with engine.begin() as conn:  # as ingest wrote them before addresses in links were masked
        conn.execute(
            insert(schema.link_day_counters).values(
                issue_id=issue_id,
                day=date(2026, 1, 5),
                url=LINK.format(email=quote(ADDRESS, safe=""), city="Berlin"),
                clicks=3,
            )
        )

    # Replies from Jörg's address in other spellings, one kept unmatched as older versions did.
    for sender in (PUNYCODE, unicodedata.normalize("NFD", ADDRESS.upper())):
        stored = replies.receive(
            proj, engine, inbound(f"Jörg <{sender}>", f"Grüße aus {CITY}, Kunde {CUSTOMER}")
        )
        assert stored.subscriber_id == jorg.id
    with engine.begin() as conn:
        conn.execute(
            insert(schema.replies).values(
                subscriber_id=None,
                from_email=PUNYCODE,
                from_name=NAME,
                subject="Frage",
                text=f"Ich wohne in {CITY}",
                received_at=datetime.now(UTC),
            )
        )
    return engine, ben, issue_id


def rows_with(engine: Any, needles: set[str]) -> list[str]:
    """Every row of every table that holds one of the needles."""
    found = []
    with engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            for row in conn.execute(select(table)).all():
                text = repr(tuple(row))
                json_text = json.dumps([str(v) for v in row], ensure_ascii=False)
                if any(n in text or n in json_text for n in needles):
                    found.append(f"{table.name}: {text}")
    return found


def test_export_lists_every_row_and_forget_leaves_nothing(proj, cli, tmp_path) -> None:
    engine, ben, issue_id = leave_traces(proj, cli)
    outbox = proj.root / "outbox"
    bens = outbox / "transactional-ben@example.com.eml"
    about_jorg = sorted(set(outbox.glob("*.eml")) - {bens})
    assert len(about_jorg) == 4  # test copy, confirmation, the author's copies of 2 replies
    before = rows_with(engine, NEEDLES)

    # export-person lists every row that holds their data (Art. 15), in any spelling.
    exported = tmp_path / "jorg.json"
    result = cli(proj.root, "subscribers", "export-person", PUNYCODE, "-o", str(exported))
    assert result.exit_code == 0, result.output
    document = json.loads(exported.read_text(encoding="utf-8"))
    jorg_id = document["subscriber"]["id"]
    tables = document["tables"]
    assert len(tables["replies"]) == 3
    [send] = tables["sends"]
    assert send["error"].startswith(ADDRESS + ": cannot reach the SMTP server")
    assert sorted(row["clicks"] for row in tables["link_day_counters"]) == [1, 3]
    assert {row["subscriber_id"] for row in tables["deliveries"]} == {ben.id, jorg_id}
    for row in before:
        table = row.partition(":")[0]
        assert table in tables or table == "subscribers", row

    erased = cli(proj.root, "subscribers", "remove", ADDRESS, "--forget", "--yes")
    assert erased.exit_code == 0, erased.output
    for path in about_jorg:
        assert not path.exists(), path
        assert f"deleted {path}" in erased.output
    assert list(outbox.glob("*.eml")) == [bens]  # Ben's mail stays
    assert "Warning" not in erased.output

    # Right after the erasure, with this process's connections still open (as `serve`'s
    # would be): no copy in the SQLite file, its WAL or its shared-memory index.
    if proj.database_url.startswith("sqlite"):
        database = Path(proj.database_url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            path = database.with_name(database.name + suffix)
            if not path.exists():
                continue
            data = path.read_bytes()
            for needle in NEEDLES:
                assert needle.encode("utf-8") not in data, (path.name, needle)

    # No table holds the address (any spelling), the name or a field value.
    assert rows_with(engine, NEEDLES) == []
    assert find_subscriber(engine, "ben@example.com") is not None
    with engine.connect() as conn:
        errors = list(
            conn.execute(select(schema.sends.c.error).order_by(schema.sends.c.id)).scalars()
        )
        urls = list(conn.execute(select(schema.link_day_counters.c.url)).scalars())
        clicks = sum(conn.execute(select(schema.link_day_counters.c.clicks)).scalars())
    assert errors == [
        "<erased>: cannot reach the SMTP server 127.0.0.1:2525 (after 3 tries)",
        "ben@example.com: 550 mailbox unavailable",
    ]
    assert clicks == 5  # the counts stay; only the URLs lose the person
    with engine.connect() as conn:
        [bens_row] = conn.execute(select(schema.deliveries)).all()
    assert (bens_row.subscriber_id, bens_row.error) == (ben.id, errors[0])
    assert all("Zwickelhausen" not in url for url in urls)
    assert any("K%C3%B6ln" in url for url in urls)  # Ben's city is not Jörg's

    # `stats` and `report` print none of it.
    stats = cli(proj.root, "stats", "meta-ki-creator")
    report = tmp_path / "report.html"
    assert cli(proj.root, "report", "-o", str(report)).exit_code == 0
    for text in (stats.output, report.read_text(encoding="utf-8")):
        assert not any(n in text for n in NEEDLES), text
    assert "profil?e=<erased>" in stats.output  # the link, its clicks kept, without the person


@pytest.mark.slow
def test_a_reader_holding_the_sqlite_file_gets_a_warning_not_a_silent_copy(
    make_project, cli
) -> None:
    """`serve` in the middle of a read: the WAL cannot be emptied; erasure says so."""
    import sqlite3

    root = make_project()
    assert cli(root, "subscribers", "add", "anna@example.com").exit_code == 0
    reader = sqlite3.connect(root / "newsletter.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM subscribers").fetchone()
        erased = cli(root, "subscribers", "remove", "anna@example.com", "--forget", "--yes")
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert erased.exit_code == 0, erased.output
    assert erased.output.startswith("erased anna@example.com and all data about them")
    assert "Warning: another program (`newsletter serve`?) kept the database busy" in erased.output
    again = cli(root, "subscribers", "remove", "anna@example.com", "--forget", "--yes")
    assert "Warning" not in again.output
    assert b"anna@example.com" not in (root / "newsletter.db").read_bytes()
