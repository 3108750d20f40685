"""The fake SendGrid's shortcuts against its own full checks: `_plain_recipients` (the quick
proof that plain personalizations are valid) must never accept what `_check_personalizations`
refuses nor change an error, and `_recipients_json` (the --log-recipients-only line) must read
back as the entry json.dumps wrote."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from newsletter.sending.message import Batch, Message, Recipient
from newsletter.sending.transports.sendgrid.body import mail_json
from tests import sendgrid_server
from tests.sendgrid_server import FakeSendGrid, validate_mail

NOW = 1_700_000_000
NAMES = ["Jörg", 'Tom & "Jerry" <b>', "back\\slash", "tab\tand\nnewline", "\x00nul\x7f",
         "emoji 🎉 and 𝔘", "\u2028line\u2029", "", "ß" * 50]  # fmt: skip
# Characters whose JSON takes 1 to 6 bytes (and a lone surrogate, which UTF-8 cannot encode).
FILL = ["a", "ü", "€", "🎉", '"', "\\", "\n", "\x01", "\ud800"]
RESERVED = ["To", "FROM", "x-sg-id", "Reply-To", "content-type", "Subject", "BCC"]


def plain_personalization(rng: random.Random, i: int) -> dict[str, Any]:
    """As a send writes it (each optional part on or off)."""
    url = f"https://news.example.com/unsubscribe/t{i}"
    to: dict[str, Any] = {"email": f"leser{i}@example.org"}
    if rng.random() < 0.7:
        to["name"] = rng.choice(NAMES)
    p: dict[str, Any] = {"to": [to]}
    if rng.random() < 0.9:
        p["substitutions"] = {"%%nl:h:0%%": rng.choice(NAMES), "%%nl:h:unsubscribe%%": url}
    if rng.random() < 0.9:
        p["headers"] = {"List-Unsubscribe": f"<{url}>"}
        if rng.random() < 0.8:
            p["headers"]["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if rng.random() < 0.8:
        p["custom_args"] = {"newsletter_subscriber_id": str(i)}
    return p


def plain_body(rng: random.Random, people: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": {"email": "jens@example.com", "name": "Jens"},
        "subject": "Grüße",
        "content": [
            {"type": "text/plain", "value": "Hallo"},
            {"type": "text/html", "value": "<p>Hallo</p>"},
        ],
        "personalizations": [plain_personalization(rng, i) for i in range(people)],
    }
    if rng.random() < 0.5:
        body["custom_args"] = {"newsletter_issue_id": "7"}
    return body


def filler(rng: random.Random, low: int, high: int) -> str:
    """A string of one repeated character whose JSON takes about low..high bytes."""
    char = rng.choice(FILL)
    size = max(1, len(json.dumps(char, ensure_ascii=False).encode("utf-8", "surrogatepass")) - 2)
    return char * (rng.randint(low, high) // size)


def near_limit(rng: random.Random) -> dict[str, Any]:
    """A dict about as big as SendGrid's 10,000-byte limit, or as the quick bound's
    10,000 / 6 characters."""
    low, high = rng.choice([(9900, 10100), (1550, 1750)])
    values = {"k": filler(rng, low, high)}
    if rng.random() < 0.5:
        values["second"] = filler(rng, 0, 200)
    return values


def first_to(p: dict[str, Any]) -> dict[str, Any]:
    """p's first `to` entry, made one again if an earlier mutation broke it."""
    to = p.get("to")
    if not isinstance(to, list) or not to or not isinstance(to[0], dict):
        p["to"] = to = [{"email": f"fresh{id(p)}@example.org"}]
    return to[0]


