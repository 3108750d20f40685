"""Replies as conversations: one thread per reader and issue (or welcome step), holding the
reader's replies and the author's answers, with a state: `new` (a reply waits for an answer),
`answered`, `done` (closed by the author; a new reply from the reader opens it again).

A thread's id is its first reply's id, so `replies show ID` takes the id of any reply in it.
This module owns `reply_threads` and `reply_answers`; `store.py` files each reply into its
thread as it stores it (`file_reply`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update

from newsletter.errors import StoreError
from newsletter.store import schema
from newsletter.store.emails import address_key
from newsletter.store.times import as_utc

NEW, ANSWERED, DONE = "new", "answered", "done"

#: How `replies` shows a thread with a reply that asks to unsubscribe.
UNSUBSCRIBE_LABELS = {
    "verified": "unsubscribed by reply",
    "unverified": "asks to unsubscribe (unverified)",
}

t, r, a = schema.reply_threads, schema.replies, schema.reply_answers


def file_reply(
    conn: Connection,
    *,
    reply_id: int,
    subscriber_id: int | None,
    issue_id: int | None,
    from_email: str,
    automatic: bool,
    at: datetime,
) -> int:
    """The thread a new reply belongs to (opened when there is none): its id. A person's reply
    (not a robot's) makes the thread wait for an answer again."""
    if subscriber_id is not None:
        who = t.c.subscriber_id == subscriber_id
    else:
        who = and_(t.c.subscriber_id.is_(None), t.c.contact == from_email.lower())
    about = t.c.issue_id == issue_id if issue_id is not None else t.c.issue_id.is_(None)
    existing = conn.execute(select(t.c.id).where(who, about).order_by(t.c.id.desc())).first()
    if existing is None:
        conn.execute(
            insert(t).values(
                id=reply_id,
                subscriber_id=subscriber_id,
                issue_id=issue_id,
                contact=None if subscriber_id is not None else from_email.lower(),
                state=NEW,
                automatic=automatic,
                messages=1,
                created_at=at,
                last_at=at,
            )
        )
        return reply_id
    values: dict[str, Any] = {"messages": t.c.messages + 1, "last_at": at}
    if not automatic:
        values.update(state=NEW, automatic=False)
    conn.execute(update(t).where(t.c.id == existing.id).values(**values))
    return int(existing.id)


@dataclass
class ThreadRow:
    """One line of `newsletter replies`."""

    id: int
    state: str
    automatic: bool
    messages: int
    last_at: datetime
    issue_slug: str | None
    issue_title: str | None
    reader_email: str
    reader_name: str | None
    tags: list[str]
    first_line: str
    subscriber_id: int | None
    #: "verified" or "unverified" when a reply in it asks to unsubscribe.
    unsubscribe_request: str | None = None

    @property
    def note(self) -> str:
        notes = ["auto-reply"] if self.automatic else []
        if self.unsubscribe_request:
            notes.append(UNSUBSCRIBE_LABELS[self.unsubscribe_request])
        return ", ".join(notes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "unsubscribe_request": self.unsubscribe_request,
            "state": self.state,
            "automatic": self.automatic,
            "messages": self.messages,
            "last_at": self.last_at.isoformat(),
            "issue": self.issue_slug,
            "issue_title": self.issue_title,
            "reader": {"email": self.reader_email, "name": self.reader_name, "tags": self.tags},
            "first_line": self.first_line,
        }


def list_threads(
    engine: Engine,
    *,
    issue_id: int | None = None,
    subscriber_id: int | None = None,
    unanswered: bool = False,
    include_automatic: bool = False,
    limit: int | None = None,
) -> tuple[list[ThreadRow], int]:
    """(threads newest activity first, how many matched in all)."""
    s, i = schema.subscribers, schema.issues
    conditions = []
    if issue_id is not None:
        conditions.append(t.c.issue_id == issue_id)
    if subscriber_id is not None:
        conditions.append(t.c.subscriber_id == subscriber_id)
    if unanswered:
        conditions.append(t.c.state == NEW)
    if not include_automatic:
        conditions.append(t.c.automatic.is_(False))
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(t).where(*conditions)).scalar_one()
        query = (
            select(
                t,
                i.c.slug,
                i.c.title,
                s.c.email.label("reader_email"),
                s.c.name.label("reader_name"),
                s.c.first_name,
                s.c.last_name,
            )
            .select_from(
                t.outerjoin(i, t.c.issue_id == i.c.id).outerjoin(s, t.c.subscriber_id == s.c.id)
            )
            .where(*conditions)
            .order_by(t.c.last_at.desc(), t.c.id.desc())
        )
        if limit:
            query = query.limit(limit)
        rows = conn.execute(query).all()
        ids = [row.id for row in rows]
        # The first reply of each thread (its id is the thread's) gives the first line.
        firsts = dict(
            conn.execute(select(r.c.id, r.c.text).where(r.c.id.in_(ids))).all() if ids else []
        )
        senders = dict(
            conn.execute(select(r.c.id, r.c.from_email).where(r.c.id.in_(ids))).all() if ids else []
        )
        asks = dict(
            conn.execute(
                select(r.c.thread_id, func.max(r.c.unsubscribe_request))
                .where(r.c.thread_id.in_(ids), r.c.unsubscribe_request.is_not(None))
                .group_by(r.c.thread_id)
            ).all()
            if ids
            else []
        )
        readers = [row.subscriber_id for row in rows if row.subscriber_id is not None]
        tags: dict[int, list[str]] = {}
        if readers:
            st = schema.subscriber_tags
            for subscriber, tag in conn.execute(
                select(st.c.subscriber_id, st.c.tag)
                .where(st.c.subscriber_id.in_(readers))
                .order_by(st.c.tag)
            ):
                tags.setdefault(subscriber, []).append(tag)
    out = []
    for row in rows:
        name = row.reader_name or " ".join(p for p in (row.first_name, row.last_name) if p) or None
        out.append(
            ThreadRow(
                id=row.id,
                state=row.state,
                automatic=bool(row.automatic),
                messages=row.messages,
                last_at=as_utc(row.last_at),
                issue_slug=row.slug,
                issue_title=row.title,
                reader_email=row.reader_email or senders.get(row.id) or row.contact or "",
                reader_name=name,
                tags=tags.get(row.subscriber_id, []),
                first_line=first_line(firsts.get(row.id, "")),
                subscriber_id=row.subscriber_id,
                unsubscribe_request=asks.get(row.id),
            )
        )
    return out, int(total)


