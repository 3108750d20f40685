"""Planning a send: everything decided and checked once, before anyone is asked or mailed.

`plan_send(project, "ISSUE", SendRequest(...))` loads, checks and renders the issue once,
chooses the transport (the factory), and fixes who the recipients are: their ids, read
once here, are the set the send goes to (`planned`). Whoever becomes subscribed after that
(a sign-up, a confirmation, an import with --resubscribe, a resubscribe link) waits for
`--resume` or the next issue, so a send confirmed for N reaches at most those N. It also says
what stops it (`refusal`) and what to look at (`warnings`). `execute(plan, progress)` in `execute.py` carries it out. The CLI only shows
the plan, asks, and shows progress.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.header import Header
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from newsletter.check import check_and_render
from newsletter.errors import SendError
from newsletter.issue import load_issue, slugify
from newsletter.project import project_timezone
from newsletter.render import render_issue
from newsletter.segments.query import segment_condition
from newsletter.segments.sends import SendSegment, for_sends
from newsletter.segments.syntax import parse, where_label
from newsletter.sending.factory import Chosen, choose_transport, dead_links_refusal
from newsletter.sending.ledger import RETRYABLE, Ledger
from newsletter.sending.message import Message
from newsletter.sending.recipients import count_recipients, max_subscriber_id, planned_recipients
from newsletter.sending.resend import ResendKind, resend_after, resend_recipients, resend_refusal
from newsletter.sending.subject_test import find_test, is_open, pending, subject_of
from newsletter.sending.transports import kinds_that
from newsletter.store.engine import project_engine
from newsletter.store.issues import ensure_issue, find_issue_id, resolve_issue
from newsletter.store.public_ids import issue_public_id
from newsletter.store.schema import FIRST_ROUND, DeliveryState
from newsletter.store.times import as_utc
from newsletter.tokens import (
    REPLY_TOKEN_TAG,
    reply_address,
    secret_key,
    secret_key_is_set,
    secret_key_missing,
)
from newsletter.wording import plural

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from newsletter.project import Project
    from newsletter.render import RenderedIssue


@dataclass
class Prepared:
    """An issue loaded, checked and rendered once."""

    path: Path
    rendered: RenderedIssue
    warnings: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return self.rendered.issue.slug


def _finding(f: Any) -> str:
    where = f"{Path(f.path).name}:{f.line}" if getattr(f, "line", None) else Path(f.path).name
    return f"{where}: {f.message}"


def prepare(project: Project, path: Path, *, run_check: bool = True) -> Prepared:
    """Load, check (errors stop the send) and render the issue, once."""
    if not run_check:
        return Prepared(path, render_issue(project, load_issue(project, path)))

    findings, rendered = check_and_render(project, path)
    errors = [f for f in findings if f.severity == "error"]
    if errors or rendered is None:
        listed = "; ".join(_finding(f) for f in errors)
        raise SendError(
            f"{plural(len(errors), 'error')} in the issue, fix them first "
            f"(`newsletter check {path.name}`): {listed}"
        )
    warnings = [_finding(f) for f in findings if f.severity != "error"]
    return Prepared(path=path, rendered=rendered, warnings=warnings)


@dataclass(frozen=True)
class SendRequest:
    """What the person asked for (the flags of `newsletter send`)."""

    tags: Sequence[str] = ()
    dry_run: bool = False
    resume: bool = False
    include_uncertain: bool = False
    send_at: datetime | None = None
    outbox_dir: Path | None = None
    #: `--test ADDRESS`: no check, no counting, no refusal; only the message is needed.
    test_copy: bool = False
    #: `--segment NAME` / `--where EXPR` (`newsletter.segments.Segment`), besides any --tag.
    segment: Any = None
    #: `--resend KIND`: "non-clickers", "non-openers" or "new" (see `resend.py`).
    resend: str | None = None
    #: `--subject TEXT`: this send's subject instead of the issue's.
    subject: str | None = None
    #: The time the resend_after wait is measured at (tests; default: now).
    now: datetime | None = None
    #: One arm of the issue's subject-line test ("a", "b" or "rest"; `subject_test.py`).
    subject_test_arm: str | None = None


@dataclass
class SendPlan:
    project: Project
    engine: Engine
    prepared: Prepared
    chosen: Chosen
    request: SendRequest
    #: How many people the send goes to: `len(planned)`.
    recipients: int
    #: The highest subscriber id at planning time (kept on the send, for older readers of it).
    up_to_id: int
    reply_to: str
    issue_id: int | None
    warnings: list[str] = field(default_factory=list)
    #: Why the send must not go out (one line), or None.
    refusal: str | None = None
    #: `--resume` after a kill in the last batch: nobody is left, but the dead sender's
    #: in-flight rows must still be taken over (and become uncertain).
    stranded: bool = False
    #: A scheduled send being resumed keeps its time and schedule id.
    send_at: datetime | None = None
    schedule_id: str | None = None
    #: The subscriber ids the send goes to, ascending, read once at planning time: the set is
    #: fixed here, not by an id bound (people resubscribed since have ids below any bound).
    planned: Sequence[int] = field(default_factory=lambda: array("q"))
    #: The segment's condition on `subscribers`, evaluated when planned (see `planned`).
    segment_where: Sequence[Any] = ()
    #: A resend's kind (see `resend.py`), else None.
    resend: str | None = None
    #: The subject instead of the issue's (`--subject`, or the resend being resumed had one).
    subject: str | None = None

    @property
    def send_round(self) -> str:
        """The ledger round this send's rows are in (`deliveries.send_round`)."""
        if self.resend is None:
            return FIRST_ROUND
        return ResendKind(self.resend).send_round

    @property
    def transport(self) -> Any:
        return self.chosen.transport

    @property
    def uses_ledger(self) -> bool:
        return self.transport.capabilities.keeps_ledger and not self.request.dry_run

    @property
    def sandbox(self) -> bool:
        return self.request.dry_run and self.transport.capabilities.has_sandbox

    @property
    def slug(self) -> str:
        return self.prepared.slug

    @property
    def nobody(self) -> bool:
        return self.recipients == 0 and not self.stranded

    def message(self, *, subject: str | None = None, categories: Sequence[str] = ()) -> Message:
        return bulk_message(
            self.project,
            self.prepared,
            reply_to=per_reader_reply_to(self.project) or self.reply_to,
            subject=subject or self.subject,
            categories=categories or (self.slug, "newsletter"),
            sandbox=self.sandbox,
            send_at=self.send_at,
            schedule_id=self.schedule_id,
        )