def mutate(rng: random.Random, body: dict[str, Any], kind: str) -> None:
    """Break (or just make unusual) one thing in `body`."""
    people = body["personalizations"]
    p = rng.choice(people)
    other = f"leser{rng.randrange(len(people))}@example.org"
    if kind == "no to":
        p.pop("to", None)
    elif kind == "to not a list of one":
        p["to"] = rng.choice([[], None, 0, "a@example.org", {"email": "a@example.org"},
                              [{"email": "x@example.org"}, {"email": "y@example.org"}]])  # fmt: skip
    elif kind == "to entry not an object":
        first_to(p)
        p["to"][0] = rng.choice(["a@example.org", None, ["a@example.org"], 5])
    elif kind == "bad email":
        first_to(p)["email"] = rng.choice(["", "no-at.example.org", None, 42, ["a@b"], b"a@b"])
    elif kind == "no email":
        del first_to(p)["email"]
    elif kind == "duplicate":
        first_to(p)["email"] = rng.choice([other, other.upper(), other.title()])
    elif kind == "cc or bcc":
        fresh = f"copy{rng.randrange(10**6)}@example.org"
        p[rng.choice(["cc", "bcc"])] = rng.choice(
            [[], None, [{"email": fresh}], [{"email": other}], [{"email": "bad"}], "x@y"]
        )
    elif kind == "substitution not a string":
        p["substitutions"] = rng.choice(
            [{"k": 1}, {"k": None}, {"k": ["x"]}, {1: "x"}, {"k": True}, {("a", "b"): "x"}]
        )
    elif kind == "substitutions falsy or odd":
        p["substitutions"] = rng.choice([None, {}, [], "", 0, ["x"]])
    elif kind == "substitutions near the limit":
        p["substitutions"] = near_limit(rng)
    elif kind == "custom arg not a string":
        p["custom_args"] = rng.choice([{"k": 1}, {"k": None}, {"k": 2.5}, {1: "x"}, {(1,): "x"}])
    elif kind == "custom_args near the limit":
        p["custom_args"] = near_limit(rng)
    elif kind == "message custom_args near the limit":
        body["custom_args"] = near_limit(rng)
    elif kind == "message custom_args odd":
        body["custom_args"] = rng.choice(
            [None, {}, [], {"k": 1}, {"newsletter_subscriber_id": 1}, {2: "x"}, ["x"], "abc"]
        )
    elif kind == "custom arg overridden":
        body["custom_args"] = {"id": rng.choice([5, "5", "x" * 9000])}
        p["custom_args"] = {"id": "own"}
    elif kind == "reserved header":
        p["headers"] = {**(p.get("headers") or {}), rng.choice(RESERVED): "x"}
    elif kind == "other header":
        p["headers"] = {**(p.get("headers") or {}), "X-Campaign": "7"}
    elif kind == "headers odd":
        p["headers"] = rng.choice([None, {}, [], ["To"], "To", {"list-unsubscribe": "<x>"}])
    elif kind == "send_at":
        p["send_at"] = rng.choice([NOW, NOW + 80 * 3600, True, "soon", 1.5, None])
    elif kind == "other key":
        p[rng.choice(["subject", "dynamic_template_data", "TO"])] = rng.choice(["Hi", {}, None])
    elif kind == "too many recipients":
        p["cc"] = [{"email": f"cc{j}@example.org"} for j in range(rng.choice([990, 1000]))]
    elif kind == "no subject":
        body.pop("subject", None)
    # These replace personalizations: done last (see `LAST`).
    elif kind == "personalization not an object":
        people[people.index(p)] = rng.choice(["x", None, [], 3, [("to", [])]])
    elif kind == "too many personalizations":
        body["personalizations"] = [plain_personalization(rng, i) for i in range(1001)]
    elif kind == "no personalizations":
        body["personalizations"] = rng.choice([[], None, "x", {}])
    else:
        raise AssertionError(kind)


