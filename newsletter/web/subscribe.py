"""The sign-up form and its target, and the double opt-in confirmation page (the abuse
checks of `newsletter.signup_guard`, consent evidence). The work and the evidence live in
`newsletter.optin`."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from functools import partial
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from newsletter import tokens
from newsletter.errors import NewsletterError, StoreError, TokenError
from newsletter.optin import SignupOutcome, Visit, consent_text, link_state, signup
from newsletter.optin import confirm as confirm_token
from newsletter.project import LANGUAGES
from newsletter.signup_guard import (
    BlockReason,
    allow_network,
    bot_reason,
    is_disposable,
    record_blocked,
)
from newsletter.store.subscribers import normalize_email
from newsletter.web.context import Context
from newsletter.web.middleware import BodyTooLarge

log = logging.getLogger("newsletter.web")

PAGE_URL_CHARS = 2000


class Pace:
    """Make answers that did no mail take about as long as ones that did: a blocked or
    unchanged sign-up waits for the typical duration of a real one (a moving average,
    jittered), so a bot cannot tell from the timing that it was found out."""

    def __init__(self, typical: float = 0.05, at_most: float = 3.0) -> None:
        self.typical = typical
        self.at_most = at_most

    def observe(self, seconds: float) -> None:
        self.typical = 0.8 * self.typical + 0.2 * min(seconds, self.at_most)

    async def match(self, started: float) -> None:
        target = self.typical * random.uniform(0.8, 1.2)
        remaining = target - (time.perf_counter() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)


def routes(ctx: Context) -> list[Route]:
    pace = Pace()
    return [
        Route("/subscribe", partial(signup_form, ctx), methods=["GET"]),
        Route("/subscribe", partial(subscribe, ctx, pace), methods=["POST"]),
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
    t = ctx.text(language)
    return ctx.page(
        "subscribe.html",
        language,
        status,
        title=t["signup_title"],
        subscribe_action=ctx.link("subscribe"),
        consent_text=consent_text(ctx.config, language),
        require_checkbox=ctx.config.section("subscribe")["require_checkbox"],
        error=error,
        email=email,
        given_name=name,
        # When the form was shown, signed: one sent back sooner than a person can is a bot's.
        shown=tokens.form_stamp(key=tokens.secret_key()),
    )


async def signup_form(ctx: Context, request: Request) -> Response:
    """GET: the sign-up form with the consent text (`?lang=en` for English)."""
    return _form_page(ctx, _language(ctx, request.query_params.get("lang")))


def _page_url(form_value: object, referer: str | None) -> str | None:
    """Where the form was: the form's hidden `page` field, else the Referer."""
    for candidate in (str(form_value or "").strip(), (referer or "").strip()):
        # (A control character, a NUL say, makes no URL, and PostgreSQL's text refuses it.)
        if candidate.startswith(("https://", "http://")) and candidate.isprintable():
            return candidate[:PAGE_URL_CHARS]
    return None


def visit_of(request: Request, page_url: str | None = None) -> Visit:
    """Who sent `request` (for the consent record), as far as it tells."""
    return Visit(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        page_url=page_url,
    )


async def subscribe(ctx: Context, pace: Pace, request: Request) -> Response:
    """POST from the sign-up form: add the address (unconfirmed with double opt-in).

    Bots, throwaway domains and sign-ups over a limit (see `newsletter.signup_guard`) get
    the very answer a real sign-up gets, after about as long, and are counted in
    `stats --list`; only a person's own mistakes (no address, the box not ticked) are
    answered as such."""

    started = time.perf_counter()
    settings = ctx.config.section("subscribe")
    try:
        form = await request.form(max_files=0, max_fields=20)
    except BodyTooLarge:
        raise  # (the middleware answers 413, as for every other route)
    except Exception:  # malformed form bodies of every kind are the client's fault
        return PlainTextResponse("Bad form\n", status_code=400)
    language = _language(ctx, form.get("lang"))
    t = ctx.text(language)
    email = _field(form, "email").strip()
    name = _field(form, "name").strip()[:200]
    # (The archive's form asks for the first name, which issues greet with; a form of
    # one's own may ask for either or both.)
    first_name = _field(form, "first_name").strip()[:100]
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

    async def blocked(reason: BlockReason) -> Response:
        try:
            await run_in_threadpool(record_blocked, ctx.engine, reason)
        except NewsletterError as exc:  # the count is not worth a different answer
            log.error("counting a blocked sign-up failed: %s", type(exc).__name__)
        await pace.match(started)
        return done

    reason = bot_reason(ctx.config, str(form.get("website") or ""), _text(form.get("shown")))
    if reason is not None:
        return await blocked(reason)  # store nothing
    if settings["require_checkbox"] and not ticked:
        return _form_page(
            ctx, language, 400, error=t["signup_checkbox_required"], email=email, name=name
        )

    try:
        email = normalize_email(email)
    except StoreError:
        return ctx.message(language, "subscribe_title", t["subscribe_invalid"], 400)
    if is_disposable(ctx.config, email):
        return await blocked(BlockReason.DOMAIN)
    client = request.client.host if request.client else None
    if not await run_in_threadpool(allow_network, ctx.engine, ctx.config, client):
        return await blocked(BlockReason.NETWORK)
    visit = visit_of(request, _page_url(_field(form, "page"), request.headers.get("referer")))
    try:
        outcome = await run_in_threadpool(
            signup,
            ctx.project,
            ctx.engine,
            email,
            name,
            visit,
            first_name=first_name,
            language=language,
            checkbox=ticked,
        )
    except NewsletterError as exc:
        log.error("subscribe failed: %s", type(exc).__name__)
        return PlainTextResponse("Please try again later\n", status_code=503)
    if outcome is SignupOutcome.LIMITED:
        return await blocked(BlockReason.ADDRESS)
    if outcome is SignupOutcome.MAILED:
        pace.observe(time.perf_counter() - started)
    else:
        await pace.match(started)  # nothing mailed: as slow as if it had been
    return done


def _field(form: Any, name: str) -> str:
    """A form field's text. Starlette reads the raw bytes of a urlencoded body as Latin-1:
    browsers percent-encode, but `curl -d 'name=Jörg'` and many a server's form post send
    UTF-8 as it is, which came out as "JÃ¶rg" (and a confirmation to a wrong address).
    Text that is UTF-8 read as Latin-1 is turned back; real Latin-1 text never is UTF-8."""
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    if not value.isascii():
        try:
            return value.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return value


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _answer(ctx: Context, token: str, outcome: str) -> Response:
    """The page for a confirmation link's state (see `optin.Confirmation`)."""

    t = ctx.text(None)
    name = ctx.config.name
    if outcome == "gone":
        return ctx.gone(None)
    if outcome == "pending":
        return ctx.button_page(
            None,
            t["confirm_button"],
            t["confirm_page_lead"].format(name=name),
            f"confirm/{token}",
            t["confirm_button"],
            consent_text=consent_text(ctx.config),
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

    token = request.path_params["token"]
    try:
        state = await run_in_threadpool(link_state, ctx.project, ctx.engine, token)
    except TokenError as exc:
        return _bad_link(ctx, exc)
    return _answer(ctx, token, state.outcome)


async def confirm(ctx: Context, request: Request) -> Response:
    """POST from the confirmation page: subscribed from now on."""

    token = request.path_params["token"]
    try:
        result = await run_in_threadpool(
            confirm_token,
            ctx.project,
            ctx.engine,
            token,
            visit_of(request),  # the page is this link: its token is not evidence worth keeping
        )
    except TokenError as exc:
        return _bad_link(ctx, exc)
    return _answer(ctx, token, result.outcome)
