"""Subject-line tests (issue 24, item 4), end to end: `send --subject-b` sends subjects A and B
to random halves of a sample through the local SendGrid server; clicks come in through the
real Event Webhook; `newsletter run-due` at an injected time (--now) decides and sends the
winner to everyone else. Nobody gets two copies or both subjects; stats shows it all."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from newsletter.project import Project
from newsletter.sending.subject_test import ArmResult, judge, split
from newsletter.store import schema
from newsletter.store.engine import open_engine
from newsletter.web import create_app
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.sendgrid_server import copies
from tests.support.stats import post_events
from tests.support.web import event, live_server

ISSUE = EXAMPLE_ISSUE.stem
SUBJECT_A = "Meta, KI und das Ende der Creator?"
SUBJECT_B = "Was Meta mit Creatorn vorhat"


def _copies(sg) -> list[tuple[str, str]]:
    return [(c["to"][0]["email"], c["subject"]) for m in sg.messages for c in copies(m)]


def test_judge_uses_a_two_proportion_z_test_and_a_wins_within_noise():
    a, b = ArmResult("a", SUBJECT_A, 100, 10), ArmResult("b", SUBJECT_B, 100, 14)
    winner, why, z = judge(a, b, "clicks")
    assert winner == "a" and abs(z - 0.8704) < 0.001
    assert why.startswith("A wins: the difference is within noise")
    assert "A 10.0% (10 of 100) vs B 14.0% (14 of 100)" in why
    winner, why, z = judge(a, ArmResult("b", SUBJECT_B, 100, 25), "clicks")
    assert winner == "b" and z > 1.96 and why.startswith("B wins")
    assert judge(ArmResult("a", "x", 50, 20), ArmResult("b", "y", 50, 5), "replies")[0] == "a"


def test_split_is_a_random_sample_in_halves_and_the_rest():
    arms = split(range(1, 101), 20)
    assert len(arms["a"]) == 10 and len(arms["b"]) == 10 and len(arms["rest"]) == 80
    assert sorted(arms["a"] + arms["b"] + arms["rest"]) == list(range(1, 101))
    assert split([7], 20) == {"a": [], "b": [7], "rest": []}


@pytest.mark.slow
def test_sample_decision_at_an_injected_time_then_the_rest(
    make_project, database_url, monkeypatch, sg, signer, cli
):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(config=CONFIG + "\n[tracking]\nclicks = true\n")
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    readers = [f"leser{i:02}@example.de" for i in range(40)]
    for address in readers:
        assert cli(root, "subscribers", "add", address).exit_code == 0

    bad = cli(root, "send", ISSUE, "--subject-b", SUBJECT_B, "--by", "opens", "--yes")
    assert bad.exit_code == 1 and "--by opens needs open tracking" in bad.output
    assert cli(root, "send", ISSUE, "--sample", "20%", "--yes").exit_code == 2
    assert cli(root, "send", ISSUE, "--subject-b", "B", "--sample", "0%", "--yes").exit_code == 2

    started = datetime.now(UTC)
    result = cli(
        root, "send", ISSUE, "--subject-b", SUBJECT_B, "--sample", "50%", "--decide-after", "4h",
        "--by", "clicks", "--yes",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Sample:     20 (50%): A 10, B 10; decided by clicks after 4h" in result.output
    assert "The rest:   20 get the winner from `newsletter run-due`" in result.output
    sample = _copies(sg)
    assert Counter(subject for _, subject in sample) == {SUBJECT_A: 10, SUBJECT_B: 10}
    group_b = [address for address, subject in sample if subject == SUBJECT_B]

    # A plain send or --resume would send the rest the issue's subject: refused.
    plain = cli(root, "send", ISSUE, "--resume", "--yes")
    assert plain.exit_code == 1 and "is in a subject-line test" in plain.output

    early = cli(root, "run-due", "--now", (started + timedelta(hours=1)).isoformat())
    assert early.exit_code == 0, early.output
    assert "the decision is due at" in early.output
    assert len(sg.messages) == 2  # nothing more went out

    proj = Project.load(root)
    engine = open_engine(proj.database_url)
    with engine.connect() as conn:
        issue_id = conn.execute(select(schema.issues.c.id)).scalar_one()
        ids = dict(conn.execute(select(schema.subscribers.c.email, schema.subscribers.c.id)).all())
    with live_server(create_app(proj, engine)) as base:
        post_events(
            base,
            signer,
            [
                event("click", a, issue_id=issue_id, subscriber_id=ids[a], url="https://x.de/")
                for a in group_b[:8]
            ],
        )

    due = cli(root, "run-due", "--now", (started + timedelta(hours=4, minutes=1)).isoformat())
    assert due.exit_code == 0, due.output
    assert "B wins (A 0.0% (0 of 10) vs B 80.0% (8 of 10) by clicks" in due.output
    assert "subject-line test done" in due.output
    everything = _copies(sg)
    got = Counter(address for address, _ in everything)
    assert set(got) == set(readers) and max(got.values()) == 1, "twice, or somebody missed"
    rest = everything[len(sample) :]
    assert len(rest) == 20 and {subject for _, subject in rest} == {SUBJECT_B}

    assert cli(root, "run-due").output.strip() == "Nothing is due."
    stats = cli(root, "stats", ISSUE)
    assert "Subject-line test (by clicks, sample 50 %):" in stats.output
    assert f'subject "{SUBJECT_B}"' in stats.output and "B wins" in stats.output
    data = json.loads(cli(root, "stats", ISSUE, "--format", "json").output)["subject_test"]
    assert data["winner"] == "b" and data["arms"]["b"]["hits"] == 8
    assert data["arms"]["a"]["planned"] == 10 and data["arms"]["rest"]["got_it"] == 20
    assert data["decision"]["test"].startswith("two-proportion z-test")


def test_a_test_of_a_segment_is_recorded_with_it_and_resumes_within_it(
    make_project, database_url, monkeypatch, sg, cli
):
    """A subject-line test of `--where` went to the right readers but was recorded as one to
    the whole list: `sends` said "published (sent to the whole list)" (and `archive build`
    published it), and `send --resume` after it planned the whole list."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(config=CONFIG)
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    for i in range(6):
        stadt = "Passau" if i < 4 else "Köln"
        add = cli(root, "subscribers", "add", f"leser{i}@example.de", "--field", f"stadt={stadt}")
        assert add.exit_code == 0
    started = datetime.now(UTC)
    result = cli(
        root, "send", ISSUE, "--where", "field:stadt=Passau", "--subject-b", SUBJECT_B,
        "--sample", "50%", "--decide-after", "1h", "--yes",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    due = cli(root, "run-due", "--now", (started + timedelta(hours=1, minutes=1)).isoformat())
    assert due.exit_code == 0, due.output
    assert {address for address, _ in _copies(sg)} == {f"leser{i}@example.de" for i in range(4)}

    shown = cli(root, "sends", ISSUE).output
    assert "sent to the whole list" not in shown, shown
    assert "to --where field:stadt=Passau" in shown, shown
    before = len(_copies(sg))
    add = cli(root, "subscribers", "add", "neu@example.de", "--field", "stadt=Köln")
    assert add.exit_code == 0
    resumed = cli(root, "send", ISSUE, "--resume", "--yes")
    assert resumed.exit_code == 0, resumed.output
    assert len(_copies(sg)) == before, resumed.output  # nobody outside the segment


def _a_test_stored_before(database_url, step: str, columns: tuple[str, ...], segment: str):
    """The database as it was before migration `step` (its `columns` of `subject_tests`
    not there yet) holding one subject-line test; then opened, which runs `step`: the row."""
    from sqlalchemy import insert

    from tests.support.migrations import migrate_without, raw_engine

    old = raw_engine(database_url)
    migrate_without(old, step)
    now = datetime.now(UTC)
    with old.begin() as conn:  # the table as it was before `step`
        for column in columns:
            conn.exec_driver_sql(f"ALTER TABLE subject_tests DROP COLUMN {column}")
        issue_id = conn.execute(
            insert(schema.issues).values(
                slug="alt", title="Alt", subject="Alt", language="de", created_at=now
            )
        ).inserted_primary_key[0]
        conn.exec_driver_sql(
            "INSERT INTO subject_tests (issue_id, subject_a, subject_b, sample_percent, metric, "
            f"segment, created_at, decide_at) VALUES ({issue_id}, 'A', 'B', 20, 'clicks', "
            f"'{segment}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
    old.dispose()
    engine = open_engine(database_url)  # runs `step`
    with engine.connect() as conn:
        return conn.execute(select(schema.subject_tests)).one()


def test_m028_adds_the_segment_columns_and_keeps_tests_made_before(database_url):
    row = _a_test_stored_before(
        database_url,
        "m028_subject_test_segment",
        ("segment_name", "segment_definition"),
        '["leser"]',
    )
    assert (row.segment, row.segment_name, row.segment_definition) == (["leser"], None, None)


@pytest.mark.slow
def test_cancel_stops_an_undecided_test_the_sample_keeps_its_copies_the_rest_gets_nothing(
    make_project, database_url, monkeypatch, sg, cli
):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(config=CONFIG + "\n[tracking]\nclicks = true\n")
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    readers = [f"leser{i:02}@example.de" for i in range(20)]
    for address in readers:
        assert cli(root, "subscribers", "add", address).exit_code == 0
    started = datetime.now(UTC)
    result = cli(
        root, "send", ISSUE, "--subject-b", SUBJECT_B, "--sample", "50%", "--decide-after", "1h",
        "--by", "clicks", "--yes",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(_copies(sg)) == 10

    cancelled = cli(root, "cancel", ISSUE)
    assert cancelled.exit_code == 0, cancelled.output
    assert "Cancelled the subject-line test of meta-ki-creator" in cancelled.output
    assert "10 readers of the sample got it (that stays sent)" in cancelled.output
    assert "10 readers of the rest get nothing" in cancelled.output
    assert "newsletter send meta-ki-creator --resume" in cancelled.output

    # run-due (cron) no longer decides nor mails the rest, however late it runs.
    later = cli(root, "run-due", "--now", (started + timedelta(hours=5)).isoformat())
    assert later.exit_code == 0 and later.output.strip() == "Nothing is due.", later.output
    assert len(_copies(sg)) == 10

    shown = cli(root, "sends", ISSUE)
    assert "Subject-line test: cancelled" in shown.output, shown.output
    assert "10 of the sample got it, 0 of the rest (10) got the issue" in shown.output
    stats = cli(root, "stats", ISSUE)
    assert "cancelled" in stats.output and "0 of the rest (10) got the issue" in stats.output
    data = json.loads(cli(root, "stats", ISSUE, "--format", "json").output)["subject_test"]
    assert data["cancelled_at"] and data["winner"] is None

    again = cli(root, "cancel", ISSUE)
    assert again.exit_code == 1 and "no scheduled send to cancel" in again.output

    # The author may still send it to the rest deliberately: each reader has one copy.
    rest = cli(root, "send", ISSUE, "--resume", "--yes")
    assert rest.exit_code == 0, rest.output
    got = Counter(address for address, _ in _copies(sg))
    assert set(got) == set(readers) and max(got.values()) == 1


def test_m029_adds_cancelled_at_and_keeps_tests_made_before(database_url):
    row = _a_test_stored_before(
        database_url, "m029_subject_test_cancelled", ("cancelled_at",), "[]"
    )
    assert (row.subject_a, row.finished_at, row.cancelled_at) == ("A", None, None)


@pytest.mark.slow
def test_a_rest_planned_before_cancel_sends_nothing_after_it(
    make_project, database_url, monkeypatch, sg, cli
):
    """`cancel` between run-due's plan of the rest and its first batch: no sender to stop yet,
    so the send sees the cancelled test when it takes the lease, and stops."""
    from newsletter.sending.execute import execute
    from newsletter.sending.plan import SendRequest, plan_send
    from newsletter.sending.schedule import cancel_subject_test
    from newsletter.sending.subject_test import decide, find_test

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(config=CONFIG + "\n[tracking]\nclicks = true\n")
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    for i in range(10):
        assert cli(root, "subscribers", "add", f"leser{i:02}@example.de").exit_code == 0
    result = cli(
        root, "send", ISSUE, "--subject-b", SUBJECT_B, "--sample", "40%", "--yes",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    proj = Project.load(root)
    engine = open_engine(proj.database_url)
    now = datetime.now(UTC) + timedelta(hours=5)
    with engine.connect() as conn:
        issue_id = conn.execute(select(schema.issues.c.id)).scalar_one()
    decide(engine, find_test(engine, issue_id), now)
    plan = plan_send(proj, "meta-ki-creator", SendRequest(subject_test_arm="rest", now=now))
    assert plan.recipients == 6 and not plan.refusal

    done = cancel_subject_test(proj, "meta-ki-creator")
    assert done is not None and (done.sample, done.rest_sent, done.rest_left) == (4, 0, 6)
    report = execute(plan)
    assert report.cancelled and report.accepted == 0
    assert len(_copies(sg)) == 4
    later = cli(root, "run-due", "--now", (now + timedelta(hours=1)).isoformat())
    assert later.output.strip() == "Nothing is due." and len(_copies(sg)) == 4


def test_subject_b_that_is_the_issues_own_subject_is_refused(
    make_project, database_url, monkeypatch, sg, cli
):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(config=CONFIG)
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    assert cli(root, "subscribers", "add", "leser@example.de").exit_code == 0
    same = cli(root, "send", ISSUE, "--subject-b", f" {SUBJECT_A} ", "--yes")
    assert same.exit_code == 1
    assert same.output.startswith("Error: --subject-b is the issue's own subject"), same.output
    assert sg.messages == []
