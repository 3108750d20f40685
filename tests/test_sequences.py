"""Welcome sequences against real databases (SQLite and PostgreSQL), through the real CLI and
the core, with the outbox as transport (what readers would get is read back from the .eml
files). The end-to-end test over HTTP and SendGrid is in test_sequences_e2e.py; kill -9 and
two runners at once in test_sequences_crash.py."""

from __future__ import annotations

import email
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.policy import default as default_policy
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.durations import parse_delay
from newsletter.project import Project
from newsletter.sequences import hooks
from newsletter.sequences.clock import FixedClock
from newsletter.step import due_at, load_sequence
from newsletter.store.engine import open_engine
from newsletter.store.schema import deliveries, sequence_enrollments
from newsletter.store.subscribers import add_subscriber, set_status
from tests.conftest import CONFIG
from tests.support.sequences import (
    SEQUENCE,
    STEP1,
    STEP2,
    STEP3,
    T0,
    join,
    received,
    run,
    write_steps,
)


@pytest.fixture
def seq_project(make_project, database_url, monkeypatch):
    """A project with a three-step welcome sequence, on SQLite and PostgreSQL."""
    root = make_project(CONFIG + SEQUENCE)
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    write_steps(root, {"01-willkommen.md": STEP1, "02-tipps.md": STEP2, "03-stimmen.md": STEP3})
    return root


def bodies(root: Path, subject: str) -> dict[str, str]:
    out = {}
    for path in sorted((root / "outbox").glob("*.eml")):
        msg = email.message_from_string(path.read_text("utf-8"), policy=default_policy)
        if str(msg["Subject"]) == subject:
            text = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
            out[msg["To"].addresses[0].addr_spec] = text
    return out


@pytest.mark.slow
def test_steps_go_out_in_order_after_their_delays_and_only_once(seq_project):
    join(seq_project, "anna@example.de", T0, first_name="Anna")
    join(seq_project, "jörg@example.de", T0 + timedelta(hours=1), first_name="Jörg")

    first = run(seq_project, T0 + timedelta(minutes=1))
    assert received(seq_project) == [("anna@example.de", "Willkommen bei „Jens' Briefing“")]
    assert first.accepted == 1

    run(seq_project, T0 + timedelta(hours=2))
    assert Counter(s for _, s in received(seq_project)) == {"Willkommen bei „Jens' Briefing“": 2}
    assert (
        "Hallo Jörg, schön"
        in bodies(seq_project, "Willkommen bei „Jens' Briefing“")["jörg@example.de"]
    )

    # Running again at the same moment sends nothing: idempotent.
    again = run(seq_project, T0 + timedelta(hours=2))
    assert again.total == 0 and len(received(seq_project)) == 2

    # Step 2 is due 3 days after step 1 went out (Anna at T0+1m, Jörg at T0+2h).
    run(seq_project, T0 + timedelta(days=3, minutes=30))
    tips = [a for a, s in received(seq_project) if s == "Drei Tipps für den Anfang"]
    assert tips == ["anna@example.de"]
    run(seq_project, T0 + timedelta(days=3, hours=3))
    run(seq_project, T0 + timedelta(days=30))
    got = Counter(received(seq_project))
    assert len(got) == 6 and max(got.values()) == 1


@pytest.mark.slow
def test_unsubscribing_stops_at_once_and_resubscribing_does_not_restart(seq_project):
    anna = join(seq_project, "anna@example.de", T0)
    run(seq_project, T0)
    project = Project.load(seq_project)
    engine = open_engine(project.database_url)
    set_status(engine, anna.id, "unsubscribed", reason="test")
    run(seq_project, T0 + timedelta(days=10))
    assert [s for _, s in received(seq_project)] == ["Willkommen bei „Jens' Briefing“"]

    set_status(engine, anna.id, "subscribed")
    assert hooks.joined(project, engine, anna.id, clock=FixedClock(T0 + timedelta(days=11))) == []
    run(seq_project, T0 + timedelta(days=30))
    assert [s for _, s in received(seq_project)] == ["Willkommen bei „Jens' Briefing“"]
    with engine.connect() as conn:
        assert conn.execute(select(sequence_enrollments.c.state)).scalars().all() == ["stopped"]


