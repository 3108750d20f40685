"""Sending one ready message to a given list of subscribers, through the ledger: the API for
other parts of the tool (welcome sequences, later automations).

    from newsletter.sending.deliver import Addressee, deliver
    from newsletter.sending.message import Message

    message = Message(from_email=..., from_name=..., subject=..., html=..., text=...,
                      reply_to=..., categories=("welcome", "sequence"),
                      ids={"newsletter_sequence_step": "welcome/01"})
    report = deliver(project, message, [Addressee(subscriber_id, email, name, substitutions)],
                     ledger_slug="sequence:welcome/01", title="Willkommen")

- The transport is the project's (the factory: SendGrid, SMTP or the outbox), exactly as for
  an issue; its `max_batch` and `[sending] concurrency` apply.
- The ledger key is an `issues` row named `ledger_slug` (created on first use; choose a slug
  that cannot be an issue's, e.g. with a colon): one row per (slug, subscriber), so a person
  never gets the same step twice, even if two processes run the sequence at once (the lease)
  or a run is killed (in-flight rows become uncertain on the next run).
- Events: every recipient's ids are `newsletter_issue_id` (the ledger row's issue id),
  `newsletter_subscriber_id`, `newsletter_send_id`, plus `message.ids` (SendGrid returns them
  as custom_args on each webhook event), so an event finds its step.
- The unsubscribe URL (footer key and List-Unsubscribe) is made per subscriber here if
  `Addressee.unsubscribe_url` is None.
- A transport that keeps no ledger (the outbox) writes files and records nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from newsletter.errors import SendError
from newsletter.sending.execute import SendReport
from newsletter.sending.factory import choose_transport
from newsletter.sending.ledger import RETRYABLE, Ledger
from newsletter.sending.message import Batch, Message, Recipient
from newsletter.sending.transports import Outcome
from newsletter.store.issues import ensure_issue
from newsletter.store.schema import CUSTOM_ARG_ISSUE, CUSTOM_ARG_SEND, CUSTOM_ARG_SUBSCRIBER

if TYPE_CHECKING:
    from newsletter.project import Project


@dataclass(frozen=True)
class Addressee:
    subscriber_id: int
    email: str
    name: str | None = None
    substitutions: Mapping[str, str] = field(default_factory=dict)
    unsubscribe_url: str | None = None


def deliver(
    project: Project,
    message: Message,
    people: Sequence[Addressee],
    *,
    ledger_slug: str,
    title: str | None = None,
    language: str | None = None,
    progress: Callable[[SendReport], None] | None = None,
) -> SendReport:
    """Send `message` to `people` (already chosen by the caller) through the ledger; people
    who have a row for `ledger_slug` already (other than failed) are skipped."""
    from newsletter.store.engine import project_engine
    from newsletter.store.public_ids import issue_public_id, subscriber_public_ids
    from newsletter.tokens import secret_key, unsubscribe_url_maker

    engine = project_engine(project)
    transport = choose_transport(project).transport
    caps = transport.capabilities
    ledger = Ledger(engine)
    issue_id = ensure_issue(
        engine,
        slug=ledger_slug,
        title=title or message.subject,
        subject=message.subject,
        language=language or project.config.language,
    )
    use_ledger = caps.keeps_ledger and not message.sandbox
    send_id = ledger.create_send(issue_id, transport=transport.kind, segment=[], dry_run=False)
    report = SendReport(
        send_id, transport.kind, transport.where, use_ledger, transport.accepted_label
    )
    ledger.start_totals(send_id, len(people))
    with engine.connect() as conn:
        issue_public = issue_public_id(conn, issue_id)
    url_for = unsubscribe_url_maker(
        project.config.base_url, issue_public, key=secret_key(required=use_ledger)
    )
    lease = ledger.acquire_lease(issue_id, send_id, ledger_slug) if use_ledger else None
    section = project.config.section("sending")
    size = max(1, min(section["batch_size"], caps.max_batch))
    pending: dict[Future[list[Outcome]], list[int]] = {}

    def settle(done: set[Future[list[Outcome]]]) -> None:
        for future in done:
            ids = pending.pop(future)
            outcomes = future.result()
            if use_ledger:
                ledger.record_outcomes(issue_id, send_id, ids, outcomes)
            for outcome in outcomes:
                setattr(report, outcome.state, getattr(report, outcome.state) + 1)
                if outcome.error and outcome.error not in report.errors:
                    report.errors.append(outcome.error)
                if outcome.fatal and not report.error:
                    report.error = outcome.error
            ledger.update_totals(
                send_id, accepted=report.accepted, failed=report.failed, uncertain=report.uncertain
            )
            if progress:
                progress(report)

    try:
        if lease is not None:
            report.marked_uncertain = ledger.in_flight_to_uncertain(issue_id)
        with ThreadPoolExecutor(max(1, section["concurrency"])) as executor:
            try:
                for start in range(0, len(people), size):
                    if report.error:
                        break
                    chunk = people[start : start + size]
                    states = ledger.states_for(issue_id, [p.subscriber_id for p in chunk])
                    chunk = [p for p in chunk if states.get(p.subscriber_id) in (None, *RETRYABLE)]
                    if use_ledger and chunk:
                        new = [p.subscriber_id for p in chunk if p.subscriber_id not in states]
                        again = [p.subscriber_id for p in chunk if p.subscriber_id in states]
                        kept = ledger.claim(
                            issue_id, send_id, start // size + 1, new, again,
                            owner=lease.owner if lease else None, slug=ledger_slug,
                        )  # fmt: skip
                        chunk = [p for p in chunk if p.subscriber_id in kept]
                    if not chunk:
                        continue
                    with engine.connect() as conn:
                        public = subscriber_public_ids(conn, [p.subscriber_id for p in chunk])
                    recipients = [
                        _recipient(
                            p,
                            url_for,
                            public.get(p.subscriber_id) or p.subscriber_id,
                            issue_id,
                            send_id,
                        )
                        for p in chunk
                    ]
                    future = executor.submit(transport.send, Batch(message, recipients))
                    pending[future] = [p.subscriber_id for p in chunk]
                    while len(pending) >= max(1, section["concurrency"]):
                        settle(wait(pending, return_when=FIRST_COMPLETED)[0])
            finally:
                while pending:
                    settle(wait(pending, return_when=FIRST_COMPLETED)[0])
    except BaseException as exc:
        ledger.finish_send(
            send_id, "stopped", str(exc) if isinstance(exc, SendError) else "stopped"
        )
        raise
    finally:
        transport.close()
        if lease is not None:
            lease.release()
    ledger.finish_send(send_id, "stopped" if report.error else "done", report.error)
    return report


def _recipient(
    person: Addressee,
    url_for: Callable[[int | str], str],
    ref: int | str | None,
    issue_id: int,
    send_id: int,
) -> Recipient:
    # `ref`: the public id (the row id, which tells the list's size, only if none is set).
    url = person.unsubscribe_url
    if url is None and ref is not None:
        url = url_for(ref)
    return Recipient(
        email=person.email,
        name=person.name,
        substitutions=person.substitutions,
        unsubscribe_url=url,
        ids={
            CUSTOM_ARG_ISSUE: str(issue_id),
            CUSTOM_ARG_SUBSCRIBER: str(person.subscriber_id),
            CUSTOM_ARG_SEND: str(send_id),
        },
    )
