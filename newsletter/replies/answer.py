"""`newsletter replies answer`: the author answers a reader personally, in their thread.

A personal mail, not a bulk one: from the author's address, `Re:` subject, `In-Reply-To` and
`References` so it threads in the reader's mail program, no List-Unsubscribe, no
`Precedence: bulk`, no tracking, a short signature. It goes through the configured transport
(the outbox writes it as `answer-<address>.eml`) and is recorded in the thread.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from newsletter import tokens
from newsletter.i18n import texts
from newsletter.mail_templates import MAIL_TEXT
from newsletter.replies.decode import trim_references
from newsletter.replies.threads import Thread, record_answer
from newsletter.sending.message import Message, Recipient
from newsletter.sending.mime import copy_for
from newsletter.sending.single import send_one

if TYPE_CHECKING:
    from newsletter.project import Project

_ALREADY_A_REPLY = re.compile(r"^\s*(re|aw|sv|antw|wg)\s*:", re.I)


@dataclass
class Draft:
    message: Message
    recipient: Recipient
    warnings: list[str] = field(default_factory=list)

    def preview(self) -> str:
        """The message as it would leave (headers and the text part), for --dry-run."""

        raw, _, _ = copy_for(self.message, self.recipient)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        head = "\n".join(
            f"{name}: {value}"
            for name, value in parsed.items()
            if name not in ("MIME-Version", "Content-Type")
        )
        body = parsed.get_body(("plain",))
        return f"{head}\n\n{body.get_content() if body else ''}".rstrip()


def subject_for(thread: Thread) -> str:
    subject = thread.last_reply.subject.strip() or "(no subject)"
    return subject if _ALREADY_A_REPLY.match(subject) else f"Re: {subject}"


def editor_template(thread: Thread) -> str:
    """What $EDITOR opens with: room for the answer, the reader's reply quoted below."""
    last = thread.last_reply
    quoted = "\n".join(f"> {line}" for line in last.text.strip().splitlines())
    return (
        "\n\n"
        f"# Your answer to {thread.reader_email} above. Lines starting with # are left out;\n"
        "# an empty answer sends nothing.\n"
        f"#\n# {last.from_name or last.from_email} wrote:\n"
        + "\n".join(f"# {line}" for line in quoted.splitlines())
        + "\n"
    )


def _references(thread: Thread) -> str:
    """RFC 5322's References: what the first reply referred to (the issue it answered),
    then the thread's messages in order; a long chain trimmed as mail programs trim it."""
    earlier = next((e.refers_to for e in thread.entries if e.refers_to), None) or ""
    own = [e.message_id for e in thread.entries if e.message_id]
    return " ".join(trim_references(list(dict.fromkeys([*earlier.split(), *own]))))


def _signature(project: Project) -> str:
    """The sender, then the postal address and the imprint link as the newsletter's own
    footer gives them: German law asks every business email for its Impressum."""
    config = project.config
    lines = [config.from_name, config.postal_address]
    imprint = config.section("newsletter")["imprint_url"]
    if imprint:
        label = texts(config.language, {"imprint": MAIL_TEXT["imprint"]})["imprint"]
        lines.append(f"{label}: {imprint}")
    return "\n\n-- \n" + "\n".join(line for line in lines if line)


def compose(project: Project, thread: Thread, text: str) -> Draft:
    config = project.config
    warnings = []
    if thread.reader_status not in (None, "subscribed", "unconfirmed"):
        warnings.append(
            f"{thread.reader_email} is {thread.reader_status}: this is a personal answer, "
            "not the newsletter, so it may go all the same"
        )
    last = thread.last_reply.message_id
    headers: dict[str, str] = {}
    if last:
        headers["In-Reply-To"] = last
    references = _references(thread)
    if references:
        headers["References"] = references
    body = text.rstrip() + _signature(project)
    html = "<div>" + "<br>\n".join(escape(line) for line in body.splitlines()) + "</div>"
    # The reader's next reply finds this thread by the signed address, as for an issue.
    reply_to = config.reply_to
    domain = config.section("replies")["domain"]
    if domain and thread.subscriber_id is not None:
        reply_to = tokens.reply_address_for(
            domain,
            thread.issue_public_id,
            # Readers added since m018 have no stored public id: the token derives one.
            thread.subscriber_public_id or thread.subscriber_id,
            tokens.secret_key(),
        )
    message = Message(
        from_email=config.from_email,
        from_name=config.from_name,
        reply_to=reply_to,
        subject=subject_for(thread),
        html=html,
        text=body,
        categories=("answer",),
    )
    recipient = Recipient(thread.reader_email, name=thread.reader_name, headers=headers)
    return Draft(message=message, recipient=recipient, warnings=warnings)


def answer(project: Project, engine: Engine, thread: Thread, draft: Draft) -> str:
    """Send the answer and record it in the thread; where it went, as one line."""

    outcome, where = send_one(project, draft.message, draft.recipient)
    record_answer(
        engine,
        thread,
        to_email=draft.recipient.email,
        subject=draft.message.subject,
        text=draft.message.text,
        message_id=outcome.message_id,
    )
    return where
