"""The one sending loop: batches from a source, a few in flight on a pool of sender threads,
each claimed in the ledger before its request goes out and its answers recorded after.

Every send goes through here; what differs is where the batches come from:
- an issue (`execute.py`): the planned recipients, read by id; each batch is claimed in its
  sender thread (`Ledger.claim`, with the lease and cancel checks);
- a welcome sequence (`sequences/batches.py`): the enrollments due now; each batch is
  claimed by the source in the transaction that locks the enrollments and moves each reader
  on to their next step (`ledger.claim_on`), so it arrives here claimed.

The source is an iterator of `Work`; the loop pulls the next batch only when a sender thread
is free, so a source that claims as it goes never claims far ahead of what is sent. Once the
loop is halted it sends what the source claimed already and pulls nothing unclaimed, so
nothing is left `in_flight` by a stop; the source must claim nothing more once halted. What a
send does with the answers (its report's counts, a sequence's retries) is the `settled`
callback's, in the calling thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from newsletter.errors import SendCancelled
from newsletter.sending.answers import record_answers
from newsletter.sending.transports import Outcome
from newsletter.store.schema import FIRST_ROUND, DeliveryState

if TYPE_CHECKING:
    from newsletter.sending.execute import Preparer, Row
    from newsletter.sending.ledger import Ledger
    from newsletter.sending.message import Recipient


@dataclass(slots=True)
class Work:
    """One batch for the loop."""

    preparer: Preparer
    issue_id: int
    send_id: int
    batch_no: int
    rows: list[Row]
    #: Of `rows`, those with a ledger row already (failed before, or uncertain on request).
    with_rows: frozenset[int] = frozenset()
    #: False: the source claimed the batch already, in its own transaction.
    claim: bool = True
    #: Recipients the source built already (a sequence checks each against the transport).
    recipients: list[Recipient] | None = None
    #: The transport's request, made ahead by a worker process.
    prepared: Any = None
    #: The source's own, for its `settled` callback (a sequence's step and moves).
    note: Any = None
    #: Set when `rows` hold only the ids (a worker read the rest and prepared the request):
    #: reads the full rows of these ids again, for a batch to prepare anew.
    reread: Callable[[list[int]], list[Row]] | None = None


@dataclass
class Loop:
    """Send `Work` from a source (see the module docstring)."""

    ledger: Ledger
    concurrency: int
    #: Called in the loop's thread with each batch's outcomes, once they are recorded.
    settled: Callable[[Work, list[Outcome]], None]
    #: Set by a signal or `cancel`: claim nothing more, settle what is in flight.
    stop: threading.Event = field(default_factory=threading.Event)
    #: Besides `stop`: the source's reason to end early (a fatal error in its report).
    halted: Callable[[], bool] = lambda: False
    #: The lease whose holder may claim (None: a sequence run, which claims in its source).
    owner: str | None = None
    slug: str = "the issue"
    #: Keep ledger rows (False: the outbox or a dry run, which only count).
    uses_ledger: bool = True
    #: Add the outcomes to the send's totals (in the same transaction as the rows). False: a
    #: test copy, which records no send.
    count: bool = True
    #: `newsletter cancel` asked the send to stop.
    cancelled: bool = False
    #: The ledger round of the rows this loop claims (a resend's kind; see `deliveries`).
    send_round: str = FIRST_ROUND

    def is_halted(self) -> bool:
        return self.stop.is_set() or self.halted()

    def run(self, source: Iterable[Work]) -> None:
        """Send every batch of `source` until it ends or the loop is halted; whatever
        happens (Ctrl-C, a lost lease), what is in flight is settled before this returns or
        raises (the first error of a sender thread is raised after all)."""
        pending: dict[Future[list[Outcome]], Work] = {}

        def settle(done: set[Future[list[Outcome]]]) -> None:
            for future in done:
                work = pending.pop(future)
                # A refused claim (the lease was lost) raises SendError here: the send stops.
                self.settled(work, future.result())

        writing = self.ledger.writing() if self.uses_ledger else nullcontext()
        with writing, ThreadPoolExecutor(self.concurrency, thread_name_prefix="send") as executor:
            try:
                for work in source:
                    if self.is_halted() and work.claim:
                        break  # claim nothing more
                    # (A batch the source claimed already goes out even so: its readers were
                    # moved on to their next step. The source claims no more once halted.)
                    pending[executor.submit(self.deliver, work)] = work
                    while len(pending) >= self.concurrency:
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        settle(done)
            finally:
                failure: BaseException | None = None
                while pending:
                    try:
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    except KeyboardInterrupt:
                        continue  # a second Ctrl-C: still settle, the answers are on their way
                    try:
                        settle(done)
                    except Exception as exc:
                        failure = failure or exc
                if failure is not None:
                    raise failure

    def deliver(self, work: Work) -> list[Outcome]:
        """In a sender thread: prepare the batch (unless a worker or the source did), claim
        it (unless the source did), send it, record what came back. The ledger's database
        work runs here, beside the other threads (SQLite and PostgreSQL's drivers let go of
        the GIL while they work). A claim that fails (the lease was lost) raises: nothing of
        this batch was recorded or sent."""
        preparer, rows, prepared = work.preparer, work.rows, work.prepared
        recipients = work.recipients
        if prepared is None and recipients is None:
            # (Raises before anything is claimed: the send stops.)
            prepared = preparer((rows, work.with_rows))
        ids = [row[0] for row in rows]
        if self.uses_ledger and work.claim:
            new = [sid for sid in ids if sid not in work.with_rows]
            retry = [sid for sid in ids if sid in work.with_rows]
            try:
                kept = self.ledger.claim(
                    work.issue_id,
                    work.send_id,
                    work.batch_no,
                    new,
                    retry,
                    owner=self.owner,
                    slug=self.slug,
                    send_round=self.send_round,
                )
            except SendCancelled:
                # `cancel` asked: claim and send nothing more, settle what is in flight.
                self.cancelled = True
                self.stop.set()
                return []
            if len(kept) < len(ids):
                # Unsubscribed or forgotten since they were read: they get nothing.
                rows = [row for row in rows if row[0] in kept]
                ids = [row[0] for row in rows]
                if work.reread is not None and ids:
                    rows = work.reread(ids)
                    ids = [row[0] for row in rows]
                prepared = recipients = None
        if not ids:
            return []
        try:
            if recipients is not None:
                prepared = preparer.prepare(recipients)
            elif prepared is None:
                prepared = preparer((rows, work.with_rows))
        except Exception as exc:  # claimed, but nothing went out: failed, sent on --resume
            error = f"could not prepare a batch: {exc}"
            outcomes = [Outcome(DeliveryState.FAILED, error=error, fatal=True)] * len(ids)
        else:
            try:
                outcomes = preparer.send(prepared)
            except Exception as exc:  # a bug or an unexpected library error: not known sent
                error = f"unexpected error: {exc}"
                outcomes = [Outcome(DeliveryState.UNCERTAIN, error=error)] * len(ids)
        # What came back, and the send's totals, in one transaction here: `sends` and
        # `stats` agree with the ledger whenever and however the send stops.
        if self.uses_ledger:
            # (With SMTP's 250s and refused addresses, as a provider's events would be.)
            capabilities = preparer.transport.capabilities
            record_answers(
                self.ledger.engine,
                capabilities,
                work.issue_id,
                work.send_id,
                ids,
                outcomes,
                count=self.count,
            )
        elif self.count:
            self.ledger.count_outcomes(work.send_id, outcomes)
        return outcomes
