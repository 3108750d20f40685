"""Carrying out a `SendPlan`: stream the planned recipients by id, cut them into batches,
personalize and prepare each (in worker processes for a big list), a few batches in flight,
every outcome in the ledger.

The rules that make it crash-safe are the ledger's (see `ledger.py`): a batch is claimed
`in_flight` before it goes out; only the lease holder sends; a dead sender's in-flight rows
become `uncertain`. A transport that keeps no ledger (the outbox), and dry runs, write no
delivery rows, so they never block the real send; `sends` still lists them.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import pickle
import re
import shutil
import signal
import sys
import tempfile
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from jinja2 import nodes
from sqlalchemy import Integer, Text, bindparam, select, type_coerce

from newsletter.errors import SendError
from newsletter.personalize import (
    MAX_URL_CHARS,
    UNSUBSCRIBE_HTML_KEY,
    UNSUBSCRIBE_TEXT_KEY,
    expression_environment,
    html_value,
)
from newsletter.processes import die_with_parent
from newsletter.segments.sends import recorder
from newsletter.sending.factory import batch_limits
from newsletter.sending.ledger import RETRYABLE, Ledger, process_alive
from newsletter.sending.loop import Loop, Work
from newsletter.sending.message import (
    Batch,
    Message,
    Reader,
    Readers,
    Recipient,
    marked_if_development_key,
)
from newsletter.sending.subject_test import was_cancelled
from newsletter.sending.transports import (
    Outcome,
    PreparingTransport,
    Transport,
    outcome_runs,
)
from newsletter.store.issues import ensure_issue
from newsletter.store.public_ids import issue_public_id
from newsletter.store.raw import CompiledQuery
from newsletter.store.schema import (
    CUSTOM_ARG_ISSUE,
    CUSTOM_ARG_SEND,
    CUSTOM_ARG_SUBSCRIBER,
    DeliveryState,
    SubscriberStatus,
    deliveries,
    subscribers,
)
from newsletter.store.subscribers import segment_filters
from newsletter.tokens import REPLY, REPLY_TOKEN_TAG, secret_key, token_maker, unsubscribe_url_maker

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.project import Project
    from newsletter.render import RenderedIssue
    from newsletter.sending.plan import SendPlan


@dataclass
class SendReport:
    send_id: int
    transport: str
    where: str
    ledger: bool
    accepted_label: str = "accepted"
    accepted: int = 0
    failed: int = 0
    uncertain: int = 0
    marked_uncertain: int = 0  # in-flight rows of a dead sender, found on resume
    replaced: int = 0  # accepted copies that replaced an earlier one (the outbox)
    error: str | None = None
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False
    #: `newsletter cancel` asked the send to stop: no batch was claimed after that.
    cancelled: bool = False

    @property
    def total(self) -> int:
        return self.accepted + self.failed + self.uncertain


#: (id, email, name, first name, last name, custom fields as JSON text, public id): one
#: subscriber as read for the send; the JSON is parsed by the builder (in parallel) when it
#: is needed; the public id goes into the reader's tokens (never the row id).
Row = tuple[int, str, "str | None", "str | None", "str | None", "str | None", "str | None"]
#: A page of rows by id, and the ids among them that have a ledger row already (a resume).
Page = tuple[list[Row], "frozenset[int]"]
#: Batches handed to worker processes ahead of the senders: enough to keep them busy.
PREPARE_AHEAD = 3
#: Lists at least this long are personalized by worker processes (fork) on multi-core machines;
#: the environment variable lets tests run the parallel path on small lists.
PARALLEL_ENV = "NEWSLETTER_SEND_PARALLEL_FROM"
PARALLEL_FROM = 20000
WORKER_DIED = "a worker process stopped (killed?); nothing of its batches was sent"
PAGE = 1000


_BUILT_IN = ("id", "email", "name", "first_name", "last_name")


def subscriber_keys_used(expressions: list[Any]) -> tuple[str, ...] | None:
    """The subscriber fields the issue's expressions read (`subscriber.first_name`,
    `subscriber["stadt"]`, `subscriber.fields.x` -> "fields"), or None when an expression
    uses `subscriber` in any other way, or calls something (a `random` filter): then its
    value may depend on more than those fields and must be computed per recipient."""
    env = expression_environment()
    used: set[str] = set()
    for expression in expressions:
        tree = env.parse("{{ " + expression.source + " }}")
        if any(True for _ in tree.find_all(nodes.Call)) or any(
            f.name == "random" for f in tree.find_all(nodes.Filter)
        ):
            return None
        mentions = sum(1 for n in tree.find_all(nodes.Name) if n.name == "subscriber")
        reads = 0
        for node in (*tree.find_all(nodes.Getattr), *tree.find_all(nodes.Getitem)):
            target: Any = getattr(node, "node", None)
            if not (isinstance(target, nodes.Name) and target.name == "subscriber"):
                continue
            if isinstance(node, nodes.Getattr):
                used.add(node.attr)
            elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
                if not isinstance(node.arg.value, str):
                    return None
                used.add(node.arg.value)
            else:
                return None
            reads += 1
        if reads != mentions:
            return None
    return tuple(sorted(used))


class Personalizer:
    """`rendered.substitutions(context, url)`, computed once per distinct combination of the
    fields the expressions read (most readers share a first name with someone), with each
    reader's own unsubscribe URL filled in. Falls back to per-reader evaluation when the
    expressions could depend on anything else (see `subscriber_keys_used`)."""

    MAX_CACHED = 20000

    def __init__(self, rendered: RenderedIssue) -> None:
        self.rendered = rendered
        self.keys = subscriber_keys_used(rendered.expressions)
        self.cache: dict[tuple[Any, ...], dict[str, str]] = {}

    def _key(self, row: tuple[Any, ...], raw_fields: Any) -> tuple[Any, ...]:
        """What the expressions read of one reader: `row` is (id, email, name, first_name,
        last_name), `raw_fields` the custom fields (JSON text or a dict), parsed only when
        needed: an empty built-in field falls back to the custom field of that name, as in
        `subscriber_view`."""
        out: list[Any] = []
        fields: dict[str, Any] | None = None
        for name in self.keys or ():
            index = _ROW_INDEX.get(name)
            value = row[index] if index is not None else None
            if value is None or value == "":
                if fields is None:
                    fields = custom_fields(raw_fields)
                if name == "fields":
                    out.append(json.dumps(fields, sort_keys=True, default=str))
                    continue
                value = fields.get(name)
            out.append(None if value == "" else repr(value))
        return tuple(out)

    def __call__(self, context: dict[str, Any], url: str) -> dict[str, str]:
        """The substitutions for one reader (a new dict, the caller's to change)."""
        if self.keys is None:
            return self.rendered.substitutions(context, url)
        row = tuple(context.get(name) for name in _BUILT_IN)
        known = self.cache.get(self._key(row, context.get("fields")))
        if known is None:
            return self._remember(context, url, row, context.get("fields"))
        return self._with_url(known, url)

    def for_row(self, row: tuple[Any, ...], raw_fields: Any, url: str) -> dict[str, str]:
        """`self(context, url)` for a reader as read for a send (see `_key`), without
        building their context unless the cache has not seen their like."""
        if self.keys is not None:
            known = self.cache.get(self._key(row, raw_fields))
            if known is not None:
                return self._with_url(known, url)
        context = dict(zip(_BUILT_IN, row, strict=True))
        context["fields"] = custom_fields(raw_fields)
        if self.keys is None:
            return self.rendered.substitutions(context, url)
        return self._remember(context, url, row, raw_fields)

    def _remember(
        self, context: dict[str, Any], url: str, row: tuple[Any, ...], raw_fields: Any
    ) -> dict[str, str]:
        subs = self.rendered.substitutions(context, url)
        if len(self.cache) < self.MAX_CACHED:
            self.cache[self._key(row, raw_fields)] = subs
        return dict(subs)

    @staticmethod
    def _with_url(known: dict[str, str], url: str) -> dict[str, str]:
        clean = url[:MAX_URL_CHARS].replace("%%", "%")
        return {**known, UNSUBSCRIBE_HTML_KEY: html_value(clean), UNSUBSCRIBE_TEXT_KEY: clean}


_ROW_INDEX = {name: index for index, name in enumerate(_BUILT_IN)}


@dataclass
class Builder:
    """Turns a page of subscribers into recipients (in this process or a forked worker)."""

    rendered: RenderedIssue
    unsubscribe_url: Callable[[int | str], str]
    issue_id: int
    send_id: int
    #: With `[replies] domain`: each reader's signed reply token (`REPLY_TOKEN_TAG` in Reply-To).
    reply_token: Callable[[int | str], str] | None = None
    #: Ids every recipient carries besides issue, subscriber and send (a sequence's step).
    extra_ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.personalize = Personalizer(self.rendered)

    def build(self, page: Page) -> list[Recipient]:
        """One recipient per row of the page, in order."""
        out: list[Recipient] = []
        issue, send = str(self.issue_id), str(self.send_id)
        reply_token = self.reply_token
        personalize, unsubscribe_url = self.personalize.for_row, self.unsubscribe_url
        make = Recipient._make
        extra = self.extra_ids
        for sid, address, name, first, last, fields, public_id in page[0]:
            # A row without a public id (none should be left after m015) gets a token with
            # its row id: a working unsubscribe link matters more than a hidden count.
            ref = public_id or sid
            url = unsubscribe_url(ref)
            substitutions = personalize((sid, address, name, first, last), fields, url)
            if reply_token is not None:
                substitutions[REPLY_TOKEN_TAG] = reply_token(ref)
            ids = {CUSTOM_ARG_ISSUE: issue, CUSTOM_ARG_SUBSCRIBER: str(sid), CUSTOM_ARG_SEND: send}
            if extra:
                ids.update(extra)
            out.append(make((address, name, substitutions, url, ids, _NO_HEADERS)))
        return out

    def readers(self, page: Page, message: Message) -> Readers | None:
        """The page as `Readers` (what `build` makes, without a dict per reader), or None
        where that does not fit: a reply token or other ids of their own, expressions that
        are evaluated per reader, an unsubscribe URL that is not plain."""
        personalize = self.personalize
        if personalize.keys is None or self.reply_token is not None or self.extra_ids:
            return None
        cache, key_of, for_row = personalize.cache, personalize._key, personalize.for_row
        unsubscribe_url, reader = self.unsubscribe_url, Reader._make
        out: list[Reader] = []
        for sid, address, name, first, last, fields, public_id in page[0]:
            url = unsubscribe_url(public_id or sid)
            row = (sid, address, name, first, last)
            known = cache.get(key_of(row, fields))
            if (
                known is not None
                and UNSUBSCRIBE_TEXT_KEY in known
                and UNSUBSCRIBE_HTML_KEY in known
            ):
                out.append(reader((address, name, url, sid, known, True)))
            else:  # (the first reader of their kind: their own, as `build` makes it)
                out.append(reader((address, name, url, sid, for_row(row, fields, url), False)))
        urls = [reader.unsubscribe_url for reader in out]
        if (
            _NOT_PLAIN.search("".join(urls))
            or max(map(len, urls), default=0) >= MAX_URL_CHARS
            or any(type(reader.subscriber_id) is not int for reader in out)
        ):
            return None
        issue, send = str(self.issue_id), str(self.send_id)

        def recipient(index: int) -> Recipient:
            email, name, url, sid, subs, alike = out[index]
            if alike:
                subs = {**subs, UNSUBSCRIBE_HTML_KEY: url, UNSUBSCRIBE_TEXT_KEY: url}
            ids = {CUSTOM_ARG_ISSUE: issue, CUSTOM_ARG_SUBSCRIBER: str(sid), CUSTOM_ARG_SEND: send}
            return Recipient(email, name, subs, url, ids, _NO_HEADERS)

        ids = ((CUSTOM_ARG_ISSUE, issue), (CUSTOM_ARG_SEND, send))
        return Readers(message, out, ids, CUSTOM_ARG_SUBSCRIBER, recipient)


#: Characters of a URL that HTML or JSON would escape, or `_clean_value` change (`%%`):
#: an unsubscribe URL without them is its own HTML and JSON text (see `Readers`).
_NOT_PLAIN = re.compile(r"[^A-Za-z0-9._~:/?#\[\]@!$()*+,;=-]")


def recipient_builder(
    project: Project,
    engine: Engine,
    rendered: RenderedIssue,
    issue_id: int,
    send_id: int,
    *,
    key: str,
    extra_ids: dict[str, str] | None = None,
) -> Builder:
    """The one recipient builder of every send (an issue, a sequence step): ids, the
    reader's unsubscribe URL and, with `[replies] domain`, their signed reply token, all
    tokens made with the public ids (never the row ids)."""
    with engine.connect() as conn:
        issue_public = issue_public_id(conn, issue_id)
    replies = bool(project.config.section("replies")["domain"])
    return Builder(
        rendered,
        unsubscribe_url_maker(project.config.base_url, issue_public, key=key),
        issue_id,
        send_id,
        token_maker(REPLY, issue_public, key=key) if replies else None,
        dict(extra_ids or {}),
    )


_NO_HEADERS = Recipient._field_defaults["headers"]
_NONE: frozenset[int] = frozenset()


def custom_fields(raw: Any) -> dict[str, Any]:
    """The custom fields column as read raw: JSON text (SQLite), or already parsed (psycopg
    parses json columns itself)."""
    if isinstance(raw, dict):
        return dict(raw)
    if not raw or raw == "{}":
        return {}
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}


