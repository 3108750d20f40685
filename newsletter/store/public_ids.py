"""From what a token names to row ids. `tokens.read_token` already turned the public ids it
derives from row ids (every subscriber's since m018) back into row ids; a row id (those,
and tokens made before m015: links in old issues keep working) is taken as it is; a random
public id that m015 stored is looked up.

The lookups read `subscribers` and `issues` by their `public_id` column and write nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Table, select

from newsletter.store.schema import issues, subscribers

if TYPE_CHECKING:
    from newsletter.tokens import Ref, SubscriberToken


@dataclass(frozen=True)
class TokenIds:
    """The row ids a token names; None: nobody or nothing (erased, or never named)."""

    subscriber_id: int | None
    issue_id: int | None


def _row_id(conn: Connection, table: Table, ref: Ref) -> int | None:
    if ref is None or ref == 0:  # 0: the issue-only reply address of older tokens
        return None
    if isinstance(ref, int):
        return ref
    found = conn.execute(select(table.c.id).where(table.c.public_id == ref)).scalar()
    return None if found is None else int(found)


def resolve(conn: Connection, token: SubscriberToken) -> TokenIds:
    """The row ids `token` names (a public id no longer stored resolves to None)."""
    return TokenIds(
        subscriber_id=_row_id(conn, subscribers, token.subscriber),
        issue_id=_row_id(conn, issues, token.issue),
    )


def issue_public_id(conn: Connection, issue_id: int) -> str:
    """The issue's public id, for the tokens of its mails."""
    return str(conn.execute(select(issues.c.public_id).where(issues.c.id == issue_id)).scalar_one())