MUTATIONS = [
    "no to",
    "to not a list of one",
    "to entry not an object",
    "bad email",
    "no email",
    "duplicate",
    "cc or bcc",
    "substitution not a string",
    "substitutions falsy or odd",
    "substitutions near the limit",
    "custom arg not a string",
    "custom_args near the limit",
    "message custom_args near the limit",
    "message custom_args odd",
    "custom arg overridden",
    "reserved header",
    "other header",
    "headers odd",
    "send_at",
    "other key",
    "personalization not an object",
    "too many personalizations",
    "too many recipients",
    "no personalizations",
    "no subject",
]
LAST = ["personalization not an object", "too many personalizations", "no personalizations"]


def outcome(body: Any) -> Any:
    """validate_mail's errors, or the exception it raises (the same either way is the point)."""
    try:
        return validate_mail(body, now=NOW)
    except Exception as e:  # a body the checks cannot take: both paths must fail alike
        return (type(e).__name__, str(e))


@pytest.mark.slow
def test_quick_and_full_checks_agree(monkeypatch):
    """Seeded random bodies, valid and broken in every way the checks know: the same errors
    (messages, fields, order) with and without the quick path, and whatever the quick path
    accepts the full checks accept too, with the same number of recipients."""
    quick = sendgrid_server._plain_recipients
    accepted: list[tuple[Any, Any, int]] = []

    def watched(personalizations: Any, message_args: Any) -> int | None:
        count = quick(personalizations, message_args)
        if count is not None:
            accepted.append((personalizations, message_args, count))
        return count

    rng = random.Random(20240611)
    kinds: set[str] = set()
    taken = 0
    for case in range(1500):
        body = plain_body(rng, rng.randint(1, 6))
        done = [rng.choice(MUTATIONS) for _ in range(rng.choice([0, 1, 1, 1, 2, 3]))]
        done.sort(key=lambda kind: kind in LAST)  # (they take away what the others change)
        while sum(kind in LAST for kind in done) > 1:
            done.pop()
        for kind in done:
            mutate(rng, body, kind)
        kinds.update(done)
        monkeypatch.setattr(sendgrid_server, "_plain_recipients", lambda *a: None)
        full = outcome(body)
        monkeypatch.setattr(sendgrid_server, "_plain_recipients", watched)
        before = len(accepted)
        assert outcome(body) == full, (case, done)
        for personalizations, message_args, count in accepted[before:]:
            errors: list[dict[str, Any]] = []
            assert sendgrid_server._check_personalizations(
                personalizations, message_args, NOW, errors
            ) == count, (case, done)  # fmt: skip
            assert errors == [], (case, done)
        taken += len(accepted) > before
    assert kinds == set(MUTATIONS)
    assert 300 < taken < 1200  # both paths were really taken


def test_a_send_takes_the_quick_path():
    """The requests a send makes (as the benchmark's) are proven valid without the full
    checks; a wrong one still gets its error."""
    message = Message("jens@example.com", "Jens", subject="S", html="<p>x</p>", text="x")
    people = [
        Recipient(
            f"leser{i}@example.org",
            name=NAMES[i % len(NAMES)],
            substitutions={"%%nl:h:0%%": NAMES[-i % len(NAMES)]},
            unsubscribe_url=f"https://news.example.com/unsubscribe/t{i}",
            ids={"newsletter_issue_id": "1", "newsletter_subscriber_id": str(i)},
        )
        for i in range(1000)
    ]
    body = json.loads(mail_json(Batch(message, people)))
    assert sendgrid_server._plain_recipients(body["personalizations"], {}) == 1000
    assert validate_mail(body) == []
    body["personalizations"][999]["to"][0]["email"] = "LESER3@example.org"
    assert sendgrid_server._plain_recipients(body["personalizations"], {}) is None
    assert validate_mail(body) == [
        {
            "message": "Each email address in the personalization block should be unique "
            "between to, cc, and bcc.",
            "field": "personalizations.999.to.0.email",
            "help": None,
        }
    ]


