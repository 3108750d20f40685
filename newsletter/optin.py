"""Double opt-in: the confirmation mail and the link that confirms a subscription."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine

from newsletter import tokens
from newsletter.errors import ConfigError, StoreError

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
    """Mail `subscriber` a link that confirms the subscription; return where it went
    (the mail itself is `newsletter.transactional`'s, through the project's transport)."""
    from newsletter.transactional import send_confirmation as send_mail

    return send_mail(project, subscriber, confirm_url(project, subscriber.id))


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
    return subscriber


__all__ = ["send_confirmation", "confirm", "confirm_url", "StoreError"]
