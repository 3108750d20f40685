"""Single messages outside a bulk send: test copies (`send --test`) and transactional mail.

Both go through the same factory as the bulk send, so SMTP, SendGrid and the outbox all
work; neither writes the ledger (the caller can simply send again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from newsletter.errors import SendError, TransportError
from newsletter.render import SAMPLE_SUBSCRIBER
from newsletter.sending.execute import Preparer
from newsletter.sending.factory import choose_transport
from newsletter.sending.ledger import Ledger
from newsletter.sending.loop import Loop, Work
from newsletter.sending.message import Batch, Message, Recipient, marked_if_development_key
from newsletter.sending.transports import Outcome, Transport
from newsletter.store.public_ids import issue_public_id
from newsletter.store.schema import DeliveryState
from newsletter.store.subscribers import find_subscriber
from newsletter.tokens import REPLY_TOKEN_TAG, reply_token_for, secret_key, unsubscribe_url

if TYPE_CHECKING:
    from newsletter.project import Project
    from newsletter.sending.plan import SendPlan


def send_transactional(
    project: Project,
    to: str,
    subject: str,
    html: str,
    text: str,
    *,
    headers: Mapping[str, str] | None = None,
    reply_to: str | None = None,
    categories: Sequence[str] = ("transactional",),
    even_if_bounced: bool = False,
    unsubscribe_url: str | None = None,
) -> str:
    """Send one message to `to` through the project's transport; return where it went (for a
    log line or a page). `reply_to` defaults to the configured one; `even_if_bounced` see
    `Message`. `unsubscribe_url`, the reader's own, goes into List-Unsubscribe with RFC 8058's
    List-Unsubscribe-Post as in every issue: for mail that goes to many readers at once."""
    config = project.config
    message = Message(
        from_email=config.from_email,
        from_name=config.from_name,
        reply_to=reply_to or config.reply_to,
        subject=subject,
        html=html,
        text=text,
        categories=tuple(categories),
        even_if_bounced=even_if_bounced,
    )
    recipient = Recipient(to, headers=dict(headers or {}), unsubscribe_url=unsubscribe_url)
    _, where = send_one(project, message, recipient)
    return where


def send_one(project: Project, message: Message, recipient: Recipient) -> tuple[Outcome, str]:
    """One message to one person through the project's transport, outside any ledger:
    (its outcome, where it went as one line). The outbox names the file by the message's
    first category and the address (`transactional-<address>.eml`, `answer-<address>.eml`)."""
    chosen = choose_transport(project, transactional=True)
    transport = chosen.transport
    try:
        [outcome] = transport.send(Batch(message, [recipient]))
    finally:
        transport.close()
    if outcome.state != DeliveryState.ACCEPTED:
        raise TransportError(f"mail to {recipient.email} not sent: {outcome.error}")
    where = f"{recipient.email}: {describe(transport, outcome)}"
    return outcome, where + (f" ({chosen.note})" if chosen.note else "")


def describe(transport: Transport, outcome: Outcome) -> str:
    """ "written to PATH" or "accepted by SendGrid (message id X)"."""
    if not transport.capabilities.delivers:
        return f"written to {outcome.where}"
    return f"{transport.accepted_label} (message id {outcome.message_id})"


def send_test(plan: SendPlan, addresses: Sequence[str]) -> list[str]:
    """`--test ADDR...`: "[Test] " + subject, personalized as that subscriber if known, else
    as the sample; records nothing. Returns one line per address."""
    project, engine = plan.project, plan.engine
    prepared = plan.prepared
    chosen = choose_transport(project, outbox_dir=plan.request.outbox_dir, prefix="test-")
    transport = chosen.transport
    # A test copy through SendGrid or SMTP is a real send: its links must work.
    key = secret_key(required=transport.capabilities.delivers)
    # An issue whose slug is "test" has the category already: providers refuse duplicates.
    categories = tuple(dict.fromkeys([prepared.slug, "newsletter", "test"]))
    message = marked_if_development_key(
        plan.message(subject=f"[Test] {prepared.rendered.subject}", categories=categories)
    )
    issue_public = None
    if plan.issue_id is not None:
        with engine.connect() as conn:
            issue_public = issue_public_id(conn, plan.issue_id)
    lines: list[str] = []
    works: list[Work] = []
    preparer = Preparer(None, transport, message)
    who_by_copy: dict[int, tuple[str, str]] = {}
    try:
        for number, address in enumerate(addresses, start=1):
            known = find_subscriber(engine, address)
            context = known.template_context() if known else {**SAMPLE_SUBSCRIBER, "email": address}
            # No subscriber: clicking "unsubscribe" in a test copy unsubscribes no one.
            url = unsubscribe_url(project.config.base_url, None, issue_public, key=key)
            substitutions = prepared.rendered.substitutions(context, url)
            if issue_public is not None and project.config.section("replies")["domain"]:
                # Nobody again: a reply to a test copy names no subscriber.
                substitutions[REPLY_TOKEN_TAG] = reply_token_for(issue_public, None, key)
            recipient = Recipient(
                email=address,
                name=known.name if known else None,
                substitutions=substitutions,
                unsubscribe_url=url,
            )
            who = f"as subscriber {known.email}" if known else "as a sample subscriber"
            who_by_copy[number] = (address, who)
            # One copy a batch, in order, through the one sending loop: claimed by nobody,
            # recorded nowhere (a test copy names no subscriber and keeps no ledger row).
            works.append(
                Work(preparer, plan.issue_id or 0, 0, number,
                     [(number, address, None, None, None, None, None)], claim=False,
                     recipients=[recipient])
            )  # fmt: skip

        def settled(work: Work, outcomes: list[Outcome]) -> None:
            [outcome] = outcomes
            address, who = who_by_copy[work.batch_no]
            if outcome.state != DeliveryState.ACCEPTED:
                raise SendError(f"test send to {address} failed: {outcome.error}")
            lines.append(f"{address}: {describe(transport, outcome)} ({who})")

        loop = Loop(Ledger(engine), 1, settled, uses_ledger=False, count=False)
        loop.run(works)
    finally:
        transport.close()
    return lines
