"""The fake SendGrid server, the SendGrid transport's answers, and one-off mail."""

from __future__ import annotations

import email
import json
import urllib.request
from email import policy
from pathlib import Path

import pytest

from newsletter.project import Project
from newsletter.sending.message import Batch, Message, Recipient, clean_header, recipient_headers
from newsletter.sending.single import send_transactional
from newsletter.sending.transports.sendgrid import SendGridTransport
from newsletter.sending.transports.sendgrid.body import mail_body, mail_json
from tests.sendgrid_server import FakeSendGrid, copies, substituted, validate_mail

KEY = "SG.test-key"


@pytest.fixture
def server():
    with FakeSendGrid(api_key=KEY, verified_senders=["jens@example.com"]) as s:
        yield s


def batch_for(addresses: list[str], **message_kw) -> Batch:
    message = Message(
        from_email=message_kw.pop("from_email", "jens@example.com"),
        from_name="Jens",
        reply_to="jens@example.com",
        subject="Grüße „zum“ Test",
        text="Hallo -first-",
        html="<p>Hallo -first-</p>",
        categories=("meta-ki-creator",),
        **message_kw,
    )
    people = [
        Recipient(
            email=a,
            substitutions={"-first-": "Jörg"},
            unsubscribe_url=f"https://news.example.com/unsubscribe/t{i}",
            ids={"newsletter_issue_id": "1", "newsletter_subscriber_id": str(i)},
        )
        for i, a in enumerate(addresses)
    ]
    return Batch(message, people)


def body_for(addresses: list[str], **message_kw) -> dict:
    return mail_body(batch_for(addresses, **message_kw))


def transport(server: FakeSendGrid, key: str = KEY, **kw) -> SendGridTransport:
    return SendGridTransport(key, server.url, timeout=kw.pop("timeout", 5), backoff=0.01, **kw)


def test_accepted_with_message_id(server):
    outcome = transport(server).send(batch_for(["a@example.org", "b@example.org"]))[0]
    assert outcome.state == "accepted"
    assert outcome.message_id == server.messages[0]["_message_id"]
    assert server.recipients() == ["a@example.org", "b@example.org"]


def test_sandbox_validates_and_records_nothing(server):
    outcome = transport(server).send(batch_for(["a@example.org"], sandbox=True))[0]
    assert outcome.state == "accepted"
    assert server.messages == []
    assert server.requests[0]["status"] == 200


def test_bad_key_message_never_shows_the_key(server):
    outcome = transport(server, key="SG.wrong-secret").send(batch_for(["a@example.org"]))[0]
    assert (outcome.state, outcome.fatal) == ("failed", True)
    assert outcome.error == "SendGrid rejected the API key (check SENDGRID_API_KEY)"


def test_unverified_sender_names_the_address(server):
    outcome = transport(server).send(batch_for(["a@example.org"], from_email="x@nope.de"))[0]
    assert outcome.state == "failed"
    assert "x@nope.de" in outcome.error and "verif" in outcome.error


def test_bad_payload_lists_field_errors(server):
    body = body_for(["a@example.org", "A@example.org"])
    body["categories"] = ["x"] * 11
    outcome = transport(server).post_mail(body)
    assert outcome.state == "failed"
    assert "categories" in outcome.error and "personalizations.1.to.0.email" in outcome.error


def test_429_waits_and_retries(server):
    server.inject("429", count=2, reset_in=0)
    outcome = transport(server).send(batch_for(["a@example.org"]))[0]
    assert outcome.state == "accepted" and outcome.attempts == 3
    assert [r["status"] for r in server.requests] == [429, 429, 202]


def test_5xx_retries_then_stops(server):
    server.inject("503", count=10)
    outcome = transport(server, max_retries=2).send(batch_for(["a@example.org"]))[0]
    assert (outcome.state, outcome.fatal, outcome.attempts) == ("failed", True, 3)
    assert "503" in outcome.error and server.messages == []


def test_dropped_answer_is_uncertain(server):
    server.inject("drop")
    outcome = transport(server).send(batch_for(["a@example.org"]))[0]
    assert outcome.state == "uncertain"
    assert len(server.requests) == 1  # never retried automatically


def test_timeout_is_uncertain(server):
    server.inject("delay", seconds=1.0)
    outcome = transport(server, timeout=0.2).send(batch_for(["a@example.org"]))[0]
    assert outcome.state == "uncertain" and "timed out" in outcome.error


