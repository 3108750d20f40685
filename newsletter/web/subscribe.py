"""The sign-up form's target and the double opt-in confirmation link (honeypot, rate limit)."""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from newsletter.errors import NewsletterError, StoreError, TokenError
from newsletter.sequences import hooks as sequences
from newsletter.web.context import Context

log = logging.getLogger("newsletter.web")


class RateLimiter:
    """At most `limit` hits per key per hour, in memory (per process: enough for one server)."""

    def __init__(self, limit: int, window: float = 3600.0) -> None:
        self.limit = limit
        self.window = window
        self.hits: dict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        hits = self.hits[key]
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        if len(self.hits) > 100_000:  # forget idle clients rather than grow without bound
            for stale in [k for k, v in self.hits.items() if not v]:
                del self.hits[stale]
        return True


def routes(ctx: Context) -> list[Route]:
    limiter = RateLimiter(ctx.config.section("subscribe")["rate_limit_per_hour"])
    return [
        Route("/subscribe", partial(subscribe, ctx, limiter), methods=["POST"]),
        Route("/confirm/{token}", partial(confirm, ctx), methods=["GET", "POST"]),
    ]


def _subscribe(ctx: Context, email: str, name: str) -> None:
    from newsletter.optin import send_confirmation
    from newsletter.store.subscribers import add_subscriber, find_subscriber, set_status

    db = ctx.engine
    double = ctx.config.section("subscribe")["double_opt_in"]
    existing = find_subscriber(db, email)
    if existing is None:
        try:
            subscriber = add_subscriber(
                db,
                email,
                name=name or None,
                status="unconfirmed" if double else "subscribed",
                source="form",
            )
        except StoreError:
            return  # added by a concurrent request: treat as existing
        if double:
            send_confirmation(ctx.project, db, subscriber)
        else:
            sequences.joined(ctx.project, db, subscriber.id)
        return
    # Never tell the requester whether the address is known: same answer either way.
    if existing.status == "subscribed":
        return
    if existing.status in ("unconfirmed", "unsubscribed"):
        if double:
            send_confirmation(ctx.project, db, existing)
        else:
            set_status(db, existing.id, "subscribed")
            sequences.joined(ctx.project, db, existing.id)
    # bounced / complained: only the person's own resubscribe link brings them back.


async def subscribe(ctx: Context, limiter: RateLimiter, request: Request) -> Response:
    """POST from the sign-up form: add the address (unconfirmed with double opt-in)."""
    settings = ctx.config.section("subscribe")
    client = request.client.host if request.client else "unknown"
    language = ctx.config.language
    t = ctx.text(language)
    if not limiter.allow(client):
        return ctx.message(language, "subscribe_title", t["rate_limited"], 429)
    try:
        form = await request.form(max_files=0, max_fields=20)
    except Exception:  # malformed form bodies of every kind are the client's fault
        return PlainTextResponse("Bad form\n", status_code=400)
    email = str(form.get("email") or "").strip()
    name = str(form.get("name") or "").strip()[:200]
    honeypot = str(form.get("website") or "")
    done = (
        RedirectResponse(settings["redirect_url"], status_code=303)
        if settings["redirect_url"]
        else ctx.message(
            language,
            "subscribe_title",
            t["subscribe_lead" if settings["double_opt_in"] else "subscribe_direct_lead"],
            200,
        )
    )
    if honeypot:
        return done  # a bot: answer as if all went well, store nothing
    from newsletter.store.subscribers import normalize_email

    try:
        email = normalize_email(email)
    except StoreError:
        return ctx.message(language, "subscribe_title", t["subscribe_invalid"], 400)
    try:
        await run_in_threadpool(_subscribe, ctx, email, name)
    except NewsletterError as exc:
        log.error("subscribe failed: %s", type(exc).__name__)
        return PlainTextResponse("Please try again later\n", status_code=503)
    return done


async def confirm(ctx: Context, request: Request) -> Response:
    """The link in the confirmation email: subscribed from now on."""
    from newsletter.optin import confirm as confirm_token

    try:
        subscriber = await run_in_threadpool(
            confirm_token, ctx.project, ctx.engine, request.path_params["token"]
        )
    except TokenError as exc:
        expired = "expired" in str(exc)
        return ctx.invalid_link(None, "expired_lead" if expired else "invalid_lead")
    if subscriber is None:
        return ctx.gone(None)
    redirect_url = ctx.config.section("subscribe")["redirect_url"]
    if redirect_url:
        return RedirectResponse(redirect_url, status_code=303)
    t = ctx.text(None)
    return ctx.message(
        None, "confirmed_title", t["confirmed_lead"].format(name=ctx.config.name), 200
    )
