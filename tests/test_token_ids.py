"""Tokens without internal ids (issue 26 item 5): unsubscribe, confirmation and reply tokens
carry a public id per subscriber and per issue, never the sequential row ids that let every
reader estimate the list's size and growth. Tokens already sent keep working.

Since m018 a subscriber's public id is derived from the row id with the secret key
(`tokens.public_id`); the random ones m015 stored are still honoured."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from starlette.testclient import TestClient

from newsletter import tokens
from newsletter.project import Project
from newsletter.store import migrations, schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber, find_subscriber, get_subscriber
from newsletter.web import create_app
from tests.conftest import CONFIG, EXAMPLE_ISSUE, TEST_SECRET
from tests.support.migrations import raw_engine
from tests.support.tokens import carried, row_id_timed_token, row_id_token

REPLIES = '\n[replies]\ndomain = "replies.example.com"\nforward = false\n'


def messages(folder: Path) -> dict[str, email.message.EmailMessage]:
    out = {}
    for path in sorted(folder.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        out[str(message["To"])] = message
    return out


def public(person) -> str:
    """The public id a person's links carry: stored by m015, else derived from the row id."""
    return person.public_id or tokens.public_id(person.id, key=TEST_SECRET)


def signed_value(token: str) -> bytes:
    """What a token says before its signature, decoded as far as it is base64."""
    value = token.rsplit(".", 1)[0]
    if value.startswith("W"):  # the older JSON form
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    return value.encode()