def test_refused_connection_retries_then_names_host():
    t = SendGridTransport(KEY, "http://127.0.0.1:9", timeout=1, backoff=0.001, max_retries=2)
    outcome = t.send(batch_for(["a@example.org"]))[0]
    assert (outcome.state, outcome.attempts) == ("failed", 3)
    assert "127.0.0.1:9" in outcome.error and "check the network" in outcome.error


def test_server_enforces_limits():
    body = body_for([f"p{i}@example.org" for i in range(1000)])
    body["personalizations"].append(dict(body["personalizations"][-1]))
    body["personalizations"][0]["substitutions"] = {"-x-": "y" * 10000}
    body["content"].reverse()
    fields = {e["field"] for e in validate_mail(body)}
    assert {
        "personalizations",
        "personalizations.0.substitutions",
        "personalizations.1000.to.0.email",
        "content",
    } <= fields
    assert validate_mail(body_for(["a@example.org"])) == []


@pytest.mark.parametrize(("umlauts", "refused"), [(4990, False), (4996, True)])
def test_server_counts_substitution_bytes_as_sendgrid_does(umlauts, refused):
    """Near the limit the server counts compact UTF-8 JSON bytes: {"k": "ü…"} is 9 bytes
    plus 2 per ü (9,989 and 10,001 here)."""
    body = body_for(["a@example.org"])
    body["personalizations"][0]["substitutions"] = {"k": "ü" * umlauts}
    fields = {e["field"] for e in validate_mail(body)}
    assert ("personalizations.0.substitutions" in fields) is refused


AWKWARD = [
    "Jörg",
    "„Grüße“",
    'Tom & "Jerry" <b>',
    "back\\slash",
    "tab\tand\nnewline\r",
    "\x00nul\x7f",
    "emoji 🎉 and 𝔘",
    "\u2028line\u2029",
    "",
    " spaced ",
    "ß" * 50,
    "   ",  # with the next: names that clean to nothing
    "\r\n",
]


def awkward_batch(seed: int) -> tuple[Batch, int | None]:
    """A message and recipients drawn from strings JSON escapes in every way, with every
    optional part of the body on or off."""
    import random
    from datetime import UTC, datetime

    pick = random.Random(seed)

    def text() -> str:
        return "".join(pick.choice(AWKWARD) for _ in range(pick.randint(0, 3)))

    def mapping() -> dict[str, str]:
        return {f"%%{text()}{i}%%": text() for i in range(pick.randint(0, 4))}

    def twins() -> dict[str, str]:
        # The render's keys for the HTML and the text part: both, equal or not, or one alone.
        out = {}
        for name in ("0", "unsubscribe"):
            value = text()
            both = {f"%%nl:h:{name}%%": value, f"%%nl:t:{name}%%": value}
            out.update(
                pick.choice(
                    [{}, both, both, {**both, f"%%nl:h:{name}%%": value + "&amp;"}]
                    + [dict([item]) for item in both.items()]
                )
            )
        return out

    keyed = "<p>%%nl:h:0%% %%nl:t:0%%%%nl:h:unsubscribe%%</p>%%nl:h:0%%"

    message = Message(
        from_email="jens@example.com",
        from_name=text(),
        subject=text() or "Betreff",
        html=text() + pick.choice(["", keyed]) or "<p>x</p>",
        text=text() + pick.choice(["", "%%nl:t:0%% %%nl:t:unsubscribe%%"]) or "x",
        reply_to=pick.choice([None, "jens@example.com", "reply+%newsletter_reply_token%@r.de"]),
        headers=pick.choice([{}, {"List-Id": f"<{text()}.example.com>"}]),
        categories=tuple(text() for _ in range(pick.randint(0, 3))),
        ids=pick.choice([{}, {"newsletter_step": "welcome/1"}]),
        unsubscribe_mailto=pick.choice([None, "reply+%newsletter_reply_token%@r.de"]),
        send_at=pick.choice([None, datetime(2026, 12, 1, 9, tzinfo=UTC)]),
        schedule_id=pick.choice([None, "batch-1"]),
        sandbox=pick.random() < 0.5,
        track_opens=pick.random() < 0.5,
        track_clicks=pick.random() < 0.5,
    )
    people = [
        Recipient(
            email=f"leser{i}@example.org",
            name=pick.choice([None, "", text()]),
            substitutions={**mapping(), **twins(), "%newsletter_reply_token%": text()},
            unsubscribe_url=pick.choice([None, f"https://news.example.com/u/{text()}"]),
            ids=pick.choice([{}, mapping()]),
            headers=pick.choice([{}, {"X-Leser": text()}]),
        )
        for i in range(pick.randint(1, 6))
    ]
    return Batch(message, people), pick.choice([None, 42])


