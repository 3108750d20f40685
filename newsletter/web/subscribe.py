"""The sign-up form and its target, and the double opt-in confirmation page (honeypot,
rate limit, consent evidence). The work and the evidence live in `newsletter.optin`."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from newsletter.errors import NewsletterError, StoreError, TokenError
from newsletter.optin import Visit
from newsletter.project import LANGUAGES
from newsletter.web.context import Context

log = logging.getLogger("newsletter.web")

PAGE_URL_CHARS = 2000


class RateLimiter:
    """At most `limit` hits per key per `window` seconds, in memory (per process).

    Clients are kept in least-recently-seen order, so expired ones are dropped from the
    front a few at a time (no scan of the whole table per request), and the table never
    holds more than `max_clients`: beyond that the longest-idle client is forgotten.
    """

    def __init__(self, limit: int, window: float = 3600.0, max_clients: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self.hits: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.hits)

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self._expire(now)
        hits = self.hits.get(key)
        if hits is None:
            hits = self.hits[key] = deque(maxlen=self.limit)
            while len(self.hits) > self.max_clients:
                self.hits.popitem(last=False)
        else:
            self.hits.move_to_end(key)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

    def _expire(self, now: float, at_most: int = 100) -> None:
        # The front is the client seen longest ago; stop at the first one still active.
        for _ in range(at_most):
            if not self.hits:
                return
            oldest_key, oldest = next(iter(self.hits.items()))
            if oldest and oldest[-1] > now - self.window:
                return
            del self.hits[oldest_key]


def routes(ctx: Context) -> list[Route]:
    limiter = RateLimiter(ctx.config.section("subscribe")["rate_limit_per_hour"])
    return [
        Route("/subscribe", partial(signup_form, ctx), methods=["GET"]),
        Route("/subscribe", partial(subscribe, ctx, limiter), methods=["POST"]),
        Route("/confirm/{token}", partial(confirm_page, ctx), methods=["GET"]),
        Route("/confirm/{token}", partial(confirm, ctx), methods=["POST"]),
    ]


def _language(ctx: Context, value: object) -> str:
    return str(value) if value in LANGUAGES else ctx.config.language


def _form_page(
    ctx: Context,
    language: str,
    status: int = 200,
    *,
    error: str | None = None,
    email: str = "",
    name: str = "",
) -> Response:
    from newsletter.optin import consent_text

    t = ctx.text(language)
    return ctx.page(
        "subscribe.html",
        language,
        status,
        title=t["signup_title"],
        consent_text=consent_text(ctx.config, language),
        require_checkbox=ctx.config.section("subscribe")["require_checkbox"],
        error=error,
        email=email,
        given_name=name,
    )


async def signup_form(ctx: Context, request: Request) -> Response:
    """GET: the sign-up form with the consent text (`?lang=en` for English)."""
    return _form_page(ctx, _language(ctx, request.query_params.get("lang")))


def _page_url(form_value: object, referer: str | None) -> str | None:
    """Where the form was: the form's hidden `page` field, else the Referer."""
    for candidate in (str(form_value or "").strip(), (referer or "").strip()):
        if candidate.startswith(("https://", "http://")):
            return candidate[:PAGE_URL_CHARS]
    return None


def _visit(request: Request, page_url: str | None = None) -> Visit:
    return Visit(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        page_url=page_url,
    )


async def subscribe(ctx: Context, limiter: RateLimiter, request: Request) -> Response:
    """POST from the sign-up form: add the address (unconfirmed with double opt-in)."""
    from newsletter.optin import signup

    settings = ctx.config.section("subscribe")
    client = request.client.host if request.client else "unknown"
    language = ctx.config.language
    if not limiter.allow(client):
        return ctx.message(language, "subscribe_title", ctx.text(language)["rate_limited"], 429)
    try:
        form = await request.form(max_files=0, max_fields=20)
    except Exception:  # malformed form bodies of every kind are the client's fault
        return PlainTextResponse("Bad form\n", status_code=400)
    language = _language(ctx, form.get("lang"))
    t = ctx.text(language)
    email = str(form.get("email") or "").strip()
    name = str(form.get("name") or "").strip()[:200]
    honeypot = str(form.get("website") or "")
    ticked = str(form.get("consent") or "") != ""
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
    if settings["require_checkbox"] and not ticked:
        return _form_page(
            ctx, language, 400, error=t["signup_checkbox_required"], email=email, name=name
        )
    from newsletter.store.subscribers import normalize_email

    try:
        email = normalize_email(email)
    except StoreError:
        return ctx.message(language, "subscribe_title", t["subscribe_invalid"], 400)
    visit = _visit(request, _page_url(form.get("page"), request.headers.get("referer")))
    try:
        await run_in_threadpool(
            signup,
            ctx.project,
            ctx.engine,
            email,
            name,
            visit,
            language=language,
            checkbox=ticked,
        )
    except NewsletterError as exc:
        log.error("subscribe failed: %s", type(exc).__name__)
        return PlainTextResponse("Please try again later\n", status_code=503)
    return done


def _answer(ctx: Context, token: str, outcome: str) -> Response:
    """The page for a confirmation link's state (see `optin.Confirmation`)."""
    from newsletter.optin import consent_text

    t = ctx.text(None)
    name = ctx.config.name
    if outcome == "gone":
        return ctx.gone(None)
    if outcome == "pending":
        return ctx.page(
            "page.html",
            None,
            title=t["confirm_button"],
            lead=t["confirm_page_lead"].format(name=name),
            consent_text=consent_text(ctx.config),
            form_action=f"/confirm/{token}",
            button=t["confirm_button"],
            secondary_action=None,
        )
    if outcome == "spent":
        return ctx.message(None, "invalid_title", t["confirm_spent_lead"].format(name=name), 410)
    redirect_url = ctx.config.section("subscribe")["redirect_url"]
    if redirect_url:
        return RedirectResponse(redirect_url, status_code=303)
    return ctx.message(None, "confirmed_title", t["confirmed_lead"].format(name=name), 200)


def _bad_link(ctx: Context, exc: TokenError) -> Response:
    return ctx.invalid_link(None, "expired_lead" if "expired" in str(exc) else "invalid_lead")


async def confirm_page(ctx: Context, request: Request) -> Response:
    """GET of the link in the confirmation email: a page with the button, changing
    nothing (mail scanners prefetch links; they must confirm nobody)."""
    from newsletter.optin import link_state

    token = request.path_params["token"]
    try:
        state = await run_in_threadpool(link_state, ctx.project, ctx.engine, token)
    except TokenError as exc:
        return _bad_link(ctx, exc)
    return _answer(ctx, token, state.outcome)


async def confirm(ctx: Context, request: Request) -> Response:
    """POST from the confirmation page: subscribed from now on."""
    from newsletter.optin import confirm as confirm_token

    token = request.path_params["token"]
    try:
        result = await run_in_threadpool(
            confirm_token,
            ctx.project,
            ctx.engine,
            token,
            _visit(request),  # the page is this link: its token is not evidence worth keeping
        )
    except TokenError as exc:
        return _bad_link(ctx, exc)
    return _answer(ctx, token, result.outcome)
