"""A sending loop's claims and answers on SQLite go through one connection of their own that
skips SQLite's foreign-key lookups (`Ledger.writing`): the rows they write point at parents
that are known to be there. Every other connection keeps its foreign keys: an erasure after
the send still takes the person's ledger rows with it, also after a claim that failed."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from newsletter.errors import SendError
from newsletter.sending import ledger as ledger_module
from newsletter.sending.ledger import Ledger
from newsletter.sending.transports import Outcome
from newsletter.store.engine import dispose_all
from newsletter.store.schema import deliveries
from newsletter.store.subscribers import forget_subscriber
from tests.support.ledger import readers_and_issue


@pytest.fixture
def setup(database_url: str) -> Any:
    yield readers_and_issue(database_url, 4, "sitzung")
    dispose_all()


def _foreign_keys_of_pooled_connections(engine: Any, how_many: int = 6) -> set[int]:
    """PRAGMA foreign_keys of `how_many` connections checked out of the pool at once."""
    held = [engine.connect() for _ in range(how_many)]
    try:
        return {conn.exec_driver_sql("PRAGMA foreign_keys").scalar() for conn in held}
    finally:
        for conn in held:
            conn.close()


def _rows_of(engine: Any, subscriber_id: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(deliveries.c.subscriber_id == subscriber_id)
            ).scalar_one()
        )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # SQLite's setting
def test_a_sending_loop_writes_without_foreign_key_lookups_and_gives_them_back(setup) -> None:
    engine, people, issue = setup
    ledger = Ledger(engine)
    send = ledger.create_send(issue, transport="sendgrid")
    ledger.start_totals(send, len(people))

    def setting(conn: Any) -> int:
        return int(conn.exec_driver_sql("PRAGMA foreign_keys").scalar())

    assert ledger_module._writing(engine, setting) == 1  # (outside a loop: as ever)
    with ledger.writing():
        assert ledger_module._writing(engine, setting) == 0
        assert ledger.claim(issue, send, 1, people, [], slug="sitzung") == set(people)
        ledger.record_outcomes(
            issue, send, people, [Outcome("accepted", message_id="msg-1")] * 4, count=True
        )
        with ledger.writing():  # (a second loop of the process at once shares it)
            assert ledger_module._writing(engine, setting) == 0
        assert ledger_module._writing(engine, setting) == 0
    assert ledger_module._writing(engine, setting) == 1
    assert _foreign_keys_of_pooled_connections(engine) == {1}
    # The rows are whole, and an erasure (ON DELETE CASCADE) still takes them along.
    assert _rows_of(engine, people[0]) == 1
    assert forget_subscriber(engine, "leser0@example.org")
    assert _rows_of(engine, people[0]) == 0


def test_a_refused_claim_in_a_loop_leaves_the_connections_as_they_were(setup) -> None:
    """A claim whose lease was taken over raises; the loop's connection is given back with
    its foreign keys on (SQLite and PostgreSQL)."""
    engine, people, issue = setup
    ledger = Ledger(engine)
    send = ledger.create_send(issue, transport="sendgrid")
    ledger.start_totals(send, len(people))
    with ledger.writing():
        assert ledger.claim(issue, send, 1, people[:2], [], slug="sitzung") == set(people[:2])
        with pytest.raises(SendError, match="another process took over"):
            ledger.claim(issue, send, 2, people[2:], [], owner="not-the-holder", slug="sitzung")
        ledger.record_outcomes(
            issue, send, people[:2], [Outcome("accepted", message_id="msg-1")] * 2, count=True
        )
    if engine.dialect.name == "sqlite":
        assert _foreign_keys_of_pooled_connections(engine) == {1}
    assert [_rows_of(engine, sid) for sid in people] == [1, 1, 0, 0]
    assert forget_subscriber(engine, "leser1@example.org")
    assert _rows_of(engine, people[1]) == 0
