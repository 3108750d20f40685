"""Replies through SendGrid Inbound Parse: real multipart bodies over real HTTP, matched to
issue and subscriber, listed by `newsletter replies`."""

from __future__ import annotations

import email
import email.policy
import json

import httpx
import pytest
from sqlalchemy import select

from newsletter import tokens
from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber, get_subscriber
from newsletter.web import create_app
from tests.conftest import CONFIG, FIXTURES, TEST_SECRET
from tests.support.web import live_server, multipart, sent_issue

SECRET = "inbound-secret-3f9a"
REPLY_TEXT = (FIXTURES / "reply-meta-ki-creator.txt").read_text(encoding="utf-8")
SUBJECT = "Meta, KI und das Ende der Creator?"


@pytest.fixture
def inbox(make_project, database_url, monkeypatch):
    """A project with the example issue sent to Anna; returns a poster for replies."""
    from tests.conftest import EXAMPLE_ISSUE

    def build(extra_config: str = ""):
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
        monkeypatch.setenv("NEWSLETTER_INBOUND_SECRET", SECRET)
        root = make_project(
            CONFIG + extra_config,
            issues={EXAMPLE_ISSUE.name: EXAMPLE_ISSUE.read_text(encoding="utf-8")},
        )
        proj = Project.load(root)
        engine = open_engine(proj.database_url)
        anna = add_subscriber(engine, "anna.mueller@example.de", name="Anna Müller")
        issue_id = sent_issue(engine, [anna.id])
        return proj, engine, anna, issue_id

    return build


def fields(
    text: str,
    *,
    to: str = "jens@example.com",
    subject: str = "Re: " + SUBJECT,
    sender: str = "Anna Müller <anna.mueller@example.de>",
    charset: str = "UTF-8",
    html: str | None = None,
) -> dict[str, bytes | str]:
    """The fields SendGrid's Inbound Parse posts (parsed mode)."""
    data: dict[str, bytes | str] = {
        "headers": f"From: {sender}\nTo: {to}\nSubject: {subject}\n",
        "from": sender,
        "to": to,
        "subject": subject,
        "text": text.encode(charset),
        "envelope": json.dumps({"to": [to], "from": "anna.mueller@example.de"}),
        "charsets": json.dumps(
            {"to": "UTF-8", "from": "UTF-8", "subject": "UTF-8", "text": charset, "html": charset}
        ),
        "spam_score": "0.1",
        "SPF": "pass",
        # Anna's provider signed it, and she is the envelope sender: she is proven.
        "dkim": "{@example.de : pass}",
        "sender_ip": "203.0.113.5",
        "attachments": "0",
    }
    if html is not None:
        data["html"] = html.encode(charset)
    return data


def post(base: str, data, files=(), secret: str = SECRET) -> httpx.Response:
    body, content_type = multipart(data, list(files))
    return httpx.post(
        f"{base}/webhooks/sendgrid/inbound/{secret}",
        content=body,
        headers={"Content-Type": content_type},
    )


def stored(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(schema.replies).order_by(schema.replies.c.id)).all()


@pytest.mark.slow
def test_fixture_reply_matched_by_subject_and_listed(inbox, cli):
    proj, engine, anna, issue_id = inbox()
    with live_server(create_app(proj, engine)) as base:
        response = post(base, fields(REPLY_TEXT))
    assert response.status_code == 200, response.text
    [row] = stored(engine)
    assert row.issue_id == issue_id and row.subscriber_id == anna.id
    assert row.from_email == "anna.mueller@example.de" and row.from_name == "Anna Müller"
    assert row.text == REPLY_TEXT.replace("\r\n", "\n")
    assert "“sozialen”" in row.text and "weiß" in row.text
    assert row.subject == "Re: " + SUBJECT

    listing = cli(proj.root, "replies")
    assert listing.exit_code == 0
    assert "anna.mueller@example.de" in listing.output and "meta-ki-creator" in listing.output
    assert cli(proj.root, "replies", "--issue", "meta-ki-creator").output == listing.output
    shown = cli(proj.root, "replies", "show", str(row.id))
    assert "Hallo Jens," in shown.output and "“sozialen” Aspekt" in shown.output
    # `replies` lists conversations (issue 25): one, with this one message.
    as_json = json.loads(cli(proj.root, "replies", "--format", "json").output)
    assert as_json[0]["issue"] == "meta-ki-creator" and as_json[0]["messages"] == 1
    assert as_json[0]["first_line"] in row.text and as_json[0]["state"] == "new"
    thread = json.loads(cli(proj.root, "replies", "show", str(row.id), "--format", "json").output)
    assert [m["text"] for m in thread["messages"]] == [row.text]
    stats = json.loads(cli(proj.root, "stats", "meta-ki-creator", "--format", "json").output)
    assert stats["counts"]["replied"] == 1
    assert not (proj.root / "outbox").exists()  # no [replies] domain: nothing forwarded