@dataclass
class Preparer:
    """A batch of rows made ready for the transport: recipients built, and, for a transport
    that `prepares`, its request made (JSON for SendGrid). In a sender thread, or in a forked
    worker process for a big list."""

    builder: Builder | None  # None: the source builds the recipients (a test copy, a step)
    transport: Transport
    message: Message

    def __post_init__(self) -> None:
        # Asked once: does the transport prepare (its CPU work apart from its I/O)? Does it
        # write a bulk send's readers without a Recipient each (SendGrid)?
        self.prepares = self.transport.capabilities.prepares
        self.prepare_readers = getattr(self.transport, "prepare_readers", None)

    def __call__(self, batch: Page) -> Any:
        assert self.builder is not None, "the source built these recipients"
        if self.prepare_readers is not None:
            readers = self.builder.readers(batch, self.message)
            if readers is not None and (prepared := self.prepare_readers(readers)) is not None:
                return prepared
        return self.prepare(self.builder.build(batch))

    def prepare(self, recipients: list[Recipient]) -> Any:
        """Recipients built already, made ready for `send`."""
        if self.prepares:
            return cast("PreparingTransport", self.transport).prepare(
                Batch(self.message, recipients)
            )
        return recipients  # (from a worker: only these are pickled back, not the message)

    def send(self, prepared: Any) -> list[Outcome]:
        """What `__call__` made, sent: one outcome per recipient, in order."""
        if self.prepares:
            return cast("PreparingTransport", self.transport).send_prepared(prepared)
        return self.transport.send(Batch(self.message, prepared))


