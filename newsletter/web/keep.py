"""The sunset's "Yes, keep sending" link (`subscribers sunset --ask`): opening it shows a page
with the button, and the button's POST keeps the reader on the list
(`newsletter.segments.sunset.keep`) and shows a thank-you page."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import tokens
from newsletter.errors import TokenError
from newsletter.optin import record_resubscribe
from newsletter.segments.sunset import KEEP, keeps
from newsletter.segments.sunset import keep as keep_reader
from newsletter.store.public_ids import resolve
from newsletter.store.subscribers import get_subscriber
from newsletter.web.context import Context
from newsletter.web.subscribe import visit_of

if TYPE_CHECKING:
    from newsletter.store.subscribers import Subscriber


def routes(ctx: Context) -> list[Route]:
    # GET only shows the button: link scanners and mail prefetchers open every link, and
    # must keep nobody (nor bring back someone removed as inactive). POST keeps.
    return [
        Route("/keep/{token}", partial(keep_page, ctx), methods=["GET"]),
        Route("/keep/{token}", partial(keep, ctx), methods=["POST"]),
    ]


def _for_token(
    ctx: Context, token: str, action: Callable[[Connection, Subscriber], str]
) -> str | None:
    """`action`'s answer for the token's reader (in one transaction), or None when they are
    no longer stored."""
    found = tokens.read_token(KEEP, token, key=tokens.secret_key())
    with ctx.engine.begin() as conn:
        ids = resolve(conn, found)
        subscriber = None if ids.subscriber_id is None else get_subscriber(conn, ids.subscriber_id)
        if subscriber is None:
            return None
        return action(conn, subscriber)


def _offer(conn: Connection, subscriber: Subscriber) -> str:
    """What the button would do: "keep", or the reader's status when it would not keep them."""
    return "keep" if keeps(subscriber) else subscriber.status


async def keep_page(ctx: Context, request: Request) -> Response:
    """GET: the page with the "Yes, keep sending" button; changes nothing."""
    token = request.path_params["token"]
    try:
        offer = await run_in_threadpool(_for_token, ctx, token, _offer)
    except TokenError:
        return ctx.invalid_link()
    if offer is None:
        return ctx.gone(None)
    if offer != "keep":
        return _left(ctx)
    t = ctx.text(None)
    name = ctx.config.name
    return ctx.button_page(
        None,
        t["keep_subject"].format(name=name),
        t["keep_page_lead"].format(name=name),
        f"keep/{token}",
        t["keep_button"],
    )


async def keep(ctx: Context, request: Request) -> Response:
    """POST from the keep page: the reader stays (or comes back), then the thank-you page.
    Someone removed as inactive who comes back gets a consent record of it, as a press of
    "subscribe again" does (`optin.record_resubscribe`)."""
    visit = visit_of(request)

    def keep_and_record(conn: Connection, subscriber: Subscriber) -> str:
        status = keep_reader(conn, subscriber)
        if status == "subscribed" and subscriber.status != "subscribed":
            record_resubscribe(conn, ctx.config, subscriber, visit)
        return status

    try:
        status = await run_in_threadpool(
            _for_token, ctx, request.path_params["token"], keep_and_record
        )
    except TokenError:
        return ctx.invalid_link()
    if status is None:
        return ctx.gone(None)
    if status != "subscribed":
        return _left(ctx)
    t = ctx.text(None)
    return ctx.message(None, "keep_title", t["keep_lead"].format(name=ctx.config.name), 200)


def _left(ctx: Context) -> Response:
    """For a reader who left on their own: the link does not bring them back."""
    lead = ctx.text(None)["keep_left_lead"].format(name=ctx.config.name)
    return ctx.message(None, "unsubscribed_title", lead, 200)
