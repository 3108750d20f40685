"""Sunsetting end to end: cold readers listed as a segment, asked by mail (the outbox), one
keeps clicking the link through a live `serve`, one replies through Inbound Parse, and
`--apply` removes only the silent one, with the reason "inactive", which `stats --list`
counts apart from unsubscribes; on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import json
import re
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update

from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber, find_subscriber
from newsletter.web import create_app
from tests.conftest import CONFIG
from tests.sendgrid_server import copies
from tests.support.stats import INBOUND_SECRET, post_events, post_reply
from tests.support.web import event, live_server, record_sent

EN_CONFIG = CONFIG.replace('language = "de"', 'language = "en"')


@pytest.fixture
def readers(make_project, database_url, monkeypatch, signer):
    """Six readers and four issues (two months ago to last week); returns a builder taking
    the config."""

    def build(config: str = CONFIG):
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
        monkeypatch.setenv("NEWSLETTER_INBOUND_SECRET", INBOUND_SECRET)
        root = make_project(config + "\n[tracking]\nclicks = true\nopens = true\n")
        project = Project.load(root)
        engine = open_engine(project.database_url)
        now = datetime.now(UTC)
        people = {}
        for name, joined in [
            ("aktiv", 90),  # clicked the latest issue: not cold
            ("bleibt", 90),  # cold; will click the keep link
            ("antwortet", 90),  # cold; will reply
            ("still", 90),  # cold; stays silent
            ("neu", 5),  # too new to be cold
            ("wenig", 90),  # received only two issues
        ]:
            person = add_subscriber(engine, f"{name}@example.de", first_name=name.title())
            with engine.begin() as conn:
                conn.execute(
                    update(schema.subscribers)
                    .where(schema.subscribers.c.id == person.id)
                    .values(created_at=now - timedelta(days=joined))
                )
            people[name] = person
        issues = []
        with engine.begin() as conn:
            for n in range(4):
                got = [p.id for k, p in people.items() if k != "wenig" or n >= 2]
                issues.append(
                    record_sent(
                        conn,
                        got,
                        slug=f"ausgabe-{n}",
                        title=f"Ausgabe {n}",
                        subject=f"Ausgabe {n}: Grüße aus Köln",
                        when=now - timedelta(days=60 - 15 * n),
                    )
                )
        app = create_app(project, engine)
        return root, engine, people, issues, app

    return build


def test_ask_keep_reply_apply(readers, cli, signer):
    root, engine, people, issues, app = readers()
    with live_server(app) as base:
        # A machine open (Apple's prefetch) is nobody reading: `bleibt` stays cold.
        post_events(
            base,
            signer,
            [
                event(
                    "click",
                    "aktiv@example.de",
                    issue_id=issues[-1],
                    subscriber_id=people["aktiv"].id,
                    url="https://example.com/",
                ),
                event(
                    "open",
                    "bleibt@example.de",
                    issue_id=issues[-1],
                    subscriber_id=people["bleibt"].id,
                    sg_machine_open=True,
                ),
            ],
        )
        listed = cli(root, "subscribers", "sunset")
        assert listed.exit_code == 0, listed.output
        assert listed.output.splitlines()[0] == (
            "Cold readers: 3 (status:subscribed -clicked:last-10 -replied:last-10 "
            "-opened:last-10 -joined:30d received:>=3)"
        )
        for name in ("bleibt", "antwortet", "still"):
            assert f"  {name}@example.de  (joined" in listed.output
        for name in ("aktiv", "neu", "wenig"):
            assert f"{name}@example.de" not in listed.output

        dry = cli(root, "subscribers", "sunset", "--ask", "--dry-run")
        assert "Dry run: would mail 3 readers a keep link." in dry.output
        assert not (root / "outbox").exists()

        asked = cli(root, "subscribers", "sunset", "--ask", "--yes")
        assert asked.exit_code == 0, asked.output
        mails = sorted((root / "outbox").glob("*.eml"))
        assert len(mails) == 3
        again = cli(root, "subscribers", "sunset", "--ask", "--yes")
        assert "Nobody to ask." in again.output  # each is asked once
        assert len(sorted((root / "outbox").glob("*.eml"))) == 3

        mail = next(m for m in mails if "bleibt" in m.name)
        message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
        assert message["Subject"] == "Möchtest du „Jens' Briefing“ weiter bekommen?"
        text = message.get_body(("plain",)).get_content()
        assert "Hallo Bleibt," in text and "in 14 Tagen aus" in text
        link = re.search(r"https://news\.example\.com/keep/\S+", text).group(0)
        path = link.removeprefix("https://news.example.com")
        page = httpx.get(base + path)  # the page with the button
        assert page.status_code == 200 and f'action="{path}"' in page.text
        page = httpx.post(base + path)
        assert page.status_code == 200
        assert "Danke!" in page.text and "Du bekommst „Jens&#39; Briefing“ weiterhin" in page.text
        forged = httpx.get(base + "/keep/" + link.rsplit("/", 1)[1][:-2] + "xx")
        assert forged.status_code == 400

        post_reply(base, "antwortet@example.de", "Re: Ausgabe 3: Grüße aus Köln", "Ja, gern!")

    # Two weeks later (the asks are moved back instead of the clock forward).
    with engine.begin() as conn:
        conn.execute(
            update(schema.sunset_asks).values(asked_at=datetime.now(UTC) - timedelta(days=15))
        )
    early = cli(root, "subscribers", "sunset", "--apply", "--grace", "20d")
    assert "Nobody to remove" in early.output
    dry = cli(root, "subscribers", "sunset", "--apply", "--dry-run")
    assert "  still@example.de  (asked" in dry.output
    assert "bleibt@" not in dry.output and "antwortet@" not in dry.output
    assert "Dry run: would unsubscribe 1 reader (reason inactive)." in dry.output
    unasked = cli(root, "subscribers", "sunset", "--apply")  # no terminal, no --yes
    assert unasked.exit_code == 1
    assert "add --yes to --apply" in unasked.output
    applied = cli(root, "subscribers", "sunset", "--apply", "--yes")
    assert applied.exit_code == 0, applied.output
    assert "Unsubscribed 1 reader (reason inactive)." in applied.output

    states = {
        name: (s.status, s.unsubscribe_reason)
        for name in people
        if (s := find_subscriber(engine, f"{name}@example.de")) is not None
    }
    assert states["still"] == ("unsubscribed", "inactive")
    assert all(states[n] == ("subscribed", None) for n in people if n != "still")
    # Those who answered are active again: no longer cold.
    assert "Cold readers: 0" in cli(root, "subscribers", "sunset").output

    growth = json.loads(cli(root, "stats", "--list", "--format", "json").output)
    (period,) = growth["periods"][-1:]
    assert period["inactive"] == 1 and period["unsubscribed"] == 0
    assert "INACTIVE" in cli(root, "stats", "--list").output


def test_the_keep_page_speaks_english_and_brings_back_a_reader_removed_as_inactive(readers, cli):
    root, engine, people, _, app = readers(EN_CONFIG)
    assert cli(root, "subscribers", "sunset", "--ask", "--yes").exit_code == 0
    mail = next(m for m in (root / "outbox").glob("*.eml") if "still" in m.name)
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Do you still want to receive “Jens' Briefing”?"
    link = re.search(r"/keep/\S+", message.get_body(("plain",)).get_content()).group(0)
    with engine.begin() as conn:
        conn.execute(
            update(schema.sunset_asks).values(asked_at=datetime.now(UTC) - timedelta(days=30))
        )
    assert cli(root, "subscribers", "sunset", "--apply", "--yes").exit_code == 0
    assert find_subscriber(engine, "still@example.de").status == "unsubscribed"
    with live_server(app) as base:
        page = httpx.post(base + link)
    assert page.status_code == 200
    assert "Thank you!" in page.text
    assert find_subscriber(engine, "still@example.de").status == "subscribed"
    with engine.connect() as conn:
        kept = conn.execute(select(schema.reader_activity.c.clicked_at)).scalars().all()
    assert kept and all(abs(time.time() - k.timestamp()) < 600 for k in kept if k)
    # Back on the list by the button: a consent record says so, as "subscribe again" does.
    shown = cli(root, "subscribers", "show", "still@example.de", "--format", "json").output
    [back] = [r for r in json.loads(shown)["consent"] if r["kind"] == "resubscribe"]
    assert back["proves_consent"] and back["details"]["status_before"] == "unsubscribed"


def _keep_path(root, name: str) -> str:
    mail = next(m for m in (root / "outbox").glob("*.eml") if name in m.name)
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    return re.search(r"/keep/\S+", message.get_body(("plain",)).get_content()).group(0)


def test_opening_the_keep_link_keeps_nobody(readers, cli):
    """Link scanners and mail prefetchers open every link of a mail. Before, opening the
    keep link (a GET) kept a cold reader, and brought back one removed as inactive; now it
    shows the page with the button, and only the button (a POST) keeps."""
    root, engine, people, _, app = readers()
    assert cli(root, "subscribers", "sunset", "--ask", "--yes").exit_code == 0
    path = _keep_path(root, "bleibt")
    with live_server(app) as base:
        page = httpx.get(base + path)  # a scanner
        assert page.status_code == 200
        assert "Möchtest du „Jens&#39; Briefing“ weiter bekommen?" in page.text
        assert "Noch ein Klick: Bestätige bitte, dass du „Jens&#39; Briefing“ weiter" in page.text
        assert f'<form method="post" action="{path}">' in page.text
        assert "Ja, bitte weiter senden</button>" in page.text
        assert "Danke!" not in page.text

        with engine.begin() as conn:
            conn.execute(
                update(schema.sunset_asks).values(asked_at=datetime.now(UTC) - timedelta(days=15))
            )
        dry = cli(root, "subscribers", "sunset", "--apply", "--dry-run")
        assert "  bleibt@example.de  (asked" in dry.output  # still silent: the GET kept nobody
        assert cli(root, "subscribers", "sunset", "--apply", "--yes").exit_code == 0
        assert find_subscriber(engine, "bleibt@example.de").unsubscribe_reason == "inactive"

        page = httpx.get(base + path)  # a scanner again, after the removal
        assert page.status_code == 200 and "Ja, bitte weiter senden</button>" in page.text
        assert find_subscriber(engine, "bleibt@example.de").status == "unsubscribed"

        page = httpx.post(base + path)  # the reader's click on the button
        assert page.status_code == 200 and "Danke!" in page.text
        assert find_subscriber(engine, "bleibt@example.de").status == "subscribed"


def test_sunset_options(project, cli):
    both = cli(project, "subscribers", "sunset", "--ask", "--apply")
    assert both.exit_code == 2
    bad = cli(project, "subscribers", "sunset", "--grace", "zwei Wochen")
    assert bad.exit_code == 2 and "is not a number of days" in bad.output


def test_a_keep_mail_of_ones_own_that_fails_for_some_readers_stops_before_the_first(readers, cli):
    """The project's keep_email.txt fails only for a reader without a first name. Before,
    the readers with one were mailed and marked asked, then the command died with a
    traceback; now nobody is mailed and the error names the file and line."""
    root, engine, people, _issues, _app = readers()
    with engine.begin() as conn:
        conn.execute(
            update(schema.subscribers)
            .where(schema.subscribers.c.id == people["still"].id)
            .values(first_name=None)
        )
    own = root / "templates" / "web"
    own.mkdir(parents=True)
    (own / "keep_email.txt").write_text(
        "Hallo {{ person }},\n{% if not person %}{{ anrede }}{% endif %}\n{{ keep_url }}\n",
        "utf-8",
    )
    asked = cli(root, "subscribers", "sunset", "--ask", "--yes")
    assert asked.exit_code == 1
    line = asked.output.strip().splitlines()[-1]
    assert line.startswith("Error: ") and line.endswith(
        "templates/web/keep_email.txt:2: template error: 'anrede' is undefined; fix the template"
    ), line
    assert not (root / "outbox").exists()
    retried = cli(root, "subscribers", "sunset", "--ask", "--dry-run")
    assert "would mail 4 readers" in retried.output  # nobody was marked asked


def test_a_german_sunset_mail_without_an_impressum_is_refused_before_anyone_is_mailed(readers, cli):
    """Before, `--ask` mailed German readers without an Impressum, which `send`, `check`
    and `sequences run` refuse; now it stops in one line, before the first mail."""
    root, engine, *_ = readers(
        CONFIG.replace('imprint_url = "https://news.example.com/impressum"\n', "")
    )
    for flags in (["--yes"], ["--dry-run"]):
        asked = cli(root, "subscribers", "sunset", "--ask", *flags)
        assert asked.exit_code == 1, asked.output
        last = asked.output.strip().splitlines()[-1]
        assert last == (
            f"Error: {root / 'newsletter.toml'}: [newsletter] imprint_url is not set, and a "
            "German newsletter must link its Impressum in every email: add imprint_url = "
            '"https://example.com/impressum"'
        )
        assert "Traceback" not in asked.output
    assert not (root / "outbox").exists()
    with engine.connect() as conn:
        assert conn.execute(select(schema.sunset_asks)).first() is None  # nobody marked asked


def test_an_english_sunset_mail_needs_no_impressum(readers, cli):
    """§ 5 DDG binds German mail; an English newsletter is asked as before."""
    root, *_ = readers(
        EN_CONFIG.replace('imprint_url = "https://news.example.com/impressum"\n', "")
    )
    asked = cli(root, "subscribers", "sunset", "--ask", "--yes")
    assert asked.exit_code == 0, asked.output
    assert len(list((root / "outbox").glob("*.eml"))) == 4


def test_the_sunset_mail_carries_the_readers_one_click_unsubscribe(readers, cli):
    """It goes to many readers at once, so it has List-Unsubscribe and List-Unsubscribe-Post
    as issues do (before, neither), with the reader's own unsubscribe link, which unsubscribes
    that reader with one POST (RFC 8058)."""
    root, engine, people, _, app = readers()
    assert cli(root, "subscribers", "sunset", "--ask", "--yes").exit_code == 0
    mail = next(m for m in (root / "outbox").glob("*.eml") if "still" in m.name)
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.fullmatch(
        r"<https://news\.example\.com(/unsubscribe/\S+)>", message["List-Unsubscribe"]
    )
    assert match, message["List-Unsubscribe"]
    with live_server(app) as base:
        answer = httpx.post(base + match.group(1), data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert find_subscriber(engine, "still@example.de").status == "unsubscribed"
    assert find_subscriber(engine, "bleibt@example.de").status == "subscribed"


def test_the_sunset_mail_through_sendgrid_carries_the_one_click_unsubscribe(readers, cli, sg):
    root, _engine, _people, _, _app = readers()
    assert cli(root, "subscribers", "sunset", "--ask", "--yes").exit_code == 0
    sent = [copy for body in sg.messages for copy in copies(body)]
    assert sorted(c["to"][0]["email"] for c in sent) == [
        "aktiv@example.de",  # (no click in this test: cold too)
        "antwortet@example.de",
        "bleibt@example.de",
        "still@example.de",
    ]
    links = set()
    for copy in sent:
        assert copy["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        links.add(copy["headers"]["List-Unsubscribe"])
        assert copy["headers"]["List-Unsubscribe"].startswith(
            "<https://news.example.com/unsubscribe/"
        )
    assert len(links) == 4  # each reader's own