def old_entry(message_id: str, body: dict[str, Any]) -> Any:
    """What --log-recipients-only logged before, read back."""
    entry = {
        "_message_id": message_id,
        "personalizations": [{"to": p["to"]} for p in body["personalizations"]],
    }
    return json.loads(json.dumps(entry, ensure_ascii=False))


def test_recipients_log_reads_back_as_before(tmp_path):
    """Accepted bodies, with every kind of `to` (names JSON escapes, no name, a name that is
    not a string, more keys, name first, several addresses): the line written is JSON that
    reads back as the entry json.dumps wrote."""
    rng = random.Random(7)
    odd_tos = [
        [{"email": "a@example.org", "name": 5}],
        [{"email": "a@example.org", "name": None}],
        [{"name": "Ann", "email": "a@example.org"}],
        [{"email": "a@example.org", "name": "Ann", "x": [1, {"y": "ü"}]}],
        [{"email": "a@example.org", "x": "y"}],
        [{"email": "a@example.org"}, {"email": "b@example.org", "name": "Bo"}],
        [{"email": 'we"ird\\@example.org\n\u2028🎉'}],
    ]
    bodies = []
    for _ in range(300):
        body = plain_body(rng, rng.randint(1, 8))
        if rng.random() < 0.5:
            rng.choice(body["personalizations"])["to"] = rng.choice(odd_tos)
        if validate_mail(body) == []:
            bodies.append(body)
    assert len(bodies) > 200
    log = tmp_path / "sendgrid.log"
    with FakeSendGrid(log_path=log, log_recipients_only=True) as server:
        for i, body in enumerate(bodies):
            server.record(body, f"id{i}")
    with open(log, encoding="utf-8") as f:  # (not splitlines: U+2028 in a name is no line end)
        lines = list(f)
    assert [json.loads(line) for line in lines] == [
        old_entry(f"id{i}", body) for i, body in enumerate(bodies)
    ]


@pytest.mark.parametrize("recipients_only", [False, True])
def test_in_memory_and_full_log_unchanged(tmp_path, recipients_only):
    body = plain_body(random.Random(3), 3)
    with FakeSendGrid(log_recipients_only=recipients_only) as server:
        server.record(body, "mid")
    expected = old_entry("mid", body) if recipients_only else {**body, "_message_id": "mid"}
    assert server.messages == [expected]
    with FakeSendGrid(log_path=tmp_path / "full.log") as server:
        server.record(body, "mid")
    assert json.loads((tmp_path / "full.log").read_text("utf-8")) == {**body, "_message_id": "mid"}


def test_count_only_log_counts_recipients_and_repeats(tmp_path):
    """--count-only (the benchmarks): a line per accepted request with its number of
    recipients and how many of them were sent to before, in any case of the address."""
    log = tmp_path / "sendgrid.log"
    first = plain_body(random.Random(1), 3)
    again = plain_body(random.Random(2), 2)
    again["personalizations"][0]["to"] = [{"email": "neu@example.org"}]
    again["personalizations"][1]["to"] = [{"email": "LESER0@example.org"}]  # in `first`
    with FakeSendGrid(log_path=log, count_only=True) as server:
        server.record(first, "a")
        server.record(again, "b")
    with open(log, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    assert lines == [
        {"_message_id": "a", "recipients": 3, "repeated": 0},
        {"_message_id": "b", "recipients": 2, "repeated": 1},
    ]


def test_the_full_log_keeps_a_lone_surrogate(tmp_path):
    """JSON text may carry a lone surrogate (a broken import, say); the full log still writes
    the request, and reads it back as it came."""
    body = plain_body(random.Random(4), 2)
    body["personalizations"][0]["to"][0]["name"] = "Jörg \ud800 „Leser“\u2028"
    log = tmp_path / "full.log"
    with FakeSendGrid(log_path=log) as server:
        server.record(body, "mid")
    with open(log, encoding="utf-8") as f:
        [line] = list(f)
    assert json.loads(line) == {**body, "_message_id": "mid"}
