"""The adapter between sequences and the sending code: one step's email for a batch of people,
handed to the configured transport. Everything sequences know about transports is here.

It renders a step once per run (the same template, masthead, personalization and footer as an
issue), personalizes it per recipient with the same ids an issue carries (issue id = the
step's `issues` row), so webhooks, replies and `stats` find the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from newsletter.errors import SendError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.project import Project
    from newsletter.render import RenderedIssue
    from newsletter.sending.transport import Outcome
    from newsletter.sequences.steps import Step

#: Person = (subscriber id, address, name, template context)
Person = tuple[int, str, "str | None", "dict[str, Any]"]


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
    """The project's transport, chosen as `newsletter send` chooses it."""
    from newsletter.sending.sender import choose_transport

    impl, why = choose_transport(project, None)
    section = project.config.section("sendgrid")
    return Transport(
        impl=impl,
        name=impl.name,
        where=impl.where,
        batch_size=int(section["batch_size"]),
        concurrency=max(1, int(section["concurrency"])),
        note=why,
    )


def check_can_send(project: Project, transport: Transport) -> None:
    """Readers must be able to leave: no real send without base_url (unsubscribe links)."""
    if transport.name != "outbox":
        from newsletter.sending.sender import refuse_without_base_url

        refuse_without_base_url(project)


@dataclass
class StepMail:
    """One step rendered for one run, ready to personalize."""

    step: Step
    rendered: RenderedIssue
    issue_id: int
    send_id: int
    base: dict[str, Any]
    unsubscribe_url: Any

    def build(
        self, people: Sequence[Person]
    ) -> tuple[list[tuple[int, dict[str, Any]]], dict[int, str]]:
        """(subscriber id, personalization) for each person, and the refused ones' reasons."""
        from newsletter.sending.payload import personalization, personalization_problem

        built: list[tuple[int, dict[str, Any]]] = []
        refused: dict[int, str] = {}
        for sid, address, name, context in people:
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
            if problem:
                refused[sid] = problem
            else:
                built.append((sid, p))
        return built, refused


def prepare_step(
    project: Project, step: Step, issue_id: int, send_id: int, transport: Transport
) -> StepMail:
    """Render the step (once per run) and the parts every recipient shares."""
    from newsletter.render import render_issue
    from newsletter.sending.payload import message_base
    from newsletter.sending.sender import reply_to_for
    from newsletter.tokens import secret_key, unsubscribe_url_maker

    rendered = render_issue(project, step.issue)
    config = project.config
    key = secret_key(required=transport.name != "outbox")
    base = message_base(
        from_email=config.from_email,
        from_name=config.from_name,
        reply_to=reply_to_for(project, issue_id),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        categories=[step.slug, "sequence", step.sequence],
        asm_group_id=config.section("sendgrid")["unsubscribe_group_id"],
    )
    return StepMail(
        step=step,
        rendered=rendered,
        issue_id=issue_id,
        send_id=send_id,
        base=base,
        unsubscribe_url=unsubscribe_url_maker(config.base_url, issue_id, key=key),
    )


def post(transport: Transport, mail: StepMail, batch: list[Any]) -> list[Outcome]:
    """Hand one batch (at most `batch_size` recipients) to the transport: one outcome per
    recipient, in order."""
    from newsletter.sending.payload import request_body

    outcome = transport.impl.post_mail(request_body(mail.base, batch))
    return [outcome] * len(batch)


def record(engine: Engine, mail: StepMail, ids: Sequence[int], outcomes: Sequence[Outcome]) -> None:
    """The transport's answers into the ledger (only rows still in flight take them)."""
    from newsletter.sending import ledger

    groups: dict[tuple[str, str | None, str | None], list[int]] = {}
    for sid, outcome in zip(ids, outcomes, strict=True):
        groups.setdefault((outcome.state, outcome.message_id, outcome.error), []).append(sid)
    for (state, message_id, error), group in groups.items():
        ledger.record(
            engine,
            mail.issue_id,
            group,
            state,
            message_id=message_id,
            error=error,
            send_id=mail.send_id,
        )


def record_refused(engine: Engine, mail: StepMail, refused: dict[int, str]) -> None:
    """People the transport would refuse (a provider limit): failed, with why."""
    from newsletter.sending import ledger

    for sid, error in refused.items():
        ledger.record(engine, mail.issue_id, [sid], "failed", error=error, send_id=mail.send_id)


def uncertain(error: str, count: int) -> list[Outcome]:
    from newsletter.sending.transport import Outcome

    return [Outcome("uncertain", error=error)] * count


def close(transport: Transport) -> None:
    """Nothing to close for the transports of this version."""


__all__ = ["Transport", "StepMail", "open_transport", "prepare_step", "post", "SendError"]
