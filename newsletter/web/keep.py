"""The sunset's "Yes, keep sending" link (`subscribers sunset --ask`): one click keeps the
reader on the list (`newsletter.segments.sunset.keep`) and shows a thank-you page."""

from __future__ import annotations

from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import tokens
from newsletter.errors import TokenError
from newsletter.segments.sunset import KEEP
from newsletter.segments.sunset import keep as keep_reader
from newsletter.store.public_ids import resolve
from newsletter.store.subscribers import get_subscriber
from newsletter.web.context import Context


def routes(ctx: Context) -> list[Route]:
    # GET keeps at once (the mail promises one click); POST does the same for a form.
    return [Route("/keep/{token}", partial(keep, ctx), methods=["GET", "POST"])]


def _keep(ctx: Context, token: str) -> str | None:
    """The reader's status afterwards, or None when they are no longer stored."""
    found = tokens.read_token(KEEP, token, key=tokens.secret_key())
    with ctx.engine.begin() as conn:
        ids = resolve(conn, found)
        subscriber = None if ids.subscriber_id is None else get_subscriber(conn, ids.subscriber_id)
        if subscriber is None:
            return None
        return keep_reader(conn, subscriber)


async def keep(ctx: Context, request: Request) -> Response:
    try:
        status = await run_in_threadpool(_keep, ctx, request.path_params["token"])
    except TokenError:
        return ctx.invalid_link()
    if status is None:
        return ctx.gone(None)
    t = ctx.text(None)
    if status != "subscribed":
        return ctx.message(
            None, "unsubscribed_title", t["keep_left_lead"].format(name=ctx.config.name), 200
        )
    return ctx.message(None, "keep_title", t["keep_lead"].format(name=ctx.config.name), 200)