# Set before the worker pool forks, so workers inherit the rendered issue without pickling it.
_PREPARER: Preparer | None = None
#: The folder through which workers hand back what they made (see `_prepare_in_worker`).
_HANDOFF: str | None = None


def _prepare_in_worker(batch: Page) -> str:
    """In a worker: the batch made ready, handed back as a file in `_HANDOFF` (its path is
    the result). A result of more than a pipe's atomic write (a request is 400 kB) is
    written into the pool's result pipe in pieces; a worker killed midway (the OOM killer)
    left half a message there, and the pool waited for the rest for good: the send hung. A
    path is written at once, and a worker killed while writing its file sends nothing, so
    the pool sees it die and says it is broken (`WORKER_DIED`)."""
    assert _PREPARER is not None and _HANDOFF is not None
    prepared = _PREPARER(batch)
    handle, path = tempfile.mkstemp(dir=_HANDOFF)
    with os.fdopen(handle, "wb") as file:
        pickle.dump(prepared, file, protocol=pickle.HIGHEST_PROTOCOL)
    return path


_HANDOFF_PREFIX = "newsletter-send-"


def remove_dead_handoffs() -> None:
    """Remove the hand-back folders of sends killed before they could remove their own
    (kill -9): each holds a few prepared requests, readers' addresses in them. Called by the
    next send with workers, and by an erasure."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_HANDOFF_PREFIX}*-*"):
        pid = folder.name[len(_HANDOFF_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _handoff_folder() -> str:
    """A new folder (0700) for the workers' hand-back files, named for this process."""
    remove_dead_handoffs()
    return tempfile.mkdtemp(prefix=f"{_HANDOFF_PREFIX}{os.getpid()}-")