@pytest.mark.slow
def test_reply_address_token_matches_issue_and_author_gets_a_copy(inbox):
    proj, engine, anna, issue_id = inbox('\n[replies]\ndomain = "replies.example.com"\n')
    address = tokens.reply_address("replies.example.com", issue_id, key=TEST_SECRET)
    # The reader changed the subject: only the address can tell the issue.
    data = fields(REPLY_TEXT, to=address, subject="Frage zu deinem Artikel")
    attachment = ("attachment1", "Bild – Köln.jpg", b"\xff\xd8" + b"x" * 4998)
    data["attachments"] = "1"
    data["attachment-info"] = json.dumps(
        {"attachment1": {"filename": "Bild – Köln.jpg", "type": "image/jpeg"}}, ensure_ascii=False
    )
    with live_server(create_app(proj, engine)) as base:
        assert post(base, data, [attachment]).status_code == 200
    [row] = stored(engine)
    assert row.issue_id == issue_id and row.subscriber_id == anna.id
    assert row.attachments == [{"name": "Bild – Köln.jpg", "size": 5000}]
    [copy] = list((proj.root / "outbox").glob("*.eml"))
    mail = email.message_from_bytes(copy.read_bytes(), policy=email.policy.default)
    assert mail["To"] == "jens@example.com"
    body = mail.get_body(("plain",)).get_content()
    assert "anna.mueller@example.de" in body and "“sozialen”" in body
    # In the newsletter's language (German here), as every mail it writes.
    assert body.startswith("Antwort von Anna Müller <anna.mueller@example.de> (")
    assert "[Anhang: Bild – Köln.jpg, 5000 Bytes]" in body


@pytest.mark.slow
def test_answering_the_forwarded_copy_reaches_the_reader(inbox):
    # The copy comes from and goes to the author: without Reply-To set to the reader,
    # pressing "reply" on it writes to the author's own address.
    proj, engine, _, issue_id = inbox('\n[replies]\ndomain = "replies.example.com"\n')
    address = tokens.reply_address("replies.example.com", issue_id, key=TEST_SECRET)
    with live_server(create_app(proj, engine)) as base:
        assert post(base, fields(REPLY_TEXT, to=address)).status_code == 200
        stranger = fields("Hallo", to=address, sender="kein Absender")
        stranger["envelope"] = json.dumps({"to": [address]})
        assert post(base, stranger).status_code == 200
    first, second = sorted((proj.root / "outbox").glob("*.eml"))
    mails = [
        email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
        for f in (first, second)
    ]
    reply_tos = sorted(str(m["Reply-To"]) for m in mails)
    # Without a usable sender address, the copy keeps the configured reply_to.
    assert reply_tos == ["anna.mueller@example.de", "jens@example.com"]


@pytest.mark.slow
def test_forged_reply_token_falls_back_to_subject(inbox):
    proj, engine, _, issue_id = inbox(
        '\n[replies]\ndomain = "replies.example.com"\nforward = false\n'
    )
    forged = tokens.reply_address("replies.example.com", issue_id + 5, key="attacker")
    with live_server(create_app(proj, engine)) as base:
        assert (
            post(base, fields("Danke!", to=forged, subject="AW: Re: " + SUBJECT)).status_code == 200
        )
        assert post(base, fields("Hm", to=forged, subject="Etwas anderes")).status_code == 200
    first, second = stored(engine)
    assert first.issue_id == issue_id
    assert second.issue_id is None
    assert not (proj.root / "outbox").exists()


@pytest.mark.slow
def test_charsets_field_decodes_each_part(inbox):
    proj, engine, _, _ = inbox()
    with live_server(create_app(proj, engine)) as base:
        response = post(base, fields(REPLY_TEXT, charset="windows-1252"))
    assert response.status_code == 200
    [row] = stored(engine)
    assert row.text == REPLY_TEXT and "“sozialen”" in row.text


@pytest.mark.slow
@pytest.mark.parametrize("charset", ["rot13", "base64", "hex", "x-no-such-charset"])
def test_a_charset_that_is_no_text_encoding_still_stores_the_reply(inbox, charset):
    # Anyone can write to the reply address and declare any charset; SendGrid passes the name
    # on in `charsets`. A 500 would make SendGrid retry for days and the reply never arrive.
    proj, engine, _, _ = inbox()
    data = fields("Schöne Grüße – Anna", charset="utf-8")
    data["charsets"] = json.dumps({"text": charset, "subject": charset, "from": "UTF-8"})
    with live_server(create_app(proj, engine)) as base:
        response = post(base, data)
    assert response.status_code == 200, response.text
    [row] = stored(engine)
    assert row.text == "Schöne Grüße – Anna"
    assert row.subject == "Re: " + SUBJECT