@pytest.mark.parametrize("status", ["bounced", "complained"])
def test_bounced_and_complained_stop_too(make_project, cli, monkeypatch, tmp_path, status):
    root = make_project(CONFIG + SEQUENCE)
    write_steps(root, {"01-willkommen.md": STEP1, "02-tipps.md": STEP2})
    person = join(root, "anna@example.de", T0)
    run(root, T0)
    set_status(open_engine(Project.load(root).database_url), person.id, status)
    run(root, T0 + timedelta(days=5))
    assert len(received(root)) == 1


def test_people_on_the_list_before_get_nothing_unless_started(seq_project, cli):
    project = Project.load(seq_project)
    engine = open_engine(project.database_url)
    # Already on the list: added straight to the store, as an import would.
    add_subscriber(engine, "alt@example.de", tags=["leser"])
    add_subscriber(engine, "auch-alt@example.de")
    run(seq_project, T0 + timedelta(days=1))
    assert received(seq_project) == []

    result = cli(seq_project, "sequences", "start", "welcome", "--existing", "--tag", "leser",
                 "--yes", "--now", T0.isoformat())  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Started welcome for 1 subscriber;" in result.output
    run(seq_project, T0 + timedelta(minutes=5))
    assert [a for a, _ in received(seq_project)] == ["alt@example.de"]
    # Starting again finds nobody new.
    again = cli(
        seq_project, "sequences", "start", "welcome", "--existing", "--tag", "leser", "--yes"
    )
    assert "Nobody to start welcome for" in again.output

    bare = cli(seq_project, "sequences", "start", "welcome")
    assert bare.exit_code == 2 and "--existing" in bare.output


def test_subscribers_add_starts_the_sequence_but_not_unconfirmed(seq_project, cli):
    result = cli(seq_project, "subscribers", "add", "neu@example.de", "--first-name", "Neu")
    assert result.exit_code == 0 and "started sequence welcome" in result.output
    unconfirmed = cli(
        seq_project, "subscribers", "add", "offen@example.de", "--status", "unconfirmed"
    )
    assert "started" not in unconfirmed.output
    ran = cli(seq_project, "sequences", "run", "--now",
              (datetime.now(UTC) + timedelta(minutes=1)).isoformat())  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert "welcome/willkommen: 1 sent" in ran.output
    assert [a for a, _ in received(seq_project)] == ["neu@example.de"]


def test_tag_triggered_sequence_and_tag_limited_subscribe(make_project, cli):
    config = (
        CONFIG
        + '\n[sequences.kunden]\ntrigger = "tagged:kunde"\n'
        + '\n[sequences.vip]\ntrigger = "subscribed"\ntag = "vip"\n'
    )
    root = make_project(config)
    write_steps(root, {"01-danke.md": STEP1.replace("Willkommen", "Danke")}, "kunden")
    write_steps(root, {"01-hallo.md": STEP1.replace("Willkommen", "Hallo VIP")}, "vip")
    plain = cli(root, "subscribers", "add", "plain@example.de")
    assert "started" not in plain.output
    vip = cli(root, "subscribers", "add", "vip@example.de", "--tag", "vip")
    assert "started sequence vip" in vip.output
    tagged = cli(root, "subscribers", "tag", "plain@example.de", "kunde")
    assert "started sequence kunden" in tagged.output
    cli(root, "sequences", "run", "--now", (datetime.now(UTC) + timedelta(minutes=1)).isoformat())
    assert sorted(received(root)) == [
        ("plain@example.de", "Danke bei „Jens' Briefing“"),
        ("vip@example.de", "Hallo VIP bei „Jens' Briefing“"),
    ]


