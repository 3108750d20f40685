"""What a sequence step's email is, for the sending core: the step rendered once per run (the
same template, masthead, personalization, footer and bulk headers as an issue) with the one
recipient builder of `sending` (ids, unsubscribe URL, the reader's signed reply token), and
the step's id besides the issue's, so webhook events, replies and `stats` find the step.

The transport is the factory's choice, as for `newsletter send`; the claims, the lease and
every ledger write are `sending`'s (see `batches.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from newsletter.errors import SendError
from newsletter.render import render_issue
from newsletter.sending.execute import Preparer, Row, recipient_builder
from newsletter.sending.factory import dead_links_refusal
from newsletter.sending.message import Recipient
from newsletter.sending.plan import Prepared, bulk_message, per_reader_reply_to, reply_to_for
from newsletter.sending.transports import Transport
from newsletter.tokens import secret_key

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.project import Project
    from newsletter.step import Step

#: The id every step email carries besides the issue's, for a person reading raw events.
CUSTOM_ARG_STEP = "newsletter_sequence_step"


def check_can_send(project: Project, transport: Transport) -> None:
    """A step that reaches readers needs working unsubscribe links (`base_url`)."""
    if transport.capabilities.delivers and (refusal := dead_links_refusal(project)):
        raise SendError(refusal)


@dataclass
class StepMail:
    """One step rendered for one run, ready to personalize."""

    engine: Engine
    step: Step
    issue_id: int
    send_id: int
    transport: Transport
    preparer: Preparer

    def build(self, rows: Sequence[Row]) -> tuple[list[tuple[Row, Recipient]], dict[int, str]]:
        """(row, recipient) for each reader, and why the transport would refuse the others
        (a field over its size limit, say), by subscriber id."""
        built: list[tuple[Row, Recipient]] = []
        refused: dict[int, str] = {}
        refuse = self.transport.refuse
        assert self.preparer.builder is not None
        recipients = self.preparer.builder.build((list(rows), frozenset()))
        for row, recipient in zip(rows, recipients, strict=True):
            problem = refuse(recipient)
            if problem:
                refused[row[0]] = problem
            else:
                built.append((row, recipient))
        return built, refused


def prepare_step(
    project: Project,
    engine: Engine,
    step: Step,
    issue_id: int,
    send_id: int,
    transport: Transport,
) -> StepMail:
    """Render the step (once per run) and the message every recipient shares."""
    rendered = render_issue(project, step.issue)
    message = bulk_message(
        project,
        Prepared(step.path, rendered),
        # As for an issue: with `[replies] domain`, each reader's own signed address.
        reply_to=per_reader_reply_to(project) or reply_to_for(project, engine, issue_id),
        categories=(step.slug, "sequence", step.sequence),
    )
    key = secret_key(required=transport.capabilities.delivers)
    builder = recipient_builder(
        project,
        engine,
        rendered,
        issue_id,
        send_id,
        key=key,
        extra_ids={CUSTOM_ARG_STEP: step.slug},
    )
    preparer = Preparer(builder, transport, message)
    return StepMail(engine, step, issue_id, send_id, transport, preparer)
