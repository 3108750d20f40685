"""Double opt-in: the confirmation mail and the link that confirms a subscription."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine

from newsletter import tokens
from newsletter.errors import ConfigError, StoreError
from newsletter.sequences import hooks as sequences

if TYPE_CHECKING:
    from newsletter.project import Project
    from newsletter.store.subscribers import Subscriber


def confirm_url(project: Project, subscriber_id: int) -> str:
    base = project.config.base_url
    if not base:
        raise ConfigError(
            f"{project.config.path}: [newsletter] base_url is not set; confirmation links "
            'need it: add base_url = "https://news.example.com"'
        )
    token = tokens.make_timed_token(tokens.CONFIRM, subscriber_id, key=tokens.secret_key())
    return f"{base}/confirm/{token}"


def send_confirmation(project: Project, engine: Engine, subscriber: Subscriber) -> str:
    """Mail `subscriber` a link that confirms the subscription; return where it went.

    The mail goes through the same transport as everything else (SendGrid when
    SENDGRID_API_KEY is set, else an .eml in outbox/).
    """
    from newsletter.sending.single import send_transactional
    from newsletter.web.pages import TEXT, render

    url = confirm_url(project, subscriber.id)
    language = project.config.language
    person = subscriber.first_name or subscriber.name or ""
    subject = TEXT[language]["confirm_subject"].format(name=project.config.name)
    context = {"confirm_url": url, "person": person, "subject": subject}
    html = render(project, "confirm_email.html", language, **context)
    text = render(project, "confirm_email.txt", language, **context)
    return send_transactional(project, subscriber.email, subject, html, text)


def confirm(project: Project, engine: Engine, token: str) -> Subscriber | None:
    """Subscribe the person a confirmation token names; None if they were forgotten since.

    Raises TokenError for a forged, altered or expired token."""
    from newsletter.store.subscribers import get_subscriber, set_status

    max_age = project.config.section("serve")["confirm_max_age_days"] * 86400
    found = tokens.read_token(tokens.CONFIRM, token, key=tokens.secret_key(), max_age=max_age)
    with engine.begin() as conn:
        subscriber = get_subscriber(conn, found.subscriber_id)
        if subscriber is None:
            return None
        if subscriber.status != "subscribed":
            set_status(conn, subscriber.id, "subscribed", reason=None)
    sequences.joined(project, engine, subscriber.id)  # welcome sequences start here
    return subscriber


__all__ = ["send_confirmation", "confirm", "confirm_url", "StoreError"]
