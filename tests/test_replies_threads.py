"""Replies as conversations: threads per reader and issue, answered from the command line over
the tests' SMTP server (the answer must thread in the reader's mail program and carry no bulk
headers), closed, reopened by a new reply; written in $EDITOR; shown in the outbox."""

from __future__ import annotations

import email
import email.policy
import json
import stat
import sys
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from sqlalchemy import DateTime, bindparam, select, text

from newsletter.project import Project
from newsletter.replies import RawInbound, receive
from newsletter.store.engine import open_engine
from newsletter.store.schema import replies, reply_answers
from newsletter.store.subscribers import add_subscriber, set_status
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.smtp_server import FakeSmtp
from tests.support.migrations import migrate_without, raw_engine

ISSUE = EXAMPLE_ISSUE.stem
EXAMPLE = {EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text(encoding="utf-8")}
SMTP_PASSWORD = "smtp-geheim-do-not-print"
JOERG = "jörg.müller@example.de"


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch):
    with FakeSmtp(users={"jens": SMTP_PASSWORD}, tls=True) as server:
        monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", SMTP_PASSWORD)
        yield server


def smtp_config(smtp: FakeSmtp) -> str:
    return (
        CONFIG
        + '\n[sending]\ntransport = "smtp"\n'
        + f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "starttls"\n'
        + f'username = "jens"\nca_file = "{smtp.ca_file}"\n'
        + '\n[replies]\ndomain = "replies.example.com"\nforward = false\n'
    )


