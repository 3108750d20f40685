"""SendGrid's two webhooks: the signed Event Webhook and Inbound Parse (readers' replies)."""

from __future__ import annotations

import hmac
import logging
import os
import time
from functools import partial

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter import events, replies
from newsletter.store.engine import checkpoint
from newsletter.web.context import Context
from newsletter.web.inbound import InboundFormError, parse_inbound

log = logging.getLogger("newsletter.web")

INBOUND_SECRET_ENV = "NEWSLETTER_INBOUND_SECRET"
INBOUND_PREFIX = "/webhooks/sendgrid/inbound/"


class Checkpoints:
    """SQLite's checkpoint after answering a webhook post (`store.engine.defer_checkpoints`),
    at most once a second: the posts of a burst share one, so a page they all changed (the
    ledger's, an index's) is written back once, not once per post."""

    def __init__(self, engine: Engine, every: float = 1.0) -> None:
        self.engine = engine
        self.every = every
        self.last = -every

    def after_answer(self) -> BackgroundTask | None:
        now = time.monotonic()
        if now - self.last < self.every:
            return None  # (housekeeping's run every few seconds takes the rest)
        self.last = now
        return BackgroundTask(checkpoint, self.engine)


def routes(ctx: Context) -> list[Route]:
    checkpoints = Checkpoints(ctx.engine)
    return [
        Route(
            "/webhooks/sendgrid/events",
            partial(event_webhook, ctx, checkpoints),
            methods=["POST"],
        ),
        Route(INBOUND_PREFIX + "{secret}", partial(inbound, ctx), methods=["POST"]),
    ]


def _try_again_later() -> Response:
    return PlainTextResponse("Try again later\n", status_code=503, headers={"Retry-After": "60"})


async def event_webhook(ctx: Context, checkpoints: Checkpoints, request: Request) -> Response:
    """A signed batch of delivery events: stored once each, statuses updated."""
    body = await request.body()
    try:
        events.verify(
            body,
            request.headers.get(events.SIGNATURE_HEADER),
            request.headers.get(events.TIMESTAMP_HEADER),
            os.environ.get(events.PUBLIC_KEY_ENV),
        )
    except events.SignatureError:
        return PlainTextResponse("Forbidden\n", status_code=403)
    try:
        batch = events.parse(body)
    except events.PayloadError as exc:
        return PlainTextResponse(f"Bad request: {exc}\n", status_code=400)
    try:
        result = await run_in_threadpool(events.ingest, ctx.engine, batch)
    except OperationalError as exc:
        # Database busy or down: 503 makes SendGrid retry later (it does for 24 hours).
        log.error("event ingest failed: %s", type(exc.orig).__name__)
        return _try_again_later()
    # The SQLite log is checkpointed after the answer, not inside the commit (store.engine).
    return PlainTextResponse(
        f"ok: {result.stored} stored, {result.duplicates} duplicates\n",
        background=checkpoints.after_answer() if result.stored else None,
    )


async def inbound(ctx: Context, request: Request) -> Response:
    """A reader's reply, posted by Inbound Parse to the secret URL."""

    secret = os.environ.get(INBOUND_SECRET_ENV, "")
    given = request.path_params["secret"]
    # Constant time, so the secret cannot be guessed a character at a time.
    if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
        return PlainTextResponse("Not Found\n", status_code=404)
    try:
        raw = await parse_inbound(request.headers.get("content-type", ""), request.stream())
    except InboundFormError as exc:
        return PlainTextResponse(f"Bad request: {exc}\n", status_code=400)
    try:
        stored = await run_in_threadpool(replies.receive, ctx.project, ctx.engine, raw)
    except OperationalError as exc:
        log.error("storing a reply failed: %s", type(exc.orig).__name__)
        return _try_again_later()
    return PlainTextResponse(f"ok: reply {stored.id}\n")
