"""`newsletter serve`: unsubscribe, double opt-in, SendGrid webhooks and the web version of issues.

`create_app(project)` builds the Starlette app (the Flask-tutorial factory pattern): tests
run it in-process or under uvicorn, and `newsletter.web.asgi:app` builds it for gunicorn.
Database work is synchronous SQLAlchemy, so handlers run it in Starlette's thread pool.
Each area's module (`unsubscribe`, `keep`, `subscribe`, `webhooks`, `issue_page`, `archive`) exposes
`routes(ctx)`, taking the shared `Context` (project, database, page helpers).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, Router

from newsletter.durations import parse_delay
from newsletter.errors import ConfigError
from newsletter.project import Project
from newsletter.store.engine import defer_checkpoints, project_engine
from newsletter.web import (
    archive,
    housekeeping,
    issue_page,
    keep,
    subscribe,
    unsubscribe,
    webhooks,
)
from newsletter.web.busy import EXCEPTION_HANDLERS
from newsletter.web.context import Context
from newsletter.web.issue_page import find_issue_file
from newsletter.web.middleware import (
    BasePathMiddleware,
    BodyLimitMiddleware,
    RequestLogMiddleware,
)

__all__ = ["create_app", "find_issue_file"]


def _refuse_a_base_path_of_our_own(project: Project, routes: list[Any]) -> None:
    """base_url's path must not begin like one of the app's own pages: a request for
    /issues/x behind a proxy at /issues could mean either (and was taken apart twice)."""
    base_path = urlsplit(project.config.base_url or "").path.strip("/")
    first = base_path.split("/", 1)[0]
    ours = {str(getattr(route, "path", "")).strip("/").split("/", 1)[0] for route in routes}
    if first and first in ours:
        raise ConfigError(
            f"{project.config.path}: [newsletter] base_url's path /{base_path} begins like one "
            f"of serve's own pages (/{first}/...); put serve under another path, e.g. /newsletter"
        )


def create_app(
    project: Project, engine: Engine | None = None, *, fetch_replies: float | None = None
) -> Starlette:
    """The web app for `project`; `engine` defaults to the project's database. Replies are
    fetched from the IMAP mailbox every `fetch_replies` seconds (default: `[serve]
    fetch_replies`, else never)."""

    ctx = Context(project, engine or project_engine(project))
    # Commits do not wait for SQLite's checkpoint; housekeeping and the webhook run it.
    defer_checkpoints(ctx.engine)
    serve_config = project.config.section("serve")
    routes = [
        *unsubscribe.routes(ctx),
        *keep.routes(ctx),
        *subscribe.routes(ctx),
        *webhooks.routes(ctx),
        *issue_page.routes(ctx),
        *archive.routes(ctx),
        Route("/healthz", health, methods=["GET"]),
    ]
    _refuse_a_base_path_of_our_own(project, routes)
    handlers: dict[Any, Any] = {**archive.exception_handlers(ctx, routes), **EXCEPTION_HANDLERS}
    app = Starlette(
        routes=routes,
        exception_handlers=handlers,
        lifespan=housekeeping.lifespan(
            ctx, fetch_replies=fetch_replies or _fetch_interval(project)
        ),
    )
    app.router.redirect_slashes = False  # the 404 handler redirects, under base_url's path
    router = Router(routes=routes)

    def limit_for(path: str) -> int:
        if path.startswith(webhooks.INBOUND_PREFIX):
            return int(serve_config["max_inbound_bytes"])
        return int(serve_config["max_body_bytes"])

    # Log outside the limit, so a 413 from the limit is logged too; base_url's path goes
    # first, so that both see the path as the routes know it.
    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    app.add_middleware(RequestLogMiddleware, router=router)
    app.add_middleware(BasePathMiddleware, base_path=lambda: ctx.link("").rstrip("/"))
    app.state.project = project
    app.state.engine = ctx.engine
    return app


def _fetch_interval(project: Project) -> float | None:
    every = project.config.section("serve")["fetch_replies"]
    if every is None:
        return None

    interval = parse_delay(every)
    return interval.total_seconds() if interval else None


async def health(request: Request) -> Response:
    return PlainTextResponse("ok\n")