def first_line(text: str) -> str:
    """The first line of a reply that says something: quoted lines and a greeting alone
    ("Hallo Jens,") are passed over."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(">")]
    for line in lines:
        if not (line.endswith(",") and len(line.split()) <= 4):
            return line[:200]
    return lines[0][:200] if lines else ""


@dataclass
class Entry:
    """A message in a thread: the reader's reply or the author's answer."""

    kind: str  # "reply" | "answer"
    id: int
    at: datetime
    from_email: str
    from_name: str | None
    subject: str
    text: str
    message_id: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    automatic: bool = False
    unsubscribe_request: str | None = None
    #: A reply's: the Message-IDs it answered (its References), back to the issue.
    refers_to: str | None = None


@dataclass
class Thread:
    id: int
    state: str
    subscriber_id: int | None
    issue_id: int | None
    issue_slug: str | None
    reader_email: str
    reader_name: str | None
    reader_status: str | None
    tags: list[str]
    entries: list[Entry]
    #: What links name them by (never the row ids: those tell a list's size).
    subscriber_public_id: str | None = None
    issue_public_id: str | None = None

    @property
    def last_reply(self) -> Entry:
        return [e for e in self.entries if e.kind == "reply"][-1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "issue": self.issue_slug,
            "reader": {"email": self.reader_email, "name": self.reader_name, "tags": self.tags},
            "messages": [
                {
                    "kind": e.kind,
                    "id": e.id,
                    "at": e.at.isoformat(),
                    "from_email": e.from_email,
                    "subject": e.subject,
                    "text": e.text,
                    "attachments": e.attachments,
                    "automatic": e.automatic,
                }
                for e in self.entries
            ],
        }


def thread_id_of(engine: Engine, any_id: int) -> int:
    """The thread of a reply id (or a thread id)."""
    if not 1 <= any_id < 2**31:  # no column holds it: no reply (not an overflow in the driver)
        raise StoreError(f"no reply with id {any_id}; list them with `newsletter replies`")
    with engine.connect() as conn:
        found = conn.execute(select(r.c.thread_id).where(r.c.id == any_id)).scalar()
        if found is None:
            found = conn.execute(select(t.c.id).where(t.c.id == any_id)).scalar()
    if found is None:
        raise StoreError(f"no reply with id {any_id}; list them with `newsletter replies`")
    return int(found)


def get_thread(engine: Engine, any_id: int) -> Thread:
    thread_id = thread_id_of(engine, any_id)
    s, i, st = schema.subscribers, schema.issues, schema.subscriber_tags
    with engine.connect() as conn:
        head = conn.execute(
            select(
                t,
                i.c.slug,
                i.c.public_id.label("issue_public_id"),
                s.c.email,
                s.c.name,
                s.c.first_name,
                s.c.last_name,
                s.c.status,
                s.c.public_id.label("subscriber_public_id"),
            )
            .select_from(
                t.outerjoin(i, t.c.issue_id == i.c.id).outerjoin(s, t.c.subscriber_id == s.c.id)
            )
            .where(t.c.id == thread_id)
        ).one()
        replies = conn.execute(
            select(r).where(r.c.thread_id == thread_id).order_by(r.c.received_at, r.c.id)
        ).all()
        answers = conn.execute(
            select(a).where(a.c.thread_id == thread_id).order_by(a.c.sent_at, a.c.id)
        ).all()
        tags = (
            list(
                conn.execute(
                    select(st.c.tag)
                    .where(st.c.subscriber_id == head.subscriber_id)
                    .order_by(st.c.tag)
                ).scalars()
            )
            if head.subscriber_id is not None
            else []
        )
    entries = [
        Entry(
            kind="reply",
            id=row.id,
            at=as_utc(row.received_at),
            from_email=row.from_email,
            from_name=row.from_name,
            subject=row.subject,
            text=row.text,
            message_id=row.message_id,
            attachments=list(row.attachments or []),
            automatic=bool(row.automatic),
            unsubscribe_request=row.unsubscribe_request,
            refers_to=row.refers_to,
        )
        for row in replies
    ] + [
        Entry(
            kind="answer",
            id=row.id,
            at=as_utc(row.sent_at),
            from_email="",
            from_name=None,
            subject=row.subject,
            text=row.text,
            message_id=row.message_id,
        )
        for row in answers
    ]
    entries.sort(key=lambda e: (e.at, e.kind == "answer", e.id))
    name = head.name or " ".join(p for p in (head.first_name, head.last_name) if p) or None
    first = next((e for e in entries if e.kind == "reply"), None)
    return Thread(
        id=thread_id,
        state=head.state,
        subscriber_id=head.subscriber_id,
        issue_id=head.issue_id,
        issue_slug=head.slug,
        reader_email=head.email or (first.from_email if first else head.contact or ""),
        reader_name=name or (first.from_name if first else None),
        reader_status=head.status,
        tags=tags,
        entries=entries,
        subscriber_public_id=head.subscriber_public_id,
        issue_public_id=head.issue_public_id,
    )


def close(engine: Engine, any_id: int) -> Thread:
    """`replies done ID`: nothing more to do here (a new reply reopens it)."""
    thread_id = thread_id_of(engine, any_id)
    with engine.begin() as conn:
        conn.execute(update(t).where(t.c.id == thread_id).values(state=DONE))
    return get_thread(engine, thread_id)


def record_answer(
    engine: Engine,
    thread: Thread,
    *,
    to_email: str,
    subject: str,
    text: str,
    message_id: str | None,
) -> int:
    """An answer that went out, in its thread; the thread is answered."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        answer_id = conn.execute(
            insert(a).values(
                thread_id=thread.id,
                subscriber_id=thread.subscriber_id,
                to_email=to_email,
                subject=subject,
                text=text,
                message_id=message_id,
                sent_at=now,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        conn.execute(
            update(t)
            .where(t.c.id == thread.id)
            .values(state=ANSWERED, messages=t.c.messages + 1, last_at=now)
        )
    return int(answer_id)


def answered_message_ids(
    conn: Connection, wanted: set[str]
) -> dict[str, tuple[int | None, int | None]]:
    """Message-IDs of the author's answers -> (subscriber id, issue id) of their thread: a
    reader's reply to an answer belongs to the same conversation."""
    if not wanted:
        return {}
    rows = conn.execute(
        select(a.c.message_id, t.c.subscriber_id, t.c.issue_id)
        .join(t, t.c.id == a.c.thread_id)
        .where(a.c.message_id.in_(sorted(wanted)))
    ).all()
    return {row.message_id: (row.subscriber_id, row.issue_id) for row in rows}


def answered_count(engine: Engine, issue_id: int) -> int:
    """How many of an issue's conversations the author answered (for `stats ISSUE`)."""
    with engine.connect() as conn:
        answered = conn.execute(
            select(func.count(func.distinct(a.c.thread_id)))
            .join(t, t.c.id == a.c.thread_id)
            .where(t.c.issue_id == issue_id)
        ).scalar_one()
    return int(answered)


def purge_closed(engine: Engine, keep_days: int, *, now: datetime | None = None) -> int:
    """`privacy purge` with `[privacy] keep_replies_days`: delete the conversations closed
    (`done`) whose last message is older than that, replies and answers with them."""

    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    removed = 0
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(t.c.id).where(t.c.state == DONE, t.c.last_at < cutoff).limit(1000)
                ).scalars()
            )
            if not ids:
                return removed
            conn.execute(delete(a).where(a.c.thread_id.in_(ids)))
            conn.execute(delete(r).where(r.c.thread_id.in_(ids)))
            removed += conn.execute(delete(t).where(t.c.id.in_(ids))).rowcount


