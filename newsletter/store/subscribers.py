"""Subscribers: the public API the CLI, the senders and the web endpoints build on.

Plain SQLAlchemy Core functions over an Engine (or, where noted, a Connection, so a caller
can make a status change part of its own transaction). Addresses are normalized with
`normalize_email`; `email_key` (lower-cased) makes an address unique whatever its case.

Tag filters (`tags=`) match a subscriber who has ANY of the given tags.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    Table,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from newsletter.errors import StoreError
from newsletter.store import raw, suppressions
from newsletter.store.consent import has_evidence
from newsletter.store.emails import email_key, normalize_email
from newsletter.store.names import clean_name
from newsletter.store.raw import placeholder
from newsletter.store.schema import (
    STATUSES,
    metadata,
    status_is,
    subscriber_tags,
    subscribers,
)
from newsletter.store.times import as_utc

# Statuses that an import or a form must never turn back into `subscribed` on its own;
# defined apart from SQLAlchemy (the import's reader process needs them), offered here too.
from newsletter.subscriber_status import STOPPED as STOPPED

__all__ = [
    "STATUSES",
    "BulkWriter",
    "Subscriber",
    "add_subscriber",
    "add_tags",
    "count_subscribers",
    "find_subscriber",
    "forget_subscriber",
    "get_subscriber",
    "iter_subscribers",
    "normalize_email",
    "normalize_tags",
    "remove_tags",
    "set_status",
    "tables_referencing_subscribers",
    "update_subscriber",
]


#: Rows fetched per round trip when streaming; keeps memory flat for any list size.
PAGE_SIZE = 1000


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str | None
    first_name: str | None
    last_name: str | None
    status: str
    tags: tuple[str, ...]
    fields: dict[str, Any] = field(hash=False)
    source: str | None
    created_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    unsubscribe_reason: str | None
    updated_at: datetime | None = None
    #: The random public id m015 stored, which links sent before still carry; None for
    #: readers added since m018, whose links carry one derived from `id` (`tokens.public_id`).
    public_id: str | None = None

    def template_context(self) -> dict[str, Any]:
        """What templates see as `subscriber` (no status or timestamps)."""
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "fields": dict(self.fields),
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (ISO 8601 times), as `show` and `export` print it."""
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "status": self.status,
            "tags": list(self.tags),
            "fields": dict(self.fields),
            "source": self.source,
            "created_at": _iso(self.created_at),
            "confirmed_at": _iso(self.confirmed_at),
            "unsubscribed_at": _iso(self.unsubscribed_at),
            "unsubscribe_reason": self.unsubscribe_reason,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def now() -> datetime:
    return datetime.now(UTC)


def check_status(status: str) -> str:
    if status not in STATUSES:
        raise StoreError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
    return status


