"""The sender threads' claims and answers on SQLite go through one writer that commits the
writes queued meanwhile together (group commit). Each thread must still see only its own
write's result or error, and a write that fails must not take the others down with it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from newsletter.errors import SendCancelled, SendError
from newsletter.sending import ledger as ledger_module
from newsletter.sending.ledger import Ledger
from newsletter.sending.transports import Outcome
from newsletter.store.engine import dispose_all, open_engine
from newsletter.store.schema import deliveries, send_totals, sends
from tests.support.ledger import readers_and_issue


@pytest.fixture
def setup(database_url: str) -> Any:
    yield readers_and_issue(database_url, 12, "gruppe")
    dispose_all()


def _states(engine: Any) -> dict[int, tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.subscriber_id, deliveries.c.send_id, deliveries.c.state)
        ).all()
    return {sid: (send, state) for sid, send, state in rows}


def test_threads_claiming_and_recording_at_once_keep_every_row(setup) -> None:
    """Six threads claim two readers each and record them accepted, all at once: every
    reader has one accepted row and the send's totals count all twelve (SQLite and
    PostgreSQL)."""
    engine, people, issue = setup
    ledger = Ledger(engine)
    send = ledger.create_send(issue, transport="sendgrid", segment=[], dry_run=False)
    ledger.start_totals(send, len(people))
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def sender(batch_no: int) -> None:
        ids = people[2 * (batch_no - 1) : 2 * batch_no]
        try:
            start.wait()
            assert ledger.claim(issue, send, batch_no, ids, [], slug="gruppe") == set(ids)
            accepted = Outcome("accepted", message_id=f"msg-{batch_no}")
            ledger.record_outcomes(issue, send, ids, [accepted] * len(ids), count=True)
        except BaseException as exc:  # (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _states(engine) == {sid: (send, "accepted") for sid in people}
    with engine.connect() as conn:
        accepted = conn.execute(
            select(send_totals.c.accepted).where(send_totals.c.send_id == send)
        ).scalar_one()
    assert accepted == len(people)


def _queued_behind_the_writer(engine: Any, jobs: list[Any]) -> list[Any]:
    """Run `jobs` (each in its own thread) while the SQLite writer's turn is held, so that
    they queue and the first to get the turn writes them all as one group; each job's result
    or exception, in order."""
    assert engine.dialect.name == "sqlite"
    ledger_module._writing(engine, lambda conn: None)  # (makes the database's writer)
    writer = ledger_module._sqlite_writers[engine]
    results: list[Any] = [None] * len(jobs)

    def run(index: int) -> None:
        try:
            results[index] = jobs[index]()
        except BaseException as exc:  # (the result to check)
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    with writer.turn:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(writer.queued) < len(jobs) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(writer.queued) == len(jobs), "the writes did not queue"
    for thread in threads:
        thread.join()
    return results


def test_a_clashing_claim_in_a_group_fails_alone(tmp_path) -> None:
    """Three claims committed as one group, one of them for a reader another send recorded
    first: that one stops with the clash error and records nothing, the other two are
    committed as they would be alone."""
    engine, people, issue = readers_and_issue(f"sqlite:///{tmp_path / 'group.db'}", 6, "gruppe")
    ledger = Ledger(engine)
    first = ledger.create_send(issue, transport="sendgrid", segment=[], dry_run=False)
    second = ledger.create_send(issue, transport="sendgrid", segment=[], dry_run=False)
    assert ledger.claim(issue, first, 1, people[:1], []) == {people[0]}
    commits: list[int] = []
    commit = ledger_module._GroupWriter._commit

    def counted(self: Any, group: list[Any]) -> None:
        commits.append(len(group))
        commit(self, group)

    ledger_module._GroupWriter._commit = counted  # type: ignore[method-assign]
    try:
        results = _queued_behind_the_writer(
            engine,
            [
                lambda: ledger.claim(issue, second, 1, people[1:3], [], slug="gruppe"),
                lambda: ledger.claim(
                    issue, second, 2, people[0:1] + people[3:4], [], slug="gruppe"
                ),
                lambda: ledger.claim(issue, second, 3, people[4:6], [], slug="gruppe"),
            ],
        )
    finally:
        ledger_module._GroupWriter._commit = commit  # type: ignore[method-assign]
        dispose_all()
    # (the first: `_queued_behind_the_writer` making the writer)
    assert commits == [1, 3], "the three claims were not written as one group"
    assert results[0] == set(people[1:3])
    assert isinstance(results[1], SendError)
    assert "another send of gruppe recorded some of this batch" in str(results[1])
    assert results[2] == set(people[4:6])
    states = _states(open_engine(f"sqlite:///{tmp_path / 'group.db'}"))
    assert states == {
        people[0]: (first, "in_flight"),
        **{sid: (second, "in_flight") for sid in people[1:3] + people[4:6]},
    }  # (nothing of the clashing batch: not even the reader nobody had)
    dispose_all()


def test_a_cancel_stops_the_claims_of_a_group_but_keeps_its_answers(tmp_path) -> None:
    """A claim and an answer queued together after `cancel` asked: the claim raises
    SendCancelled (nothing claimed), the answer is recorded."""
    engine, people, issue = readers_and_issue(f"sqlite:///{tmp_path / 'cancel.db'}", 4, "gruppe")
    ledger = Ledger(engine)
    send = ledger.create_send(issue, transport="sendgrid", segment=[], dry_run=False)
    ledger.start_totals(send, len(people))
    assert ledger.claim(issue, send, 1, people[:2], []) == set(people[:2])
    ledger.request_cancel([send])
    accepted = Outcome("accepted", message_id="msg-1")
    try:
        results = _queued_behind_the_writer(
            engine,
            [
                lambda: ledger.claim(issue, send, 2, people[2:], [], slug="gruppe"),
                lambda: ledger.record_outcomes(issue, send, people[:2], [accepted] * 2, count=True),
            ],
        )
    finally:
        dispose_all()
    assert isinstance(results[0], SendCancelled)
    assert results[1] is None
    engine = open_engine(f"sqlite:///{tmp_path / 'cancel.db'}")
    assert _states(engine) == {sid: (send, "accepted") for sid in people[:2]}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sends)).scalar_one() == 1
        totals = conn.execute(
            select(send_totals.c.accepted).where(send_totals.c.send_id == send)
        ).scalar_one()
    assert totals == 2
    dispose_all()
