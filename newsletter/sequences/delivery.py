"""The adapter between sequences and the sending core: one step's email for a batch of people,
handed to the configured transport (the factory's choice: SendGrid, SMTP or the outbox).
Everything sequences know about transports is here.

It renders a step once per run (the same template, masthead, personalization, footer and bulk
headers as an issue) and gives every recipient the ids an issue carries (issue id = the step's
`issues` row), so webhook events, replies and `stats` find the step.

A sequence needs the ledger row and the move to the person's next step in one transaction with
the row lock that keeps a second runner away (see `runner.py`), for every transport: the outbox
too, or each run would write the step again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from newsletter.sending.message import Batch, Message, Recipient
from newsletter.sending.transports import Outcome
from newsletter.store.schema import (
    CUSTOM_ARG_ISSUE,
    CUSTOM_ARG_SEND,
    CUSTOM_ARG_SUBSCRIBER,
    DeliveryState,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.project import Project
    from newsletter.render import RenderedIssue
    from newsletter.sending.execute import Personalizer
    from newsletter.step import Step

#: Person = (subscriber id, public id, address, name, template context)
Person = tuple[int, "str | None", str, "str | None", "dict[str, Any]"]
#: The id every step email carries besides the issue's, for a person reading raw events.
CUSTOM_ARG_STEP = "newsletter_sequence_step"


@dataclass
class Transport:
    """The configured transport and what sequences need to know of it."""

    impl: Any
    name: str
    where: str
    batch_size: int
    concurrency: int
    note: str | None = None  # why this transport (e.g. the outbox for want of a key)


def open_transport(project: Project) -> Transport:
    """The project's transport, chosen as for `newsletter send` (the one factory)."""
    from newsletter.sending.factory import choose_transport

    chosen = choose_transport(project)
    impl = chosen.transport
    section = project.config.section("sending")
    return Transport(
        impl=impl,
        name=impl.kind,
        where=impl.where,
        batch_size=max(1, min(int(section["batch_size"]), impl.capabilities.max_batch)),
        concurrency=max(1, int(section["concurrency"])),
        note=chosen.note,
    )


def check_can_send(project: Project, transport: Transport) -> None:
    """Readers must be able to leave: no delivering send without base_url (unsubscribe links)."""
    if transport.impl.capabilities.delivers and project.config.base_url is None:
        from newsletter.errors import SendError

        raise SendError(
            f"{project.config.path}: [newsletter] base_url is not set, so the unsubscribe links "
            "would lead nowhere; set base_url to where `newsletter serve` is reachable"
        )


@dataclass
class StepMail:
    """One step rendered for one run, ready to personalize."""

    step: Step
    rendered: RenderedIssue
    issue_id: int
    send_id: int
    message: Message
    unsubscribe_url: Any
    transport: Transport
    #: The bulk send's memoized personalization: most readers share what the step reads.
    personalize: Personalizer

    def build(self, people: Sequence[Person]) -> tuple[list[tuple[int, Recipient]], dict[int, str]]:
        """(subscriber id, recipient) for each person, and the refused ones' reasons."""
        built: list[tuple[int, Recipient]] = []
        refused: dict[int, str] = {}
        issue, send, step = str(self.issue_id), str(self.send_id), self.step.slug
        refuse = self.transport.impl.refuse
        personalize = self.personalize
        unsubscribe_url = self.unsubscribe_url
        for sid, public_id, address, name, context in people:
            # Never the row id, which tells the list's size (unless no public id is set).
            url = unsubscribe_url(public_id or sid)
            recipient = Recipient(
                email=address,
                name=name,
                substitutions=personalize(context, url),
                unsubscribe_url=url,
                ids={
                    CUSTOM_ARG_ISSUE: issue,
                    CUSTOM_ARG_SUBSCRIBER: str(sid),
                    CUSTOM_ARG_SEND: send,
                    CUSTOM_ARG_STEP: step,
                },
            )
            problem = refuse(recipient)
            if problem:
                refused[sid] = problem
            else:
                built.append((sid, recipient))
        return built, refused


def prepare_step(
    project: Project, step: Step, issue_id: int, send_id: int, transport: Transport
) -> StepMail:
    """Render the step (once per run) and the message every recipient shares."""
    from newsletter.render import render_issue
    from newsletter.sending.execute import Personalizer
    from newsletter.sending.plan import Prepared, bulk_message, reply_to_for
    from newsletter.store.engine import project_engine
    from newsletter.store.public_ids import issue_public_id
    from newsletter.tokens import secret_key, unsubscribe_url_maker

    engine = project_engine(project)
    with engine.connect() as conn:
        issue_public = issue_public_id(conn, issue_id)
    rendered = render_issue(project, step.issue)
    message = bulk_message(
        project,
        Prepared(step.path, rendered),
        reply_to=reply_to_for(project, engine, issue_id),
        categories=(step.slug, "sequence", step.sequence),
    )
    key = secret_key(required=transport.impl.capabilities.delivers)
    return StepMail(
        step=step,
        rendered=rendered,
        issue_id=issue_id,
        send_id=send_id,
        message=message,
        unsubscribe_url=unsubscribe_url_maker(project.config.base_url, issue_public, key=key),
        transport=transport,
        personalize=Personalizer(rendered),
    )


def post(transport: Transport, mail: StepMail, batch: list[Recipient]) -> list[Outcome]:
    """Hand one batch (at most `batch_size` recipients) to the transport: one outcome per
    recipient, in order."""
    return list(transport.impl.send(Batch(mail.message, batch)))


def record(engine: Engine, mail: StepMail, ids: Sequence[int], outcomes: Sequence[Outcome]) -> None:
    """The transport's answers into the ledger (only rows still in flight take them), and
    what they mean for the reader (an SMTP 250 is delivered, a refused address bounced)."""
    from newsletter.sending.answers import apply_answers
    from newsletter.sending.ledger import Ledger

    Ledger(engine).record_outcomes(mail.issue_id, mail.send_id, ids, outcomes)
    capabilities = mail.transport.impl.capabilities
    apply_answers(engine, capabilities, mail.issue_id, mail.send_id, ids, outcomes)


def record_refused(engine: Engine, mail: StepMail, refused: dict[int, str]) -> None:
    """People the transport would refuse (a provider limit): failed, with why."""
    from newsletter.sending.ledger import Ledger

    outcomes = [Outcome(DeliveryState.FAILED, error=error) for error in refused.values()]
    Ledger(engine).record_outcomes(mail.issue_id, mail.send_id, list(refused), outcomes)


def uncertain(error: str, count: int) -> list[Outcome]:
    return [Outcome(DeliveryState.UNCERTAIN, error=error) for _ in range(count)]


def close(transport: Transport) -> None:
    transport.impl.close()