@pytest.fixture
def sent(make_project, database_url, monkeypatch, cli):
    """Three readers sent the example issue through the outbox, with a reply domain."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(CONFIG + REPLIES)
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    project = Project.load(root)
    engine = open_engine(project.database_url)
    people = [add_subscriber(engine, f"leser{i}@example.de") for i in range(3)]
    result = cli(root, "send", EXAMPLE_ISSUE.stem, "--yes")
    assert result.exit_code == 0, result.output
    return project, engine, people, messages(root / "outbox")


def test_sent_links_and_reply_addresses_carry_no_row_ids(sent):
    project, engine, people, mails = sent
    with engine.connect() as conn:
        issue = conn.execute(select(schema.issues.c.id, schema.issues.c.public_id)).one()
    for person in people:
        mail = mails[person.email]
        url = re.search(
            r"<(https://news\.example\.com/unsubscribe/[^>]+)>", mail["List-Unsubscribe"]
        )
        token = url.group(1).rsplit("/", 1)[1]
        reply = str(mail["Reply-To"])
        reply_token = reply[len("reply+") : reply.index("@")]
        for each in (token, reply_token):
            # A format mark, then the issue's and the reader's public ids: nothing else.
            assert signed_value(each) == f"1{issue.public_id}{public(person)}".encode()
        assert len(reply.partition("@")[0]) <= 64  # RFC 5321's limit for the local part
    # Two readers' tokens share nothing that counts up.
    assert len({public(p) for p in people}) == 3


def test_a_new_unsubscribe_link_unsubscribes_its_reader(sent):
    project, engine, people, mails = sent
    client = TestClient(create_app(project, engine))
    url = re.search(
        r"<https://news\.example\.com(/unsubscribe/[^>]+)>",
        mails[people[1].email]["List-Unsubscribe"],
    )
    page = client.get(url.group(1))
    assert page.status_code == 200 and "wirklich abbestellen" in page.text
    assert client.post(url.group(1), content=b"List-Unsubscribe=One-Click").status_code == 200
    assert [get_subscriber(engine, p.id).status for p in people] == [
        "subscribed",
        "unsubscribed",
        "subscribed",
    ]
    with engine.connect() as conn:
        issue_id = conn.execute(select(schema.issues.c.id)).scalar_one()
        event = conn.execute(select(schema.events.c.subscriber_id, schema.events.c.issue_id)).one()
    assert tuple(event) == (people[1].id, issue_id)  # counted for the issue in `stats`


def test_links_sent_before_keep_working(sent):
    """Tokens with row ids (every issue sent before this change) are still honoured."""
    project, engine, people, _ = sent
    with engine.connect() as conn:
        issue_id = conn.execute(select(schema.issues.c.id)).scalar_one()
    client = TestClient(create_app(project, engine))
    old = row_id_token(tokens.UNSUBSCRIBE, people[2].id, issue_id, key=TEST_SECRET)
    assert old.startswith("W")  # the older form
    assert client.post(f"/unsubscribe/{old}").status_code == 200
    assert get_subscriber(engine, people[2].id).status == "unsubscribed"
    person = add_subscriber(engine, "spaet@example.de", status="unconfirmed", source="form")
    old_confirm = row_id_timed_token(tokens.CONFIRM, person.id, key=TEST_SECRET)
    assert client.post(f"/confirm/{old_confirm}").status_code == 200
    assert get_subscriber(engine, person.id).status == "subscribed"


def test_confirmation_links_name_the_public_id(make_project, database_url, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project()
    project = Project.load(root)
    engine = open_engine(project.database_url)
    for i in range(5):  # others signed up before: the row id is 6
        add_subscriber(engine, f"vorher{i}@example.de")
    client = TestClient(create_app(project, engine))
    client.post("/subscribe", data={"email": "neu@example.de"})
    (mail,) = messages(root / "outbox").values()
    link = re.search(
        r"https://news\.example\.com(/confirm/\S+)", mail.get_body(("plain",)).get_content()
    )
    person = find_subscriber(engine, "neu@example.de")
    payload = link.group(1).rsplit("/", 1)[1].split(".")[0]
    said = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    # The public id, no issue, and how many confirmations they had (single use, issue 28).
    assert said == f'["{public(person)}",null,0]'.encode() and person.id == 6
    assert client.post(link.group(1)).status_code == 200
    assert find_subscriber(engine, "neu@example.de").status == "subscribed"


def test_an_erased_readers_new_link_finds_nobody(sent, cli):
    project, engine, people, mails = sent
    url = re.search(
        r"<https://news\.example\.com(/unsubscribe/[^>]+)>",
        mails[people[0].email]["List-Unsubscribe"],
    )
    result = cli(project.root, "subscribers", "remove", people[0].email, "--forget", "--yes")
    assert result.exit_code == 0, result.output
    again = add_subscriber(engine, "neu@example.de")  # takes no one's identity
    client = TestClient(create_app(project, engine))
    assert client.get(url.group(1)).status_code == 410
    assert get_subscriber(engine, again.id).status == "subscribed"


def test_forged_or_garbled_tokens_are_refused() -> None:
    good = tokens.make_token(tokens.UNSUBSCRIBE, "A" * 12, "B" * 12, key=TEST_SECRET)
    for bad in (
        good.replace("A" * 12, "C" * 12),
        tokens.make_token(tokens.UNSUBSCRIBE, "A" * 12, "B" * 12, key="attacker"),
        "1short.sig",
        tokens.make_token(tokens.REPLY, "A" * 12, "B" * 12, key=TEST_SECRET),  # other purpose
    ):
        with pytest.raises(Exception, match="not valid"):
            tokens.read_token(tokens.UNSUBSCRIBE, bad, key=TEST_SECRET)
    found = tokens.read_token(tokens.UNSUBSCRIBE, good, key=TEST_SECRET)
    assert (found.subscriber, found.issue) == ("A" * 12, "B" * 12)


def test_m012_gives_existing_rows_public_ids_and_old_links_still_work(
    database_url, monkeypatch, make_project
) -> None:
    old = raw_engine(database_url)
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "STEPS", migrations.STEPS[:11])
        migrations.migrate(old)
    with old.begin() as conn:  # the tables as they were before m012
        for table in ("subscribers", "issues"):
            conn.execute(text(f"DROP INDEX uq_{table}_public_id"))
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN public_id"))
        for i in range(1, 4):
            conn.execute(
                text(
                    "INSERT INTO subscribers (id, email, email_key, status, fields, created_at,"
                    " updated_at) VALUES (:id, :email, :email, 'subscribed', '{}',"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"id": i, "email": f"alt{i}@example.de"},
            )
        conn.execute(
            text(
                "INSERT INTO issues (id, slug, title, subject, language, created_at)"
                " VALUES (1, 'alt', 'Alt', 'Alt', 'de', CURRENT_TIMESTAMP)"
            )
        )
    old.dispose()

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    engine = open_engine(database_url)
    with engine.connect() as conn:
        ids = conn.execute(select(schema.subscribers.c.public_id)).scalars().all()
        issue_public = conn.execute(select(schema.issues.c.public_id)).scalar_one()
    assert len(set(ids)) == 3 and all(len(i) == 12 for i in ids) and len(issue_public) == 12
    now = datetime.now(UTC)
    with pytest.raises(IntegrityError), engine.begin() as conn:  # public ids are unique
        conn.execute(
            insert(schema.subscribers).values(
                email="x@example.de",
                email_key="x@example.de",
                status="subscribed",
                fields={},
                created_at=now,
                updated_at=now,
                public_id=ids[0],
            )
        )
    project = Project.load(make_project())
    client = TestClient(create_app(project, engine))
    link_sent_before = row_id_token(tokens.UNSUBSCRIBE, 2, 1, key=TEST_SECRET)
    assert client.post(f"/unsubscribe/{link_sent_before}").status_code == 200
    assert get_subscriber(engine, 2).status == "unsubscribed"


def test_imported_readers_get_their_own_public_ids(project: Path, database_url, monkeypatch, cli):
    """Derived from the row id (m018): nothing is stored per imported row, yet each reader's
    public id is their own, and it names them again when read back."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    rows = "email,first_name\n" + "".join(f"imp{i}@example.de,Imp{i}\n" for i in range(50))
    (project / "list.csv").write_text(rows, "utf-8")
    result = cli(project, "subscribers", "import", str(project / "list.csv"))
    assert result.exit_code == 0, result.output
    engine = open_engine(Project.load(project).database_url)
    with engine.connect() as conn:
        rows_read = conn.execute(select(schema.subscribers.c.id, schema.subscribers.c.public_id))
        stored = {row.id: row.public_id for row in rows_read}
    ids = {tokens.public_id(row_id, key=TEST_SECRET) for row_id in stored}
    assert len(stored) == 50 and set(stored.values()) == {None}
    assert len(ids) == 50 and all(len(i) == 12 for i in ids)
    for row_id in stored:
        token = tokens.make_token(tokens.UNSUBSCRIBE, row_id, None, key=TEST_SECRET)
        assert carried(token) == (tokens.public_id(row_id, key=TEST_SECRET), None)
        assert tokens.read_token(tokens.UNSUBSCRIBE, token, key=TEST_SECRET).subscriber == row_id