@pytest.mark.slow
def test_nul_characters_in_the_sender_address_do_not_make_a_500(inbox):
    # PostgreSQL text cannot hold NUL; the reply must still be stored (not retried for days).
    proj, engine, _, _ = inbox()
    data = fields("Danke!", sender="Anna <anna.mu\x00eller@example.de>")
    data["envelope"] = json.dumps({"to": ["jens@example.com"], "from": "x\u0000@example.de"})
    data["spam_score"] = "0.\x001"
    with live_server(create_app(proj, engine)) as base:
        response = post(base, data)
    assert response.status_code == 200, response.text
    [row] = stored(engine)
    assert row.from_email == "anna.mueller@example.de" and row.text == "Danke!"


@pytest.mark.slow
def test_html_only_reply_is_reduced_to_text_and_never_shown_raw(inbox, cli):
    proj, engine, _, _ = inbox()
    html = (
        "<html><head><style>p{color:red}</style><script>alert('x')</script></head><body>"
        "<p>Hallo Jens,</p><p>sch&ouml;ner <b>Artikel</b> &bdquo;wirklich&ldquo;!</p>"
        "<img src=x onerror=alert(1)></body></html>"
    )
    literal = "Ich schreibe <script>alert(1)</script> und \x1b[31mrot\x1b[0m\x07 hier."
    with live_server(create_app(proj, engine)) as base:
        assert post(base, fields("", html=html)).status_code == 200
        assert post(base, fields(literal)).status_code == 200
    first, second = stored(engine)
    assert first.text == "Hallo Jens,\n\nschöner Artikel „wirklich“!"
    assert "<" not in first.text and "alert" not in first.text
    shown = cli(proj.root, "replies", "show", str(second.id)).output
    assert "<script>alert(1)</script>" in shown  # shown literally, as text
    assert "\x1b" not in shown and "\x07" not in shown and "rot" in shown
    listing = cli(proj.root, "replies").output
    assert "\x1b" not in listing


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "unsubscribes"),
    [
        ("Abmelden", True),
        ("  STOP!\n\n-- \nAnna Müller\nBerlin", True),
        ("unsubscribe\n\nAm 02.07.2024 schrieb Jens <jens@example.com>:\n> Hallo zusammen,", True),
        ("abmelden\n> Wenn du abmelden willst, antworte mit abmelden", True),
        ("Bitte nicht abmelden, tolle Ausgabe!", False),
        ("> abmelden", False),
    ],
)
def test_reply_saying_only_unsubscribe_unsubscribes(inbox, text, unsubscribes):
    proj, engine, anna, _ = inbox()
    with live_server(create_app(proj, engine)) as base:
        assert post(base, fields(text)).status_code == 200
    expected = "unsubscribed" if unsubscribes else "subscribed"
    assert get_subscriber(engine, anna.id).status == expected
    assert len(stored(engine)) == 1


@pytest.mark.slow
def test_reply_from_a_stranger_is_kept_but_unsubscribes_nobody(inbox):
    proj, engine, anna, issue_id = inbox()
    with live_server(create_app(proj, engine)) as base:
        post(base, fields("stop", sender="Eve <eve@example.org>"))
    [row] = stored(engine)
    assert row.subscriber_id is None and row.issue_id == issue_id
    assert get_subscriber(engine, anna.id).status == "subscribed"


@pytest.mark.slow
def test_wrong_or_unset_secret_is_404_and_stores_nothing(inbox, monkeypatch):
    proj, engine, _, _ = inbox()
    app = create_app(proj, engine)
    with live_server(app) as base:
        assert post(base, fields("x"), secret="wrong").status_code == 404
        assert post(base, fields("x"), secret=SECRET[:-1]).status_code == 404
        assert post(base, fields("x"), secret=SECRET + "x").status_code == 404
        monkeypatch.delenv("NEWSLETTER_INBOUND_SECRET")
        assert post(base, fields("x")).status_code == 404
        assert post(base, fields("x"), secret="").status_code in (404, 405)
    assert stored(engine) == []


