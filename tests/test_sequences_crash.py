"""kill -9 a real `sequences run` in the middle of 5,000 due steps, then run again: nobody
gets a step twice, nobody is missed (the batches in flight at the kill are `uncertain`).
And two runners at once against one database: nobody gets a step twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.schema import deliveries, subscribers
from tests.conftest import CONFIG, REPO, TEST_SECRET
from tests.support.sendgrid_process import (
    kill_when_in_flight,
    logged_recipients,
    set_delay,
    slow_sendgrid,
)
from tests.support.sequences import SEQUENCE, STEP1, add_people_due, write_steps

KEY = "SG.sequence-crash-key"
#: Small batches so the kill lands mid-run; the setting's section depends on the sending core.
BATCHES = 'region = "global"\n\n[sending]\nbatch_size = 100\nconcurrency = 2\n'


def received(log: Path) -> list[str]:
    return logged_recipients(log)


@pytest.fixture
def server_process(tmp_path: Path):
    log = tmp_path / "sendgrid.log"
    with slow_sendgrid(log, KEY) as url:
        yield url, log


def everyone_due(make_project, database_url, monkeypatch, people: int) -> tuple[Path, set[str]]:
    """A project whose welcome step is due for `people` subscribers (started with --existing)."""
    root = make_project(CONFIG.replace('region = "global"\n', BATCHES) + SEQUENCE)
    write_steps(root, {"01-willkommen.md": STEP1})
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    everyone = add_people_due(root, people)
    return root, everyone


def runner(root: Path, url: str, database_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SENDGRID_API_KEY": KEY,
        "SENDGRID_API_HOST": url,
        "NEWSLETTER_SECRET_KEY": TEST_SECRET,
        "NEWSLETTER_DATABASE_URL": database_url,
    }
    now = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--project", str(root), "sequences", "run",
         "--now", now],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun(make_project, database_url, server_process, cli, monkeypatch):
    url, log = server_process
    root, everyone = everyone_due(make_project, database_url, monkeypatch, 5000)
    child = runner(root, url, database_url)
    engine = open_engine(Project.load(root).database_url)

    def in_flight() -> bool:
        with engine.connect() as conn:
            flying = select(deliveries.c.id).where(deliveries.c.state == "in_flight")
            return conn.execute(flying).first() is not None

    # Killed while a batch is in flight (on a loaded machine the run may sit between batches
    # for a while, leaving nothing for the next run to reap: not the case this test is about).
    kill_when_in_flight(
        child,
        url,
        sent_enough=lambda: len(received(log)) >= 1000,
        in_flight=in_flight,
        settle=0.5,
        what="the run",
    )
    before = received(log)
    assert 1000 <= len(before) < 5000

    # `sends` must not send anyone to `send --resume` for a step: the next run reaps it.
    assert "--resume" not in cli(root, "sends").output
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    monkeypatch.setenv("SENDGRID_API_HOST", url)
    rerun = cli(
        root, "sequences", "run", "--now", (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    )
    assert rerun.exit_code == 0, rerun.output
    assert "were in flight when an earlier run stopped" in rerun.output

    got = Counter(received(log))
    assert max(got.values()) == 1, "somebody received the step twice"
    with engine.connect() as conn:
        rows = conn.execute(
            select(subscribers.c.email, deliveries.c.state).join(
                subscribers, subscribers.c.id == deliveries.c.subscriber_id
            )
        ).all()
    state = {r.email: r.state for r in rows}
    uncertain = {e for e, s in state.items() if s == "uncertain"}
    assert 1 <= len(uncertain) <= 200  # at most `concurrency` batches of 100 were in flight
    assert set(state) == everyone, "somebody has no ledger row"
    assert set(got) | uncertain == everyone, "somebody was missed"
    assert {s for e, s in state.items() if e not in uncertain} == {"accepted"}
    # Nothing is left to do, and a third run sends nothing.
    again = cli(
        root, "sequences", "run", "--now", (datetime.now(UTC) + timedelta(minutes=3)).isoformat()
    )
    assert again.exit_code == 0 and len(received(log)) == len(got)
    status = json.loads(cli(root, "sequences", "status", "--format", "json").output)
    step = status["sequences"][0]["steps"][0]
    assert step["got"] + step["uncertain"] == 5000 and step["waiting"] == 0


@pytest.mark.slow
def test_two_runners_at_once_send_each_step_once(
    make_project, database_url, server_process, monkeypatch
):
    url, log = server_process
    set_delay(url, 0.1)
    root, everyone = everyone_due(make_project, database_url, monkeypatch, 3000)
    first = runner(root, url, database_url)
    second = runner(root, url, database_url)
    outputs = [p.communicate(timeout=120) for p in (first, second)]
    for proc, (_out, err) in zip((first, second), outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    got = Counter(received(log))
    assert max(got.values()) == 1, "somebody received the step twice"
    assert set(got) == everyone
    sent = [int(out.decode().split(": ")[1].split(" sent")[0]) for out, _ in outputs]
    assert sum(sent) == 3000 and min(sent) > 0, sent  # both runners took their share