def test_reordering_never_resends_removing_skips_editing_changes_only_for_those_waiting(
    seq_project,
):
    join(seq_project, "anna@example.de", T0)
    run(seq_project, T0)
    run(seq_project, T0 + timedelta(days=3, minutes=1))  # Anna had 01 and 02
    join(seq_project, "ben@example.de", T0 + timedelta(days=3, minutes=2))
    run(seq_project, T0 + timedelta(days=3, minutes=3))  # Ben had 01

    # The author renumbers (03 first, then 01, then 02), edits "tipps" and removes nothing yet.
    write_steps(seq_project, {
        "01-stimmen.md": STEP3,
        "02-willkommen.md": STEP1,
        "03-tipps.md": STEP2.replace("hier sind drei Tipps", "hier sind vier Tipps"),
    })  # fmt: skip
    run(seq_project, T0 + timedelta(days=20))  # Ben: "stimmen", the first he has not had
    run(seq_project, T0 + timedelta(days=30))  # then "tipps", 3 days later
    got = Counter(received(seq_project))
    assert max(got.values()) == 1, got
    tips = bodies(seq_project, "Drei Tipps für den Anfang")
    assert "drei Tipps" in tips["anna@example.de"]  # what Anna got stays as it was
    assert "vier Tipps" in tips["ben@example.de"]  # Ben was waiting: the edited text
    assert {a for a, s in got if s == "Was andere Leser sagen"} == {
        "anna@example.de",
        "ben@example.de",
    }

    # A removed step is skipped for those who have not had it.
    join(seq_project, "cem@example.de", T0 + timedelta(days=21))
    write_steps(seq_project, {"01-willkommen.md": STEP1, "03-stimmen.md": STEP3})
    run(seq_project, T0 + timedelta(days=21, minutes=1))
    run(seq_project, T0 + timedelta(days=40))
    cem = [s for a, s in received(seq_project) if a == "cem@example.de"]
    assert sorted(cem) == ["Was andere Leser sagen", "Willkommen bei „Jens' Briefing“"]


def test_changed_delay_reschedules_those_waiting(seq_project):
    join(seq_project, "anna@example.de", T0)
    run(seq_project, T0)
    write_steps(seq_project, {
        "01-willkommen.md": STEP1,
        "02-tipps.md": STEP2.replace("delay: 3d", "delay: 1d"),
        "03-stimmen.md": STEP3,
    })  # fmt: skip
    run(seq_project, T0 + timedelta(days=1, minutes=1))
    assert ("anna@example.de", "Drei Tipps für den Anfang") in received(seq_project)


def test_send_at_hour_in_the_newsletter_timezone(make_project):
    root = make_project(
        CONFIG.replace('language = "de"', 'language = "de"\ntimezone = "Europe/Berlin"') + SEQUENCE
    )
    write_steps(root, {
        "01-willkommen.md": STEP1.replace("delay: 0", "delay: 0\nsend_at_hour: 9"),
        "02-tipps.md": STEP2.replace("delay: 3d", "delay: 1d\nsend_at_hour: 7"),
    })  # fmt: skip
    night = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 03:00 in Berlin
    join(root, "anna@example.de", night)
    run(root, night + timedelta(hours=1))
    assert received(root) == []  # not at 4 a.m.
    run(root, datetime(2026, 3, 2, 8, 0, tzinfo=UTC))  # 09:00 Berlin
    assert len(received(root)) == 1
    # 1 day after 09:00 is 09:00 next day, past 07:00: the day after, 07:00 Berlin.
    run(root, datetime(2026, 3, 3, 23, 0, tzinfo=UTC))
    assert len(received(root)) == 1
    run(root, datetime(2026, 3, 4, 6, 0, tzinfo=UTC))
    assert len(received(root)) == 2

    steps = load_sequence(Project.load(root), "welcome")
    # Across the change to summer time (29 March 2026), 9 o'clock stays 9 o'clock local.
    due = due_at(datetime(2026, 3, 28, 12, 0, tzinfo=UTC), steps[0], "Europe/Berlin")
    assert due == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)


def test_delay_forms():
    assert parse_delay(0) == timedelta(0)
    assert parse_delay("2h") == timedelta(hours=2)
    assert parse_delay("3d") == timedelta(days=3)
    assert parse_delay("30m") == timedelta(minutes=30)
    assert parse_delay("1w") == timedelta(weeks=1)
    for bad in ("3 days", "-1d", 5, "d3", True, None):
        assert parse_delay(bad) is None