def _taken(path: str) -> Any:
    """What a worker handed back in the file at `path` (which goes)."""
    with open(path, "rb") as file:
        prepared = pickle.load(file)
    os.unlink(path)
    return prepared


def _reader_columns() -> tuple[Any, ...]:
    """What a reader's row holds, in the order the preparers read it (`_rows`, `ListReader`)."""
    s = subscribers.c
    return (
        s.id,
        s.email,
        s.name,
        s.first_name,
        s.last_name,
        type_coerce(s.fields, Text),
        s.public_id,
    )


@dataclass
class ListReader:
    """A batch's readers read by the worker that prepares it (a fresh send to a big list):
    the sending process then only cuts the planned ids into batches, claims, posts and
    records, and no rows go through the pool's pipe. Per 100,000 readers that took about
    0.15 CPU s of reading and 0.08 s of pickling rows out of the sending process, which
    shares the machine's cores with its worker (and a local server)."""

    engine: Engine
    tags: tuple[str, ...]

    def __post_init__(self) -> None:
        s = subscribers.c
        columns = _reader_columns()
        first = bindparam("first", 0, type_=Integer)
        last = bindparam("last", 0, type_=Integer)
        conditions = segment_filters(SubscriberStatus.SUBSCRIBED, list(self.tags))
        # Those still subscribed (of the segment), as `_rows` reads them.
        self.in_range = select(*columns).where(s.id >= first, s.id <= last, *conditions)
        # A claimed batch's rows again (`Work.reread`): the claim checked who is subscribed.
        self.by_range = select(*columns).where(s.id >= first, s.id <= last)
        self._queries: dict[str, CompiledQuery] = {}

    def _read(self, which: str, ids: Any) -> list[Row]:
        wanted = set(ids)
        with self.engine.connect() as conn:
            query = self._queries.get(which)
            if query is None:
                statement = self.in_range if which == "in_range" else self.by_range
                query = self._queries[which] = CompiledQuery(conn, statement, "first")
            read = query.rows_with(conn, {"first": ids[0], "last": ids[-1]})
        return [cast(Row, row) for row in read if row[0] in wanted]

    def planned(self, ids: Any) -> list[Row]:
        """The rows of `ids` (ascending), of those still subscribed (of the segment)."""
        return self._read("in_range", ids)

    def again(self, ids: list[int]) -> list[Row]:
        """The rows of `ids` (ascending, claimed), whatever their status now."""
        return self._read("by_range", ids)


