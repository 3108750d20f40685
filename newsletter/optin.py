"""Double opt-in: the sign-up, the confirmation mail and the confirmation itself, each
with the consent evidence the law asks for (UWG §7, GDPR Art. 7(1)).

- `signup`: the form's POST. Adds the person as unconfirmed (or subscribed with single
  opt-in) and stores a `signup` consent record: time, truncated IP, user agent, the page
  the form was on and the hash of the consent text shown.
- `record_resubscribe`: the `resubscribe` record of someone back through their signed
  unsubscribe link (the token proves the address: no second opt-in).
- `confirm`: the POST from the confirmation page. Works once, and only for an unconfirmed
  person with a link newer than their last confirmation; stores a `confirmation` record
  (which proves consent), lifts a suppression from an earlier erasure and tells a provider
  that keeps a bounce list (SendGrid) to forget the address's old bounces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, cast

from sqlalchemy import Connection, Engine, func, select

from newsletter import tokens
from newsletter.errors import ConfigError, NewsletterError, StoreError
from newsletter.i18n import LANGUAGES, N_, gettext_for
from newsletter.privacy import store_full_ip
from newsletter.sending.factory import choose_transport
from newsletter.sequences import hooks as sequences
from newsletter.signup_guard import ADDRESS_LIMITS
from newsletter.store import consent, signup_limits, suppressions
from newsletter.store.emails import email_key
from newsletter.store.engine import open_engine
from newsletter.store.public_ids import resolve
from newsletter.store.schema import consent_records
from newsletter.store.signup_limits import Scope, allow
from newsletter.store.subscribers import add_subscriber, find_subscriber, get_subscriber, set_status
from newsletter.store.times import as_utc
from newsletter.transactional import send_confirmation as send_mail

if TYPE_CHECKING:
    from newsletter.project import Config, Project
    from newsletter.sending.transports import SuppressionListTransport
    from newsletter.store.subscribers import Subscriber

log = logging.getLogger(__name__)

#: The consent text when `[subscribe] consent_text` is not set: what the reader agrees
#: to, naming the newsletter and how to leave (the msgid; the catalogue has each language's).
DEFAULT_CONSENT_TEXT = N_(
    "Yes, I want to receive the newsletter “{name}” by email. My email address is used "
    "for nothing else. I can unsubscribe at any time with the link in every issue or by "
    "replying to the sender."
)


def consent_text(config: Config, language: str | None = None) -> str:
    """`[subscribe] consent_text`, else the default text in `language` (else the config's)."""
    configured = config.section("subscribe")["consent_text"]
    if configured and configured.strip():
        return str(configured).strip()
    lang = language if language in LANGUAGES else config.language
    return gettext_for(lang).gettext(DEFAULT_CONSENT_TEXT).format(name=config.name)


@dataclass(frozen=True)
class Visit:
    """Who submitted a form or pressed a button, as far as the request tells."""

    ip: str | None
    user_agent: str | None
    page_url: str | None = None


def confirm_url(project: Project, subscriber: Subscriber, engine: Engine | None = None) -> str:
    """The person's confirmation link. It names them by their public id (not the row id) and
    carries how many confirmations they have had, so that it stops working once they
    confirm (with `engine`, the project's database)."""
    base = project.config.base_url
    if not base:
        raise ConfigError(
            f"{project.config.path}: [newsletter] base_url is not set; confirmation links "
            'need it: add base_url = "https://news.example.com"'
        )
    with (engine or open_engine(project.database_url)).connect() as conn:
        confirmations = consent.count(conn, subscriber.id, consent.CONFIRMATION)
    token = tokens.make_timed_token(
        tokens.CONFIRM,
        subscriber.public_id or subscriber.id,
        key=tokens.secret_key(),
        confirmations=confirmations,
    )
    return f"{base}/confirm/{token}"


def send_confirmation(project: Project, engine: Engine, subscriber: Subscriber) -> str:
    """Mail `subscriber` a link that confirms the subscription; return where it went
    (the mail itself is `newsletter.transactional`'s, through the project's transport).
    To a bounced reader it goes past the provider's bounce list: they asked for it."""
    text = consent_text(project.config, project.config.language)
    return send_mail(
        project,
        subscriber,
        confirm_url(project, subscriber, engine),
        text,
        even_if_bounced=subscriber.status == "bounced",
    )


def _record_visit(
    conn: Connection,
    config: Config,
    subscriber_id: int,
    kind: str,
    visit: Visit,
    text: str,
    *,
    proves: bool,
    details: dict[str, object],
) -> None:
    consent.record(
        conn,
        subscriber_id,
        kind,
        ip=consent.truncate_ip(visit.ip, keep_full=store_full_ip(config)),
        user_agent=visit.user_agent,
        page_url=visit.page_url,
        consent_text_hash=consent.remember_text(conn, text),
        source="form",
        proves_consent=proves,
        details=details,
    )


def record_resubscribe(
    conn: Connection, config: Config, subscriber: Subscriber, visit: Visit
) -> None:
    """The consent record of someone who pressed "subscribe again" on the page of their
    signed unsubscribe link (`POST /resubscribe/TOKEN`), in the caller's transaction. It
    proves consent as a confirmation does: the token proves the address, the press the
    wish; it keeps when, the truncated IP and user agent, and the status they came back from."""
    consent.record(
        conn,
        subscriber.id,
        consent.RESUBSCRIBE,
        ip=consent.truncate_ip(visit.ip, keep_full=store_full_ip(config)),
        user_agent=visit.user_agent,
        source="link",
        proves_consent=True,
        details={"status_before": subscriber.status},
    )


#: Who the form may bring back (a bounced address only through the confirmation mail).
_MAY_SIGN_UP_AGAIN = ("unconfirmed", "unsubscribed", "bounced")
#: Whom a confirmation link (newer than their last confirmation) subscribes.
_MAY_CONFIRM = ("unconfirmed", "bounced")


class SignupOutcome(StrEnum):
    """What `signup` did; the form answers the same to all of them."""

    MAILED = "mailed"  # a confirmation mail went out
    JOINED = "joined"  # single opt-in: subscribed at once
    UNCHANGED = "unchanged"  # already subscribed, complained or erased: left alone
    LIMITED = "limited"  # the address had its confirmation mails for now (ADDRESS_LIMITS)


def signup(
    project: Project,
    engine: Engine,
    email: str,
    name: str | None,
    visit: Visit,
    *,
    first_name: str | None = None,
    language: str | None = None,
    checkbox: bool = False,
) -> SignupOutcome:
    """The sign-up form's work. The requester learns nothing about who is on the list:
    the caller answers the same whatever happens here.

    A new person is added (unconfirmed with double opt-in) and mailed a link; an
    unconfirmed or unsubscribed one becomes unconfirmed and gets a new link; a bounced one
    gets a link too, even with single opt-in, and stays bounced until they click it (their
    click proves the address takes mail again; a stranger's sign-up of a dead address
    changes nothing); a subscribed or complained one is left alone (the latter comes back only through
    their own "subscribe again" link). A suppressed address may sign up again only with
    double opt-in: its confirmation lifts the suppression.

    One address gets at most one confirmation mail per 10 minutes and three a day
    (`signup_guard.ADDRESS_LIMITS`): beyond that nothing changes and nothing is sent, so
    the form cannot be used to flood someone's mailbox.
    """
    config = project.config
    double = config.section("subscribe")["double_opt_in"]
    text = consent_text(config, language)
    details: dict[str, object] = {"double_opt_in": double}
    if config.section("subscribe")["require_checkbox"]:
        details["checkbox_ticked"] = checkbox
    mail_to: Subscriber | None = None
    try:
        with engine.begin() as conn:
            existing = find_subscriber(conn, email)
            if existing is None:
                if not double and suppressions.find(conn, email) is not None:
                    return SignupOutcome.UNCHANGED  # erased on request: only a double opt-in
            elif existing.status not in _MAY_SIGN_UP_AGAIN:
                return SignupOutcome.UNCHANGED
            elif existing.status == "bounced":
                double = details["double_opt_in"] = True
            if double and not allow(
                conn, Scope.ADDRESS, email_key(email), ADDRESS_LIMITS, secret=tokens.secret_key()
            ):
                return SignupOutcome.LIMITED
            if existing is None:
                subscriber = add_subscriber(
                    conn,
                    email,
                    name=name or None,
                    first_name=first_name or None,
                    status="unconfirmed" if double else "subscribed",
                    source="form",
                    allow_suppressed=double,
                )
            else:
                subscriber = existing
                if existing.status != "bounced":  # (bounced until their click: `confirm`)
                    set_status(conn, existing.id, "unconfirmed" if double else "subscribed")
            _record_visit(
                conn,
                config,
                subscriber.id,
                consent.SIGNUP,
                visit,
                text,
                proves=False,
                details=details,
            )
            mail_to = subscriber if double else None
    except StoreError:
        return SignupOutcome.UNCHANGED  # added by a concurrent request: treat as existing
    if mail_to is not None:
        try:
            send_confirmation(project, engine, mail_to)
        except BaseException:
            # Not sent (the transport is down, say): the address's mail allowance is given
            # back, so that the next try mails them; until then they wait unconfirmed, as
            # any sign-up does for its mail. (Before, the retry was answered "we sent you a
            # mail" and nothing was sent for ten minutes.)
            with engine.begin() as conn:
                signup_limits.give_back(
                    conn, Scope.ADDRESS, email_key(email), secret=tokens.secret_key()
                )
            raise
        return SignupOutcome.MAILED
    sequences.joined(project, engine, subscriber.id)  # no opt-in step: they joined now
    return SignupOutcome.JOINED


@dataclass(frozen=True)
class Confirmation:
    """What the confirmation page says: `confirmed` (now or before), `spent` (the link was
    used or superseded, or the person left since), `gone` (erased)."""

    outcome: str
    subscriber: Subscriber | None = None


def check_link(project: Project, token: str) -> tokens.SubscriberToken:
    """The token's subscriber; TokenError for a forged, altered or expired link."""
    max_age = project.config.section("serve")["confirm_max_age_days"] * 86400
    return tokens.read_token(tokens.CONFIRM, token, key=tokens.secret_key(), max_age=max_age)


def _linked_subscriber(conn: Connection, found: tokens.SubscriberToken) -> Subscriber | None:
    subscriber_id = resolve(conn, found).subscriber_id
    return None if subscriber_id is None else get_subscriber(conn, subscriber_id)


def _last_confirmation(conn: Connection, subscriber_id: int) -> datetime | None:
    value = conn.execute(
        select(func.max(consent_records.c.occurred_at)).where(
            consent_records.c.subscriber_id == subscriber_id,
            consent_records.c.kind == consent.CONFIRMATION,
        )
    ).scalar()
    return as_utc(value)


def _superseded(
    conn: Connection, subscriber_id: int, link: tokens.SubscriberToken, issued: datetime
) -> bool:
    """Whether the link was made before the person's last confirmation: it then carries
    fewer confirmations than they have had."""
    if link.confirmations is not None:
        had = consent.count(conn, subscriber_id, consent.CONFIRMATION)
        return link.confirmations != had
    # A link made before links carried the count: token times have whole seconds, so one
    # made in the second of the last confirmation counts as used by it.
    last = _last_confirmation(conn, subscriber_id)
    return last is not None and issued <= last


def confirm(project: Project, engine: Engine, token: str, visit: Visit) -> Confirmation:
    """Subscribe the person a confirmation token names (POST only: mail scanners fetch
    links with GET and must confirm nobody). Raises TokenError for a bad or expired token.

    A link works once and only while the person is unconfirmed (or bounced: a link mailed
    after the bounce brings them back, and the provider is told to forget the bounce): a
    link older than their last confirmation never confirms again, so an old mail cannot
    bring back someone who unsubscribed, bounced or complained since."""
    key = tokens.secret_key()
    found = check_link(project, token)
    issued = tokens.timed_token_issued_at(tokens.CONFIRM, token, key=key)
    with engine.begin() as conn:
        subscriber = _linked_subscriber(conn, found)
        if subscriber is None:
            return Confirmation("gone")
        if subscriber.status == "subscribed":
            return Confirmation("confirmed", subscriber)
        if subscriber.status not in _MAY_CONFIRM or _superseded(conn, subscriber.id, found, issued):
            return Confirmation("spent", subscriber)
        set_status(conn, subscriber.id, "subscribed", reason=None)
        _record_visit(
            conn,
            project.config,
            subscriber.id,
            consent.CONFIRMATION,
            visit,
            consent_text(project.config),
            proves=True,
            details={"link_sent_at": issued.isoformat()},
        )
        suppressions.lift(conn, subscriber.email)
        # The mails to this address were wanted: they no longer count against its limit.
        signup_limits.forget(
            conn, signup_limits.Scope.ADDRESS, email_key(subscriber.email), secret=key
        )
    if subscriber.status == "bounced":
        _lift_provider_bounce(project, subscriber.email)
    sequences.joined(project, engine, subscriber.id)  # welcome sequences start here
    return Confirmation("confirmed", subscriber)


def _lift_provider_bounce(project: Project, email: str) -> None:
    """The click shows the address takes mail: a provider that keeps a bounce list
    (SendGrid) is told to forget an old bounce of it, or it would drop every issue to them
    unsent. A failure is logged, not shown: the confirmation itself is done."""
    try:
        transport = choose_transport(project, transactional=True).transport
    except NewsletterError as exc:
        log.warning("not asking the provider about old bounces: %s", exc)
        return
    try:
        if transport.capabilities.suppression_lists:
            cast("SuppressionListTransport", transport).lift_bounce(email)
    except NewsletterError as exc:
        log.warning("could not take a confirmed address off the bounce list: %s", exc)
    finally:
        transport.close()


def link_state(project: Project, engine: Engine, token: str) -> Confirmation:
    """What a GET of the link shows, changing nothing (TokenError for a bad link)."""
    found = check_link(project, token)
    issued = tokens.timed_token_issued_at(tokens.CONFIRM, token, key=tokens.secret_key())
    with engine.connect() as conn:
        subscriber = _linked_subscriber(conn, found)
        if subscriber is None:
            return Confirmation("gone")
        if subscriber.status == "subscribed":
            return Confirmation("confirmed", subscriber)
        if subscriber.status in _MAY_CONFIRM and not _superseded(
            conn, subscriber.id, found, issued
        ):
            return Confirmation("pending", subscriber)
    return Confirmation("spent", subscriber)


__all__ = [
    "DEFAULT_CONSENT_TEXT",
    "Confirmation",
    "SignupOutcome",
    "Visit",
    "confirm",
    "confirm_url",
    "consent_text",
    "link_state",
    "send_confirmation",
    "signup",
]