def test_check_runs_check_on_every_step_and_finds_step_problems(seq_project, cli):
    ok = cli(seq_project, "sequences", "check")
    assert ok.exit_code == 0, ok.output
    assert "unknown front matter key" not in ok.output  # delay is a step's own key
    write_steps(seq_project, {
        "01-willkommen.md": STEP1,
        "02-tipps.md": STEP2.replace("delay: 3d", "delay: 3 Tage"),
        "03-stimmen.md": STEP3.replace("Zum Schluss", "[Link](http://localhost/x)"),
        "zwischendurch.md": STEP3,
    })  # fmt: skip
    bad = cli(seq_project, "sequences", "check")
    assert bad.exit_code == 1
    assert "sequences/welcome/02-tipps.md:4: error: bad delay '3 Tage'" in bad.output
    assert (
        "sequences/welcome/zwischendurch.md: error: a step's file name starts with its number"
        in bad.output
    )
    assert "03-stimmen.md" in bad.output  # the normal check's finding about the local link
    # A run skips the broken sequence, in one line, and sends nothing.
    run_result = cli(seq_project, "sequences", "run")
    assert run_result.exit_code == 0 and "sequence welcome skipped" in run_result.output


def test_config_errors_are_one_line(make_project, cli):
    for table, expected in [
        ('trigger = "signup"', "unknown trigger 'signup'"),
        ('trigger = "tagged:"', 'trigger "tagged:" needs a tag'),
        ('trigger = "tagged:x"\ntag = "y"', "tag goes with trigger"),
        ('trigger = "subscribed"\ndelay = "1d"', "unknown key `delay` in [sequences.welcome]"),
    ]:
        root = make_project(CONFIG + "\n[sequences.welcome]\n" + table + "\n", name=table[:9])
        result = cli(root, "sequences", "list")
        assert result.exit_code == 1 and expected in result.output, result.output
        assert "Traceback" not in result.output
    root = make_project(
        CONFIG.replace('language = "de"', 'language = "de"\ntimezone = "Mars/Base"'), name="tz"
    )
    result = cli(root, "sequences", "list")
    assert (
        result.exit_code == 1 and "timezone 'Mars/Base' is not a known time zone" in result.output
    )


def test_bad_now_is_one_line(seq_project, cli):
    result = cli(seq_project, "sequences", "run", "--now", "morgen")
    assert result.exit_code == 1
    assert "--now 'morgen' is not an ISO time" in result.output


def test_status_shows_got_due_next_and_who_waits(seq_project, cli):
    join(seq_project, "anna@example.de", T0)
    join(seq_project, "ben@example.de", T0 + timedelta(hours=1))
    run(seq_project, T0)  # Anna gets 01; Ben joins later and waits
    table = cli(seq_project, "sequences", "status", "--now", (T0 + timedelta(hours=2)).isoformat())
    assert table.exit_code == 0, table.output
    assert "waiting: ben@example.de" in table.output
    data = json.loads(cli(seq_project, "sequences", "status", "--format", "json",
                          "--now", (T0 + timedelta(hours=2)).isoformat()).output)  # fmt: skip
    [welcome] = data["sequences"]
    first, second, third = welcome["steps"]
    assert (first["got"], first["waiting"], first["due"]) == (1, 1, 1)
    assert first["waiting_people"] == [
        {"email": "ben@example.de", "due_at": (T0 + timedelta(hours=1)).isoformat()}
    ]
    assert (second["waiting"], second["due"]) == (1, 0)
    assert second["next_due"] == (T0 + timedelta(days=3)).isoformat()
    assert third["waiting"] == 0 and welcome["people"] == {"active": 2}