#: Set before the worker pool forks: the workers read their batches' readers themselves.
_READER: ListReader | None = None


def _read_and_prepare_in_worker(ids: array[int]) -> tuple[str | None, array[int]]:
    """In a worker: the planned readers of `ids` read and their batch made ready (see
    `_prepare_in_worker`); the path of the hand-back file (None when nobody of them is still
    subscribed) and the ids of the readers in it."""
    assert _READER is not None
    rows = _READER.planned(ids)
    found = array("q", [row[0] for row in rows])
    return (_prepare_in_worker((rows, _NONE)) if rows else None), found


def stop_pool(pool: Any) -> None:
    """The workers stopped (after their current batch) and their hand-back folder gone."""
    global _HANDOFF, _READER
    _READER = None
    pool.shutdown(wait=True, cancel_futures=True)
    gc.unfreeze()  # (frozen for the fork: collectable again in a longer-lived process)
    if _HANDOFF is not None:
        shutil.rmtree(_HANDOFF, ignore_errors=True)
        _HANDOFF = None


def start_pool(preparer: Preparer, expected: int, reader: ListReader | None = None) -> Any:
    """Worker processes for a big list on a multi-core machine, else None (prepare in the
    sender threads). Forked before any sending thread starts; workers compute and, with a
    `reader`, read their batches' readers (their own connections), never write to the
    database or touch the network."""
    global _PREPARER, _HANDOFF, _READER
    cpus = usable_cpus()
    threshold = int(os.environ.get(PARALLEL_ENV) or PARALLEL_FROM)
    if expected < threshold or cpus < 2 or not hasattr(os, "fork"):
        return None
    prepares = preparer.prepares
    assert preparer.builder is not None  # (a list's send builds its recipients here)
    memoized = preparer.builder.personalize.keys is not None
    if memoized and not prepares and PARALLEL_ENV not in os.environ:
        # Memoized personalization is cheaper than pickling recipients back from workers;
        # a prepared request (bytes) is cheap to pass back.
        return None
    _PREPARER = preparer
    _READER = reader
    _HANDOFF = _handoff_folder()
    # Move what is loaded so far out of the collector's reach: the workers' GC then does not
    # write to (and so copy) every inherited page.
    gc.freeze()
    # (Not multiprocessing.Pool: it replaces a worker that died, say killed by the OOM killer,
    # and waits for that worker's batch for good; this executor says the pool is broken.)
    # One core stays the sending process's own: it reads, claims, posts and records about as
    # much CPU as the workers spend. On 2 cores, 1 worker sent 100,000 readers 8-15 % faster
    # than 2 (interleaved runs), which fought the sender (and a local server) for the cores.
    pool = ProcessPoolExecutor(
        min(cpus - 1, 4),
        mp_context=multiprocessing.get_context("fork"),
        initializer=_worker_init,
        initargs=(os.getpid(),),
    )
    # The executor forks its workers at the first job, not here: by then the heartbeat and
    # sender threads run, and a lock one of them held at that moment (SQLite's, the
    # connection pool's) would stay locked in the child, whose reader opens connections.
    # A first job now forks them while this is the only thread (`submit` forks before it
    # starts the executor's thread; its answer is not waited for: the workers start up
    # while this process takes the lease and starts its threads).
    pool.submit(os.getpid)
    return pool