@pytest.mark.slow
def test_malformed_and_oversized_inbound_bodies(inbox):
    proj, engine, _, _ = inbox("\n[serve]\nmax_inbound_bytes = 100000\n")
    with live_server(create_app(proj, engine)) as base:
        url = f"{base}/webhooks/sendgrid/inbound/{SECRET}"
        assert (
            httpx.post(url, content=b"hello", headers={"Content-Type": "text/plain"}).status_code
            == 400
        )
        bad = httpx.post(
            url,
            content=b"--b\r\nnonsense",
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert bad.status_code == 400
        big = ("attachment1", "big.bin", b"0" * 200_000)
        assert post(base, fields("x"), [big]).status_code == 413
    assert stored(engine) == []


def test_replies_cli_without_replies_and_unknown_id(project, cli):
    assert cli(project, "replies").output.strip() == "No replies yet."
    result = cli(project, "replies", "show", "42")
    assert result.exit_code == 1 and "no reply with id 42" in result.output
    unknown = cli(project, "replies", "--issue", "nope")
    assert unknown.exit_code == 1 and "nope" in unknown.output


@pytest.mark.slow
def test_raw_mode_full_mime_message_is_understood(inbox):
    from email.message import EmailMessage

    proj, engine, anna, issue_id = inbox()
    message = EmailMessage()
    message["From"] = "Anna Müller <anna.mueller@example.de>"
    message["To"] = "jens@example.com"
    message["Subject"] = "AW: " + SUBJECT
    message.set_content(REPLY_TEXT, charset="utf-8")
    message.add_attachment(
        b"%PDF" + b"0" * 96, maintype="application", subtype="pdf", filename="Notizen.pdf"
    )
    data = {"email": message.as_bytes(), "envelope": json.dumps({"to": ["jens@example.com"]})}
    with live_server(create_app(proj, engine)) as base:
        assert post(base, data).status_code == 200
    [row] = stored(engine)
    assert row.issue_id == issue_id and row.subscriber_id == anna.id
    assert row.from_name == "Anna Müller" and "“sozialen”" in row.text
    assert row.attachments == [{"name": "Notizen.pdf", "size": 100}]


@pytest.mark.slow
def test_forwarded_copy_never_relays_the_readers_html(inbox):
    proj, engine, _, _ = inbox('\n[replies]\ndomain = "replies.example.com"\n')
    with live_server(create_app(proj, engine)) as base:
        assert (
            post(
                base, fields("Hi <script>alert(1)</script> <img src=x onerror=alert(2)>")
            ).status_code
            == 200
        )
    [copy] = list((proj.root / "outbox").glob("*.eml"))
    mail = email.message_from_bytes(copy.read_bytes(), policy=email.policy.default)
    html = mail.get_body(("html",)).get_content()
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


# --- Unsubscribe by reply only when the sender is proven (issue 15, item 1) ---

REPLIES_DOMAIN = '\n[replies]\ndomain = "replies.example.com"\nforward = false\n'


def unproven(text: str, **kwargs) -> dict[str, bytes | str]:
    """A reply whose From names Anna but nothing proves it: SPF fails, no DKIM signature."""
    data = fields(text, **kwargs)
    data["SPF"] = "fail"
    data["envelope"] = json.dumps({"to": [kwargs.get("to", "jens@example.com")], "from": ""})
    return data


@pytest.mark.slow
def test_a_forged_abmelden_is_flagged_unverified_and_unsubscribes_nobody(inbox, cli):
    proj, engine, anna, _ = inbox()
    with live_server(create_app(proj, engine)) as base:
        assert post(base, unproven("abmelden")).status_code == 200
        # SPF passed, but for the forger's own domain, not for Anna's.
        spoofed = fields("Abmelden")
        spoofed["envelope"] = json.dumps({"to": ["jens@example.com"], "from": "x@forger.example"})
        spoofed["dkim"] = "{@forger.example : pass}"
        assert post(base, spoofed).status_code == 200
    assert get_subscriber(engine, anna.id).status == "subscribed"
    rows = stored(engine)
    assert [row.unsubscribe_request for row in rows] == ["unverified", "unverified"]
    assert all(row.subscriber_id == anna.id for row in rows)
    # One conversation with Anna, holding both requests.
    listing = cli(proj.root, "replies").output
    assert listing.count("asks to unsubscribe (unverified)") == 1
    shown = cli(proj.root, "replies", "show", str(rows[0].id)).output
    assert shown.count("asks to unsubscribe (unverified)") == 2
    assert "newsletter subscribers remove anna.mueller@example.de" in shown
    as_json = json.loads(cli(proj.root, "replies", "--format", "json").output)
    assert as_json[0]["unsubscribe_request"] == "unverified"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spf", "envelope_from", "dkim"),
    [
        # DKIM signed by Anna's domain, and her own address as the envelope sender (SPF
        # alone, or DKIM with another envelope sender, proves nothing: issue 28, item 11).
        ("fail", "anna.mueller@example.de", "{@example.de : pass}"),
        ("softfail", "Anna.Mueller@example.de", "{@sendgrid.info : pass, @example.de : pass}"),
        ("pass", "anna.mueller@example.de", "{@mail.example.de : pass}"),  # a subdomain
    ],
)
def test_abmelden_from_a_proven_sender_unsubscribes(inbox, cli, spf, envelope_from, dkim):
    proj, engine, anna, _ = inbox()
    data = fields("abmelden")
    data["SPF"] = spf
    data["envelope"] = json.dumps({"to": ["jens@example.com"], "from": envelope_from})
    data["dkim"] = dkim
    with live_server(create_app(proj, engine)) as base:
        assert post(base, data).status_code == 200
    assert get_subscriber(engine, anna.id).status == "unsubscribed"
    [row] = stored(engine)
    assert row.unsubscribe_request == "verified"
    assert "unsubscribed by reply" in cli(proj.root, "replies").output


