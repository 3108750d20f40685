"""A sender that lost its lease (it stalled past LEASE_STALE_SECONDS and a `--resume` took over)
must stop before its next batch, not keep sending alongside the new owner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from newsletter.errors import SendError
from newsletter.project import Project
from newsletter.sending.execute import SendReport, execute
from newsletter.sending.ledger import Ledger
from newsletter.sending.plan import SendRequest, plan_send
from newsletter.store.engine import open_engine
from newsletter.store.issues import ensure_issue
from newsletter.store.schema import deliveries, send_leases, sends
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE
from tests.sendgrid_server import FakeSendGrid, copies
from tests.support.waiting import wait_until

KEY = "SG.lease-test-key"


@pytest.fixture
def root(make_project, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    config = CONFIG.replace(
        'region = "global"\n', 'region = "global"\nbatch_size = 2\nconcurrency = 1\n'
    )
    root = make_project(config=config)
    (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
    return root


def send_and_take_over(root: Path, monkeypatch: pytest.MonkeyPatch, readers: int):
    """Send to `readers` people; at the first settled batch a `--resume` takes the lease over.
    Returns (the SendError raised, the addresses the fake SendGrid accepted, the engine)."""
    project = Project.load(root)
    engine = open_engine(project.database_url)
    for i in range(readers):
        add_subscriber(engine, f"leser{i}@example.org", first_name="Leser")
    with FakeSendGrid(api_key=KEY, verified_senders=["jens@example.com"]) as sg:
        monkeypatch.setenv("SENDGRID_API_HOST", sg.url)
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        plan = plan_send(project, EXAMPLE_ISSUE.stem, SendRequest())

        def take_over(report: SendReport) -> None:
            # What a resumer does to a lease it judges stale: compare-and-swap the owner.
            with engine.begin() as conn:
                conn.execute(update(send_leases).values(owner="the-resumer", pid=1))

        with pytest.raises(SendError, match="took over") as caught:
            execute(plan, take_over)
        return caught.value, sorted(sg.recipients()), engine


def test_sender_stops_when_its_lease_was_taken_over(root, monkeypatch):
    error, delivered, engine = send_and_take_over(root, monkeypatch, 6)
    assert KEY not in str(error)
    # With concurrency 1 batch 1 settles before batch 2 is claimed: after the takeover
    # nothing more goes out.
    assert delivered == ["leser0@example.org", "leser1@example.org"]
    with engine.connect() as conn:
        states = conn.execute(select(deliveries.c.state)).scalars().all()
        status, error = conn.execute(select(sends.c.status, sends.c.error)).one()
        lease_owner = conn.execute(select(send_leases.c.owner)).scalar_one()
    assert sorted(states) == ["accepted"] * 2
    assert status == "stopped" and "took over" in error  # what `newsletter sends` shows
    # The new owner's lease is left alone.
    assert lease_owner == "the-resumer"


@pytest.mark.slow
def test_totals_after_a_lost_lease_count_what_was_accepted(root, monkeypatch):
    """Four batches in flight when the lease is lost: each sender thread records its batch
    and adds it to the send's totals in one transaction, so what `sends` and `stats` count
    agrees with the ledger (found in review: the totals had stayed at 0)."""
    from newsletter.store.schema import send_totals

    config = root / "newsletter.toml"
    config.write_text(
        config.read_text("utf-8").replace("concurrency = 1", "concurrency = 4"), "utf-8"
    )
    _, delivered, engine = send_and_take_over(root, monkeypatch, 40)
    with engine.connect() as conn:
        states = conn.execute(select(deliveries.c.state)).scalars().all()
        accepted, failed, uncertain = conn.execute(
            select(send_totals.c.accepted, send_totals.c.failed, send_totals.c.uncertain)
        ).one()
    assert 2 <= len(delivered) < 40  # some went out before the takeover was seen, not all
    assert sorted(states) == ["accepted"] * len(delivered)  # nothing is left in flight
    assert (accepted, failed, uncertain) == (len(delivered), 0, 0)


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_heartbeat_survives_a_dropped_database_connection(database_url):
    """A PostgreSQL restart (or a killed connection) must not kill the heartbeat thread: else
    a long send looks dead after LEASE_STALE_SECONDS and a --resume may take it over."""
    import threading

    from sqlalchemy import text

    engine = open_engine(database_url)
    ledger = Ledger(engine)
    issue_id = ensure_issue(engine, slug="hb", title="t", subject="s", language="de")
    send_id = ledger.create_send(issue_id, transport="sendgrid", segment=[], dry_run=False)
    lease = ledger.acquire_lease(issue_id, send_id, "hb")

    def heartbeat_at() -> Any:
        with engine.connect() as conn:
            return conn.execute(select(send_leases.c.heartbeat_at)).scalar_one()

    crashed: list[BaseException] = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: crashed.append(args.exc_value)  # type: ignore[assignment]
    try:
        lease.start_heartbeat(interval=0.05)
        started = heartbeat_at()
        wait_until(lambda: heartbeat_at() > started, "a first heartbeat")
        # Kill every other connection to the database, as a server restart would.
        with open_engine(database_url).connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        engine.pool.dispose()  # this thread's pooled connections were killed too
        before = heartbeat_at()
        # The heartbeat meets its dead connection, then beats on with a new one.
        wait_until(lambda: heartbeat_at() > before, "a heartbeat after the restart")
        assert lease._thread is not None and lease._thread.is_alive(), crashed
    finally:
        threading.excepthook = previous_hook
        lease.release()
    assert crashed == []


@pytest.mark.slow
def test_resume_after_a_crash_in_the_last_batch_takes_over(root, cli, monkeypatch):
    """Killed while its last batch was in flight: everyone has a row, so nobody is left
    to send to, yet --resume must still take over, so those rows become uncertain (and
    --include-uncertain can reach them) instead of staying in flight forever."""
    import os
    import socket
    import subprocess
    import sys
    from datetime import UTC, datetime

    project = Project.load(root)
    engine = open_engine(project.database_url)
    ledger = Ledger(engine)
    people = [add_subscriber(engine, f"leser{i}@example.org", first_name="Leser") for i in range(2)]
    issue_id = ensure_issue(engine, slug="meta-ki-creator", title="t", subject="s", language="de")
    send_id = ledger.create_send(issue_id, transport="sendgrid", segment=[], dry_run=False)
    ledger.claim(issue_id, send_id, 1, [p.id for p in people], [])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with engine.begin() as conn:
        conn.execute(
            send_leases.insert().values(
                issue_id=issue_id,
                send_id=send_id,
                owner="killed",
                host=socket.gethostname(),
                pid=dead.pid,
                heartbeat_at=datetime.now(UTC),
            )
        )
    assert not os.path.exists(f"/proc/{dead.pid}")
    with FakeSendGrid(api_key=KEY, verified_senders=["jens@example.com"]) as sg:
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", sg.url)
        resumed = cli(root, "send", EXAMPLE_ISSUE.stem, "--resume", "--yes")
        assert resumed.exit_code == 0, resumed.output
        assert "2 recipients were in flight" in resumed.output
        assert "its process is gone" not in cli(root, "sends").output
        covered = cli(root, "send", EXAMPLE_ISSUE.stem, "--resume", "--include-uncertain", "--yes")
        assert covered.exit_code == 0, covered.output
        assert sorted(sg.recipients()) == ["leser0@example.org", "leser1@example.org"]


@pytest.mark.slow
def test_an_event_that_beats_the_answer_is_not_overwritten(root, cli, monkeypatch):
    """SendGrid may deliver (or bounce) and post the event before its answer to our request is
    settled: the ledger must keep "delivered"/"bounced", not fall back to "accepted"."""
    import threading
    import time

    from newsletter import events
    from newsletter.store.schema import CUSTOM_ARG_ISSUE, CUSTOM_ARG_SUBSCRIBER

    project = Project.load(root)
    engine = open_engine(project.database_url)
    for i in range(2):
        add_subscriber(engine, f"leser{i}@example.org", first_name="Leser")
    with FakeSendGrid(api_key=KEY, verified_senders=["jens@example.com"]) as sg:
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", sg.url)
        sg.inject("delay", seconds=1.0)  # the answer to the (only) request comes late

        def events_first() -> None:
            deadline = time.monotonic() + 10
            while not sg.requests and time.monotonic() < deadline:
                time.sleep(0.01)
            batch = []
            for n, p in enumerate(copies(sg.requests[0]["body"])):
                batch.append(
                    {
                        "event": "delivered" if n == 0 else "bounce",
                        "type": "bounce",
                        "sg_event_id": f"early-{n}",
                        "email": p["to"][0]["email"],
                        "timestamp": int(time.time()),
                        CUSTOM_ARG_ISSUE: p["custom_args"][CUSTOM_ARG_ISSUE],
                        CUSTOM_ARG_SUBSCRIBER: p["custom_args"][CUSTOM_ARG_SUBSCRIBER],
                    }
                )
            events.ingest(engine, batch)
            in_time.append(sg.requests[0]["status"] is None)  # before SendGrid answered

        in_time: list[bool] = []
        early = threading.Thread(target=events_first)
        early.start()
        result = cli(root, "send", EXAMPLE_ISSUE.stem, "--yes")
        early.join()
        assert result.exit_code == 0, result.output
        assert in_time == [True], "the events came too late to test anything"
    with engine.connect() as conn:
        states = sorted(conn.execute(select(deliveries.c.state)).scalars())
    assert states == ["bounced", "delivered"]


@pytest.mark.slow
def test_people_who_leave_while_the_send_runs_are_not_sent_to(root, monkeypatch):
    """Recipients are read ahead of their batch: someone who unsubscribes in the meantime
    gets nothing, and someone forgotten (`remove --forget`) does not stop the send."""
    from newsletter.store.subscribers import find_subscriber, forget_subscriber, set_status

    project = Project.load(root)
    engine = open_engine(project.database_url)
    for i in range(6):
        add_subscriber(engine, f"leser{i}@example.org", first_name="Leser")
    with FakeSendGrid(api_key=KEY, verified_senders=["jens@example.com"]) as sg:
        monkeypatch.setenv("SENDGRID_API_HOST", sg.url)
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        plan = plan_send(project, EXAMPLE_ISSUE.stem, SendRequest())
        left = []

        def leave(report: SendReport) -> None:
            if not left:  # after the first batch: all six were read long ago
                set_status(engine, find_subscriber(engine, "leser3@example.org").id, "unsubscribed")
                forget_subscriber(engine, "leser4@example.org")
                left.append(True)

        report = execute(plan, leave)
        assert report.error is None
        assert sorted(sg.recipients()) == [f"leser{i}@example.org" for i in (0, 1, 2, 5)]
    with engine.connect() as conn:
        states = sorted(conn.execute(select(deliveries.c.state)).scalars())
    assert states == ["accepted"] * 4


def test_recording_a_batch_looks_rows_up_by_the_unique_key(tmp_path) -> None:
    """Each batch's answer is recorded by (issue, subscriber): a plan that walks the whole
    send instead makes a million-recipient send quadratic."""
    from sqlalchemy import event as sa_event

    from newsletter.store.engine import open_engine

    engine = open_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    statements: list[tuple[str, object]] = []
    sa_event.listen(
        engine,
        "before_cursor_execute",
        lambda conn, cursor, sql, params, *rest: statements.append((sql, params)),
    )
    Ledger(engine).record(1, [1, 2, 3], "accepted", message_id="m", send_id=7)
    [(update_sql, params)] = [s for s in statements if s[0].lstrip().upper().startswith("UPDATE")]
    with engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + update_sql, params).all()
    detail = " ".join(str(row[-1]) for row in plan)
    # Either index that starts with both key columns finds each row directly: the unique key,
    # or the segments' index by reader (subscriber, issue), which SQLite may prefer.
    by_key = "sqlite_autoindex_deliveries" in detail or (
        "ix_deliveries_subscriber (subscriber_id=? AND issue_id=?)" in detail
    )
    assert by_key and "ix_deliveries_send_state" not in detail, detail


def test_a_claim_that_clashes_with_another_sends_rows_stops_and_records_nothing(root):
    """Two sends of one issue must never both hand a reader over: a claim whose readers
    another send has recorded already stops with a clear error, and none of its batch is
    recorded (not even the readers nobody had)."""
    engine = open_engine(Project.load(root).database_url)
    people = [add_subscriber(engine, f"leser{i}@example.org").id for i in range(3)]
    issue = ensure_issue(engine, slug="zwei", title="Zwei", subject="Zwei", language="de")
    ledger = Ledger(engine)
    first = ledger.create_send(issue, transport="sendgrid", segment=[], dry_run=False)
    second = ledger.create_send(issue, transport="sendgrid", segment=[], dry_run=False)
    assert ledger.claim(issue, first, 1, people[:2], []) == set(people[:2])
    with pytest.raises(SendError, match="another send of zwei recorded some of this batch"):
        ledger.claim(issue, second, 1, people[1:], [], slug="zwei")
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.subscriber_id, deliveries.c.send_id)).all()
    assert sorted(rows) == [(people[0], first), (people[1], first)]
    # The connection is usable again: the next claim of the third reader alone works.
    assert ledger.claim(issue, second, 2, people[2:], [], slug="zwei") == {people[2]}