def reply_to_for(project: Project, engine: Engine, issue_id: int | None) -> str:
    """`[replies] domain` routes replies through a signed address naming the issue (by its
    public id: the row id would tell readers how many issues there were)."""

    domain = project.config.section("replies")["domain"]
    if domain and issue_id is not None:
        with engine.connect() as conn:
            issue = issue_public_id(conn, issue_id)
        return reply_address(domain, issue, key=secret_key(required=True))
    return project.config.reply_to


def per_reader_reply_to(project: Project) -> str | None:
    """With `[replies] domain`: Reply-To `reply+TAG@domain`, TAG substituted per reader by a
    token naming the issue and the reader (`tokens.reply_address_for`); else None."""

    domain = project.config.section("replies")["domain"]
    return f"reply+{REPLY_TOKEN_TAG}@{domain}" if domain else None


def bulk_headers(project: Project, slug: str) -> dict[str, str]:
    """The bulk-mail headers every transport sets: List-Id (RFC 2919, from the name and
    base_url's host), Precedence: bulk (out-of-office robots stay quiet), Feedback-ID
    (Gmail's feedback loop: campaign:list:type:sender)."""

    config = project.config
    host = urlsplit(config.base_url or "").hostname or config.from_email.rpartition("@")[2]
    # (Umlauts and ß as a German writes them in ASCII: "Straße" is strasse, not stra-e.)
    label = slugify(config.name) or "newsletter"
    name = config.name.replace("\\", "").replace('"', "")
    phrase = f'"{name}"' if name.isascii() else Header(name, "utf-8").encode()
    return {
        "List-Id": f"{phrase} <{label}.{host}>",
        "Precedence": "bulk",
        "Feedback-ID": f"{slug}:{label}:newsletter:{host}",
    }


def bulk_message(
    project: Project,
    prepared: Prepared,
    *,
    reply_to: str,
    subject: str | None = None,
    categories: Sequence[str] = (),
    sandbox: bool = False,
    send_at: datetime | None = None,
    schedule_id: str | None = None,
) -> Message:
    config = project.config
    rendered = prepared.rendered
    tracking = config.section("tracking")
    domain = config.section("replies")["domain"]
    headers = bulk_headers(project, prepared.slug)
    return Message(
        from_email=config.from_email,
        from_name=config.from_name,
        reply_to=reply_to,
        subject=subject or rendered.subject,
        html=rendered.html,
        text=rendered.text,
        headers=headers,
        categories=tuple(categories),
        unsubscribe_mailto=reply_to if domain and reply_to.endswith("@" + domain) else None,
        # (with a per-reader Reply-To, the mailto carries the same per-reader token)
        send_at=send_at,
        schedule_id=schedule_id,
        sandbox=sandbox,
        track_opens=tracking["opens"],
        track_clicks=tracking["clicks"],
    )


