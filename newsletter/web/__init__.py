"""`newsletter serve`: unsubscribe, double opt-in, SendGrid webhooks and the web version of issues.

`create_app(project)` builds the Starlette app (the Flask-tutorial factory pattern): tests
run it in-process or under uvicorn, and `newsletter.web.asgi:app` builds it for gunicorn.
Database work is synchronous SQLAlchemy, so handlers run it in Starlette's thread pool.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route, Router

from newsletter import events, tokens
from newsletter.errors import NewsletterError, StoreError, TokenError
from newsletter.project import Project
from newsletter.store import schema
from newsletter.web import pages
from newsletter.web.middleware import BodyLimitMiddleware, RequestLogMiddleware

log = logging.getLogger("newsletter.web")

INBOUND_SECRET_ENV = "NEWSLETTER_INBOUND_SECRET"
INBOUND_PREFIX = "/webhooks/sendgrid/inbound/"
# Pages must never be cached by a proxy: they answer for one person's token.
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


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


def create_app(project: Project, engine: Engine | None = None) -> Starlette:
    """The web app for `project`; `engine` defaults to the project's database."""
    from newsletter.store.engine import project_engine

    db = engine or project_engine(project)
    config = project.config
    serve_config = config.section("serve")
    subscribe_config = config.section("subscribe")
    limiter = RateLimiter(subscribe_config["rate_limit_per_hour"])

    def page(name: str, language: str | None, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(
            pages.render(project, name, language, **context), status_code=status, headers=NO_STORE
        )

    def message(language: str | None, title_key: str, lead: str, status: int) -> HTMLResponse:
        t = pages.text(language, config.language)
        return page(
            "page.html",
            language,
            status,
            title=t[title_key],
            lead=lead,
            form_action=None,
            secondary_action=None,
        )

    def invalid_link(language: str | None = None, lead_key: str = "invalid_lead") -> Response:
        t = pages.text(language, config.language)
        return message(language, "invalid_title", t[lead_key], 400)

    def gone(language: str | None) -> Response:
        t = pages.text(language, config.language)
        return message(language, "gone_title", t["gone_lead"], 410)

    def issue_language(issue_id: int | None) -> str | None:
        if issue_id is None:
            return None
        with db.connect() as conn:
            return conn.execute(
                select(schema.issues.c.language).where(schema.issues.c.id == issue_id)
            ).scalar()

    # --- unsubscribe -------------------------------------------------------------------
    def _unsubscribe_target(token: str) -> tuple[Any, str | None]:
        from newsletter.store.subscribers import get_subscriber

        found = tokens.read_token(tokens.UNSUBSCRIBE, token, key=tokens.secret_key())
        return get_subscriber(db, found.subscriber_id), issue_language(found.issue_id)

    async def unsubscribe_page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            subscriber, language = await run_in_threadpool(_unsubscribe_target, token)
        except TokenError:
            return invalid_link()
        if subscriber is None:
            return gone(language)
        t = pages.text(language, config.language)
        if subscriber.status in ("unsubscribed", "bounced", "complained"):
            return _unsubscribed_page(token, language)
        return page(
            "page.html",
            language,
            title=t["unsubscribe_title"],
            lead=t["unsubscribe_lead"].format(name=config.name),
            form_action=f"/unsubscribe/{token}",
            button=t["unsubscribe_button"],
            secondary_action=None,
        )

    def _unsubscribed_page(token: str, language: str | None) -> Response:
        t = pages.text(language, config.language)
        return page(
            "page.html",
            language,
            title=t["unsubscribed_title"],
            lead=t["unsubscribed_lead"].format(name=config.name),
            form_action=None,
            secondary_action=f"/resubscribe/{token}",
            secondary_hint=t["resubscribe_hint"],
            secondary_button=t["resubscribe_button"],
        )

    def _unsubscribe(token: str) -> tuple[bool, str | None]:
        """(found, language). Idempotent: a second POST changes nothing."""
        from newsletter.store.subscribers import get_subscriber

        found = tokens.read_token(tokens.UNSUBSCRIBE, token, key=tokens.secret_key())
        language = issue_language(found.issue_id)
        with db.begin() as conn:
            subscriber = get_subscriber(conn, found.subscriber_id)
            if subscriber is None:
                return False, language
            from datetime import UTC, datetime

            if events.apply_status(
                conn, [subscriber.id], "unsubscribed", "link", datetime.now(UTC)
            ):
                # Counted in `stats` like SendGrid's unsubscribe events.
                events.record(
                    conn,
                    f"web:unsubscribe:{subscriber.id}:{found.issue_id}:{int(time.time())}",
                    "unsubscribe",
                    subscriber_id=subscriber.id,
                    issue_id=found.issue_id,
                    detail={"via": "link"},
                )
        return True, language

    async def unsubscribe(request: Request) -> Response:
        # RFC 8058: any body (List-Unsubscribe=One-Click or the page's empty form) will do.
        token = request.path_params["token"]
        try:
            found, language = await run_in_threadpool(_unsubscribe, token)
        except TokenError:
            return invalid_link()
        if not found:
            return gone(language)
        return _unsubscribed_page(token, language)

    def _resubscribe(token: str) -> tuple[str | None, str | None]:
        from newsletter.store.subscribers import get_subscriber, set_status

        found = tokens.read_token(tokens.UNSUBSCRIBE, token, key=tokens.secret_key())
        language = issue_language(found.issue_id)
        with db.begin() as conn:
            subscriber = get_subscriber(conn, found.subscriber_id)
            if subscriber is None:
                return None, language
            # The token proves the address, so no second opt-in; a dead address stays bounced.
            if subscriber.status in ("unsubscribed", "unconfirmed", "complained"):
                set_status(conn, subscriber.id, "subscribed")
                return "subscribed", language
            return subscriber.status, language

    async def resubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            status, language = await run_in_threadpool(_resubscribe, token)
        except TokenError:
            return invalid_link()
        if status is None:
            return gone(language)
        t = pages.text(language, config.language)
        if status == "bounced":
            return message(language, "unsubscribed_title", t["bounced_lead"], 200)
        return message(
            language, "resubscribed_title", t["resubscribed_lead"].format(name=config.name), 200
        )

    # --- subscribe and confirm ---------------------------------------------------------
    def _subscribe(email: str, name: str) -> None:
        from newsletter.optin import send_confirmation
        from newsletter.store.subscribers import add_subscriber, find_subscriber, set_status

        double = subscribe_config["double_opt_in"]
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
                send_confirmation(project, db, subscriber)
            return
        # Never tell the requester whether the address is known: same answer either way.
        if existing.status == "subscribed":
            return
        if existing.status in ("unconfirmed", "unsubscribed"):
            if double:
                send_confirmation(project, db, existing)
            else:
                set_status(db, existing.id, "subscribed")
        # bounced / complained: only the person's own resubscribe link brings them back.

    async def subscribe(request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        language = config.language
        t = pages.text(language, language)
        if not limiter.allow(client):
            return message(language, "subscribe_title", t["rate_limited"], 429)
        try:
            form = await request.form(max_files=0, max_fields=20)
        except Exception:  # malformed form bodies of every kind are the client's fault
            return PlainTextResponse("Bad form\n", status_code=400)
        email = str(form.get("email") or "").strip()
        name = str(form.get("name") or "").strip()[:200]
        honeypot = str(form.get("website") or "")
        done = (
            RedirectResponse(subscribe_config["redirect_url"], status_code=303)
            if subscribe_config["redirect_url"]
            else message(
                language,
                "subscribe_title",
                t[
                    "subscribe_lead"
                    if subscribe_config["double_opt_in"]
                    else "subscribe_direct_lead"
                ],
                200,
            )
        )
        if honeypot:
            return done  # a bot: answer as if all went well, store nothing
        from newsletter.store.subscribers import normalize_email

        try:
            email = normalize_email(email)
        except StoreError:
            return message(language, "subscribe_title", t["subscribe_invalid"], 400)
        try:
            await run_in_threadpool(_subscribe, email, name)
        except NewsletterError as exc:
            log.error("subscribe failed: %s", type(exc).__name__)
            return PlainTextResponse("Please try again later\n", status_code=503)
        return done

    async def confirm(request: Request) -> Response:
        from newsletter.optin import confirm as confirm_token

        try:
            subscriber = await run_in_threadpool(
                confirm_token, project, db, request.path_params["token"]
            )
        except TokenError as exc:
            expired = "expired" in str(exc)
            return invalid_link(None, "expired_lead" if expired else "invalid_lead")
        if subscriber is None:
            return gone(None)
        if subscribe_config["redirect_url"]:
            return RedirectResponse(subscribe_config["redirect_url"], status_code=303)
        t = pages.text(None, config.language)
        return message(None, "confirmed_title", t["confirmed_lead"].format(name=config.name), 200)

    # --- SendGrid Event Webhook --------------------------------------------------------
    async def event_webhook(request: Request) -> Response:
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
            result = await run_in_threadpool(events.ingest, db, batch)
        except OperationalError as exc:
            # Database busy or down: 503 makes SendGrid retry later (it does for 24 hours).
            log.error("event ingest failed: %s", type(exc.orig).__name__)
            return PlainTextResponse(
                "Try again later\n", status_code=503, headers={"Retry-After": "60"}
            )
        return PlainTextResponse(f"ok: {result.stored} stored, {result.duplicates} duplicates\n")

    # --- SendGrid Inbound Parse --------------------------------------------------------
    async def inbound(request: Request) -> Response:
        from newsletter import replies
        from newsletter.web.inbound import InboundFormError, parse_inbound

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
            stored = await run_in_threadpool(replies.receive, project, db, raw)
        except OperationalError as exc:
            log.error("storing a reply failed: %s", type(exc.orig).__name__)
            return PlainTextResponse(
                "Try again later\n", status_code=503, headers={"Retry-After": "60"}
            )
        return PlainTextResponse(f"ok: reply {stored.id}\n")

    # --- web version of an issue ---------------------------------------------------------
    def _issue_page(slug: str) -> str | None:
        path = find_issue_file(project, slug)
        if path is None:
            return None
        from newsletter.web.issue_page import render_public

        return render_public(project, path)

    async def issue_page(request: Request) -> Response:
        try:
            html = await run_in_threadpool(_issue_page, request.path_params["slug"])
        except NewsletterError as exc:
            log.error("issue page failed: %s", type(exc).__name__)
            html = None
        if html is None:
            t = pages.text(None, config.language)
            return message(None, "invalid_title", t["not_found"], 404)
        return HTMLResponse(html, headers={"X-Content-Type-Options": "nosniff"})

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    routes = [
        Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET"]),
        Route("/unsubscribe/{token}", unsubscribe, methods=["POST"]),
        Route("/resubscribe/{token}", resubscribe, methods=["POST"]),
        Route("/subscribe", subscribe, methods=["POST"]),
        Route("/confirm/{token}", confirm, methods=["GET", "POST"]),
        Route("/webhooks/sendgrid/events", event_webhook, methods=["POST"]),
        Route(INBOUND_PREFIX + "{secret}", inbound, methods=["POST"]),
        Route("/issues/{slug}", issue_page, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    router = Router(routes=routes)

    def limit_for(path: str) -> int:
        if path.startswith(INBOUND_PREFIX):
            return int(serve_config["max_inbound_bytes"])
        return int(serve_config["max_body_bytes"])

    # Log outermost, so a 413 from the limit is logged too.
    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    app.add_middleware(RequestLogMiddleware, router=router)
    app.state.project = project
    app.state.engine = db
    return app


def find_issue_file(project: Project, slug: str) -> Path | None:
    """The issue in issues/ whose slug (front matter, else file name) is `slug`."""
    from newsletter.issue import load_issue

    if not slug or "/" in slug or slug.startswith("."):
        return None
    for path in sorted(project.issues_dir.glob("*.md")):
        try:
            if load_issue(project, path).slug == slug:
                return path
        except NewsletterError:
            continue
    return None
