"""Who a send goes to: the subscribed people of its tags and segment, as ids read once at
planning time (`planned_recipients`), or only counted (`count_recipients`).

Both the plan of a first send (`plan.py`) and of a resend to the new readers (`resend.py`)
fix their recipients here, so neither needs the other.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, exists, func, select

from newsletter.store.raw import driver_rows
from newsletter.store.schema import SubscriberStatus, deliveries, subscribers
from newsletter.store.subscribers import segment_filters


def max_subscriber_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(subscribers.c.id))).scalar() or 0)


def _recipient_conditions(
    tags: Sequence[str],
    up_to_id: int,
    issue_id: int | None,
    again: Sequence[str],
    where: Sequence[Any] = (),
) -> list[Any]:
    """Subscribed people (of the tags and the segment's `where`, id <= up_to_id); with
    `issue_id`, only those with no ledger row for it or one in an `again` state (who a
    --resume reaches)."""
    conditions = [
        *segment_filters(SubscriberStatus.SUBSCRIBED, tags),
        *where,
        subscribers.c.id <= up_to_id,
    ]
    if issue_id is not None:
        done = exists().where(
            deliveries.c.issue_id == issue_id,
            deliveries.c.subscriber_id == subscribers.c.id,
            deliveries.c.state.not_in(list(again)),
        )
        conditions.append(~done)
    return conditions


def count_recipients(
    engine: Engine,
    tags: Sequence[str],
    up_to_id: int,
    issue_id: int | None = None,
    again: Sequence[str] = (),
    where: Sequence[Any] = (),
) -> int:
    """How many people `planned_recipients` would fix (without reading their ids)."""
    conditions = _recipient_conditions(tags, up_to_id, issue_id, again, where)
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(subscribers).where(*conditions)
            ).scalar_one()
        )


def planned_recipients(
    engine: Engine,
    tags: Sequence[str],
    up_to_id: int,
    issue_id: int | None = None,
    again: Sequence[str] = (),
    where: Sequence[Any] = (),
) -> array[int]:
    """The ids of the people a send goes to, ascending (see `_recipient_conditions`), as a
    compact array: 100,000 readers take 800 kB. `where`: more conditions on `subscribers`
    (a resend to the new readers: joined after the first send)."""
    conditions = _recipient_conditions(tags, up_to_id, issue_id, again, where)
    statement = select(subscribers.c.id).where(*conditions).order_by(subscribers.c.id)
    with engine.connect() as conn:
        # The driver's own rows: SQLAlchemy's result objects cost more than the query.
        return array("q", (row[0] for row in driver_rows(conn, statement)))