@pytest.mark.slow
def test_abmelden_to_the_reply_address_naming_the_subscriber_unsubscribes(inbox):
    proj, engine, anna, issue_id = inbox(REPLIES_DOMAIN)
    own = tokens.reply_address_for("replies.example.com", issue_id, anna.id, TEST_SECRET)
    with live_server(create_app(proj, engine)) as base:
        assert post(base, unproven("abmelden", to=own)).status_code == 200
    assert get_subscriber(engine, anna.id).status == "unsubscribed"
    [row] = stored(engine)
    assert (row.issue_id, row.unsubscribe_request) == (issue_id, "verified")


@pytest.mark.slow
def test_a_reply_address_naming_someone_else_or_nobody_proves_nothing(inbox):
    proj, engine, anna, issue_id = inbox(REPLIES_DOMAIN)
    bob = add_subscriber(engine, "bob@example.org")
    bobs = tokens.reply_address_for("replies.example.com", issue_id, bob.id, TEST_SECRET)
    issue_only = tokens.reply_address("replies.example.com", issue_id, key=TEST_SECRET)
    forged = tokens.reply_address_for("replies.example.com", issue_id, anna.id, "attacker")
    with live_server(create_app(proj, engine)) as base:
        for address in (bobs, issue_only, forged):
            assert post(base, unproven("stop", to=address)).status_code == 200
    assert get_subscriber(engine, anna.id).status == "subscribed"
    assert get_subscriber(engine, bob.id).status == "subscribed"
    assert [row.unsubscribe_request for row in stored(engine)] == ["unverified"] * 3


def test_reply_address_for_names_issue_and_subscriber():
    address = tokens.reply_address_for("replies.example.com", 7, 42, TEST_SECRET)
    local, _, domain = address.partition("@")
    assert domain == "replies.example.com" and local.startswith("reply+")
    assert len(local) <= 64  # RFC 5321's limit for the local part
    token = tokens.read_token(tokens.REPLY, local[len("reply+") :], key=TEST_SECRET)
    assert (token.issue, token.subscriber) == (7, 42)


# --- Auto-replies are stored, but as robots' (issue 12, item 9) ---

AUTO_REPLIES = sorted((FIXTURES / "auto-replies").glob("*.eml"))


def raw_mode(eml: bytes) -> dict[str, bytes | str]:
    """Inbound Parse with "POST the raw, full MIME message" on."""
    return {"email": eml, "envelope": json.dumps({"to": ["reply@replies.example.com"]})}


def parsed_mode(eml: bytes) -> dict[str, bytes | str]:
    """Inbound Parse's default: decoded fields, plus the raw header block in `headers`."""
    message = email.message_from_bytes(eml, policy=email.policy.default)
    header_block = eml.split(b"\r\n\r\n", 1)[0]
    return {
        "headers": header_block,
        "from": str(message["From"]),
        "to": str(message["To"]),
        "subject": str(message["Subject"]),
        "text": message.get_body(("plain",)).get_content().encode("utf-8"),
        "envelope": json.dumps({"to": ["reply@replies.example.com"], "from": ""}),
        "charsets": json.dumps({"subject": "UTF-8", "text": "UTF-8", "from": "UTF-8"}),
    }