@pytest.mark.parametrize("seed", range(300))
def test_the_posted_json_is_the_body_json_dumps_would_write(seed):
    """What a send posts is written directly as JSON text (fast); byte for byte it is what
    `json.dumps` makes of the body, on umlauts, emoji, quotes, control characters and every
    optional part."""
    batch, group = awkward_batch(seed)
    expected = json.dumps(mail_body(batch, asm_group_id=group)).encode()
    assert mail_json(batch, asm_group_id=group) == expected
    assert json.loads(expected)["personalizations"][0]["to"][0]["email"] == "leser0@example.org"


def test_the_posted_json_reaches_the_server_intact(server):
    """German text and typographic quotes arrive as written."""
    batch = batch_for(["a@example.org"])
    people = [batch.recipients[0]._replace(name="Jörg „der Leser“ Müller")]
    [outcome] = transport(server).send(Batch(batch.message, people))
    assert outcome.state == "accepted"
    [message] = server.messages
    assert message["subject"] == "Grüße „zum“ Test"
    assert message["personalizations"][0]["to"] == [
        {"email": "a@example.org", "name": "Jörg „der Leser“ Müller"}
    ]
    [copy] = copies(message)
    assert copy["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize("seed", range(300))
def test_each_reader_gets_what_the_neutral_message_says(seed):
    """What every reader of a batch shares (the issue's and the send's ids, the one-click
    header) is written once at the top of the request; what SendGrid makes of each
    personalization (top-level headers and custom_args merged with its own) is still exactly
    that reader's headers, ids, subject, Reply-To and parts, as the SMTP transport writes them."""
    batch, group = awkward_batch(seed)
    body = json.loads(mail_json(batch, asm_group_id=group))
    message = batch.message
    for copy, reader in zip(copies(body), batch.recipients, strict=True):
        assert copy["headers"] == recipient_headers(message, reader)
        assert copy["custom_args"] == {**message.ids, **reader.ids}
        subs = reader.substitutions
        assert copy["text"] == substituted(message.text, subs)
        assert copy["html"] == substituted(message.html, subs)
        assert copy["subject"] == substituted(clean_header(message.subject), subs)
        assert copy["reply_to"] == substituted(message.reply_to or "", subs)


def test_what_all_readers_share_is_written_once():
    """A bulk batch: the ids every reader has alike and the one-click header go to the top of
    the request; only each reader's own id stays in their personalization."""
    batch = batch_for([f"leser{i}@example.org" for i in range(3)])
    body = json.loads(mail_json(batch))
    assert body["custom_args"] == {"newsletter_issue_id": "1"}
    assert body["headers"] == {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    assert [p["custom_args"] for p in body["personalizations"]] == [
        {"newsletter_subscriber_id": str(i)} for i in range(3)
    ]
    assert all(set(p["headers"]) == {"List-Unsubscribe"} for p in body["personalizations"])
    # One reader without an unsubscribe URL: nobody's one-click header is lifted.
    people = [*batch.recipients[:2], batch.recipients[2]._replace(unsubscribe_url=None)]
    body = json.loads(mail_json(Batch(batch.message, people)))
    assert "headers" not in body
    assert [set(p.get("headers", ())) for p in body["personalizations"]] == [
        {"List-Unsubscribe", "List-Unsubscribe-Post"}
    ] * 2 + [set()]


def test_suppression_paging(server):
    server.suppressions["bounces"] = [
        {
            "email": f"b{i}@example.org",
            "created": 1700000000 + i,
            "reason": "550",
            "status": "5.1.1",
        }
        for i in range(5)
    ]
    req = urllib.request.Request(
        f"{server.url}/v3/suppression/bounces?limit=2&offset=2",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    page = json.load(urllib.request.urlopen(req, timeout=5))
    assert [b["email"] for b in page] == ["b2@example.org", "b3@example.org"]


def test_transactional_outbox_without_key(project: Path):
    where = send_transactional(
        Project.load(project),
        "jörg@example.org",
        "Bitte bestätigen „jetzt“",
        "<p>Klick & fertig</p>",
        "Klick & fertig",
        headers={"X-Test": "1"},
    )
    files = list((project / "outbox").glob("*.eml"))
    assert len(files) == 1 and str(files[0]) in where
    msg = email.message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert msg["Subject"] == "Bitte bestätigen „jetzt“"
    assert msg["X-Test"] == "1"
    assert msg.get_body(("plain",)).get_content().strip() == "Klick & fertig"
    assert msg.get_body(("html",)).get_content().strip() == "<p>Klick & fertig</p>"


def test_transactional_through_sendgrid(project: Path, server, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    monkeypatch.setenv("SENDGRID_API_HOST", server.url)
    where = send_transactional(Project.load(project), "a@example.org", "Hi", "<p>x</p>", "x")
    assert server.recipients() == ["a@example.org"]
    assert server.messages[0]["_message_id"] in where
    assert not (project / "outbox").exists()


def test_a_value_html_leaves_as_it_is_goes_once(project: Path):
    """An HTML key whose value equals its text twin's for every reader of a batch (a first
    name like Jörg, an unsubscribe URL without `&`) is not sent twice: the request's HTML part
    uses the text key. Each reader's copy is still exactly the issue personalized for them."""
    from newsletter.personalize import HTML_KEY, UNSUBSCRIBE_HTML_KEY
    from newsletter.render import apply_substitutions, render_file
    from tests.conftest import EXAMPLE_ISSUE

    rendered = render_file(Project.load(project), project / "issues" / EXAMPLE_ISSUE.name)
    message = Message(
        from_email="jens@example.com",
        from_name="Jens",
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
    )
    first_name = HTML_KEY.format(n=0)
    assert first_name in message.html and UNSUBSCRIBE_HTML_KEY in message.html

    def reader(i: int, first: str, base: str = "https://news.example.com") -> Recipient:
        url = f"{base}/unsubscribe/t{i}"
        person = {"id": i, "email": f"leser{i}@example.org", "first_name": first}
        subs = rendered.substitutions(person, url)
        return Recipient(email=person["email"], substitutions=subs, unsubscribe_url=url)

    alike = [reader(i, "Jörg") for i in range(3)]
    tom = reader(1, '<b>Tom & "Jerry"</b>')
    amp = reader(2, "Jörg", base="https://news.example.com/?liste=1&x=2")
    unlike = [alike[0], tom, amp]
    bodies = {}
    for name, people in (("alike", alike), ("unlike", unlike)):
        body = bodies[name] = json.loads(mail_json(Batch(message, people)))
        for copy, person in zip(copies(body), people, strict=True):
            assert copy["html"] == apply_substitutions(message.html, person.substitutions)
            assert copy["text"] == apply_substitutions(message.text, person.substitutions)
            assert copy["subject"] == message.subject
    assert "Hallo Jörg," in copies(bodies["alike"])[0]["html"]
    assert "Hallo &lt;b&gt;Tom" in copies(bodies["unlike"])[1]["html"]
    # Alike: neither HTML key is in a personalization or in the HTML part.
    for p in bodies["alike"]["personalizations"]:
        assert not {first_name, UNSUBSCRIBE_HTML_KEY} & set(p["substitutions"])
    assert first_name not in bodies["alike"]["content"][1]["value"]
    assert UNSUBSCRIBE_HTML_KEY not in bodies["alike"]["content"][1]["value"]
    # Unlike (Tom's name and a URL with & escape in HTML): both keys go as they were.
    for p in bodies["unlike"]["personalizations"]:
        assert {first_name, UNSUBSCRIBE_HTML_KEY} <= set(p["substitutions"])
    assert bodies["unlike"]["content"][1]["value"] == message.html


def test_ids_too_big_for_sendgrid_fail_each_reader_also_when_all_share_them(server):
    """custom_args over SendGrid's 10,000 bytes that every reader of a batch has alike (so
    they would be written once, at the top) still fail each reader alone, as they would one
    by one: no request goes out to be refused as a whole (which would stop the send)."""
    batch = batch_for(["a@example.org", "b@example.org", "c@example.org"])
    big = {"newsletter_note": "x" * 10_001}
    people = [r._replace(ids={**r.ids, **big}) for r in batch.recipients]
    outcomes = transport(server).send(Batch(batch.message, people))
    assert [o.state for o in outcomes] == ["failed"] * 3
    assert "custom_args for a@example.org exceed 10000 bytes" in (outcomes[0].error or "")
    assert not any(o.fatal for o in outcomes)
    assert server.requests == []


def test_a_lone_reader_keeps_everything_in_their_personalization():
    """One reader: lifting would save nothing (and give each lone reader's request a top
    of its own), so their personalization is written whole."""
    [reader] = batch_for(["a@example.org"]).recipients
    body = json.loads(mail_json(batch_for(["a@example.org"])))
    assert "custom_args" not in body and "headers" not in body
    [p] = body["personalizations"]
    assert p["custom_args"] == dict(reader.ids)
    assert p["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