def usable_cpus() -> int:
    """The cores this process may run on: a cpuset's or `taskset`'s limit, not the host's
    (a CPU quota, such as `docker --cpus`, is not seen here)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (no sched_getaffinity on macOS)
        return os.cpu_count() or 1


def _worker_init(parent: int) -> None:
    # Ctrl-C and SIGTERM are the parent's to handle, also when they reach the whole process
    # group (a terminal's Ctrl-C, systemd's stop): the parent stops the send and shuts the
    # workers down after their current batch. A worker killed midway could leave half a
    # result in the pipe, and the pool would wait for the rest for good. When the parent
    # dies (kill -9 too), the kernel ends the workers: they held the pool's pipes open and
    # waited on them for good.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(parent)
    if _READER is not None:
        # The parent's pooled connections are the parent's: this process opens its own.
        _READER.engine.dispose(close=False)


def _rows(
    engine: Engine,
    plan: SendPlan,
    issue_id: int,
    check_rows: bool,
    again: set[str],
) -> Iterator[Page]:
    """Pages of the planned recipients (`plan.planned`, the ids fixed at planning time), by
    id: plain rows, not objects. Read as a keyset scan of those subscribed (of the segment),
    then kept only if planned: people who became subscribed since are not sent to, those who
    left since are not read, and those who already have the issue are left out."""
    planned = plan.planned
    if not planned:
        return
    s = subscribers.c
    conditions = segment_filters(SubscriberStatus.SUBSCRIBED, plan.request.tags)
    statement = (
        select(*_reader_columns())
        .where(s.id > bindparam("after", 0, type_=Integer), s.id <= planned[-1], *conditions)
        .order_by(s.id)
        .limit(PAGE)
    )
    query: CompiledQuery | None = None
    last = 0
    while True:
        with engine.connect() as conn:
            query = query or CompiledQuery(conn, statement, "after")
            read = query.rows(conn, last)
            if not read:
                return
            # This page's share of the plan (both ascending): a range of it, not all of it.
            first, last = read[0][0], read[-1][0]
            wanted = set(planned[bisect_left(planned, first) : bisect_right(planned, last)])
            rows = [row for row in read if row[0] in wanted]
            states: dict[int, str] = {}
            if check_rows and rows:
                states = dict(
                    conn.execute(
                        select(deliveries.c.subscriber_id, deliveries.c.state).where(
                            deliveries.c.issue_id == issue_id,
                            deliveries.c.subscriber_id.between(rows[0][0], rows[-1][0]),
                            deliveries.c.send_round == plan.send_round,  # (a resend's own)
                        )
                    ).all()
                )
        if states:
            # Those who have the issue already are left out; those to try again are marked.
            keep = [row for row in rows if row[0] not in states or states[row[0]] in again]
            if keep:
                yield keep, frozenset(row[0] for row in keep if row[0] in states)
        elif rows:
            yield rows, _NONE
        if len(read) < PAGE:
            return


def execute(
    plan: SendPlan,
    progress: Callable[[SendReport], None] | None = None,
) -> SendReport:
    """Carry out the plan. Raises SendError for a refusal or a lost lease; a stop midway
    (bad key, retries exhausted) is in `report.error`, with what was settled."""
    if plan.refusal:
        raise SendError(plan.refusal)
    project, engine, transport = plan.project, plan.engine, plan.transport
    ledger = Ledger(engine)
    rendered = plan.prepared.rendered
    issue = rendered.issue
    issue_id = plan.issue_id or ensure_issue(
        engine,
        slug=issue.slug,
        title=issue.title,
        subject=rendered.subject,
        language=issue.language,
    )
    use_ledger = plan.uses_ledger
    key = secret_key(required=use_ledger)
    if plan.send_at is not None and plan.schedule_id is None and not plan.request.dry_run:
        plan.schedule_id = transport.create_schedule()
    scheduled = plan.send_at is not None and use_ledger
    # The schedule and its id are on the send before the first request: a killed scheduled
    # send stays scheduled (and cancellable), and --resume keeps them.
    chosen = plan.request.segment  # what the author chose, as defined now (members are frozen)
    send_id = ledger.create_send(
        issue_id,
        transport=transport.kind,
        segment=plan.request.tags,
        dry_run=plan.request.dry_run,
        status="scheduled" if scheduled else "sending",
        batch_id=plan.schedule_id,
        send_at=plan.send_at,
        up_to_subscriber=plan.up_to_id,
        resend=plan.resend,
        subject=plan.subject,
        track_opens=bool(project.config.section("tracking")["opens"]),
        also=None if chosen is None else recorder(chosen.name, chosen.definition),
    )
    report = SendReport(
        send_id, transport.kind, transport.where, use_ledger, transport.accepted_label
    )
    ledger.start_totals(send_id, plan.recipients)
    lease = None
    if use_ledger:
        try:
            lease = ledger.acquire_lease(issue_id, send_id, issue.slug)
        except SendError:
            # Another send started at the same moment and won: nothing of this one began.
            ledger.discard_send(send_id)
            raise
        if plan.request.subject_test_arm is not None and was_cancelled(engine, issue_id):
            # `cancel` came between the plan and the lease: it found no sender to stop, so
            # this one stops itself before its first batch.
            ledger.request_cancel([send_id])
    builder = recipient_builder(project, engine, rendered, issue_id, send_id, key=key)
    preparer = Preparer(builder, transport, marked_if_development_key(plan.message()))
    pool = None
    stop = threading.Event()
    try:
        # Fork the workers (if any) before the heartbeat thread starts.
        # A send with ledger rows already (a resume) reads the list here, leaving out those
        # who have the issue; a fresh one lets its workers read their batches' readers.
        check_rows = use_ledger and ledger.has_rows(issue_id, plan.send_round)
        reader = None if check_rows else ListReader(engine, tuple(plan.request.tags))
        pool = start_pool(preparer, plan.recipients, reader)
        if pool is None:
            reader = None
        if lease is not None:
            lease.start_heartbeat()
            report.marked_uncertain = ledger.in_flight_to_uncertain(issue_id)
        with stop_on_signals(stop), _longer_gil_slices():
            _send_batches(
                plan, ledger, report, issue_id, preparer, pool, lease, progress, stop,
                reader, check_rows,
            )  # fmt: skip
        if report.cancelled:
            report.error = report.error or "stopped for `newsletter cancel`"
        elif stop.is_set():
            report.interrupted = True
            report.error = report.error or "interrupted"
    except KeyboardInterrupt:
        # Ctrl-C outside the main thread's handler: what was in flight is settled
        # (`_send_batches` waits for it); say so in the report instead of a traceback.
        report.interrupted = True
        report.error = report.error or "interrupted"
    except BaseException as exc:
        reason = str(exc) if isinstance(exc, SendError) else f"stopped ({type(exc).__name__})"
        report.error = report.error or reason
        ledger.finish_send(send_id, "scheduled" if scheduled else "stopped", report.error)
        raise
    finally:
        if pool is not None:
            stop_pool(pool)
        transport.close()
        if lease is not None:
            lease.release()
    if report.error:
        # A scheduled send that stopped midway stays scheduled: what went out is at the
        # provider under its schedule id, and `cancel` must find it.
        ledger.finish_send(send_id, "scheduled" if scheduled else "stopped", report.error)
    else:
        ledger.finish_send(send_id, "scheduled" if scheduled else "done", None)
    return report


#: Seconds a thread keeps the GIL before it must hand it over (Python's default: 0.005).
GIL_SLICE = 0.05


@contextmanager
def _longer_gil_slices() -> Iterator[None]:
    """The threads (reading the list, sending, and preparing when no workers do it) take turns
    on the GIL; every forced handover waits for the OS to schedule the other thread, which on
    a busy machine takes long. Longer slices mean fewer handovers (senders still release it at
    once while they wait on I/O):
    measured 1.7x the throughput on the loaded 2-core machine (benchmarks/send_throughput.py)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SLICE)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Within: Ctrl-C (SIGINT) and SIGTERM (systemd, docker, `kill`) ask the send to stop at
    the next safe point instead of raising wherever the main thread happens to be: no batch is
    claimed after that, the requests in flight are settled, so nothing delivered is left
    `in_flight`. Only in the main thread (signal handlers live there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask_to_stop(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, ask_to_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _batches(pages: Iterator[Page], size: int) -> Iterator[Page]:
    """The pages cut into batches of `size` rows (the last may be shorter)."""
    rows: list[Row] = []
    with_rows: frozenset[int] = _NONE
    for page in pages:
        if not rows and len(page[0]) == size:
            yield page  # (the usual case: a page is a batch)
            continue
        rows += page[0]
        with_rows |= page[1]
        start = 0
        while len(rows) - start >= size:
            yield _page(rows[start : start + size], with_rows)
            start += size
        rows = rows[start:]
        with_rows = _page(rows, with_rows)[1]  # only the rest's, so it stays small
    if rows:
        yield _page(rows, with_rows)


def _ids_only(ids: Any) -> list[Row]:
    """Rows of the ids alone (`Work.reread` reads the rest when it is needed)."""
    return [cast(Row, (sid,)) for sid in ids]


def _page(rows: list[Row], with_rows: frozenset[int]) -> Page:
    return rows, frozenset(row[0] for row in rows if row[0] in with_rows) if with_rows else _NONE


def _send_batches(
    plan: SendPlan,
    ledger: Ledger,
    report: SendReport,
    issue_id: int,
    preparer: Preparer,
    pool: Any,
    lease: Any,
    progress: Callable[[SendReport], None] | None,
    stop: threading.Event,
    reader: ListReader | None,
    check_rows: bool,
) -> None:
    """The planned recipients, a batch at a time, through the one sending loop: read by the
    workers (`reader`, a fresh send with workers) or here, leaving out those who have the
    issue (`check_rows`, a resume)."""

    batch_size, concurrency = batch_limits(plan.project, plan.transport)
    send_id = report.send_id

    def settled(_work: Work, outcomes: list[Outcome]) -> None:
        """Count what the sender threads did, for the report (the database has it already)."""
        for outcome, times in outcome_runs(outcomes):
            if outcome.state == DeliveryState.ACCEPTED:
                report.accepted += times
                report.replaced += times if outcome.replaced else 0
            elif outcome.state == DeliveryState.FAILED:
                report.failed += times
            else:
                report.uncertain += times
            known = outcome.error in report.errors
            if outcome.error and not known and len(report.errors) < 100:
                report.errors.append(outcome.error)
            if outcome.fatal and not report.error:
                report.error = outcome.error
        if progress:
            progress(report)

    def fail(error: str) -> None:
        report.error = report.error or error

    loop = Loop(
        ledger,
        concurrency,
        settled,
        stop=stop,
        halted=lambda: report.error is not None,
        owner=lease.owner if lease is not None else None,
        slug=plan.slug,
        uses_ledger=report.ledger,
        send_round=plan.send_round,
    )
    again: set[str] = {
        *RETRYABLE,
        *([DeliveryState.UNCERTAIN] if plan.request.include_uncertain else []),
    }
    works: Iterator[Work]
    if reader is not None:
        # A fresh send's workers read their batches' readers: here only the planned ids.
        planned = plan.planned
        works = (
            Work(
                preparer,
                issue_id,
                send_id,
                number,
                _ids_only(planned[start : start + batch_size]),
                reread=reader.again,
            )
            for number, start in enumerate(range(0, len(planned), batch_size), start=1)
        )
    else:
        pages = _batches(_rows(plan.engine, plan, issue_id, check_rows, again), batch_size)
        works = (
            Work(preparer, issue_id, send_id, number, rows, with_rows)
            for number, (rows, with_rows) in enumerate(pages, start=1)
        )
    try:
        loop.run(works if pool is None else _prepared_ahead(works, pool, loop.is_halted, fail))
    finally:
        report.cancelled = report.cancelled or loop.cancelled


def _prepared_ahead(
    works: Iterator[Work], pool: Any, halted: Callable[[], bool], fail: Callable[[str], None]
) -> Iterator[Work]:
    """`works` with their requests made by the worker processes, a few batches ahead of the
    senders, oldest first: bounded, so memory stays flat. Waits in short steps, so that a
    stop asked for meanwhile is seen at once; a worker that died (the OOM killer) breaks the
    pool, which stops the send."""
    waiting: deque[tuple[Work, Any]] = deque()

    def oldest() -> Work | None:
        work, result = waiting[0]
        while not result.done():
            wait([result], timeout=0.1)
            if halted():
                return None
        waiting.popleft()
        try:
            if work.reread is None:
                work.prepared = _taken(result.result())
                return work
            path, found = result.result()
        except BrokenProcessPool:
            fail(WORKER_DIED)
            return None
        if path is None:  # (nobody of this batch is subscribed any more)
            return None
        work.prepared, work.rows = _taken(path), _ids_only(found)
        return work

    for work in works:
        if halted():
            return
        try:
            if work.reread is None:
                job = pool.submit(_prepare_in_worker, (work.rows, work.with_rows))
            else:
                ids = array("q", [row[0] for row in work.rows])
                job = pool.submit(_read_and_prepare_in_worker, ids)
            waiting.append((work, job))
        except BrokenProcessPool:  # a worker died since the last batch was taken
            fail(WORKER_DIED)
            return
        while len(waiting) > PREPARE_AHEAD and not halted():
            if (ready := oldest()) is not None:
                yield ready
    while waiting and not halted():
        if (ready := oldest()) is not None:
            yield ready
