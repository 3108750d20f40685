"""One-off transactional mail (double-opt-in confirmations and the like).

Through SendGrid when SENDGRID_API_KEY is set, else an .eml in the project's `outbox/`.
No ledger: these are single messages that the caller can simply send again.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from newsletter.errors import TransportError
from newsletter.sending.payload import message_base, request_body
from newsletter.sending.transport import (
    SendGridTransport,
    build_eml,
    safe_name,
    write_eml,
)

if TYPE_CHECKING:
    from newsletter.project import Project

API_KEY_ENV = "SENDGRID_API_KEY"


def send_transactional(
    project: Project,
    to: str,
    subject: str,
    html: str,
    text: str,
    *,
    headers: dict[str, str] | None = None,
    reply_to: str | None = None,
) -> str:
    """Send one message to `to`; return where it went (for a log line or a page).
    `reply_to` defaults to the configured one."""
    config = project.config
    base = message_base(
        from_email=config.from_email,
        from_name=config.from_name,
        reply_to=reply_to or config.reply_to,
        subject=subject,
        text=text,
        html=html,
        categories=["transactional"],
    )
    p: dict[str, object] = {"to": [{"email": to}]}
    if headers:
        p["headers"] = dict(headers)
    body = request_body(base, [p])  # type: ignore[list-item]
    key = os.environ.get(API_KEY_ENV)
    if not key:
        path = write_eml(
            project.root / "outbox",
            "transactional-" + safe_name(to),
            build_eml(body, body["personalizations"][0]),
        )
        return f"written to {path} ({API_KEY_ENV} is not set)"
    # A web request is waiting: few retries, not the bulk send's patience.
    transport = SendGridTransport.from_project(project, key, max_retries=2)
    outcome = transport.post_mail(body)
    if outcome.state == "accepted":
        return f"sent to {to} through SendGrid (message id {outcome.message_id})"
    raise TransportError(f"mail to {to} not sent: {outcome.error}")