def parsed(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def reader_writes(
    project: Project, engine, to: str, subject: str, text: str, **headers: str
) -> int:
    """A reader's reply reaching the tool (the Inbound Parse step, raw MIME)."""
    message = EmailMessage()
    message["From"] = f"Jörg Müller <{JOERG}>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="leser.example")
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(text)
    return receive(project, engine, RawInbound(fields={"email": message.as_bytes()})).id


@pytest.fixture
def sent(make_project, smtp, cli):
    root = make_project(config=smtp_config(smtp), issues=EXAMPLE)
    engine = open_engine(f"sqlite:///{root / 'newsletter.db'}")
    joerg = add_subscriber(engine, JOERG, first_name="Jörg", last_name="Müller", tags=["vip"])
    add_subscriber(engine, "anna@example.com", first_name="Anna")
    assert cli(root, "send", ISSUE, "--yes").exit_code == 0
    copy = next(parsed(m.data) for m in smtp.messages if m.rcpt_tos == [JOERG])
    smtp.messages.clear()
    return root, engine, joerg, copy


def test_a_conversation_answered_closed_and_reopened(sent, smtp, cli):
    root, engine, joerg, copy = sent
    project = Project.load(root)
    subject = str(copy["Subject"])
    first = reader_writes(
        project,
        engine,
        str(copy["Reply-To"]),
        f"Re: {subject}",
        "Hallo Jens,\ndanke für den Text über „Meta“ – gibt es Teil 2?\n\n> Hallo zusammen,\n> alt\n",
    )
    listing = cli(root, "replies").output
    assert "Jörg Müller <jörg.müller@example.de> [vip]" in listing
    assert "new" in listing and "danke für den Text über „Meta“ – gibt es Teil 2?" in listing
    assert cli(root, "replies", "--unanswered").output == listing

    answered = cli(root, "replies", "answer", str(first), "-m", "Ja, Teil 2 kommt im August.")
    assert answered.exit_code == 0, answered.output
    assert answered.output.startswith(f"Answered thread {first}: {JOERG}: accepted")
    [sent_answer] = smtp.messages
    answer = parsed(sent_answer.data)
    assert sent_answer.rcpt_tos == [JOERG]
    assert str(answer["Subject"]) == f"Re: {subject}"
    thread = json.loads(cli(root, "replies", "show", str(first), "--format", "json").output)
    their_message_id = None
    from newsletter.store.schema import replies

    with engine.connect() as conn:
        their_message_id = conn.execute(select(replies.c.message_id)).scalar()
    assert str(answer["In-Reply-To"]) == their_message_id
    assert their_message_id in str(answer["References"])
    for bulk in ("List-Unsubscribe", "List-Unsubscribe-Post", "Precedence", "List-Id"):
        assert answer[bulk] is None, bulk
    body = answer.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert body.startswith("Ja, Teil 2 kommt im August.") and "\n-- \nJens" in body
    # As every mail of a German newsletter: the postal address and the Impressum.
    assert body.rstrip().endswith(
        "\nMusterstraße 1, 10115 Berlin, Germany\nImpressum: https://news.example.com/impressum"
    )
    assert "jens@example.com" in str(answer["From"])
    assert str(answer["Reply-To"]).startswith("reply+")  # their next reply finds the thread
    assert [m["kind"] for m in thread["messages"]] == ["reply", "answer"]
    assert thread["state"] == "answered"
    assert cli(root, "replies", "--unanswered").output.strip() == "No unanswered replies."

    shown = cli(root, "replies", "show", str(first)).output
    assert "your answer: Re: " in shown and "Ja, Teil 2 kommt im August." in shown
    assert "[2 quoted lines folded]" in shown and "> alt" not in shown

    # Done, then the reader writes again: the same thread, open again.
    assert (
        cli(root, "replies", "done", str(first)).output.strip()
        == f"Thread {first} with {JOERG}: done"
    )
    assert "done" in cli(root, "replies").output
    again = reader_writes(
        project,
        engine,
        str(answer["Reply-To"]),
        str(answer["Subject"]),
        "Super, danke!",
        In_Reply_To=str(answer["Message-ID"]),
    )
    thread = json.loads(cli(root, "replies", "show", str(again), "--format", "json").output)
    assert thread["id"] == first and thread["state"] == "new"
    assert [m["kind"] for m in thread["messages"]] == ["reply", "answer", "reply"]
    assert "   3  " in cli(root, "replies").output  # three messages

    # The issue's stats count the conversation and its answer.
    stats = json.loads(cli(root, "stats", ISSUE, "--format", "json").output)
    assert stats["counts"]["replied"] == 1
    assert stats["answered"] == 1


def test_answer_written_in_the_editor(sent, smtp, cli, tmp_path, monkeypatch):
    root, engine, joerg, copy = sent
    first = reader_writes(
        Project.load(root), engine, str(copy["Reply-To"]), "Re: x", "Wie heißt das Buch?"
    )
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys\n"
        "path = sys.argv[1]\n"
        "before = open(path, encoding='utf-8').read()\n"
        "assert '# Jörg Müller wrote:' in before and '# > Wie heißt das Buch?' in before\n"
        "open(path, 'w', encoding='utf-8').write('Es heißt „Creator Economy“.\\n' + before)\n",
        encoding="utf-8",
    )
    editor.chmod(editor.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    monkeypatch.delenv("VISUAL", raising=False)
    result = cli(root, "replies", "answer", str(first))
    assert result.exit_code == 0, result.output
    [sent_answer] = smtp.messages
    body = parsed(sent_answer.data).get_body(("plain",)).get_content()
    assert body.startswith("Es heißt „Creator Economy“.") and "#" not in body


def test_an_empty_answer_sends_nothing(sent, smtp, cli, tmp_path, monkeypatch):
    root, engine, joerg, copy = sent
    first = reader_writes(Project.load(root), engine, str(copy["Reply-To"]), "Re: x", "Hm?")
    editor = tmp_path / "editor.py"
    editor.write_text("pass\n", encoding="utf-8")  # closes without saving
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    result = cli(root, "replies", "answer", str(first))
    assert result.exit_code == 1
    assert "the editor was closed without saving; nothing was sent" in result.output
    # Saved, but only the comments: nothing to send either.
    editor.write_text(
        "import sys\nopen(sys.argv[1], 'a', encoding='utf-8').write('\\n# still nothing\\n')\n",
        encoding="utf-8",
    )
    result = cli(root, "replies", "answer", str(first))
    assert result.exit_code == 1 and "the answer is empty; nothing was sent" in result.output
    assert smtp.messages == []


def test_dry_run_shows_the_answer_and_records_nothing(sent, smtp, cli):
    root, engine, joerg, copy = sent
    first = reader_writes(Project.load(root), engine, str(copy["Reply-To"]), "AW: Meta", "Gut!")
    shown = cli(root, "replies", "answer", str(first), "-m", "Danke dir!", "--dry-run")
    assert shown.exit_code == 0, shown.output
    assert f"To: Jörg Müller <{JOERG}>" in shown.output
    assert "Subject: AW: Meta" in shown.output and "In-Reply-To: <" in shown.output
    assert (
        "Danke dir!" in shown.output and "(dry run: nothing was sent or recorded)" in shown.output
    )
    assert smtp.messages == []
    with engine.connect() as conn:
        assert conn.execute(select(reply_answers)).all() == []


def test_the_outbox_writes_the_answer_as_eml(make_project, cli, tmp_path):
    root = make_project(
        config=CONFIG + '\n[replies]\ndomain = "replies.example.com"\n', issues=EXAMPLE
    )
    engine = open_engine(f"sqlite:///{root / 'newsletter.db'}")
    add_subscriber(engine, JOERG, first_name="Jörg")
    assert cli(root, "send", ISSUE, "--yes").exit_code == 0
    project = Project.load(root)
    first = reader_writes(
        project, engine, "jens@example.com", "Re: Meta, KI und das Ende der Creator?", "Danke!"
    )
    result = cli(root, "replies", "answer", str(first), "-m", "Gern!")
    assert result.exit_code == 0, result.output
    [written] = list((root / "outbox").glob("answer-*.eml"))
    answer = parsed(written.read_bytes())
    assert answer.get_body(("plain",)).get_content().startswith("Gern!")
    assert answer["List-Unsubscribe"] is None


def test_answering_someone_who_left_warns_and_an_erased_reader_cannot_be_answered(sent, smtp, cli):
    root, engine, joerg, copy = sent
    first = reader_writes(Project.load(root), engine, str(copy["Reply-To"]), "Re: x", "Tschüss")
    set_status(engine, joerg.id, "unsubscribed")
    warned = cli(root, "replies", "answer", str(first), "-m", "Schade!")
    assert warned.exit_code == 0
    assert f"Warning: {JOERG} is unsubscribed: this is a personal answer" in warned.output
    assert len(smtp.messages) == 1

    erased = cli(root, "subscribers", "remove", JOERG, "--forget", "--yes")
    assert erased.exit_code == 0, erased.output
    gone = cli(root, "replies", "answer", str(first), "-m", "Hallo?")
    assert gone.exit_code == 1 and f"no reply with id {first}" in gone.output
    assert len(smtp.messages) == 1
    with engine.connect() as conn:
        assert conn.execute(select(reply_answers)).all() == []


def test_filters_by_reader_and_issue(sent, cli):
    root, engine, joerg, copy = sent
    reader_writes(Project.load(root), engine, str(copy["Reply-To"]), "Re: x", "Hallo")
    assert "jörg.müller" in cli(root, "replies", "--reader", JOERG).output
    assert cli(root, "replies", "--reader", "anna@example.com").output.strip() == "No replies yet."
    assert "jörg.müller" in cli(root, "replies", "--issue", ISSUE).output
    unknown = cli(root, "replies", "--reader", "nobody@example.com")
    assert unknown.exit_code == 1 and "nobody@example.com is not on the list" in unknown.output


def test_replies_stored_before_the_upgrade_are_put_into_threads(database_url, monkeypatch):
    """m011: one thread per reader and issue for the replies already stored."""
    from datetime import UTC, datetime

    from sqlalchemy import create_engine, text

    from newsletter.replies.threads import list_threads
    from newsletter.store import migrations

    url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    old = create_engine(url)
    names = [name for name, _ in migrations.STEPS]
    before = migrations.STEPS[: names.index("m013_reply_threads")]
    monkeypatch.setattr(migrations, "STEPS", before)
    migrations.migrate(old)
    with old.begin() as conn:
        conn.exec_driver_sql("DROP INDEX IF EXISTS ix_replies_thread")
        conn.exec_driver_sql("ALTER TABLE replies DROP COLUMN thread_id")
        for n, sender in enumerate(["a@example.com", "A@example.com", "b@example.com"]):
            conn.execute(
                text(
                    "INSERT INTO replies (from_email, subject, text, attachments, received_at, "
                    "automatic) VALUES (:sender, 'Re: x', :text, '[]', :at, false)"
                ),
                {
                    "sender": sender,
                    "text": f"Antwort {n}",
                    "at": datetime(2026, 1, 1 + n, tzinfo=UTC),
                },
            )
    old.dispose()
    monkeypatch.undo()

    engine = open_engine(database_url)
    rows, total = list_threads(engine)
    assert total == 2
    assert sorted((row.reader_email.lower(), row.messages) for row in rows) == [
        ("a@example.com", 2),
        ("b@example.com", 1),
    ]
    assert {row.state for row in rows} == {"new"}


def test_a_reply_tags_the_reader_and_starts_a_replied_sequence(make_project, cli):
    from newsletter.store.schema import sequence_enrollments
    from newsletter.store.subscribers import find_subscriber

    config = (
        CONFIG
        + '\n[replies]\ndomain = "replies.example.com"\nforward = false\ntag = "hat-geantwortet"\n'
        + '\n[sequences.danke]\ntrigger = "replied"\n'
    )
    root = make_project(config=config, issues=EXAMPLE)
    step = root / "sequences" / "danke" / "01-danke.md"
    step.parent.mkdir(parents=True)
    step.write_text(
        "---\ntitle: Danke für deine Antwort\ndelay: 1d\n---\n\nSchön, von dir zu lesen!\n",
        encoding="utf-8",
    )
    engine = open_engine(f"sqlite:///{root / 'newsletter.db'}")
    add_subscriber(engine, JOERG, first_name="Jörg")
    add_subscriber(engine, "anna@example.com", first_name="Anna")
    assert cli(root, "send", ISSUE, "--yes").exit_code == 0
    project = Project.load(root)
    subject = "Re: Meta, KI und das Ende der Creator?"
    reader_writes(project, engine, "jens@example.com", subject, "Toll!")
    reader_writes(project, engine, "jens@example.com", subject, "Und noch etwas.")
    # Anna's out-of-office is no reply of hers.
    out_of_office = EmailMessage()
    out_of_office["From"] = "anna@example.com"
    out_of_office["To"] = "jens@example.com"
    out_of_office["Subject"] = f"Abwesend: {subject}"
    out_of_office["Auto-Submitted"] = "auto-replied"
    out_of_office["Message-ID"] = make_msgid()
    out_of_office.set_content("Bin weg.")
    receive(project, engine, RawInbound(fields={"email": out_of_office.as_bytes()}))

    assert find_subscriber(engine, JOERG).tags == ("hat-geantwortet",)
    assert find_subscriber(engine, "anna@example.com").tags == ()
    with engine.connect() as conn:
        enrolled = conn.execute(
            select(sequence_enrollments.c.sequence, sequence_enrollments.c.subscriber_id)
        ).all()
    assert enrolled == [("danke", find_subscriber(engine, JOERG).id)]
    assert "when they reply" in cli(root, "sequences", "list").output


def test_privacy_purge_removes_closed_conversations_past_keep_replies_days(make_project, cli):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from newsletter.store.schema import replies, reply_threads

    root = make_project(config=CONFIG + "\n[privacy]\nkeep_replies_days = 30\n", issues=EXAMPLE)
    engine = open_engine(f"sqlite:///{root / 'newsletter.db'}")
    add_subscriber(engine, JOERG, first_name="Jörg")
    add_subscriber(engine, "anna@example.com", first_name="Anna")
    project = Project.load(root)
    old_done = reader_writes(project, engine, "jens@example.com", "Alt", "Alt und erledigt")
    assert cli(root, "replies", "done", str(old_done)).exit_code == 0
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = (
        "anna@example.com",
        "jens@example.com",
        "Alt",
    )
    message["Message-ID"] = make_msgid()
    message.set_content("Alt, aber offen")
    old_open = receive(project, engine, RawInbound(fields={"email": message.as_bytes()})).id
    long_ago = datetime.now(UTC) - timedelta(days=40)
    with engine.begin() as conn:
        conn.execute(update(reply_threads).values(last_at=long_ago))
    purged = cli(root, "privacy", "purge")
    assert purged.exit_code == 0, purged.output
    assert "purged 1 closed conversation with readers older than 30 days" in purged.output
    with engine.connect() as conn:
        assert list(conn.execute(select(replies.c.id)).scalars()) == [old_open]
        assert list(conn.execute(select(reply_threads.c.id)).scalars()) == [old_open]


def test_erasing_a_sender_not_on_the_list_removes_their_conversation(make_project, cli):
    """A stranger's thread names them by address (no subscriber id): export lists it,
    erasure deletes it, answers included."""
    from newsletter.store.schema import reply_threads

    root = make_project(config=CONFIG, issues=EXAMPLE)
    engine = open_engine(f"sqlite:///{root / 'newsletter.db'}")
    project = Project.load(root)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = (
        "Fremd@Example.org",
        "jens@example.com",
        "Frage",
    )
    message["Message-ID"] = make_msgid()
    message.set_content("Darf ich das zitieren?")
    first = receive(project, engine, RawInbound(fields={"email": message.as_bytes()})).id
    assert cli(root, "replies", "answer", str(first), "-m", "Ja, gern.").exit_code == 0
    exported = json.loads(cli(root, "subscribers", "export-person", "fremd@example.org").output)
    assert [row["id"] for row in exported["tables"]["reply_threads"]] == [first]
    assert [row["text"].split("\n")[0] for row in exported["tables"]["reply_answers"]] == [
        "Ja, gern."
    ]
    erased = cli(root, "subscribers", "remove", "fremd@example.org", "--forget", "--yes")
    assert erased.exit_code == 0, erased.output
    with engine.connect() as conn:
        assert conn.execute(select(reply_threads)).all() == []
        assert conn.execute(select(reply_answers)).all() == []
    raw = (root / "newsletter.db").read_bytes().lower()
    assert b"fremd@example.org" not in raw


def test_an_answers_reply_address_names_public_ids_and_comes_back_to_the_thread(sent, smtp, cli):
    """No row id in the Reply-To (it would tell the list's size), yet the reader's reply to
    the answer joins the same thread."""
    from newsletter import tokens
    from newsletter.replies.verify import reply_token
    from newsletter.store.subscribers import find_subscriber
    from tests.support.tokens import carried

    root, engine, joerg, copy = sent
    project = Project.load(root)
    first = reader_writes(project, engine, str(copy["Reply-To"]), "Re: x", "Frage?")
    assert cli(root, "replies", "answer", str(first), "-m", "Antwort.").exit_code == 0
    answer = parsed(smtp.messages[-1].data)
    named = reply_token([str(answer["Reply-To"])], tokens.secret_key())
    assert named is not None
    # Read back, the derived public id names Jörg's row; on the wire it is no row id.
    assert named.subscriber == find_subscriber(engine, JOERG).id
    on_the_wire = str(answer["Reply-To"])[len("reply+") :].split("@")[0]
    assert all(isinstance(ref, str) and len(ref) == 12 for ref in carried(on_the_wire))
    again = reader_writes(project, engine, str(answer["Reply-To"]), "Re: Re: x", "Danke.")
    thread = json.loads(cli(root, "replies", "show", str(again), "--format", "json").output)
    assert thread["id"] == first


def test_erasing_someone_who_wrote_to_a_readers_address_keeps_that_readers_thread(sent, cli):
    """A friend replies to Jörg's forwarded copy (his signed address): the reply is filed
    in Jörg's thread. Erasing the friend takes their reply, not Jörg's conversation."""
    from newsletter.store.schema import replies, reply_threads

    root, engine, joerg, copy = sent
    project = Project.load(root)
    first = reader_writes(project, engine, str(copy["Reply-To"]), "Re: x", "Jörg schreibt.")
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = (
        "freund@example.net",
        str(copy["Reply-To"]),
        "Re: x",
    )
    message["Message-ID"] = make_msgid()
    message.set_content("Der Freund schreibt.")
    receive(project, engine, RawInbound(fields={"email": message.as_bytes()}))
    exported = json.loads(cli(root, "subscribers", "export-person", "freund@example.net").output)
    assert "reply_threads" not in exported["tables"]
    assert [row["text"].strip() for row in exported["tables"]["replies"]] == [
        "Der Freund schreibt."
    ]

    erased = cli(root, "subscribers", "remove", "freund@example.net", "--forget", "--yes")
    assert erased.exit_code == 0, erased.output
    with engine.connect() as conn:
        assert [row.text.strip() for row in conn.execute(select(replies))] == ["Jörg schreibt."]
        assert [(row.id, row.messages) for row in conn.execute(select(reply_threads))] == [
            (first, 1)
        ]
    shown = cli(root, "replies", "show", str(first))
    assert shown.exit_code == 0 and "Jörg schreibt." in shown.output


def test_purging_automatic_replies_leaves_no_empty_thread_with_an_address(make_project, cli):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from newsletter.store.schema import replies, reply_threads

    root = make_project(config=CONFIG, issues=EXAMPLE)
    engine = open_engine(f"sqlite:///{root / 'newsletter.db'}")
    project = Project.load(root)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = (
        "robot@fremd.example",
        "jens@example.com",
        "Abwesend",
    )
    message["Auto-Submitted"] = "auto-replied"
    message["Message-ID"] = make_msgid()
    message.set_content("Bin weg.")
    receive(project, engine, RawInbound(fields={"email": message.as_bytes()}))
    with engine.begin() as conn:
        conn.execute(update(replies).values(received_at=datetime.now(UTC) - timedelta(days=400)))
    assert cli(root, "privacy", "purge").exit_code == 0
    with engine.connect() as conn:
        assert conn.execute(select(replies)).all() == []
        assert conn.execute(select(reply_threads)).all() == []


def test_a_punycode_sender_is_matched_by_subject_over_imap(sent, cli):
    """No signed address, no In-Reply-To: a sender whose domain is written in punycode is
    still found by sender and subject."""
    from newsletter.replies import decode
    from newsletter.replies.mailbox import _match

    root, engine, joerg, copy = sent
    reader = add_subscriber(engine, "leser@müller.de", first_name="Lea")
    assert cli(root, "send", ISSUE, "--resume", "--yes").exit_code == 0
    message = EmailMessage()
    message["From"] = "Lea <leser@xn--mller-kva.de>"
    message["To"] = "jens@example.com"
    message["Subject"] = f"AW: {copy['Subject']}"
    message["Message-ID"] = make_msgid()
    message.set_content("Hallo!")
    raw = message.as_bytes()
    inbound = decode(RawInbound(fields={"email": raw}))
    found = _match(engine, inbound, email.message_from_bytes(raw), {})
    assert found is not None and found.subscriber_id == reader.id


@pytest.mark.slow
def test_an_answers_references_reach_back_to_the_issue(sent, smtp, cli):
    """RFC 5322: References are the parent's References and then the parent's Message-ID.
    Before, an answer named only the thread's own messages, not the issue the reader
    answered, so mail programs that thread by References kept it apart from the issue."""
    root, engine, _joerg, copy = sent
    issue_id = str(copy["Message-ID"])
    project = Project.load(root)
    reply = reader_writes(
        project, engine, "jens@example.com", f"Re: {copy['Subject']}", "Danke!",
        In_Reply_To=issue_id, References=issue_id,
    )  # fmt: skip
    assert cli(root, "replies", "answer", str(reply), "-m", "Gern!").exit_code == 0
    [answer] = [parsed(m.data) for m in smtp.messages]
    with engine.connect() as conn:
        theirs = conn.execute(select(replies.c.message_id)).scalar_one()
    assert str(answer["In-Reply-To"]) == theirs
    assert str(answer["References"]).split() == [issue_id, theirs]


def test_m027_adds_refers_to_and_keeps_the_replies_stored_before(database_url):
    old = raw_engine(database_url)
    migrate_without(old, "m027_reply_refers_to")
    stored_before = text(
        "INSERT INTO replies (from_email, subject, text, attachments, received_at, automatic, "
        "message_id) VALUES (:sender, 'Re: Hallo', 'Grüße', '[]', :at, false, '<alt@leser.example>')"
    ).bindparams(bindparam("at", type_=DateTime(timezone=True)))
    with old.begin() as conn:  # the table as it was before m027
        conn.exec_driver_sql("ALTER TABLE replies DROP COLUMN refers_to")
        conn.execute(stored_before, {"sender": JOERG, "at": datetime.now(UTC)})
    old.dispose()
    engine = open_engine(database_url)  # runs m027
    with engine.connect() as conn:
        rows = conn.execute(select(replies.c.message_id, replies.c.refers_to)).all()
    assert [tuple(row) for row in rows] == [("<alt@leser.example>", None)]
