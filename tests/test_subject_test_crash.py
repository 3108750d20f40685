"""kill -9 at each step of a subject-line test (real processes, a real fake-SendGrid process),
then rerun: 0 duplicates, 0 missed (but the batch in flight at a kill, `uncertain`), nobody
with both subjects; and two `run-due` runners at once send the rest once."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.project import Project
from newsletter.store import schema
from newsletter.store.engine import dispose_all, open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.support.sendgrid_process import (
    kill_when_in_flight,
    logged,
    sender_env,
    set_delay,
    slow_sendgrid,
)

KEY = "SG.subject-crash-key"
PEOPLE = 100
ISSUE = EXAMPLE_ISSUE.stem
SUBJECT_B = "Was Meta mit Creatorn vorhat"


@pytest.fixture
def sendgrid(tmp_path: Path):
    """The fake SendGrid in its own process, logging every accepted request whole (the
    subject included), slow enough to be killed in the middle."""
    log = tmp_path / "sendgrid.log"
    with slow_sendgrid(log, KEY, delay=0.2, recipients_only=False) as url:
        yield url, log


def received(log: Path) -> list[tuple[str, str]]:
    """(address, subject) of every copy the server accepted."""
    return [
        (p["to"][0]["email"], p.get("subject") or body["subject"])
        for body in logged(log)
        for p in body["personalizations"]
    ]


def _in_flight(engine) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(
                select(schema.deliveries.c.id).where(schema.deliveries.c.state == "in_flight")
            ).first()
            is not None
        )


def _kill_when_in_flight(child, engine, log: Path, url: str, at_least: int) -> None:
    kill_when_in_flight(
        child,
        url,
        sent_enough=lambda: len(received(log)) >= at_least,
        in_flight=lambda: _in_flight(engine),
        settle=0.4,
        what="it",
    )


def _uncertain(engine) -> set[str]:
    d, s = schema.deliveries.c, schema.subscribers.c
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(s.email)
                .join(schema.deliveries, d.subscriber_id == s.id)
                .where(d.state == "uncertain")
            ).scalars()
        )


@pytest.mark.slow
def test_kill_9_at_each_step_then_rerun(make_project, database_url, monkeypatch, sendgrid, cli):
    url, log = sendgrid
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    monkeypatch.setenv("SENDGRID_API_HOST", url)
    root = make_project(
        config=CONFIG + "\n[tracking]\nclicks = true\n[sending]\nbatch_size = 5\nconcurrency = 2\n"
    )
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    engine = open_engine(Project.load(root).database_url)
    everyone = {f"leser{i:03}@example.org" for i in range(PEOPLE)}
    for address in sorted(everyone):
        add_subscriber(engine, address)
    dispose_all()
    env = sender_env(url, KEY, database_url)

    def newsletter(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "newsletter", "--project", str(root), *args],
            env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    # Step 1: killed while the sample goes out (40 of 100: A 20, B 20).
    started = datetime.now(UTC)
    child = newsletter(
        "send", ISSUE, "--subject-b", SUBJECT_B, "--sample", "40%", "--decide-after", "1h",
        "--yes",
    )  # fmt: skip
    _kill_when_in_flight(child, engine, log, url, at_least=10)
    assert len(received(log)) < 40
    # Before the decision is due, run-due finishes the sample (and sends no one else).
    early = cli(root, "run-due", "--now", (started + timedelta(minutes=10)).isoformat())
    assert early.exit_code == 0, early.output
    assert "the decision is due at" in early.output
    sample = received(log)
    lost = _uncertain(engine)
    assert 1 <= len(lost) <= 10  # the batches in flight at the kill (concurrency 2 x 5)
    assert len(sample) + len(lost) >= 40 and len({a for a, _ in sample} | lost) == 40

    # Step 2: killed while the rest goes out, after the decision.
    set_delay(url, 0.2)
    due = (started + timedelta(hours=1, minutes=1)).isoformat()
    child = newsletter("run-due", "--now", due)
    _kill_when_in_flight(child, engine, log, url, at_least=len(sample) + 10)
    assert len(received(log)) < PEOPLE

    # Step 3: two runners at once finish the rest: one sends, the other finds it busy or done.
    runners = [newsletter("run-due", "--now", due) for _ in range(2)]
    outputs = [r.communicate(timeout=120)[0] for r in runners]
    assert all(r.returncode == 0 for r in runners), outputs
    final = cli(root, "run-due", "--now", due)
    assert final.exit_code == 0, final.output

    got = received(log)
    per_address = Counter(address for address, _ in got)
    assert max(per_address.values()) == 1, "somebody got the issue twice"
    subjects: dict[str, set[str]] = {}
    for address, subject in got:
        subjects.setdefault(address, set()).add(subject)
    assert all(len(s) == 1 for s in subjects.values()), "somebody got both subjects"
    lost = _uncertain(engine)
    assert set(per_address) | lost == everyone, "somebody was silently skipped"
    assert not set(per_address) & lost or all(per_address[a] == 1 for a in lost)
    with engine.connect() as conn:
        test = conn.execute(select(schema.subject_tests)).one()
        rows = conn.execute(select(schema.deliveries.c.state, schema.deliveries.c.send_round)).all()
    assert test.finished_at is not None and test.winner == "a"  # no clicks: within noise
    assert {r.send_round for r in rows} == {"first"} and len(rows) == PEOPLE
    winner_subject = "Meta, KI und das Ende der Creator?"
    rest = [subject for address, subject in got[len(sample) :]]
    assert set(rest) == {winner_subject}
