"""Sending an issue: render once, stream recipients by id, batch, a few requests in flight.

A real send (SendGrid, not a dry run) keeps the ledger (see `ledger.py`); outbox and dry-run
sends write no delivery rows, so they never block the real send, but are listed by `sends`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from newsletter.errors import SendError
from newsletter.sending import ledger
from newsletter.sending.payload import (
    message_base,
    personalization,
    personalization_problem,
    request_body,
)
from newsletter.sending.transport import OutboxTransport, Outcome, SendGridTransport

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.project import Project
    from newsletter.render import RenderedIssue

API_KEY_ENV = "SENDGRID_API_KEY"


class Transport(Protocol):
    name: str

    @property
    def where(self) -> str: ...

    def post_mail(self, body: dict[str, Any]) -> Outcome: ...


@dataclass
class Prepared:
    """An issue loaded, checked and rendered once."""

    path: Path
    rendered: RenderedIssue
    warnings: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return self.rendered.issue.slug


def prepare(project: Project, path: Path, *, run_check: bool = True) -> Prepared:
    """Load, check (errors stop the send) and render the issue once."""
    from newsletter.issue import load_issue
    from newsletter.render import render_issue

    warnings: list[str] = []
    if run_check:
        from newsletter.check import check_issue

        findings = check_issue(project, path)
        errors = [f for f in findings if f.severity == "error"]
        warnings = [_finding(f) for f in findings if f.severity != "error"]
        if errors:
            listed = "; ".join(_finding(f) for f in errors)
            raise SendError(
                f"{len(errors)} error(s) in the issue, fix them first "
                f"(`newsletter check {path.name}`): {listed}"
            )
    issue = load_issue(project, path)
    return Prepared(path=path, rendered=render_issue(project, issue), warnings=warnings)


def _finding(f: Any) -> str:
    where = f"{Path(f.path).name}:{f.line}" if getattr(f, "line", None) else Path(f.path).name
    return f"{where}: {f.message}"


def choose_transport(project: Project, outbox: Path | None) -> tuple[Transport, str | None]:
    """SendGrid with a key, else the outbox; the second value says why the outbox, if so."""
    if outbox is not None:
        return OutboxTransport(outbox), None
    key = os.environ.get(API_KEY_ENV)
    if key:
        return SendGridTransport.from_project(project, key), None
    return (
        OutboxTransport(project.root / "outbox"),
        f"{API_KEY_ENV} is not set, so messages go to the outbox folder {project.root / 'outbox'} "
        "(set the key to send through SendGrid)",
    )


def reply_to_for(project: Project, issue_id: int | None) -> str:
    """`[replies] domain` routes replies through a signed address naming the issue."""
    from newsletter.tokens import reply_address, secret_key

    domain = project.config.section("replies")["domain"]
    if domain and issue_id is not None:
        return reply_address(domain, issue_id, key=secret_key(required=True))
    return project.config.reply_to


def base_for(
    project: Project,
    prepared: Prepared,
    *,
    subject: str | None = None,
    reply_to: str,
    sandbox: bool = False,
    send_at: datetime | None = None,
    batch_id: str | None = None,
) -> dict[str, Any]:
    config = project.config
    rendered = prepared.rendered
    return message_base(
        from_email=config.from_email,
        from_name=config.from_name,
        reply_to=reply_to,
        subject=subject or rendered.subject,
        text=rendered.text,
        html=rendered.html,
        categories=[prepared.slug, "newsletter"],
        asm_group_id=config.section("sendgrid")["unsubscribe_group_id"],
        sandbox=sandbox,
        send_at=int(send_at.timestamp()) if send_at else None,
        batch_id=batch_id,
    )


@dataclass
class SendOptions:
    tags: Sequence[str] = ()
    dry_run: bool = False
    resume: bool = False
    include_uncertain: bool = False
    send_at: datetime | None = None
    #: How many recipients the caller counted (big lists are personalized in parallel).
    expected: int = 0


@dataclass
class SendReport:
    send_id: int
    transport: str
    where: str
    ledger: bool
    accepted: int = 0
    failed: int = 0
    uncertain: int = 0
    marked_uncertain: int = 0  # in-flight rows of a dead sender, found on resume
    error: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.accepted + self.failed + self.uncertain


def refuse_without_base_url(project: Project) -> None:
    """Readers must be able to leave (RFC 8058, CAN-SPAM): no real send with dead links."""
    if project.config.base_url is None:
        raise SendError(
            f"{project.config.path}: [newsletter] base_url is not set, so the unsubscribe links "
            "would lead nowhere; set base_url to where `newsletter serve` is reachable"
        )


def refuse_if_already_sent(
    engine: Engine, issue_id: int, slug: str, options: SendOptions
) -> SendOptions:
    """A plain send of an issue that someone has (or may have) refuses, saying how to reach
    the rest. If every earlier attempt failed (a wrong key, the network down), nobody has
    it, so the send goes on and retries them, as `--resume` would."""
    if options.resume or not ledger.has_rows(engine, issue_id):
        return options
    counts = ledger.issue_counts(engine, issue_id)
    had = sum(n for s, n in counts.items() if s not in ledger.RETRYABLE)
    if had == 0:
        return replace(options, resume=True)
    todo = ledger.count_to_reach(engine, issue_id, options.tags)
    hint = (
        f"use --resume to reach the {todo} people who have not had it"
        if todo
        else "every subscriber (of this segment) has had it already"
    )
    uncertain = counts.get("uncertain", 0) + counts.get("in_flight", 0)
    extra = f"; {uncertain} are uncertain (see `newsletter sends {slug}`)" if uncertain else ""
    raise SendError(f"{slug} was already sent ({had} recorded); {hint}{extra}")


def _candidates(
    engine: Engine, issue_id: int | None, options: SendOptions, use_ledger: bool
) -> Iterator[tuple[Any, bool]]:
    """(subscriber, already has a row) for everyone to send to, in id order, streamed."""
    from newsletter.store.subscribers import iter_subscribers

    check_rows = use_ledger and issue_id is not None and ledger.has_rows(engine, issue_id)
    again = {*ledger.RETRYABLE, *(["uncertain"] if options.include_uncertain else [])}
    page: list[Any] = []

    def flush() -> Iterator[tuple[Any, bool]]:
        states = ledger.states_for(engine, issue_id, [s.id for s in page]) if check_rows else {}  # type: ignore[arg-type]
        for sub in page:
            state = states.get(sub.id)
            if state is None:
                yield sub, False
            elif state in again:
                yield sub, True
        page.clear()

    for sub in iter_subscribers(engine, status="subscribed", tags=options.tags):
        page.append(sub)
        if len(page) >= 1000:
            yield from flush()
    yield from flush()


def run_send(
    project: Project,
    prepared: Prepared,
    transport: Transport,
    options: SendOptions,
    *,
    progress: Callable[[SendReport], None] | None = None,
    batch_id: str | None = None,
) -> SendReport:
    """Send the issue to the segment (or, with --resume, to whoever has not had it)."""
    from newsletter.store.engine import project_engine
    from newsletter.tokens import secret_key, unsubscribe_url_maker

    engine = project_engine(project)
    rendered = prepared.rendered
    issue = rendered.issue
    issue_id = ledger.ensure_issue(
        engine,
        slug=issue.slug,
        title=issue.title,
        subject=rendered.subject,
        language=issue.language,
    )
    # Outbox and dry-run sends keep no ledger: they must not block the real send.
    use_ledger = transport.name == "sendgrid" and not options.dry_run
    if use_ledger:
        refuse_without_base_url(project)
    key = secret_key(required=use_ledger)
    if use_ledger:
        options = refuse_if_already_sent(engine, issue_id, issue.slug, options)
    status = "scheduled" if options.send_at and use_ledger else "sending"
    send_id = ledger.create_send(
        engine,
        issue_id,
        transport=transport.name,
        segment=options.tags,
        dry_run=options.dry_run,
        status="sending",
        batch_id=batch_id,
        send_at=options.send_at,
    )
    report = SendReport(send_id, transport.name, transport.where, use_ledger)
    ledger.start_totals(engine, send_id, options.expected)
    lease = None
    if use_ledger:
        try:
            lease = ledger.acquire_lease(engine, issue_id, send_id, issue.slug)
        except SendError as exc:
            ledger.finish_send(engine, send_id, "failed", str(exc))
            raise
    builder = Builder(
        rendered,
        unsubscribe_url_maker(project.config.base_url, issue_id, key=key),
        issue_id,
        send_id,
    )
    pool = None
    try:
        # Fork the workers (if any) before the heartbeat thread starts.
        pool = start_pool(builder, options.expected)
        if lease is not None:
            lease.start_heartbeat()
            report.marked_uncertain = ledger.in_flight_to_uncertain(engine, issue_id)
        _send_batches(
            project,
            engine,
            prepared,
            transport,
            options,
            report,
            issue_id,
            builder,
            pool,
            reply_to_for(project, issue_id),
            batch_id,
            progress,
            lease.owner if lease is not None else None,
        )
    except BaseException as exc:
        reason = str(exc) if isinstance(exc, SendError) else f"interrupted ({type(exc).__name__})"
        report.error = report.error or reason
        ledger.finish_send(engine, send_id, "stopped", report.error)
        raise
    finally:
        if pool is not None:
            pool.terminate()
        if lease is not None:
            lease.release()
    if report.error:
        ledger.finish_send(engine, send_id, "stopped", report.error)
    else:
        final = status if status == "scheduled" else "done"
        ledger.finish_send(engine, send_id, final, None)
    return report


def _send_batches(
    project: Project,
    engine: Engine,
    prepared: Prepared,
    transport: Transport,
    options: SendOptions,
    report: SendReport,
    issue_id: int,
    builder: Builder,
    pool: Any,
    reply_to: str,
    batch_id: str | None,
    progress: Callable[[SendReport], None] | None,
    owner: str | None = None,
) -> None:
    section = project.config.section("sendgrid")
    batch_size: int = section["batch_size"]
    concurrency: int = max(1, section["concurrency"])
    base = base_for(
        project,
        prepared,
        reply_to=reply_to,
        sandbox=options.dry_run and transport.name == "sendgrid",
        send_at=options.send_at,
        batch_id=batch_id,
    )
    use_ledger = report.ledger
    send_id = report.send_id
    pending: dict[Future[Outcome], tuple[int, list[int]]] = {}

    def settle(done: set[Future[Outcome]]) -> None:
        for future in done:
            batch_no, ids = pending.pop(future)
            try:
                outcome = future.result()
            except Exception as exc:  # a bug or an unexpected library error: not known sent
                outcome = Outcome("uncertain", error=f"unexpected error: {exc}")
            if use_ledger:
                ledger.record(
                    engine,
                    issue_id,
                    ids,
                    outcome.state,
                    message_id=outcome.message_id,
                    error=outcome.error,
                    send_id=send_id,
                )
            if outcome.state == "accepted":
                report.accepted += len(ids)
            elif outcome.state == "failed":
                report.failed += len(ids)
            else:
                report.uncertain += len(ids)
            if outcome.error and outcome.error not in report.errors:
                report.errors.append(outcome.error)
            if outcome.fatal and not report.error:
                report.error = outcome.error
            ledger.update_totals(
                engine,
                send_id,
                accepted=report.accepted,
                failed=report.failed,
                uncertain=report.uncertain,
            )
            if progress:
                progress(report)

    batch_no = 0
    batch: list[dict[str, Any]] = []
    batch_sids: list[int] = []  # the subscriber of each personalization in `batch`
    new_ids: list[int] = []
    again_ids: list[int] = []
    refused: dict[int, str] = {}

    def submit(executor: ThreadPoolExecutor) -> None:
        nonlocal batch_no
        if use_ledger and refused:
            ledger.record_failed_new(engine, issue_id, send_id, batch_no, dict(refused))
        report.failed += len(refused)
        report.errors.extend(e for e in refused.values() if e not in report.errors)
        refused.clear()
        if not batch:
            return
        batch_no += 1
        ids = new_ids + again_ids
        people = list(batch)
        if use_ledger:
            kept = ledger.claim(
                engine,
                issue_id,
                send_id,
                batch_no,
                new_ids,
                again_ids,
                owner=owner,
                slug=prepared.slug,
            )
            if len(kept) < len(ids):
                # Unsubscribed or forgotten since they were read: they get nothing.
                people = [p for p, sid in zip(batch, batch_sids, strict=True) if sid in kept]
                ids = [sid for sid in ids if sid in kept]
        if people:
            future = executor.submit(transport.post_mail, request_body(base, people))
            pending[future] = (batch_no, ids)
        batch.clear()
        batch_sids.clear()
        new_ids.clear()
        again_ids.clear()
        while len(pending) >= concurrency:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            settle(done)

    def take(built: list[Built]) -> None:
        for sid, has_row, p, problem in built:
            if p is None:
                refused[sid] = problem or "refused"
                continue
            batch.append(p)
            batch_sids.append(sid)
            (again_ids if has_row else new_ids).append(sid)
            if len(batch) >= batch_size:
                submit(executor)

    waiting: deque[Any] = deque()  # pool results, oldest first: bounded, so memory stays flat
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="send") as executor:
        try:
            for page in _pages(_candidates(engine, issue_id, options, use_ledger), batch_size):
                if report.error:
                    break
                if pool is None:
                    take(builder.build(page))
                    continue
                waiting.append(pool.apply_async(_build_in_worker, (page,)))
                while len(waiting) > BUILD_AHEAD and not report.error:
                    take(waiting.popleft().get())
            while waiting and not report.error:
                take(waiting.popleft().get())
            if not report.error:
                submit(executor)
        finally:
            # Whatever happened, settle what is in flight so the ledger says what we know.
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                settle(done)


#: (subscriber id, has a ledger row, personalization or None, why refused)
Built = tuple[int, bool, "dict[str, Any] | None", "str | None"]
#: Pages handed to build processes ahead of the sender: enough to keep them busy.
BUILD_AHEAD = 3
#: Lists at least this long are personalized by worker processes (fork) on multi-core machines;
#: the environment variable lets tests run the parallel path on small lists.
PARALLEL_ENV = "NEWSLETTER_SEND_PARALLEL_FROM"
PARALLEL_FROM = 20000


@dataclass
class Builder:
    """Turns a page of subscribers into personalizations (in this process or a forked worker)."""

    rendered: RenderedIssue
    unsubscribe_url: Callable[[int], str]
    issue_id: int
    send_id: int

    def build(self, page: list[tuple[int, str, str | None, dict[str, Any], bool]]) -> list[Built]:
        out: list[Built] = []
        for sid, address, name, context, has_row in page:
            url = self.unsubscribe_url(sid)
            p = personalization(
                email=address,
                name=name,
                substitutions=self.rendered.substitutions(context, url),
                unsubscribe_url=url,
                issue_id=self.issue_id,
                subscriber_id=sid,
                send_id=self.send_id,
            )
            problem = personalization_problem(p)
            out.append((sid, has_row, None if problem else p, problem))
        return out


# Set before the worker pool forks, so workers inherit the rendered issue without pickling it.
_BUILDER: Builder | None = None


def _build_in_worker(page: list[tuple[int, str, str | None, dict[str, Any], bool]]) -> list[Built]:
    assert _BUILDER is not None
    return _BUILDER.build(page)


def _pages(
    candidates: Iterator[tuple[Any, bool]], size: int
) -> Iterator[list[tuple[int, str, str | None, dict[str, Any], bool]]]:
    page: list[tuple[int, str, str | None, dict[str, Any], bool]] = []
    for sub, has_row in candidates:
        page.append((sub.id, sub.email, sub.name, sub.template_context(), has_row))
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def start_pool(builder: Builder, expected: int) -> Any:
    """Worker processes for a big list on a multi-core machine, else None (build inline).

    Forked before any sending thread starts; workers only compute, never touch the database."""
    global _BUILDER
    cpus = os.cpu_count() or 1
    threshold = int(os.environ.get(PARALLEL_ENV) or PARALLEL_FROM)
    if expected < threshold or cpus < 2 or not hasattr(os, "fork"):
        return None
    import gc
    import multiprocessing

    _BUILDER = builder
    # Move what is loaded so far out of the collector's reach: the workers' GC then does not
    # write to (and so copy) every inherited page.
    gc.freeze()
    return multiprocessing.get_context("fork").Pool(min(cpus, 4))


def send_test(
    project: Project,
    prepared: Prepared,
    transport: Transport,
    addresses: Sequence[str],
) -> list[str]:
    """`--test ADDR...`: "[Test] " + subject, personalized as that subscriber if known, else
    as the sample; records nothing. Returns one line per address."""
    from newsletter.render import SAMPLE_SUBSCRIBER
    from newsletter.store.engine import project_engine
    from newsletter.store.subscribers import find_subscriber
    from newsletter.tokens import secret_key, unsubscribe_url

    engine = project_engine(project)
    issue_id = ledger.find_issue_id(engine, prepared.slug)
    key = secret_key(required=False)
    base = base_for(
        project,
        prepared,
        subject=f"[Test] {prepared.rendered.subject}",
        reply_to=reply_to_for(project, issue_id),
    )
    # An issue whose slug is "test" has the category already: SendGrid refuses duplicates.
    base["categories"] = list(dict.fromkeys([*base["categories"], "test"]))[:10]
    lines = []
    for address in addresses:
        known = find_subscriber(engine, address)
        context = known.template_context() if known else {**SAMPLE_SUBSCRIBER, "email": address}
        # Subscriber 0 is nobody: clicking "unsubscribe" in a test copy unsubscribes no one.
        url = unsubscribe_url(project.config.base_url, 0, issue_id, key=key)
        p = personalization(
            email=address,
            name=known.name if known else None,
            substitutions=prepared.rendered.substitutions(context, url),
            unsubscribe_url=url,
            issue_id=None,
            subscriber_id=None,
            send_id=None,
        )
        if isinstance(transport, OutboxTransport):
            transport.prefix = "test-"
        outcome = transport.post_mail(request_body(base, [p]))
        if outcome.state != "accepted":
            raise SendError(f"test send to {address} failed: {outcome.error}")
        who = f"as subscriber {known.email}" if known else "as a sample subscriber"
        lines.append(f"{address}: {_where(transport, outcome)} ({who})")
    return lines


def _where(transport: Transport, outcome: Outcome) -> str:
    if isinstance(transport, OutboxTransport):
        return f"written to {transport.written[-1]}"
    return f"accepted by SendGrid (message id {outcome.message_id})"