def already_sent_refusal(
    ledger: Ledger,
    issue_id: int,
    slug: str,
    request: SendRequest,
    up_to_id: int,
    where: Sequence[Any] = (),
) -> tuple[str | None, bool]:
    """(refusal, resume): a plain send of an issue that someone has (or may have) refuses,
    saying how to reach the rest. If every earlier attempt failed (a wrong key, the network
    down), nobody has it, so the send goes on as a --resume would."""
    if request.resume or not ledger.has_rows(issue_id):
        return None, request.resume
    counts = ledger.issue_counts(issue_id, FIRST_ROUND)  # (first copies; resends apart)
    had = sum(n for s, n in counts.items() if s not in RETRYABLE)
    if had == 0:
        return None, True
    todo = count_recipients(ledger.engine, request.tags, up_to_id, issue_id, RETRYABLE, where)
    hint = (
        f"use --resume to reach the {plural(todo, 'person', 'people')} who have not had it"
        if todo
        else "every subscriber (of this segment) has had it already"
    )
    uncertain = counts.get("uncertain", 0) + counts.get("in_flight", 0)
    extra = f"; {uncertain} are uncertain (see `newsletter sends {slug}`)" if uncertain else ""
    return f"{slug} was already sent ({had} recorded); {hint}{extra}", False


def plan_send(project: Project, issue: str | Path, request: SendRequest) -> SendPlan:
    """Decide everything about a send; raises SendError only when there is nothing to plan
    (the issue is broken), else puts the reason into `refusal`."""

    resolved = resolve_issue(project, issue)
    if resolved.slug.startswith("sequences/") and not request.test_copy:
        # A welcome-sequence step goes to each reader at their time, never to the whole list.
        raise SendError(
            f"{issue}: this is a welcome-sequence step; `newsletter sequences run` sends it "
            "to each new reader when it is due (use --test ADDRESS to see a copy)"
        )
    path = resolved.require_path()
    engine = project_engine(project)
    chosen = choose_transport(project, outbox_dir=request.outbox_dir)
    prepared = prepare(project, path, run_check=not request.test_copy)
    ledger = Ledger(engine)
    # The transport's note (e.g. the outbox fallback) is `chosen.note`, shown once as a Note.
    warnings = list(project.config.warnings) + list(prepared.warnings)

    issue_id = find_issue_id(engine, prepared.slug)
    if issue_id is None and project.config.section("replies")["domain"]:
        # The signed Reply-To names the issue's id: record the issue to show the real address.
        rendered = prepared.rendered
        issue_id = ensure_issue(
            engine,
            slug=prepared.slug,
            title=rendered.issue.title,
            subject=rendered.subject,
            language=rendered.issue.language,
        )
    up_to_id = max_subscriber_id(engine)
    if request.resume and request.resend is None and issue_id is not None:
        request, refusal = _with_first_audience(engine, issue_id, request)
        if refusal:
            raise SendError(refusal)
    segment_where: list[Any] = []
    if request.segment is not None and not request.test_copy:
        with engine.connect() as conn:
            tz = project_timezone(project)
            segment_where.append(segment_condition(conn, request.segment.tree, tz))
    plan = SendPlan(
        project=project,
        engine=engine,
        prepared=prepared,
        chosen=chosen,
        request=request,
        recipients=0,
        up_to_id=up_to_id,
        reply_to=reply_to_for(project, engine, issue_id),
        issue_id=issue_id,
        warnings=warnings,
        send_at=request.send_at,
        segment_where=segment_where,
        subject=request.subject,
    )
    if request.test_copy:
        return plan
    plan.refusal = _refusal(plan)
    if plan.refusal:
        return plan
    if request.subject_test_arm is not None:
        return _plan_subject_test_arm(plan, ledger)
    if issue_id is not None and plan.uses_ledger:
        test = find_test(engine, issue_id)
        if is_open(test):
            # A plain --resume would send the rest the issue's subject before the decision.
            plan.refusal = (
                f"{prepared.slug} is in a subject-line test; `newsletter run-due` sends what is "
                f"due (the sample, then the winner to the rest after the decision)"
            )
            return plan
    if request.resend is not None:
        return _plan_resend(plan, ledger)
    resume = request.resume
    if plan.uses_ledger and issue_id is not None:
        running = ledger.running(issue_id)
        if running is not None:
            plan.refusal = (
                f"another send of {prepared.slug} is running (send {running.send_id}, pid "
                f"{running.pid} on {running.host}); wait for it to finish, or check "
                f"`newsletter sends {prepared.slug}`"
            )
            return plan
        plan.refusal, resume = already_sent_refusal(
            ledger, issue_id, prepared.slug, request, up_to_id, segment_where
        )
        if plan.refusal:
            return plan
        if request.resume and not ledger.has_rows(issue_id):
            last = (ledger.list_sends(issue_id) or [None])[-1]
            if last is not None and last.status == "cancelled":
                # Nothing is left to resume: going on would send to the whole list at once,
                # without the schedule the author had just cancelled.
                plan.refusal = (
                    f"send {last.id} of {prepared.slug} was cancelled; there is nothing to "
                    f"resume: send it again with `newsletter send {prepared.slug}` (add "
                    "--schedule to schedule it)"
                )
                return plan
        earlier = ledger.latest_scheduled(issue_id) if request.resume else None
        if earlier is not None and earlier.cancel_requested_at is not None:
            # `cancel` stopped its sender but could not finish: carrying on would send
            # under a schedule the author asked to cancel.
            plan.refusal = (
                f"send {earlier.id} of {prepared.slug} is being cancelled; finish with "
                f"`newsletter cancel {prepared.slug}`, then send it again"
            )
            return plan
        if earlier is not None and request.send_at is None:
            plan.send_at = as_utc(earlier.send_at)
            plan.schedule_id = earlier.batch_id
    if plan.uses_ledger and resume and issue_id is not None:
        again = [*RETRYABLE, *([DeliveryState.UNCERTAIN] if request.include_uncertain else [])]
        plan.planned = planned_recipients(
            engine, request.tags, up_to_id, issue_id, again, segment_where
        )
        plan.recipients = len(plan.planned)
        plan.stranded = (
            plan.recipients == 0 and ledger.issue_counts(issue_id).get("in_flight", 0) > 0
        )
    else:
        plan.planned = planned_recipients(engine, request.tags, up_to_id, where=segment_where)
        plan.recipients = len(plan.planned)
    plan.request = _with_resume(request, resume)
    return plan