def threads_naming(conn: Connection, key: str, reply_ids: list[int]) -> dict[str, list[Any]]:
    """For export and erasure: the conversations of someone not on the list (no subscriber
    id), found by their address (`key`) or their replies (`reply_ids`), and the answers
    written to them. A reply of theirs in another reader's thread (they wrote to a signed
    address that was forwarded to them) is theirs, the thread is not."""

    own = and_(t.c.subscriber_id.is_(None))
    threads_of = set(
        conn.execute(
            select(r.c.thread_id).join(t, t.c.id == r.c.thread_id).where(r.c.id.in_(reply_ids), own)
        ).scalars()
        if reply_ids
        else []
    )
    threads_of |= {
        row.id
        for row in conn.execute(select(t.c.id, t.c.contact).where(t.c.contact.is_not(None), own))
        if row.contact == key or address_key(row.contact) == key
    }
    found: dict[str, list[Any]] = {}
    if threads_of:
        found["reply_threads"] = list(conn.execute(select(t).where(t.c.id.in_(threads_of))))
        answers = list(conn.execute(select(a).where(a.c.thread_id.in_(threads_of))))
        if answers:
            found["reply_answers"] = answers
    return found


def forget_threads(conn: Connection, found: dict[str, list[Any]]) -> None:
    """Erasure: delete the rows `threads_naming` found, then settle the other readers'
    threads their replies were taken from (`found["replies"]`)."""
    answers = [row.id for row in found.get("reply_answers", [])]
    if answers:
        conn.execute(delete(a).where(a.c.id.in_(answers)))
    threads = [row.id for row in found.get("reply_threads", [])]
    if threads:
        conn.execute(delete(t).where(t.c.id.in_(threads)))
    settle_threads(conn, {row.thread_id for row in found.get("replies", [])} - set(threads))


def settle_threads(conn: Connection, thread_ids: set[int | None]) -> int:
    """After some of their replies were deleted (erasure, `privacy purge`): each of these
    threads counts what it still holds, and one with nothing left goes (an address must not
    outlive its messages). How many went."""
    ids = sorted(i for i in thread_ids if i is not None)
    if not ids:
        return 0
    replies_in = select(func.count()).where(r.c.thread_id == t.c.id).scalar_subquery()
    answers_in = select(func.count()).where(a.c.thread_id == t.c.id).scalar_subquery()
    gone = conn.execute(delete(t).where(t.c.id.in_(ids), replies_in == 0, answers_in == 0)).rowcount
    conn.execute(
        update(t)
        .where(t.c.id.in_(ids), t.c.messages != replies_in + answers_in)
        .values(messages=replies_in + answers_in)
    )
    return int(gone or 0)
