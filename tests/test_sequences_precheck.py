"""`sequences run` decides "nothing to do" with a few plain queries before it loads SQLAlchemy,
the transport or the renderer (`newsletter.sequences.precheck`). It must never say so while
the full run would reap, reschedule or send something: these tests hold it to the full run's
answer, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from newsletter.project import Project
from newsletter.sending.ledger import Ledger
from newsletter.sequences.precheck import nothing_to_do
from newsletter.store.engine import open_engine
from newsletter.store.issues import ensure_issue
from newsletter.store.schema import send_leases
from tests.conftest import CONFIG, REPO
from tests.support.sequences import SEQUENCE, STEP1, STEP2, T0, join, received, run, write_steps


@pytest.fixture
def project(make_project, database_url, monkeypatch) -> Path:
    root = make_project(CONFIG + SEQUENCE)
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    write_steps(root, {"01-willkommen.md": STEP1, "02-tipps.md": STEP2})
    return root


def idle(root: Path, at) -> bool:
    return nothing_to_do(Project.load(root), at)


@pytest.mark.slow
def test_nothing_to_do_only_when_the_full_run_would_do_nothing(project):
    join(project, "anna@example.de", T0)  # her first step is due at T0
    before = T0 - timedelta(hours=1)
    # The schedule's shape was never recorded: the full run must record it.
    assert not idle(project, before)
    assert run(project, before).total == 0
    assert idle(project, before)

    assert not idle(project, T0)  # Anna is due
    assert run(project, T0).accepted == 1
    assert idle(project, T0)
    assert received(project) == [("anna@example.de", "Willkommen bei „Jens' Briefing“")]

    # The steps changed: the people waiting must be rescheduled.
    write_steps(project, {"01-willkommen.md": STEP1, "02-tipps.md": STEP2.replace("3d", "1d")})
    assert not idle(project, T0)
    run(project, T0)
    assert idle(project, T0)

    # Step 2, now 1 day after step 1, is due a day later.
    assert not idle(project, T0 + timedelta(days=1, hours=1))


@pytest.mark.slow
def test_an_unfinished_run_is_left_to_the_full_run(project):
    run(project, T0)
    assert idle(project, T0)
    engine = open_engine(Project.load(project).database_url)
    issue_id = ensure_issue(engine, slug="gone", title="t", subject="s", language="de")
    send_id = Ledger(engine).create_send(issue_id, transport="outbox", segment=[], dry_run=False)
    with engine.begin() as conn:  # a run that died (or is still sending): its lease
        conn.execute(
            insert(send_leases).values(
                send_id=send_id,
                owner="x" * 32,
                source="sequences",
                host="elsewhere",
                pid=1,
                heartbeat_at=T0,
            )
        )
    assert not idle(project, T0)
    run(project, T0)  # its heartbeat is old: reaped
    with engine.connect() as conn:
        assert conn.execute(select(send_leases.c.owner)).first() is None
    assert idle(project, T0)


def test_a_step_that_does_not_load_is_left_to_the_full_run_which_says_so(project):
    run(project, T0)
    (project / "sequences" / "welcome" / "02-tipps.md").write_text("---\ndelay: bald\n---\nx\n")
    assert not idle(project, T0)
    assert any("welcome skipped" in error for error in run(project, T0).errors)


def test_no_database_yet_is_left_to_the_full_run_and_not_created(make_project, tmp_path):
    root = make_project(CONFIG + SEQUENCE)
    write_steps(root, {"01-willkommen.md": STEP1})
    os.environ.pop("NEWSLETTER_DATABASE_URL", None)
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    os.environ["NEWSLETTER_DATABASE_URL"] = url
    try:
        assert not idle(root, T0)
        assert not (tmp_path / "missing.db").exists()
    finally:
        del os.environ["NEWSLETTER_DATABASE_URL"]


@pytest.mark.slow
def test_a_run_with_nothing_due_does_not_load_sqlalchemy_or_the_transport(project):
    run(project, T0)
    script = (
        "import sys\n"
        "from newsletter.cli import main\n"
        "main(sys.argv[1:], standalone_mode=False)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'sqlalchemy', 'sendgrid', 'premailer', 'mjml'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "--project", str(project), "sequences", "run",
         "--now", T0.isoformat()],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["nothing was due", "[]"]