@pytest.mark.slow
@pytest.mark.parametrize("mode", [raw_mode, parsed_mode])
def test_auto_replies_are_stored_hidden_and_never_forwarded(inbox, cli, mode):
    proj, engine, _, _ = inbox('\n[replies]\ndomain = "replies.example.com"\nforward = true\n')
    assert len(AUTO_REPLIES) >= 10
    with live_server(create_app(proj, engine)) as base:
        for path in AUTO_REPLIES:
            response = post(base, mode(path.read_bytes()))
            assert response.status_code == 200, (path.name, response.text)
    rows = stored(engine)
    automatic = {row.from_email: row.automatic for row in rows}
    assert len(rows) == len(AUTO_REPLIES)
    assert automatic.pop("anna.mueller@example.de") is False  # the human-* reply
    robots = [address for address, is_robot in automatic.items() if not is_robot]
    assert robots == []
    # Only the human reply is forwarded and listed; --all shows the robots too.
    [copy] = list((proj.root / "outbox").glob("*.eml"))
    forwarded = email.message_from_bytes(copy.read_bytes(), policy=email.policy.default)
    assert "im Urlaub" in forwarded.get_body(("plain",)).get_content()
    listing = cli(proj.root, "replies").output
    assert "anna.mueller@example.de" in listing and "klaus.becker" not in listing
    assert f"{len(AUTO_REPLIES) - 1} auto-replies hidden" in listing
    everything = cli(proj.root, "replies", "--all").output
    assert "klaus.becker@firma.example" in everything and "[auto-reply]" in everything
    [klaus] = [row for row in rows if row.from_email == "klaus.becker@firma.example"]
    shown = cli(proj.root, "replies", "show", str(klaus.id)).output
    assert "Automatische Antwort: Meta, KI" in shown and "auto-reply" in shown
    as_json = json.loads(cli(proj.root, "replies", "--all", "--format", "json").output)
    assert sum(item["automatic"] for item in as_json) == len(AUTO_REPLIES) - 1


@pytest.mark.slow
def test_an_auto_reply_is_never_read_as_abmelden(inbox):
    proj, engine, anna, _ = inbox()
    robot = fields("Abmelden")  # SPF passes for Anna's domain: only the header says robot
    robot["headers"] = (
        "From: Anna Müller <anna.mueller@example.de>\nAuto-Submitted: auto-replied\n"
        "Subject: Re: " + SUBJECT + "\n"
    )
    with live_server(create_app(proj, engine)) as base:
        assert post(base, robot).status_code == 200
        assert post(base, fields("stop", subject="Abwesenheitsnotiz")).status_code == 200
    assert get_subscriber(engine, anna.id).status == "subscribed"
    assert [(row.automatic, row.unsubscribe_request) for row in stored(engine)] == [
        (True, None),
        (True, None),
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "header",
    ["Auto-Submitted: no", "Precedence: list", "X-Mailer: Outlook 16.0"],
)
def test_ordinary_headers_do_not_make_a_reply_automatic(inbox, header):
    proj, engine, _, _ = inbox()
    data = fields("Danke, Jens!")
    data["headers"] = f"From: Anna Müller <anna.mueller@example.de>\n{header}\n"
    with live_server(create_app(proj, engine)) as base:
        assert post(base, data).status_code == 200
    [row] = stored(engine)
    assert row.automatic is False


# --- CR/LF in subjects, and replayed posts (issue 15 item 6, issue 13 item 7) ---


def with_message_id(data: dict[str, bytes | str], message_id: str) -> dict[str, bytes | str]:
    data["headers"] = f"{data['headers']}Message-ID: {message_id}\n"
    return data


