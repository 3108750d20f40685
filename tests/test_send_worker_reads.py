"""A fresh send to a big list: its worker processes read their batches' readers themselves
(the sending process only cuts the planned ids into batches, claims, posts and records).
Whoever leaves before or while the send runs still gets nothing, and everyone else gets
exactly one copy (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from newsletter.project import Project
from newsletter.sending import execute as execute_module
from newsletter.sending.execute import execute
from newsletter.sending.plan import SendRequest, plan_send
from newsletter.store.engine import open_engine
from newsletter.store.schema import deliveries
from newsletter.store.subscribers import (
    add_subscriber,
    find_subscriber,
    forget_subscriber,
    set_status,
)
from tests.conftest import CONFIG, EXAMPLE_ISSUE


@pytest.fixture
def root(make_project, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    monkeypatch.setenv("NEWSLETTER_SEND_PARALLEL_FROM", "1")  # (workers for a small list)
    config = CONFIG.replace(
        'region = "global"\n', 'region = "global"\nbatch_size = 2\nconcurrency = 1\n'
    )
    root = make_project(config=config)
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    return root


def _no_reading_here(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("the sending process read the list itself")


def _send(root: Path, monkeypatch: pytest.MonkeyPatch, sg: Any, readers: int, **hooks: Any) -> Any:
    """Send to `readers` people through the fake SendGrid `sg` (`before`: called after
    planning; `progress`: after each batch). Returns (report, addresses SendGrid accepted,
    ledger states, engine)."""
    project = Project.load(root)
    engine = open_engine(project.database_url)
    for i in range(readers):
        add_subscriber(engine, f"leser{i}@example.org", first_name="Leser")
    monkeypatch.setattr(execute_module, "_rows", _no_reading_here)
    plan = plan_send(project, EXAMPLE_ISSUE.stem, SendRequest())
    if "before" in hooks:
        hooks["before"](engine)
    report = execute(plan, hooks.get("progress"))
    recipients = sg.recipients()
    with engine.connect() as conn:
        states = sorted(conn.execute(select(deliveries.c.state)).scalars())
    return report, recipients, states, engine


def test_the_workers_read_the_list_and_everyone_gets_one_copy(root, monkeypatch, sg):
    report, recipients, states, _ = _send(root, monkeypatch, sg, 9)
    assert report.error is None and report.accepted == 9
    assert sorted(recipients) == sorted(f"leser{i}@example.org" for i in range(9))
    assert states == ["accepted"] * 9


def test_people_who_leave_after_their_batch_was_read_get_nothing(root, monkeypatch, sg):
    """A worker read and prepared the third batch (leser4, leser5) before its claim; leser5
    unsubscribes and leser6 is forgotten just before that claim: the claim leaves leser5
    out, the batch's request is made again from leser4's row read anew, and leser6 gets
    nothing either; everyone else gets one copy."""
    from newsletter.sending.ledger import Ledger

    claim = Ledger.claim
    reread: list[list[int]] = []

    def leave_first(self: Ledger, issue_id: int, send_id: int, batch_no: int, *a, **k):
        if batch_no == 3:
            set_status(
                self.engine, find_subscriber(self.engine, "leser5@example.org").id, "unsubscribed"
            )
            forget_subscriber(self.engine, "leser6@example.org")
        return claim(self, issue_id, send_id, batch_no, *a, **k)

    again = execute_module.ListReader.again

    def counted(self: Any, ids: list[int]) -> Any:
        reread.append(list(ids))
        return again(self, ids)

    monkeypatch.setattr(Ledger, "claim", leave_first)
    monkeypatch.setattr(execute_module.ListReader, "again", counted)
    report, recipients, states, engine = _send(root, monkeypatch, sg, 10)
    assert report.error is None
    wanted = [f"leser{i}@example.org" for i in range(10) if i not in (5, 6)]
    assert sorted(recipients) == sorted(wanted)  # (each once)
    assert states == ["accepted"] * 8
    assert [find_subscriber(engine, "leser4@example.org").id] in reread


def test_a_batch_whose_readers_all_left_before_it_was_read_is_skipped(root, monkeypatch, sg):
    """Both readers of the third batch unsubscribe after planning, before any worker reads:
    that batch sends nothing and claims nobody; the others go out."""

    def leave(engine: Any) -> None:
        for address in ("leser4@example.org", "leser5@example.org"):
            set_status(engine, find_subscriber(engine, address).id, "unsubscribed")

    report, recipients, states, _ = _send(root, monkeypatch, sg, 8, before=leave)
    assert report.error is None and report.accepted == 6
    assert sorted(recipients) == sorted(
        f"leser{i}@example.org" for i in range(8) if i not in (4, 5)
    )
    assert states == ["accepted"] * 6


def test_a_resume_reads_the_list_in_the_sending_process(root, monkeypatch, sg):
    """A send whose issue has ledger rows already (a --resume) leaves out those who have it:
    the sending process reads the list as before, not the workers."""
    project = Project.load(root)
    engine = open_engine(project.database_url)
    for i in range(4):
        add_subscriber(engine, f"leser{i}@example.org", first_name="Leser")
    first = execute(plan_send(project, EXAMPLE_ISSUE.stem, SendRequest()))
    assert first.accepted == 4
    for i in range(4, 7):
        add_subscriber(engine, f"leser{i}@example.org", first_name="Leser")
    read: list[int] = []
    rows = execute_module._rows

    def counted(*args: Any, **kwargs: Any) -> Any:
        read.append(1)
        return rows(*args, **kwargs)

    monkeypatch.setattr(execute_module, "_rows", counted)
    again = execute(plan_send(project, EXAMPLE_ISSUE.stem, SendRequest(resume=True)))
    assert again.error is None and again.accepted == 3
    assert read, "a resume's list was not read by the sending process"
    assert sorted(sg.recipients()) == sorted(f"leser{i}@example.org" for i in range(7))


def test_the_workers_are_forked_while_the_send_has_no_other_thread(root, monkeypatch, sg):
    """The workers open database connections, so they must not inherit a lock that another
    thread of the send (the lease's heartbeat, a sender) held at the fork: they are forked
    before the send starts any thread (found in review: the pool forked at its first job,
    after the heartbeat had started)."""
    import os
    import threading

    real_fork = os.fork
    before_send: set[threading.Thread] = set()
    started_at_fork: list[list[str]] = []

    def fork() -> int:
        started = set(threading.enumerate()) - before_send
        started_at_fork.append(sorted(thread.name for thread in started))
        return real_fork()

    monkeypatch.setattr(os, "fork", fork)
    # (The fake SendGrid server's threads were there before the send.)
    report, recipients, _, _ = _send(
        root, monkeypatch, sg, 4, before=lambda engine: before_send.update(threading.enumerate())
    )
    assert report.error is None and len(recipients) == 4
    assert started_at_fork and all(names == [] for names in started_at_fork), started_at_fork