def test_inactive_until_configured_and_init_scaffolds_the_step(tmp_path, cli):
    for language, greeting in (("de", "Hallo"), ("en", "Hi")):
        root = tmp_path / language
        assert cli(None, "init", str(root), "--language", language).exit_code == 0
        step = root / "sequences" / "welcome" / "01-willkommen.md"
        assert greeting in step.read_text("utf-8")
        listed = cli(root, "sequences", "list")
        assert "welcome: not enabled" in listed.output
        cli(root, "subscribers", "add", "anna@example.de")
        cli(root, "sequences", "run", "--now", (datetime.now(UTC) + timedelta(days=1)).isoformat())
        assert not (root / "outbox").exists()
        # Enabling it is uncommenting two lines the config already has.
        config = root / "newsletter.toml"
        text = config.read_text("utf-8")
        assert '# [sequences.welcome]\n# trigger = "subscribed"' in text
        config.write_text(text.replace('# [sequences.welcome]\n# trigger = "subscribed"',
                                       '[sequences.welcome]\ntrigger = "subscribed"'), "utf-8")  # fmt: skip
        # A German newsletter needs its imprint (check says so); the line is there to uncomment.
        text = config.read_text("utf-8")
        config.write_text(text.replace("# imprint_url = ", "imprint_url = "), "utf-8")
        checked = cli(root, "sequences", "check")
        assert "error" not in checked.output.replace("0 errors", "")


def test_failed_batch_is_due_again_and_then_sent(seq_project, monkeypatch):
    from tests.sendgrid_server import FakeSendGrid

    join(seq_project, "anna@example.de", T0)
    with FakeSendGrid(api_key="SG.k") as server:
        monkeypatch.setenv("SENDGRID_API_KEY", "SG.k")
        monkeypatch.setenv("SENDGRID_API_HOST", server.url)
        server.inject("400", errors=[{"message": "bad", "field": "content"}])
        first = run(seq_project, T0)
        assert first.failed == 1 and first.error and not server.recipients()
        assert run(seq_project, T0 + timedelta(minutes=1)).total == 0  # not hammering
        second = run(seq_project, T0 + timedelta(minutes=11))
        assert second.accepted == 1 and server.recipients() == ["anna@example.de"]
        engine = open_engine(Project.load(seq_project).database_url)
        with engine.connect() as conn:
            assert conn.execute(select(deliveries.c.state)).scalars().all() == ["accepted"]


def test_forgetting_a_person_removes_their_enrollment(seq_project, cli):
    join(seq_project, "anna@example.de", T0)
    result = cli(seq_project, "subscribers", "remove", "anna@example.de", "--forget", "--yes")
    if result.exit_code == 2:  # before `--yes` exists on remove
        result = cli(seq_project, "subscribers", "remove", "anna@example.de", "--forget")
    assert result.exit_code == 0, result.output
    engine = open_engine(Project.load(seq_project).database_url)
    with engine.connect() as conn:
        assert conn.execute(select(sequence_enrollments)).all() == []


def test_serve_loop_sends_due_steps_in_the_background(seq_project):
    from newsletter.sequences.runner import BackgroundRunner

    join(seq_project, "anna@example.de", T0)
    runner = BackgroundRunner(
        Project.load(seq_project), interval=0.05, clock=FixedClock(T0 + timedelta(minutes=1))
    ).start()
    try:
        import time

        deadline = time.monotonic() + 20
        while runner.runs < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        runner.stop()
    assert runner.runs >= 3
    assert received(seq_project) == [("anna@example.de", "Willkommen bei „Jens' Briefing“")]


def test_preview_resolves_name_slash_step(seq_project):
    from newsletter.step import resolve_step, step_issue_slug

    project = Project.load(seq_project)
    assert resolve_step(project, "welcome/01").key == "willkommen"
    assert resolve_step(project, "welcome/tipps").path.name == "02-tipps.md"
    assert resolve_step(project, "sequences/welcome/03").key == "stimmen"
    assert step_issue_slug(project, "sequences/welcome/01") == "sequences/welcome/willkommen"
    assert step_issue_slug(project, "meta-ki-creator") is None