def _with_first_audience(
    engine: Any, issue_id: int, request: SendRequest
) -> tuple[SendRequest, str | None]:
    """A --resume goes to the rest of the audience of the issue's send (its --tag values
    and segment: the latest send of its first copies that was neither a dry run nor
    cancelled), not to the whole list; (the request so, a refusal if it names another
    audience). Before, the printed `send ISSUE --resume` of an interrupted segment send
    mailed everyone outside the segment too."""
    first = next(
        (
            s
            for s in reversed(Ledger(engine).list_sends(issue_id))
            if s.resend is None and not s.dry_run and s.status != "cancelled"
        ),
        None,
    )
    if first is None:
        return request, None
    tags = tuple(first.segment or ())
    segment = for_sends(engine, [first.id]).get(first.id)
    if not request.tags and request.segment is None:
        return replace(request, tags=tags, segment=segment), None
    same_segment = (request.segment is None and segment is None) or (
        request.segment is not None
        and segment is not None
        and request.segment.definition == segment.definition
    )
    if sorted(request.tags) == sorted(tags) and same_segment:
        return request, None
    audience = (
        " ".join([*(f"--tag {tag}" for tag in tags), *([segment.shown] if segment else [])])
        or "the whole list"
    )
    return request, (
        f"--resume goes on with the audience of send {first.id} ({audience}); leave out "
        "--tag, --segment and --where, or send it to another audience as a new issue"
    )


