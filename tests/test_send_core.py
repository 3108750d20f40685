"""The sending core without click: the plan fixes who is sent to, the neutral message's
headers on every transport, the outbox's .eml shape, and `deliver` for other features."""

from __future__ import annotations

import email
import gc
import json
import os
import re
import subprocess
import sys
from email import policy
from email.header import decode_header, make_header
from pathlib import Path

import pytest

from newsletter.project import Project
from newsletter.sending.execute import execute
from newsletter.sending.plan import SendRequest, bulk_headers, plan_send
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.smtp_server import FakeSmtp

REPLIES = '\n[replies]\ndomain = "reply.example.com"\n'


@pytest.fixture
def root(issue_project) -> Path:
    return issue_project(CONFIG + "\n[sending]\nbatch_size = 2\nconcurrency = 1\n" + REPLIES)


def add_people(root: Path, n: int, start: int = 0) -> None:
    engine = open_engine(Project.load(root).database_url)
    for i in range(start, start + n):
        add_subscriber(engine, f"leser{i}@example.org", first_name=f"Leser{i}")


def test_people_who_join_during_a_send_wait_for_resume(root, sg, cli):
    """The send goes to the recipients counted and confirmed, not to whoever an import adds
    while it runs; `sends` says who is waiting and how to reach them."""
    add_people(root, 4)
    project = Project.load(root)
    plan = plan_send(project, EXAMPLE_ISSUE.stem, SendRequest())
    assert plan.recipients == 4
    joined: list[bool] = []

    def import_runs(report) -> None:
        if not joined:
            add_people(root, 3, start=100)
            joined.append(True)

    report = execute(plan, import_runs)
    assert report.accepted == 4 and len(sg.recipients()) == 4
    assert "leser100@example.org" not in sg.recipients()
    listing = cli(root, "sends")
    assert "3 subscribed after this send was planned" in listing.output
    assert "--resume" in listing.output
    resumed = cli(root, "send", EXAMPLE_ISSUE.stem, "--resume", "--yes")
    assert "Recipients: 3" in resumed.output and len(sg.recipients()) == 7
    assert "subscribed after" not in cli(root, "sends").output


def test_bulk_headers_and_tracking_in_the_sendgrid_payload(root, sg):
    add_people(root, 1)
    execute(plan_send(Project.load(root), EXAMPLE_ISSUE.stem, SendRequest()))
    [body] = sg.messages
    assert body["headers"]["List-Id"] == '"Jens\' Briefing" <jens-briefing.news.example.com>'
    assert body["headers"]["Precedence"] == "bulk"
    assert (
        body["headers"]["Feedback-ID"]
        == "meta-ki-creator:jens-briefing:newsletter:news.example.com"
    )
    [p] = body["personalizations"]
    url, mailto = p["headers"]["List-Unsubscribe"].split(", ")
    assert url.startswith("<https://news.example.com/unsubscribe/")
    assert re.fullmatch(r"<mailto:reply\+[\w.-]+@reply\.example\.com\?subject=unsubscribe>", mailto)
    assert body["tracking_settings"] == {
        "subscription_tracking": {"enable": False},
        "click_tracking": {"enable": False, "enable_text": False},
        "open_tracking": {"enable": False},
    }


def test_tracking_can_be_turned_on(make_project, sg, monkeypatch, tmp_path):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{tmp_path / 't.db'}")
    root = make_project(config=CONFIG + "\n[tracking]\nopens = true\nclicks = true\n")
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    add_people(root, 1)
    execute(plan_send(Project.load(root), EXAMPLE_ISSUE.stem, SendRequest()))
    settings = sg.messages[0]["tracking_settings"]
    assert settings["open_tracking"] == {"enable": True}
    assert settings["click_tracking"]["enable"] is True
    assert settings["subscription_tracking"] == {"enable": False}