@pytest.mark.slow
def test_a_subject_decoding_to_crlf_is_stored_once_cleaned_and_forwarded(inbox):
    import base64

    proj, engine, _, _ = inbox('\n[replies]\ndomain = "replies.example.com"\n')
    injected = base64.b64encode(b"Frage\r\nBcc: eve@example.org\r\n\r\nHallo").decode()
    data = with_message_id(
        fields("Danke!", subject=f"=?UTF-8?B?{injected}?="), "<crlf-1@example.de>"
    )
    with live_server(create_app(proj, engine)) as base:
        first = post(base, data)
        again = post(base, data)  # SendGrid retries whatever did not get a 2xx
    assert (first.status_code, again.status_code) == (200, 200), first.text
    [row] = stored(engine)
    assert row.subject == "Frage Bcc: eve@example.org Hallo"
    [copy] = list((proj.root / "outbox").glob("*.eml"))
    mail = email.message_from_bytes(copy.read_bytes(), policy=email.policy.default)
    assert mail["Subject"] == "Fwd: Frage Bcc: eve@example.org Hallo"
    assert mail["Bcc"] is None


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["parsed", "raw"])
def test_a_replayed_inbound_post_is_stored_once(inbox, mode):
    proj, engine, anna, _ = inbox('\n[replies]\ndomain = "replies.example.com"\n')
    if mode == "parsed":
        data = with_message_id(fields("abmelden"), "<CAB=4711@mail.example.de>")
    else:
        from email.message import EmailMessage

        message = EmailMessage()
        message["From"] = "Anna Müller <anna.mueller@example.de>"
        message["To"] = "jens@example.com"
        message["Subject"] = "Re: " + SUBJECT
        message["Message-ID"] = "<CAB=4711@mail.example.de>"
        message.set_content("abmelden\n")
        data = {
            "email": message.as_bytes(),
            "envelope": json.dumps({"to": ["jens@example.com"], "from": anna.email}),
            "SPF": "pass",
            "dkim": "{@example.de : pass}",
        }
    with live_server(create_app(proj, engine)) as base:
        responses = [post(base, data) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    [row] = stored(engine)
    assert row.message_id == "<CAB=4711@mail.example.de>"
    assert row.unsubscribe_request == "verified"
    assert get_subscriber(engine, anna.id).status == "unsubscribed"
    assert len(list((proj.root / "outbox").glob("*.eml"))) == 1  # one copy to the author
    with engine.connect() as conn:
        unsubscribes = conn.execute(
            select(schema.events).where(schema.events.c.event == "unsubscribe")
        ).all()
    assert len(unsubscribes) == 1


@pytest.mark.slow
def test_replies_without_a_message_id_are_all_kept(inbox):
    proj, engine, _, _ = inbox()
    with live_server(create_app(proj, engine)) as base:
        assert post(base, fields("Erste")).status_code == 200
        assert post(base, fields("Zweite")).status_code == 200
    assert [row.text for row in stored(engine)] == ["Erste", "Zweite"]


def test_an_alias_writing_to_the_subscribers_reply_address_is_matched_but_not_trusted(inbox, cli):
    proj, engine, anna, issue_id = inbox(REPLIES_DOMAIN)
    own = tokens.reply_address_for("replies.example.com", issue_id, anna.id, TEST_SECRET)
    alias = fields("abmelden", to=own, sender="Anna <anna@privat.example>")
    alias["envelope"] = json.dumps({"to": [own], "from": "anna@privat.example"})
    with live_server(create_app(proj, engine)) as base:
        assert post(base, alias).status_code == 200
    assert get_subscriber(engine, anna.id).status == "subscribed"
    [row] = stored(engine)
    assert (row.subscriber_id, row.unsubscribe_request) == (anna.id, "unverified")
    shown = cli(proj.root, "replies", "show", str(row.id)).output
    assert "newsletter subscribers remove anna.mueller@example.de" in shown


# --- List-Unsubscribe's mailto (a mailbox provider's "unsubscribe" button) ---


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ("", ""),
        ("This message was automatically generated by Gmail.", "Auto-Submitted: auto-generated\n"),
    ],
)
def test_the_list_unsubscribe_mailto_unsubscribes_a_proven_sender(inbox, body, headers):
    proj, engine, anna, issue_id = inbox(REPLIES_DOMAIN)
    address = tokens.reply_address("replies.example.com", issue_id, key=TEST_SECRET)
    data = fields(body, to=address, subject="unsubscribe")  # <mailto:...?subject=unsubscribe>
    data["headers"] = f"From: anna.mueller@example.de\nSubject: unsubscribe\n{headers}"
    data["SPF"] = "none"
    data["dkim"] = "{@example.de : pass}"
    with live_server(create_app(proj, engine)) as base:
        assert post(base, data).status_code == 200
    assert get_subscriber(engine, anna.id).status == "unsubscribed"
    [row] = stored(engine)
    assert (row.automatic, row.unsubscribe_request) == (False, "verified")


@pytest.mark.slow
def test_a_forged_list_unsubscribe_mailto_changes_nothing(inbox):
    proj, engine, anna, issue_id = inbox(REPLIES_DOMAIN)
    address = tokens.reply_address("replies.example.com", issue_id, key=TEST_SECRET)
    with live_server(create_app(proj, engine)) as base:
        assert post(base, unproven("", to=address, subject="unsubscribe")).status_code == 200
    assert get_subscriber(engine, anna.id).status == "subscribed"
    assert stored(engine)[0].unsubscribe_request == "unverified"


# Readers' replies labelled ISO-8859-1 or US-ASCII: Outlook and other Windows mail programs say
# ISO-8859-1 and write „ “ – € as Windows-1252's bytes 0x84 0x93 0x96 0x80, which ISO-8859-1
# reads as invisible control characters. Before, `replies show` printed "Übergangslösung ist gut
# ich grüße" with the quotes and the dash gone, in the database and in the copy forwarded to the
# author. Now these labels read as browsers read them (Windows-1252; UTF-8 when the bytes are
# that), in Inbound Parse's parsed and raw modes, in bodies and in RFC 2047 subjects.
GERMAN = "„Übergangslösung“ ist gut gesagt – ich grüße dich aus Köln, für 5 € im Monat."
WINDOWS_SUBJECT = "AW: „Warum Metas KI-Creator“ – Grüße"