def normalize_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Stripped, non-empty, unique tags in their given order."""
    seen: dict[str, None] = {}
    for tag in tags:
        tag = tag.strip()
        if not tag:
            continue
        if len(tag) > 100:
            raise StoreError(f"tag {tag[:20]!r}... is longer than 100 characters; shorten it")
        seen.setdefault(tag, None)
    return tuple(seen)


def _from_row(row: Any, tags: Sequence[str]) -> Subscriber:
    return Subscriber(
        id=row.id,
        email=row.email,
        name=row.name,
        first_name=row.first_name,
        last_name=row.last_name,
        status=row.status,
        tags=tuple(sorted(tags)),
        fields=dict(row.fields or {}),
        source=row.source,
        created_at=as_utc(row.created_at),  # type: ignore[arg-type]
        confirmed_at=as_utc(row.confirmed_at),
        unsubscribed_at=as_utc(row.unsubscribed_at),
        unsubscribe_reason=row.unsubscribe_reason,
        updated_at=as_utc(row.updated_at),
        public_id=row.public_id,
    )


def _tags_for(conn: Connection, ids: Sequence[int]) -> dict[int, list[str]]:
    result: dict[int, list[str]] = {i: [] for i in ids}
    if ids:
        query = select(subscriber_tags.c.subscriber_id, subscriber_tags.c.tag).where(
            subscriber_tags.c.subscriber_id.in_(ids)
        )
        for sid, tag in conn.execute(query):
            result[sid].append(tag)
    return result


def _load(conn: Connection, where: Any) -> Subscriber | None:
    row = conn.execute(select(subscribers).where(where)).first()
    if row is None:
        return None
    return _from_row(row, _tags_for(conn, [row.id])[row.id])


def _key_of(email: str) -> str:
    """The lookup key of a user-given address; invalid addresses cannot be on the list."""
    try:
        return email_key(normalize_email(email))
    except StoreError:
        return email.strip().lower()


def find_subscriber(engine: Engine | Connection, email: str) -> Subscriber | None:
    """The subscriber with this address, whatever its case, or None."""
    with _connect(engine) as conn:
        return _load(conn, subscribers.c.email_key == _key_of(email))


def get_subscriber(engine: Engine | Connection, subscriber_id: int) -> Subscriber | None:
    with _connect(engine) as conn:
        return _load(conn, subscribers.c.id == subscriber_id)


class _connect:
    """`with _connect(x) as conn`: a new transaction for an Engine, or the given Connection."""

    def __init__(self, target: Engine | Connection):
        self.target = target
        self._ctx: Any = None

    def __enter__(self) -> Connection:
        if isinstance(self.target, Connection):
            return self.target
        self._ctx = self.target.begin()
        return self._ctx.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


def column_length(column: str) -> int | None:
    """The most characters `subscribers.<column>` holds (PostgreSQL enforces it, SQLite
    would keep more: callers refuse longer values the same way on both)."""
    return getattr(subscribers.c[column].type, "length", None)


def check_name_lengths(**names: str | None) -> None:
    """StoreError for a name (or a source) longer than its column (`column_length`)."""
    for column, value in names.items():
        limit = column_length(column)
        if value and limit and len(value) > limit:
            raise StoreError(f"{column} is longer than {limit} characters; shorten it")


def add_subscriber(
    engine: Engine | Connection,
    email: str,
    *,
    name: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    tags: Iterable[str] = (),
    fields: dict[str, Any] | None = None,
    status: str = "subscribed",
    source: str | None = "cli",
    allow_suppressed: bool = False,
) -> Subscriber:
    """Add a new subscriber. StoreError if the address is invalid or already on the list;
    SuppressedError if it was erased on request (unless `allow_suppressed`: the form's
    double opt-in, whose confirmation lifts the suppression)."""

    check_status(status)
    name, first_name, last_name = clean_name(name), clean_name(first_name), clean_name(last_name)
    check_name_lengths(name=name, first_name=first_name, last_name=last_name, source=source)
    address = normalize_email(email)
    key = email_key(address)
    tag_list = normalize_tags(tags)
    stamp = now()
    values = {
        "email": address,
        "email_key": key,
        "name": name or None,
        "first_name": first_name or None,
        "last_name": last_name or None,
        "status": status,
        "fields": dict(fields or {}),
        "source": source,
        "created_at": stamp,
        "updated_at": stamp,
        "confirmed_at": stamp if status == "subscribed" else None,
        "unsubscribed_at": stamp if status in STOPPED else None,
    }
    try:
        with _connect(engine) as conn:
            if conn.execute(select(subscribers.c.id).where(subscribers.c.email_key == key)).first():
                raise StoreError(_exists_message(address))
            if not allow_suppressed:
                suppressions.refuse_if_suppressed(conn, address)
            inserted = conn.execute(insert(subscribers).values(**values)).inserted_primary_key
            assert inserted is not None
            new_id = inserted[0]
            if tag_list:
                conn.execute(
                    insert(subscriber_tags),
                    [{"subscriber_id": new_id, "tag": t} for t in tag_list],
                )
            loaded = _load(conn, subscribers.c.id == new_id)
    except IntegrityError:
        # Someone added the same address between our check and our insert.
        raise StoreError(_exists_message(address)) from None
    assert loaded is not None
    return loaded


def _exists_message(address: str) -> str:
    return (
        f"{address} is already on the list; see it with `newsletter subscribers show {address}` "
        "or change it with `subscribers tag`"
    )


def update_subscriber(
    engine: Engine | Connection,
    subscriber_id: int,
    *,
    name: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    fields: dict[str, Any] | None = None,
) -> None:
    """Set the given names; merge `fields` into the custom fields. None leaves a value alone."""
    name, first_name, last_name = clean_name(name), clean_name(first_name), clean_name(last_name)
    check_name_lengths(name=name, first_name=first_name, last_name=last_name)
    with _connect(engine) as conn:
        values: dict[str, Any] = {"updated_at": now()}
        for column, value in (("name", name), ("first_name", first_name), ("last_name", last_name)):
            if value is not None:
                values[column] = value or None
        if fields:
            current = conn.execute(
                select(subscribers.c.fields).where(subscribers.c.id == subscriber_id)
            ).scalar_one_or_none()
            values["fields"] = {**(current or {}), **fields}
        conn.execute(update(subscribers).where(subscribers.c.id == subscriber_id).values(**values))


REASON_CHARS = 200  # subscribers.unsubscribe_reason


def status_values(
    status: str, *, reason: str | None = None, stamp: datetime | None = None
) -> dict[str, Any]:
    """The column values that go with a new status (shared by set_status and the importer).

    `subscribed` sets confirmed_at (kept if already set: use coalesce) and clears the
    unsubscribe; unsubscribed/bounced/complained set unsubscribed_at and the reason.
    """
    stamp = stamp or now()
    values: dict[str, Any] = {"status": status, "updated_at": stamp}
    if status == "subscribed":
        values["unsubscribed_at"] = None
        values["unsubscribe_reason"] = None
        values["confirmed_at"] = func.coalesce(subscribers.c.confirmed_at, stamp)
    elif status in STOPPED:
        values["unsubscribed_at"] = stamp
        # A bounce's SMTP answer can be longer than the column.
        values["unsubscribe_reason"] = reason[:REASON_CHARS] if reason else reason
    return values


def set_status(
    conn_or_engine: Engine | Connection,
    subscriber_id: int,
    status: str,
    *,
    reason: str | None = None,
) -> None:
    """Change a subscriber's status (see `status_values` for the timestamps it sets).

    Setting the status someone already has changes nothing, so a repeated webhook
    keeps the first unsubscribe time.
    """
    check_status(status)
    with _connect(conn_or_engine) as conn:
        conn.execute(
            update(subscribers)
            .where(and_(subscribers.c.id == subscriber_id, subscribers.c.status != status))
            .values(**status_values(status, reason=reason))
        )


#: The statuses a status from outside (a provider's event, a reply, a link) may replace: never
#: a "stronger" one (a complaint is not turned back into a mere unsubscribe).
REPLACEABLE = {
    "unsubscribed": ("subscribed", "unconfirmed"),
    "bounced": ("subscribed", "unconfirmed", "unsubscribed"),
    "complained": ("subscribed", "unconfirmed", "unsubscribed", "bounced"),
}


def apply_status(
    conn: Connection, subscriber_ids: Iterable[int], status: str, reason: str, now: datetime
) -> int:
    """Move subscribers to `status` unless they already have it or a stronger one (see
    `REPLACEABLE`), on the caller's connection; how many moved. Plain driver SQL: event
    ingest calls it for up to a thousand people per webhook post."""
    bind_time = raw.binder(conn, subscribers.c.updated_at)(now)
    replaceable = REPLACEABLE[status]
    return raw.execute_in(
        conn,
        "UPDATE subscribers SET status = {m}, updated_at = {m}, unsubscribed_at = {m}, "
        "unsubscribe_reason = {m} WHERE id IN ({{}}) AND status IN ({s})".format(
            m=raw.placeholder(conn), s=raw.marks(conn, len(replaceable))
        ),
        sorted(set(subscriber_ids)),
        before=(status, bind_time, bind_time, reason[:200]),
        after=replaceable,
    )


def _require(conn: Connection, email: str) -> int:
    sid = conn.execute(
        select(subscribers.c.id).where(subscribers.c.email_key == _key_of(email))
    ).scalar_one_or_none()
    if sid is None:
        raise StoreError(
            f"{email} is not on the list; check the address with `newsletter subscribers list`"
        )
    return sid


def add_tags(engine: Engine | Connection, email: str, tags: Iterable[str]) -> Subscriber:
    """Give the subscriber these tags (tags they have already stay as they are)."""
    wanted = normalize_tags(tags)
    with _connect(engine) as conn:
        sid = _require(conn, email)
        have = set(_tags_for(conn, [sid])[sid])
        new = [t for t in wanted if t not in have]
        if new:
            conn.execute(insert(subscriber_tags), [{"subscriber_id": sid, "tag": t} for t in new])
            conn.execute(
                update(subscribers).where(subscribers.c.id == sid).values(updated_at=now())
            )
        loaded = _load(conn, subscribers.c.id == sid)
    assert loaded is not None
    return loaded


def remove_tags(engine: Engine | Connection, email: str, tags: Iterable[str]) -> Subscriber:
    """Take these tags from the subscriber (tags they do not have are ignored)."""
    unwanted = normalize_tags(tags)
    with _connect(engine) as conn:
        sid = _require(conn, email)
        if unwanted:
            gone = conn.execute(
                delete(subscriber_tags).where(
                    subscriber_tags.c.subscriber_id == sid, subscriber_tags.c.tag.in_(unwanted)
                )
            ).rowcount
            if gone:
                conn.execute(
                    update(subscribers).where(subscribers.c.id == sid).values(updated_at=now())
                )
        loaded = _load(conn, subscribers.c.id == sid)
    assert loaded is not None
    return loaded


def segment_filters(status: str | None, tags: Iterable[str]) -> list[Any]:
    """WHERE conditions on `subscribers` for a status and ANY of the tags (list, count, send)."""
    conditions: list[Any] = []
    if status is not None:
        conditions.append(status_is(check_status(status)))
    tag_list = normalize_tags(tags)
    if tag_list:
        # ANY of the tags; EXISTS walks the (tag, subscriber_id) index per row.
        conditions.append(
            exists().where(
                subscriber_tags.c.subscriber_id == subscribers.c.id,
                subscriber_tags.c.tag.in_(tag_list),
            )
        )
    return conditions


def iter_subscribers(
    engine: Engine,
    *,
    status: str | None = None,
    tags: Iterable[str] = (),
    after_id: int = 0,
    page_size: int = PAGE_SIZE,
    without_consent_evidence: bool = False,
    where: Sequence[Any] = (),
) -> Iterator[Subscriber]:
    """Subscribers in id order, streamed page by page (keyset pagination, constant memory).

    `tags`: subscribers who have ANY of them. `after_id`: start after this id (resume).
    `without_consent_evidence`: only people with no consent record that proves consent.
    `where`: more conditions on `subscribers` (a segment's, `newsletter.segments`); they are
    evaluated once, for the matching ids (8 bytes a person), then people are read by id.
    Each page is its own short read, so a long consumer never holds a transaction open.
    """
    conditions = [*segment_filters(status, tags), *where]
    if without_consent_evidence:
        conditions.append(~has_evidence())
    if where:
        # A segment's condition may read engagement across the list: evaluate it once for
        # the ids, then read the people page by page by id.
        with engine.connect() as conn:
            ids = (
                conn.execute(
                    select(subscribers.c.id)
                    .where(subscribers.c.id > after_id, *conditions)
                    .order_by(subscribers.c.id)
                )
                .scalars()
                .all()
            )
        for start in range(0, len(ids), page_size):
            chunk = ids[start : start + page_size]
            with engine.connect() as conn:
                rows = conn.execute(
                    select(subscribers)
                    .where(subscribers.c.id.in_(chunk))
                    .order_by(subscribers.c.id)
                ).all()
                tag_map = _tags_for(conn, [r.id for r in rows])
            for row in rows:
                yield _from_row(row, tag_map[row.id])
        return
    last = after_id
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(subscribers)
                .where(subscribers.c.id > last, *conditions)
                .order_by(subscribers.c.id)
                .limit(page_size)
            ).all()
            if not rows:
                return
            tag_map = _tags_for(conn, [r.id for r in rows])
        for row in rows:
            yield _from_row(row, tag_map[row.id])
        last = rows[-1].id
        if len(rows) < page_size:
            return


def count_subscribers(
    engine: Engine | Connection,
    *,
    status: str | None = None,
    tags: Iterable[str] = (),
    where: Sequence[Any] = (),
) -> int:
    """How many subscribers match (same filters as `iter_subscribers`)."""
    tag_list = normalize_tags(tags)
    with _connect(engine) as conn:
        if where:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(subscribers)
                    .where(*segment_filters(status, tag_list), *where)
                ).scalar_one()
            )
        if tag_list:
            # Count distinct ids from the tag index; join subscribers only to check status.
            query = select(func.count(func.distinct(subscriber_tags.c.subscriber_id))).where(
                subscriber_tags.c.tag.in_(tag_list)
            )
            if status is not None:
                query = query.join_from(
                    subscriber_tags,
                    subscribers,
                    subscribers.c.id == subscriber_tags.c.subscriber_id,
                ).where(status_is(check_status(status)))
            return int(conn.execute(query).scalar_one())
        query = select(func.count()).select_from(subscribers)
        if status is not None:
            query = query.where(status_is(check_status(status)))
        return int(conn.execute(query).scalar_one())


# --- bulk writes (`subscribers import`) --------------------------------------------------


def _sqlite_time(value: datetime | None) -> str | None:
    # The text format SQLAlchemy's SQLite DateTime reads back (naive UTC).
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _postgres_time(value: datetime | None) -> str | None:
    # COPY's text form of the same instant (with its offset; a naive time stays naive, as
    # psycopg would send it). psycopg's own datetime dumping was most of the client's COPY
    # time, and PostgreSQL parses this as fast.
    return None if value is None else value.isoformat(" ")


@dataclass
class PlainRows:
    """New subscribers who bring only an address, names and tags (most of a big import):
    (id, email, email_key, first_name, last_name) each, subscribed by `source` at `stamp`
    (as the writer's `time` gives it)."""

    rows: list[tuple[int, str, str, str | None, str | None]]
    source: str
    stamp: Any
    import_run_id: int | None = None  # their consent record, if the import has one

    def shared(self) -> tuple[Any, ...]:
        """The rest of each row, in `BulkWriter.short_columns` order."""
        stamp = self.stamp
        return ("subscribed", "{}", self.source, stamp, stamp, stamp, self.import_run_id)

    def as_short_rows(self) -> Iterator[tuple[Any, ...]]:
        shared = self.shared()
        return (row + shared for row in self.rows)


class BulkWriter:
    """Many subscribers and tags at once on one connection, for `subscribers import`: the
    fast raw-SQL path (driver-level executemany on SQLite, COPY on PostgreSQL), kept here
    with the tables' other writes. The caller decides what to write and owns the
    transaction (`lock` first)."""

    COLUMNS = (
        "id",
        "email",
        "email_key",
        "name",
        "first_name",
        "last_name",
        "status",
        "fields",
        "source",
        "created_at",
        "updated_at",
        "confirmed_at",
        "unsubscribed_at",
        "unsubscribe_reason",
        "import_run_id",
    )
    OPTIONAL = ("name", "unsubscribed_at", "unsubscribe_reason")

    def __init__(self, conn: Connection):
        self.conn = conn
        self.dialect = conn.dialect.name
        mark = placeholder(conn)
        full = list(self.COLUMNS)
        self.full_columns = full
        self.insert_subscribers = (
            f"INSERT INTO subscribers ({', '.join(full)}) VALUES ({', '.join([mark] * len(full))})"
        )
        # Most imported rows have no full name and no unsubscribe: a shorter INSERT
        # without those three columns saves SQLite work on every row.
        short = [c for c in full if c not in self.OPTIONAL]
        self.short_columns = short  # PostgreSQL's COPY takes the same two column lists
        self.insert_short = (
            f"INSERT INTO subscribers ({', '.join(short)}) "
            f"VALUES ({', '.join([mark] * len(short))})"
        )
        self.insert_tags = (
            f"INSERT INTO subscriber_tags (subscriber_id, tag) VALUES ({mark}, {mark})"
        )

    def time(self, value: datetime | None) -> Any:
        """`value` as this writer's rows carry it (`insert`)."""
        if self.dialect == "sqlite":
            return _sqlite_time(value)
        if self.dialect == "postgresql":
            return _postgres_time(value)
        return value

    def allocate_ids(self, n: int) -> list[int]:
        """`n` new ids in a row; call it holding the write lock (`lock`)."""
        if self.dialect == "postgresql":
            # One block of the sequence in one statement (not n nextval calls and n rows to
            # fetch): nobody else takes a value meanwhile, since every INSERT into the table
            # waits for the lock this transaction holds, and sequences are only used by them.
            last = self.conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('subscribers', 'id'), "
                    "nextval(pg_get_serial_sequence('subscribers', 'id')) + :n - 1)"
                ),
                {"n": n},
            ).scalar_one()
            return list(range(last - n + 1, last + 1))
        # SQLite (and others): ids follow the largest one ever given (AUTOINCREMENT keeps it in
        # sqlite_sequence, so a forgotten person's id never comes back); the chunk's
        # transaction holds the write lock (see `lock`), so nobody takes one meanwhile.
        start = self.conn.execute(select(func.coalesce(func.max(subscribers.c.id), 0))).scalar_one()
        if self.dialect == "sqlite":
            used = self.conn.exec_driver_sql(
                "SELECT seq FROM sqlite_sequence WHERE name = 'subscribers'"
            ).scalar()
            start = max(start, used or 0)
        return list(range(start + 1, start + 1 + n))

    def lock(self) -> None:
        """Take the table's write lock now, for the rest of the transaction; call `unlock`
        once it has ended."""
        if self.dialect == "sqlite":
            # Every row this writer adds points at a subscriber it has just added or looked
            # up holding the lock, so SQLite need not look each parent up again (a tenth of
            # a big import's time). The setting cannot change inside a transaction: it is
            # off from here to `unlock`, on this connection only.
            self.conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
            try:
                # pysqlite begins a deferred transaction only at the first INSERT or UPDATE.
                self.conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:  # (the lock not had in time, Ctrl-C): no transaction began
                self.unlock()
                raise
        elif self.dialect == "postgresql":
            # Blocks other INSERT/UPDATE/DELETE (briefly: transactions are short), not reads.
            self.conn.exec_driver_sql("LOCK TABLE subscribers IN SHARE ROW EXCLUSIVE MODE")
            # This transaction's commit does not wait for its WAL to reach the disk. Killing
            # the import loses nothing the server acknowledged; only a crash of the server or
            # the machine itself can lose the last few commits (never half of one), and
            # running the same import again writes them (it skips what is done).
            self.conn.exec_driver_sql("SET LOCAL synchronous_commit = off")

    def unlock(self) -> None:
        """After the transaction `lock` began has ended: the connection as it was."""
        if self.dialect == "sqlite":
            self.conn.exec_driver_sql("PRAGMA foreign_keys = ON")

    # A savepoint lets one part of a long transaction be rolled back alone (an import's
    # chunk that clashed with another writer) and written again.
    def savepoint(self) -> None:
        self.conn.exec_driver_sql("SAVEPOINT bulk_part")

    def release_savepoint(self) -> None:
        self.conn.exec_driver_sql("RELEASE SAVEPOINT bulk_part")

    def rollback_savepoint(self) -> None:
        self.conn.exec_driver_sql("ROLLBACK TO SAVEPOINT bulk_part")
        self.release_savepoint()

    def insert(
        self,
        rows: list[tuple[Any, ...]],
        tags: list[tuple[int, str]],
        short_rows: list[tuple[Any, ...]] | None = None,
        plain: PlainRows | None = None,
    ) -> None:
        short_rows = short_rows or []
        if self.dialect == "postgresql":
            if plain is not None:
                short_rows = [*plain.as_short_rows(), *short_rows]
            self._copy("subscribers", self.full_columns, rows)
            self._copy("subscribers", self.short_columns, short_rows)
            self._copy("subscriber_tags", ("subscriber_id", "tag"), tags)
            return
        if plain is not None and plain.rows:
            self.conn.exec_driver_sql(self._insert_plain(plain), plain.rows)  # type: ignore[arg-type]
        if rows:
            self.conn.exec_driver_sql(self.insert_subscribers, rows)  # type: ignore[arg-type]
        if short_rows:
            self.conn.exec_driver_sql(self.insert_short, short_rows)  # type: ignore[arg-type]
        if tags:
            self.conn.exec_driver_sql(self.insert_tags, tags)  # type: ignore[arg-type]

    def _insert_plain(self, plain: PlainRows) -> str:
        # What all the rows share is written into the statement, so SQLite binds five values
        # a row instead of eleven: a tenth of the time of a big import's inserts.
        shared = [
            str(
                literal(value, Integer() if isinstance(value, int) else String()).compile(
                    dialect=self.conn.dialect, compile_kwargs={"literal_binds": True}
                )
            )
            for value in plain.shared()
        ]
        marks = [placeholder(self.conn)] * 5
        return (
            f"INSERT INTO subscribers ({', '.join(self.short_columns)}) "
            f"VALUES ({', '.join(marks + shared)})"
        )

    def _copy(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        """PostgreSQL: the rows through COPY, several times faster than an executemany of
        INSERTs. COPY fires the statement triggers (list growth) and checks the unique key
        like an INSERT; its errors are raised as SQLAlchemy's, as an INSERT's would be."""
        if not rows:
            return
        # deferred: psycopg costs 115 ms at start-up; the PostgreSQL driver, only needed here
        import psycopg

        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        driver = self.conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        try:
            with driver.cursor() as cursor, cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.Error as exc:
            raise DBAPIError.instance(
                statement, None, exc, psycopg.Error, dialect=self.conn.dialect
            ) from exc

    def update_many(self, changes: list[tuple[int, dict[str, Any]]]) -> None:
        """Change subscribers' columns (an import's merge into existing rows): each
        (id, {column: value}) as `update(subscribers)...values(**values)` would.

        On PostgreSQL the rows that change the same columns go in one UPDATE ... FROM
        unnest(arrays): an UPDATE per row paid a round trip and a run of the statement
        trigger (list growth) each, about 1 ms a person when a re-import brings a new tag.
        """
        if self.dialect != "postgresql":
            for subscriber_id, values in changes:
                self.conn.execute(
                    update(subscribers).where(subscribers.c.id == subscriber_id).values(**values)
                )
            return
        groups: dict[tuple[str, ...], list[tuple[int, dict[str, Any]]]] = {}
        for subscriber_id, values in changes:
            groups.setdefault(tuple(sorted(values)), []).append((subscriber_id, values))
        for columns, members in groups.items():
            self._update_postgres(columns, members)

    def _update_postgres(
        self, columns: tuple[str, ...], members: list[tuple[int, dict[str, Any]]]
    ) -> None:
        # Every value goes as text (times in COPY's form, JSON as the driver would write it)
        # and is cast back by the statement, so one array type fits every column.
        arrays: list[list[Any]] = [[subscriber_id for subscriber_id, _ in members]]
        assignments = []
        for number, column in enumerate(columns, start=1):
            kind = subscribers.c[column].type  # KeyError for a name that is no column
            values = [values[column] for _, values in members]
            if isinstance(kind, DateTime):
                arrays.append([_postgres_time(value) for value in values])
                cast = "timestamptz"
            elif isinstance(kind, JSON):
                arrays.append([json.dumps(value) for value in values])
                cast = "json"
            else:
                arrays.append(values)
                cast = "text"
            assignments.append(f"{column} = v.c{number}::{cast}")
        names = ", ".join(f"c{number}" for number in range(1, len(columns) + 1))
        self.conn.exec_driver_sql(
            f"UPDATE subscribers AS s SET {', '.join(assignments)} "
            f"FROM unnest(%s::integer[]{', %s::text[]' * len(columns)}) AS v(id, {names}) "
            "WHERE s.id = v.id",
            tuple(arrays),
        )


def tables_referencing_subscribers() -> list[tuple[Table, Column[Any]]]:
    """Every table with a foreign key to `subscribers.id`, and that column; dependents
    first, so deleting in this order never trips another table's foreign key.

    `forget_subscriber` and `export-person` walk this, so a new table about people is
    erased and exported without anyone remembering to add it."""
    found: list[tuple[Table, Column[Any]]] = []
    for table in reversed(metadata.sorted_tables):
        for fk in table.foreign_keys:
            if fk.column is subscribers.c.id:
                found.append((table, fk.parent))
    return found


def forget_subscriber(engine: Engine | Connection, email: str) -> bool:
    """Delete the person's row and every row that references it (tags, deliveries, events,
    replies, consent records...). True if anything was deleted. Replies matched only by
    address are the reply store's: `newsletter.privacy.forget_person` deletes those too, and
    `newsletter.privacy.erase` also suppresses the address; this alone is for taking back a
    row that was just added."""
    key = _key_of(email)
    with _connect(engine) as conn:
        sid = conn.execute(
            select(subscribers.c.id).where(subscribers.c.email_key == key)
        ).scalar_one_or_none()
        if sid is None:
            return False
        # Delete explicitly rather than trusting ON DELETE CASCADE alone: a SQLite
        # connection opened without foreign_keys=ON would otherwise leave rows behind.
        for table, column in tables_referencing_subscribers():
            conn.execute(delete(table).where(column == sid))
        return conn.execute(delete(subscribers).where(subscribers.c.id == sid)).rowcount > 0


def lookup_key(email: str) -> str:
    """The lookup key of a user-given address (`email_key`), also for one that is invalid."""
    return _key_of(email)


def custom_fields_in_use(engine: Engine | Connection, names: Iterable[str]) -> set[str]:
    """Which of these custom field names at least one subscriber has a (non-empty) value for."""
    found = set()
    with _connect(engine) as conn:
        for name in names:
            value = subscribers.c.fields[name].as_string()
            query = select(subscribers.c.id).where(value.is_not(None), value != "").limit(1)
            if conn.execute(query).first() is not None:
                found.add(name)
    return found