def test_bulk_unsubscribe_urls_are_the_same_tokens_and_verify():
    # The sequence runner (and bulk sends) make one URL per recipient with the fast maker.
    from newsletter import tokens

    key = "k" * 32
    for issue_id in (7, None):
        make = tokens.unsubscribe_url_maker("https://news.example.com", issue_id, key=key)
        for sid in (0, 1, 4711, 10**12):
            url = make(sid)
            if sid < 10**9:  # where itsdangerous would zlib-compress (10**12), only both verify
                assert url == tokens.unsubscribe_url(
                    "https://news.example.com", sid, issue_id, key=key
                )
            token = tokens.read_token(tokens.UNSUBSCRIBE, url.rsplit("/", 1)[1], key=key)
            assert (token.subscriber, token.issue) == (sid, issue_id)


@pytest.mark.slow
def test_uncertain_is_not_sent_again_unless_asked(seq_project, monkeypatch, cli):
    from tests.sendgrid_server import FakeSendGrid

    join(seq_project, "anna@example.de", T0)
    with FakeSendGrid(api_key="SG.k") as server:
        monkeypatch.setenv("SENDGRID_API_KEY", "SG.k")
        monkeypatch.setenv("SENDGRID_API_HOST", server.url)
        server.inject("drop", count=1)  # taken, then the connection closes unanswered
        assert run(seq_project, T0).uncertain == 1
        assert server.recipients() == ["anna@example.de"]
        assert run(seq_project, T0 + timedelta(minutes=5)).total == 0
        status = json.loads(cli(seq_project, "sequences", "status", "--format", "json").output)
        assert status["sequences"][0]["steps"][0]["uncertain"] == 1
        again = cli(seq_project, "sequences", "run", "--include-uncertain",
                    "--now", (T0 + timedelta(minutes=6)).isoformat())  # fmt: skip
        assert again.exit_code == 0, again.output
        assert "1 uncertain email is being sent again" in again.output
        assert server.recipients() == ["anna@example.de", "anna@example.de"]
        # The schedule goes on from there: step 2 three days later, once.
        run(seq_project, T0 + timedelta(days=4))
        run(seq_project, T0 + timedelta(days=4, minutes=1))
        assert server.recipients() == ["anna@example.de"] * 3


def test_send_refuses_a_step_but_sends_a_test_copy(seq_project, cli):
    """A step goes to each reader when due: `send` to the whole list would mail it to everyone."""
    root = seq_project
    add_subscriber(open_engine(Project.load(root).database_url), "leser@example.org")
    refused = cli(root, "send", "sequences/welcome/01", "--yes", "--outbox", str(root / "out"))
    assert refused.exit_code == 1
    assert "welcome-sequence step" in refused.output and "sequences run" in refused.output
    assert "Traceback" not in refused.output and not (root / "out").exists()
    copy = cli(root, "send", "sequences/welcome/01", "--test", "me@example.org",
               "--outbox", str(root / "out"))  # fmt: skip
    assert copy.exit_code == 0, copy.output
    assert len(list((root / "out").glob("*.eml"))) == 1


def test_custom_fields_and_first_names_are_each_readers_own(seq_project):
    """The step is personalized once per distinct value it reads, yet everyone gets their own
    greeting, custom field and unsubscribe link."""
    write_steps(
        seq_project,
        {
            "01-willkommen.md": STEP1.replace(
                "schön, dass du da bist!",
                'Grüße nach {{ subscriber.fields.stadt | default("überall") }}.',
            )
        },
    )
    join(seq_project, "anna@example.de", T0, first_name="Anna", fields={"stadt": "Köln"})
    join(seq_project, "jörg@example.de", T0, first_name="Jörg", fields={"stadt": "Görlitz"})
    join(seq_project, "ina@example.de", T0, first_name="Anna")
    run(seq_project, T0 + timedelta(minutes=1))
    got = bodies(seq_project, "Willkommen bei „Jens' Briefing“")
    assert "Hallo Anna, Grüße nach Köln." in got["anna@example.de"]
    assert "Hallo Jörg, Grüße nach Görlitz." in got["jörg@example.de"]
    assert "Hallo Anna, Grüße nach überall." in got["ina@example.de"]
    links = {a: [w for w in text.split() if "/unsubscribe/" in w] for a, text in got.items()}
    assert len({tuple(v) for v in links.values()}) == 3 and all(links.values())