@pytest.mark.slow
@pytest.mark.parametrize("label", ["iso-8859-1", "ISO_8859-1", "latin1", "us-ascii"])
def test_a_windows_reply_labelled_latin_1_keeps_its_quotes_and_dashes(inbox, cli, label):
    proj, engine, _anna, issue_id = inbox()
    data = fields(GERMAN, charset="windows-1252")
    data["charsets"] = json.dumps({"text": label, "subject": "UTF-8", "from": "UTF-8"})
    with live_server(create_app(proj, engine)) as base:
        assert post(base, data).status_code == 200
    [row] = stored(engine)
    assert row.text == GERMAN and row.issue_id == issue_id
    shown = cli(proj.root, "replies", "show", str(row.id))
    assert shown.exit_code == 0 and GERMAN in shown.output


@pytest.mark.slow
def test_utf_8_mislabelled_as_latin_1_is_read_as_utf_8(inbox):
    proj, engine, _anna, _issue = inbox()
    data = fields(GERMAN, charset="utf-8")
    data["charsets"] = json.dumps({"text": "iso-8859-1", "subject": "UTF-8", "from": "UTF-8"})
    with live_server(create_app(proj, engine)) as base:
        assert post(base, data).status_code == 200
    [row] = stored(engine)
    assert row.text == GERMAN


@pytest.mark.slow
def test_raw_mode_body_and_encoded_subject_labelled_latin_1(inbox):
    proj, engine, anna, _issue = inbox()
    # As Outlook writes it: ISO-8859-1 labels around Windows-1252 bytes, in the encoded-word
    # subject and in the body (raw bytes: `EmailMessage` would decode and re-encode them).
    quoted = "".join(f"={byte:02X}" if byte > 127 or byte in b" =?_" else chr(byte)
                     for byte in WINDOWS_SUBJECT.encode("cp1252"))  # fmt: skip
    raw = (
        (
            "From: Anna =?iso-8859-1?Q?M=FCller?= <anna.mueller@example.de>\r\n"
            "To: jens@example.com\r\n"
            f"Subject: =?iso-8859-1?Q?{quoted}?=\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: text/plain; charset="iso-8859-1"\r\n'
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
        ).encode("ascii")
        + GERMAN.encode("cp1252")
        + b"\r\n"
    )
    data = {"email": raw, "envelope": json.dumps({"to": ["jens@example.com"]})}
    with live_server(create_app(proj, engine)) as base:
        assert post(base, data).status_code == 200
    [row] = stored(engine)
    assert row.subscriber_id == anna.id
    assert row.text.strip() == GERMAN and row.subject == WINDOWS_SUBJECT
    assert row.from_name == "Anna Müller"


@pytest.mark.slow
def test_a_charset_with_a_nul_or_unassigned_bytes_still_stores_the_reply(inbox):
    """`charset*=utf-8''%00` made the decoder raise ValueError (a fetch then failed on that
    message every time); a subject labelled ISO-8859-1 with a byte Windows-1252 leaves
    unassigned (0x81) is read as ISO-8859-1 reads it, not kept as the raw encoded word."""
    proj, engine, anna, _issue = inbox()
    raw = (
        "From: Anna Müller <anna.mueller@example.de>\r\n"
        "To: jens@example.com\r\n"
        "Subject: =?ISO-8859-1?Q?Gr=FC=DFe_=81_aus_K=F6ln?=\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset*=utf-8''%00\r\n\r\n"
        "Hallo Jens\r\n"
    ).encode("latin-1")
    data = {"email": raw, "envelope": json.dumps({"to": ["jens@example.com"]})}
    with live_server(create_app(proj, engine)) as base:
        assert post(base, data).status_code == 200
    [row] = stored(engine)
    assert row.subscriber_id == anna.id and row.text.strip() == "Hallo Jens"
    assert row.subject.startswith("Grüße") and row.subject.endswith("aus Köln")


@pytest.mark.slow
@pytest.mark.parametrize("charset", ["utf-7", "idna", "unicode_escape", "raw_unicode_escape"])
def test_a_charset_that_makes_surrogates_or_raises_still_stores_the_reply(inbox, charset):
    """UTF-7 decodes "+2AA-" to a lone surrogate, which no database stores; idna raises
    whatever `errors` says: both answered 500, and the reply was never stored."""
    proj, engine, _anna, _issue = inbox()
    data = fields("Hallo +2AA- Welt \\ud800 Grüße", charset="utf-8")
    data["charsets"] = json.dumps({"text": charset, "subject": charset, "from": "UTF-8"})
    data["subject"] = "=?utf-7?q?+2AA-?= Re: Frage"
    with live_server(create_app(proj, engine)) as base:
        assert post(base, data).status_code == 200
    [row] = stored(engine)
    assert row.text.startswith("Hallo") and row.subject.endswith("Re: Frage")