def _plan_resend(plan: SendPlan, ledger: Ledger) -> SendPlan:
    """A resend (`resend.py`): refused too soon, twice, or without the opens it needs; else
    its recipients, fixed now. It goes to the first send's segment, and a resend being
    resumed keeps its subject unless another is given."""

    request, issue_id = plan.request, plan.issue_id
    kind = ResendKind(str(request.resend))
    if request.send_at is not None:
        plan.refusal = "--schedule does not go with --resend; resend when the time has come"
        return plan
    if issue_id is not None and plan.uses_ledger:
        running = ledger.running(issue_id)
        if running is not None:
            plan.refusal = (
                f"another send of {plan.slug} is running (send {running.send_id}, pid "
                f"{running.pid} on {running.host}); wait for it to finish, or check "
                f"`newsletter sends {plan.slug}`"
            )
            return plan
    plan.refusal, first, earlier = resend_refusal(
        plan.engine,
        plan.slug,
        issue_id,
        kind,
        after=resend_after(plan.project),
        now=request.now or datetime.now(UTC),
        resume=request.resume,
    )
    if plan.refusal:
        return plan
    assert first is not None and issue_id is not None
    plan.resend = str(kind)
    if plan.subject is None and earlier is not None:
        plan.subject = earlier.subject
    again = [*RETRYABLE, *([DeliveryState.UNCERTAIN] if request.include_uncertain else [])]
    # `new` readers: of the first send's segment too, as it is defined now.
    first_segment = for_sends(plan.engine, [first.id]).get(first.id)
    segment_where: list[Any] = []
    if first_segment is not None:
        with plan.engine.connect() as conn:
            tree = parse(first_segment.definition, where_label(first_segment.name))
            segment_where.append(segment_condition(conn, tree, project_timezone(plan.project)))
    plan.planned = resend_recipients(
        plan.engine, issue_id, kind, first, again, segment_where=segment_where
    )
    plan.recipients = len(plan.planned)
    plan.stranded = (
        plan.recipients == 0
        and earlier is not None
        and ledger.issue_counts(issue_id, kind.send_round).get("in_flight", 0) > 0
    )
    plan.request = replace(
        request, tags=tuple(first.segment), segment=first_segment, resume=earlier is not None
    )
    return plan


def _plan_subject_test_arm(plan: SendPlan, ledger: Ledger) -> SendPlan:
    """One arm of the issue's subject-line test: its members who have no copy yet, fixed
    when the test was planned, with the arm's subject (the rest: the winner's)."""

    request, issue_id, arm = plan.request, plan.issue_id, str(plan.request.subject_test_arm)
    test = find_test(plan.engine, issue_id) if issue_id is not None else None
    if test is None or issue_id is None:
        plan.refusal = f"{plan.slug} has no subject-line test"
        return plan
    if not plan.uses_ledger:
        plan.refusal = (
            "a subject-line test needs a transport that keeps the ledger, and no --dry-run"
        )
        return plan
    if test.cancelled_at is not None:
        plan.refusal = f"the subject-line test of {plan.slug} was cancelled (`newsletter cancel`)"
        return plan
    subject = subject_of(test, arm)
    if subject is None:
        plan.refusal = f"the subject-line test of {plan.slug} is not decided yet"
        return plan
    running = ledger.running(issue_id)
    if running is not None:
        plan.refusal = (
            f"another send of {plan.slug} is running (send {running.send_id}, pid "
            f"{running.pid} on {running.host})"
        )
        return plan
    plan.subject = subject
    plan.planned = pending(plan.engine, test, arm, RETRYABLE)
    plan.recipients = len(plan.planned)
    plan.stranded = (
        plan.recipients == 0 and ledger.issue_counts(issue_id, FIRST_ROUND).get("in_flight", 0) > 0
    )
    segment = None
    if test.segment_definition is not None:  # (each arm's send records the test's segment)
        segment = SendSegment(0, test.segment_name, test.segment_definition)
    plan.request = replace(request, tags=tuple(test.segment or ()), segment=segment, resume=True)
    return plan


def _with_resume(request: SendRequest, resume: bool) -> SendRequest:

    return request if request.resume == resume else replace(request, resume=resume)


def _refusal(plan: SendPlan) -> str | None:

    project, request = plan.project, plan.request
    caps = plan.transport.capabilities
    kind = plan.transport.kind
    if request.include_uncertain and not request.resume:
        return "--include-uncertain goes with --resume"
    if request.send_at is not None and not caps.can_schedule:
        can = ", ".join(kinds_that(lambda c: c.can_schedule)) or "none"
        return (
            f"--schedule needs a transport that can schedule ({can}); the {kind} transport "
            "cannot" + (f" ({plan.chosen.note})" if plan.chosen.note else "")
        )
    if request.dry_run and caps.delivers and not caps.has_sandbox:
        return (
            f"--dry-run needs a transport with a sandbox ({', '.join(kinds_that(lambda c: c.has_sandbox))}); "
            f"the {kind} transport would deliver: use --outbox DIR to look at the messages instead"
        )
    if caps.delivers and not request.dry_run and not secret_key_is_set():
        # Links signed with the development key would be dead: `serve` checks them with the
        # real key. The outbox and --dry-run may use it (nothing reaches a reader).
        return secret_key_missing(f"a real send through {kind}")
    if plan.uses_ledger and (refusal := dead_links_refusal(project)):
        return refusal
    return None