def _raw_headers(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    return re.split(r"\r\n(?![ \t])", head)


def test_outbox_eml_headers_words_and_parts(make_project, monkeypatch, tmp_path, cli):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{tmp_path / 'o.db'}")
    long_subject = (
        "Größere Überraschungen für die Kreativen: Meta, KI und das Ende der Creator-Ökonomie?"
    )
    text = EXAMPLE_ISSUE.read_text("utf-8").replace(
        'subject: "Meta, KI und das Ende der Creator?"', f'subject: "{long_subject}"'
    )
    root = make_project(config=CONFIG + REPLIES, issues={EXAMPLE_ISSUE.name: text})
    add_people(root, 1)
    engine = open_engine(Project.load(root).database_url)
    add_subscriber(engine, "bcc@example.org", name="Eve\r\nBcc: victim@example.net")
    result = cli(root, "send", EXAMPLE_ISSUE.stem, "--yes")
    assert result.exit_code == 0, result.output
    files = sorted((root / "outbox").glob("*.eml"))
    assert len(files) == 2
    data = files[0].read_bytes()
    msg = email.message_from_bytes(data, policy=policy.default)
    assert msg["Subject"] == long_subject
    words = re.findall(r"=\?[^?]+\?[bBqQ]\?[^?]*\?=", data.decode("ascii", "replace"))
    assert words and max(len(w) for w in words) <= 75
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    assert "X-Custom-Args" not in msg and "X-Categories" not in msg
    assert msg["MIME-Version"] == "1.0"
    assert [part.get("MIME-Version") for part in msg.iter_parts()] == [None, None]
    assert msg["Precedence"] == "bulk" and msg["List-Id"] and msg["Feedback-ID"]
    assert "mailto:reply+" in msg["List-Unsubscribe"]
    # A name with CR/LF does not become a header of its own.
    eve = email.message_from_bytes(files[1].read_bytes(), policy=policy.default)
    assert eve["Bcc"] is None and "victim@example.net" in str(eve["To"])
    assert [h for h in _raw_headers(files[1].read_bytes()) if h.lower().startswith("bcc")] == []


def test_bulk_headers_on_smtp(make_project, monkeypatch, tmp_path):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{tmp_path / 's.db'}")
    with FakeSmtp() as smtp:
        config = (
            CONFIG
            + REPLIES
            + (
                f'\n[sending]\ntransport = "smtp"\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\n'
                'security = "none"\n'
            )
        )
        root = make_project(config=config)
        (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
        add_people(root, 1)
        report = execute(plan_send(Project.load(root), EXAMPLE_ISSUE.stem, SendRequest()))
        assert report.accepted == 1
        msg = email.message_from_bytes(smtp.messages[0].data, policy=policy.default)
    assert msg["Precedence"] == "bulk"
    assert msg["List-Id"] == '"Jens\' Briefing" <jens-briefing.news.example.com>'
    assert msg["Feedback-ID"] == "meta-ki-creator:jens-briefing:newsletter:news.example.com"
    assert msg["Reply-To"].startswith("reply+") and "mailto:reply+" in msg["List-Unsubscribe"]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The Reply-To (and the mailto) name the issue and this reader: a reply can unsubscribe.
    from newsletter.tokens import REPLY, read_token
    from tests.conftest import TEST_SECRET

    carried_token = msg["Reply-To"][len("reply+") :].split("@")[0]
    token = read_token(REPLY, carried_token, key=TEST_SECRET)
    # By their public ids (issue 26 item 5), which resolve to the reader and the issue.
    from newsletter.store.public_ids import resolve
    from tests.support.tokens import carried

    assert all(isinstance(ref, str) and len(ref) == 12 for ref in carried(carried_token))
    with open_engine(Project.load(root).database_url).connect() as conn:
        named = resolve(conn, token)
    assert named.subscriber_id == 1 and named.issue_id is not None
    assert f"<mailto:{msg['Reply-To']}?subject=unsubscribe>" in msg["List-Unsubscribe"]


def test_an_outbox_send_is_listed_by_sends_but_is_no_send_in_stats(
    make_project, monkeypatch, tmp_path, cli
):
    """The outbox only writes files: `sends` says so, and `stats` (mail that reached readers)
    counts nobody, as the archive publishes nothing for it."""
    import json

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{tmp_path / 'a.db'}")
    root = make_project()
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    add_people(root, 3)
    assert cli(root, "send", EXAMPLE_ISSUE.stem, "--yes").exit_code == 0
    assert "written 3" in cli(root, "sends").output
    stats = cli(root, "stats", EXAMPLE_ISSUE.stem, "--format", "json")
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.output)["counts"]["recipients"] == 0
    assert json.loads(cli(root, "stats", "--format", "json").output)["issues"] == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "issues/2024-07-meta-ki-creator.md",
        "2024-07-meta-ki-creator.md",
        "2024-07-meta-ki-creator",
        "meta-ki-creator",
    ],
)
def test_every_command_resolves_an_issue_the_same_way(
    make_project, monkeypatch, tmp_path, cli, name
):
    """A path, a file name with or without .md, or the slug: the same in every command
    (`newsletter build meta-ki-creator` used to fail while `send meta-ki-creator` worked)."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{tmp_path / 'r.db'}")
    root = make_project()
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    add_people(root, 1)
    monkeypatch.chdir(root)
    build = cli(root, "build", name, "-o", str(tmp_path / "build"))
    assert build.exit_code == 0, build.output
    assert (tmp_path / "build" / "meta-ki-creator.html").exists()
    assert cli(root, "check", name).exit_code == 0
    sent = cli(root, "send", name, "--outbox", str(tmp_path / "out"), "--yes")
    assert sent.exit_code == 0, sent.output
    assert "meta-ki-creator" in cli(root, "sends", name).output
    stats = cli(root, "stats", name)
    assert stats.exit_code == 0, stats.output
    assert "no scheduled send" in cli(root, "cancel", name).output
    assert cli(root, "replies", "--issue", name).exit_code == 0


def test_a_sent_issue_whose_file_is_gone_is_found_by_its_slug(root, sg, cli):
    add_people(root, 1)
    assert cli(root, "send", EXAMPLE_ISSUE.stem, "--yes").exit_code == 0
    (root / "issues" / EXAMPLE_ISSUE.name).unlink()
    assert "accepted 1" in cli(root, "sends", "meta-ki-creator").output
    missing = cli(root, "build", "meta-ki-creator")
    assert missing.exit_code == 1 and "no such issue" in missing.output
    nothing = cli(root, "sends", "no-such-issue")
    assert nothing.exit_code == 1 and "no such issue" in nothing.output


def test_fast_unsubscribe_tokens_read_back_like_the_slow_ones():
    import random

    from newsletter.store.schema import new_public_id
    from newsletter.tokens import UNSUBSCRIBE, read_token, unsubscribe_url, unsubscribe_url_maker

    for issue in (None, 7, new_public_id()):
        fast = unsubscribe_url_maker("https://news.example.com", issue, key="k")
        public = [new_public_id() for _ in range(50)]
        for sid in [1, 42, 999_999, *random.sample(range(10**7), 200), *public]:
            url = fast(sid)
            assert url == unsubscribe_url("https://news.example.com", sid, issue, key="k")
            token = read_token(UNSUBSCRIBE, url.rsplit("/", 1)[1], key="k")
            assert (token.subscriber, token.issue) == (sid, issue)
        forged = fast(5).replace("/unsubscribe/", "/unsubscribe/x")
        with pytest.raises(Exception):  # noqa: B017
            read_token(UNSUBSCRIBE, forged.rsplit("/", 1)[1], key="k")


def test_the_fast_tokens_hmac_is_the_hmac_modules():
    import hashlib
    import hmac

    from newsletter.tokens import _hmac_sha1_pads

    for key in (b"", b"k", b"x" * 20, b"y" * 64, b"z" * 65, bytes(range(256))):
        for message in (b"", b"WzQyLDdd", b"m" * 1000):
            inner, outer = _hmac_sha1_pads(key)
            inner.update(message)
            outer.update(inner.digest())
            assert outer.digest() == hmac.new(key, message, hashlib.sha1).digest()


def test_memoized_personalization_equals_per_reader_rendering(make_project):
    """Values are computed once per combination of the fields the body reads: each reader
    still gets exactly what rendering for them alone gives, their own unsubscribe URL included."""
    from newsletter.issue import load_issue
    from newsletter.render import render_issue
    from newsletter.sending.execute import Personalizer, subscriber_keys_used

    body = (
        "---\ntitle: T\nslug: t\n---\nHallo {{ subscriber.first_name | default('zusammen') }} "
        "aus {{ subscriber.stadt | default('?') }}, {{ subscriber['last_name'] | upper }}!\n"
    )
    root = make_project(issues={"t.md": body, "r.md": body.replace("slug: t", "slug: r")
                                .replace("| upper }}", "| upper }} {{ range(3) | random }}")})  # fmt: skip
    project = Project.load(root)
    rendered = render_issue(project, load_issue(project, root / "issues" / "t.md"))
    assert subscriber_keys_used(rendered.expressions) == ("first_name", "last_name", "stadt")
    randomish = render_issue(project, load_issue(project, root / "issues" / "r.md"))
    assert subscriber_keys_used(randomish.expressions) is None
    personalize = Personalizer(rendered)
    people = [
        {"id": i, "email": f"p{i}@example.org", "name": None, "first_name": first,
         "last_name": last, "fields": fields}
        for i, (first, last, fields) in enumerate(
            [("Jörg", "Müller", {"stadt": "Köln"}), ("Jörg", "Müller", {"stadt": "Köln"}),
             ("Jörg", "Meier", {}), ("", None, {"stadt": "Köln"}), (None, None, {}),
             ("<b>Tom</b>", "&", {"stadt": "Bonn", "x": 1})] * 3
        )
    ]  # fmt: skip
    for person in people:
        url = f"https://news.example.com/unsubscribe/{person['id']}%%x&y"
        assert personalize(person, url) == rendered.substitutions(person, url)
    assert len(personalize.cache) == 5
    # The bulk send's way in: the row as read (custom fields as JSON text), no context built.
    rows = Personalizer(rendered)
    for person in people:
        url = f"https://news.example.com/unsubscribe/{person['id']}%%x&y"
        row = tuple(person[k] for k in ("id", "email", "name", "first_name", "last_name"))
        got = rows.for_row(row, json.dumps(person["fields"]), url)
        assert got == rendered.substitutions(person, url)
        got["changed"] = "by the caller"  # a reader's dict is their own: the cache is unharmed
    assert len(rows.cache) == 5 and all("changed" not in v for v in rows.cache.values())


def test_stats_count_a_scheduled_send_beside_an_immediate_one(root, sg, cli):
    """Four readers get the issue now; two who joined later get it by a scheduled --resume
    (SendGrid holds it until then): six were handed over, and `stats` says six."""
    import json
    from datetime import UTC, datetime, timedelta

    add_people(root, 4)
    assert cli(root, "send", EXAMPLE_ISSUE.stem, "--yes").exit_code == 0
    add_people(root, 2, start=100)
    when = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    later = cli(root, "send", EXAMPLE_ISSUE.stem, "--resume", "--schedule", when, "--yes")
    assert later.exit_code == 0, later.output
    one = json.loads(cli(root, "stats", EXAMPLE_ISSUE.stem, "--format", "json").output)
    assert one["counts"]["recipients"] == 6
    [row] = json.loads(cli(root, "stats", "--format", "json").output)["issues"]
    assert row["counts"]["recipients"] == 6


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_worker_processes_leave_the_sender_a_core_and_respect_a_cpu_limit():
    """A big send forks one worker fewer than the cores it may use (the sending process
    needs one of its own), and none when it may use only one (a container or `taskset`
    limit, not the host's cores)."""
    code = (
        "import os\n"
        "from newsletter.sending.execute import usable_cpus\n"
        "cores = sorted(os.sched_getaffinity(0))\n"
        "print(usable_cpus())\n"
        "os.sched_setaffinity(0, cores[:1])\n"
        "print(usable_cpus())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    allowed, limited = map(int, out.stdout.split())
    assert allowed == len(os.sched_getaffinity(0)) and limited == 1


def test_a_big_send_forks_one_worker_fewer_than_the_cores(monkeypatch):
    """The sending process keeps a core of its own; with one core there are no workers."""
    from types import SimpleNamespace

    from newsletter.sending import execute as core

    builder = SimpleNamespace(personalize=SimpleNamespace(keys=None))
    preparer = SimpleNamespace(prepares=True, builder=builder)
    for cores, workers in ((1, None), (2, 1), (3, 2), (16, 4)):
        monkeypatch.setattr(core, "usable_cpus", lambda cores=cores: cores)
        pool = core.start_pool(preparer, expected=100_000)  # type: ignore[arg-type]
        if workers is None:
            assert pool is None
            continue
        try:
            assert pool._max_workers == workers
        finally:
            pool.shutdown()
            gc.unfreeze()


@pytest.mark.slow
def test_what_was_frozen_for_the_workers_is_collectable_after_the_send(root, sg, monkeypatch):
    """The objects frozen before the fork (so the workers do not copy every page) are
    handed back to the collector when the send is over: a longer-lived process that sends
    does not keep its garbage for good."""
    from newsletter.sending import execute as core

    monkeypatch.setattr(core, "usable_cpus", lambda: 2)
    monkeypatch.setenv("NEWSLETTER_SEND_PARALLEL_FROM", "1")
    add_people(root, 3)
    frozen: list[int] = []
    report = execute(
        plan_send(Project.load(root), EXAMPLE_ISSUE.stem, SendRequest()),
        lambda report: frozen.append(gc.get_freeze_count()),
    )
    assert report.accepted == 3 and sorted(sg.recipients()) == [
        f"leser{i}@example.org" for i in range(3)
    ]
    assert frozen and min(frozen) > 0  # during the send, with its workers
    assert gc.get_freeze_count() == 0


def test_list_id_spells_umlauts_and_sharp_s_as_a_german_writes_them_in_ascii(make_project):
    """The List-Id and Feedback-ID labels of "Jens' Briefing – KI & Straße" were
    "jens-briefing-ki-stra-e": ß and umlauts fell out of the label."""
    name = "Jens’ Briefing – KI & Straße für Größen"
    root = make_project(config=CONFIG.replace('name = "Jens\' Briefing"', f'name = "{name}"'))
    headers = bulk_headers(Project.load(root), "meta-ki-creator")
    label = "jens-briefing-ki-strasse-fuer-groessen"
    assert headers["List-Id"].endswith(f" <{label}.news.example.com>")
    assert headers["Feedback-ID"] == f"meta-ki-creator:{label}:newsletter:news.example.com"
    # The phrase keeps the name itself, RFC 2047-encoded.
    assert str(make_header(decode_header(headers["List-Id"].rsplit(" <", 1)[0]))) == name
