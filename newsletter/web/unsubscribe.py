"""The unsubscribe link from every email: the confirmation page, one-click unsubscribe, resubscribe."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter import events, tokens
from newsletter.errors import NewsletterError, TokenError
from newsletter.optin import Visit, record_resubscribe, signup
from newsletter.store.public_ids import resolve
from newsletter.store.subscribers import apply_status, get_subscriber, set_status
from newsletter.web.context import Context
from newsletter.web.subscribe import visit_of

if TYPE_CHECKING:
    from newsletter.store.public_ids import TokenIds
    from newsletter.store.subscribers import Subscriber

log = logging.getLogger(__name__)
T = TypeVar("T")
# Runs in the token's transaction with its subscriber; must not return None (that means "gone").
Action = Callable[[Connection, "Subscriber", "TokenIds"], T]


def routes(ctx: Context) -> list[Route]:
    return [
        Route("/unsubscribe/{token}", partial(unsubscribe_page, ctx), methods=["GET"]),
        Route("/unsubscribe/{token}", partial(unsubscribe, ctx), methods=["POST"]),
        Route("/resubscribe/{token}", partial(resubscribe_page, ctx), methods=["GET"]),
        Route("/resubscribe/{token}", partial(resubscribe, ctx), methods=["POST"]),
    ]


def _for_token(ctx: Context, token: str, action: Action[T]) -> tuple[T | None, str | None]:
    """(`action`'s result, or None if the subscriber is no longer stored; the issue's language)."""

    found = tokens.read_token(tokens.UNSUBSCRIBE, token, key=tokens.secret_key())
    with ctx.engine.connect() as conn:
        ids = resolve(conn, found)
    language = ctx.issue_language(ids.issue_id)
    with ctx.engine.begin() as conn:
        subscriber = None if ids.subscriber_id is None else get_subscriber(conn, ids.subscriber_id)
        if subscriber is None:
            return None, language
        return action(conn, subscriber, ids), language


async def _with_subscriber(
    ctx: Context,
    request: Request,
    action: Action[T],
    respond: Callable[[str, T, str | None], Response | Awaitable[Response]],
) -> Response:
    """Run `action` for the path's token off the event loop, then `respond(token, result, language)`;
    a bad token gets the invalid-link page, a deleted subscriber the gone page."""
    token = request.path_params["token"]
    try:
        result, language = await run_in_threadpool(_for_token, ctx, token, action)
    except TokenError:
        return ctx.invalid_link()
    if result is None:
        return ctx.gone(language)
    response = respond(token, result, language)
    return await response if inspect.isawaitable(response) else response


def _unsubscribed_page(ctx: Context, token: str, language: str | None) -> Response:
    t = ctx.text(language)
    return ctx.page(
        "page.html",
        language,
        title=t["unsubscribed_title"],
        lead=t["unsubscribed_lead"].format(name=ctx.config.name),
        form_action=None,
        secondary_action=ctx.link(f"resubscribe/{token}"),
        secondary_hint=t["resubscribe_hint"],
        secondary_button=t["resubscribe_button"],
    )


def _current(conn: Connection, subscriber: Subscriber, found: TokenIds) -> Subscriber:
    return subscriber


async def unsubscribe_page(ctx: Context, request: Request) -> Response:
    """GET: the unsubscribe button, or the unsubscribed page for someone already out."""

    def respond(token: str, subscriber: Subscriber, language: str | None) -> Response:
        if subscriber.status in ("unsubscribed", "bounced", "complained"):
            return _unsubscribed_page(ctx, token, language)
        t = ctx.text(language)
        return ctx.button_page(
            language,
            t["unsubscribe_title"],
            t["unsubscribe_lead"].format(name=ctx.config.name),
            f"unsubscribe/{token}",
            t["unsubscribe_button"],
        )

    return await _with_subscriber(ctx, request, _current, respond)


def _unsubscribe(conn: Connection, subscriber: Subscriber, found: TokenIds) -> bool:
    """Idempotent: a second POST changes nothing."""
    if apply_status(conn, [subscriber.id], "unsubscribed", "link", datetime.now(UTC)):
        # Counted in `stats` like SendGrid's unsubscribe events.
        events.record(
            conn,
            f"web:unsubscribe:{subscriber.id}:{found.issue_id}:{int(time.time())}",
            "unsubscribe",
            subscriber_id=subscriber.id,
            issue_id=found.issue_id,
            detail={"via": "link"},
        )
    return True


async def unsubscribe(ctx: Context, request: Request) -> Response:
    """POST: unsubscribe, then show the unsubscribed page."""
    # RFC 8058: any body (List-Unsubscribe=One-Click or the page's empty form) will do.
    return await _with_subscriber(
        ctx,
        request,
        _unsubscribe,
        lambda token, _done, language: _unsubscribed_page(ctx, token, language),
    )


#: Who may subscribe again by the link alone (the token proves the address, so no second
#: opt-in); a bounced address is mailed a confirmation link first (`resubscribe`).
_MAY_RESUBSCRIBE = ("unsubscribed", "unconfirmed", "complained")


def _resubscribe(
    ctx: Context, visit: Visit, conn: Connection, subscriber: Subscriber, found: TokenIds
) -> Subscriber:
    """The subscriber afterwards; one who comes back gets a consent record of it (the law
    asks the sender to prove each consent)."""

    if subscriber.status in _MAY_RESUBSCRIBE:
        set_status(conn, subscriber.id, "subscribed")
        record_resubscribe(conn, ctx.config, subscriber, visit)
        return replace(subscriber, status="subscribed")
    return subscriber


def _status_page(ctx: Context, token: str, status: str, language: str | None) -> Response:
    """What a resubscribe shows for someone now `status`: back on the list, or (bounced) the
    button that mails them a confirmation link."""
    t = ctx.text(language)
    if status == "bounced":
        return ctx.button_page(
            language,
            t["unsubscribed_title"],
            t["bounced_lead"].format(name=ctx.config.name),
            f"resubscribe/{token}",
            t["bounced_button"],
        )
    return ctx.message(
        language, "resubscribed_title", t["resubscribed_lead"].format(name=ctx.config.name), 200
    )


async def resubscribe_page(ctx: Context, request: Request) -> Response:
    """GET (the link opened, or a mail scanner following it): the page with the button that
    subscribes again; changes nothing, as GET /unsubscribe does not."""

    def respond(token: str, subscriber: Subscriber, language: str | None) -> Response:
        if subscriber.status in _MAY_RESUBSCRIBE:
            return _unsubscribed_page(ctx, token, language)
        return _status_page(ctx, token, subscriber.status, language)

    return await _with_subscriber(ctx, request, _current, respond)


async def resubscribe(ctx: Context, request: Request) -> Response:
    """POST from the unsubscribed page: subscribe again. Mail to a bounced address failed,
    so it comes back as a sign-up does with double opt-in: a confirmation link, whose click
    shows the address takes mail again (before, the page said "sign up again", and the
    form left a bounced address alone)."""

    async def respond(token: str, subscriber: Subscriber, language: str | None) -> Response:
        if subscriber.status != "bounced":
            return _status_page(ctx, token, subscriber.status, language)
        try:
            await run_in_threadpool(
                signup,
                ctx.project,
                ctx.engine,
                subscriber.email,
                None,
                visit_of(request),
                language=language,
            )
        except NewsletterError as exc:  # (the transport is down, say)
            log.error("resubscribe failed: %s", type(exc).__name__)
            return PlainTextResponse("Please try again later\n", status_code=503)
        t = ctx.text(language)
        return ctx.message(language, "subscribe_title", t["subscribe_lead"], 200)

    return await _with_subscriber(
        ctx, request, partial(_resubscribe, ctx, visit_of(request)), respond
    )
