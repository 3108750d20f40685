"""The public archive under `newsletter serve`: `/` (the published issues, newest first),
`/feed.xml` (Atom), `/feed.json` (JSON Feed) and the styled 404 page. The pages come from
`newsletter.archive`; this module only routes. `[archive] enabled = false` turns them off
(an issue's web version at /issues/<slug> stays, since sent emails link to it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Route

from newsletter.archive import Site, archive_entries, served_site
from newsletter.archive.feeds import atom_feed
from newsletter.archive.feeds import json_feed as json_feed_body
from newsletter.archive.pages import index_page, not_found_page
from newsletter.project import Project
from newsletter.web.context import Context

#: Public pages: a proxy may keep them briefly (a new issue shows within a minute).
PUBLIC = {"Cache-Control": "public, max-age=60", "X-Content-Type-Options": "nosniff"}


def enabled(project: Project) -> bool:
    return bool(project.config.section("archive")["enabled"])


def site_for(project: Project, request: Request) -> Site:
    """Links and ids from base_url (its path too: serve behind a proxy at /newsletter); without
    one, from the address the request came to."""
    return served_site(project.config.base_url or str(request.base_url))


def routes(ctx: Context) -> list[Route]:
    # Always routed: `[archive] enabled` is read at each request, so switching the archive off
    # (or on) in newsletter.toml needs no restart.
    return [
        Route("/", partial(index, ctx), methods=["GET", "HEAD"]),
        Route("/feed.xml", partial(atom, ctx), methods=["GET", "HEAD"]),
        Route("/feed.json", partial(json_feed, ctx), methods=["GET", "HEAD"]),
    ]


def not_found_response(ctx: Context, request: Request) -> HTMLResponse:
    project = ctx.project
    site = site_for(project, request)
    html = not_found_page(project, site, site.root)
    return HTMLResponse(html, status_code=404, headers={"X-Content-Type-Options": "nosniff"})


def exception_handlers(ctx: Context, routes: Sequence[BaseRoute]) -> dict[int, object]:
    """A styled 404 page for any unknown path (Starlette's default is plain text). A path
    that one of `routes` knows with (or without) a trailing slash is redirected there,
    under base_url's path: Starlette's own redirect (switched off) would leave that out."""

    async def not_found(request: Request, exc: HTTPException) -> Response:
        twin = _slash_twin(request, routes)
        if twin is not None:
            query = request.url.query
            target = ctx.link(twin.lstrip("/")) + (f"?{query}" if query else "")
            return RedirectResponse(target, status_code=307)
        return await run_in_threadpool(not_found_response, ctx, request)

    return {404: not_found}


def _slash_twin(request: Request, routes: Sequence[BaseRoute]) -> str | None:
    """The request's path with its trailing slash added or taken off, if a route has it."""
    path = request.scope["path"]
    if path == "/":
        return None
    twin = path.rstrip("/") if path.endswith("/") else f"{path}/"
    scope = {**request.scope, "path": twin}
    if any(route.matches(scope)[0] is not Match.NONE for route in routes):
        return twin
    return None


def _index(project: Project, engine: Engine, site: Site) -> str:
    return index_page(project, site, archive_entries(project, engine), site.root)


def _atom(project: Project, engine: Engine, site: Site) -> bytes:
    return atom_feed(project, site, archive_entries(project, engine))


def _json(project: Project, engine: Engine, site: Site) -> bytes:
    return json_feed_body(project, site, archive_entries(project, engine))


async def _archive_response(
    ctx: Context,
    request: Request,
    make: Callable[[Project, Engine, Site], Any],
    respond: Callable[[Any], Response],
) -> Response:
    """`respond` to what `make` makes of the project as it is now; the 404 page while the
    archive is switched off."""
    project = ctx.project  # (once per request: one config for the whole page)
    if not enabled(project):
        return await run_in_threadpool(not_found_response, ctx, request)
    body = await run_in_threadpool(make, project, ctx.engine, site_for(project, request))
    return respond(body)


async def index(ctx: Context, request: Request) -> Response:
    return await _archive_response(
        ctx, request, _index, lambda html: HTMLResponse(html, headers=PUBLIC)
    )


def _public(media_type: str) -> Callable[[Any], Response]:
    """The answer of a feed: its body, public for a minute."""
    return lambda body: Response(body, media_type=media_type, headers=PUBLIC)


async def atom(ctx: Context, request: Request) -> Response:
    return await _archive_response(
        ctx, request, _atom, _public("application/atom+xml; charset=utf-8")
    )


async def json_feed(ctx: Context, request: Request) -> Response:
    return await _archive_response(
        ctx, request, _json, _public("application/feed+json; charset=utf-8")
    )
