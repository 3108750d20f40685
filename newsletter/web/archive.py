"""The public archive under `newsletter serve`: `/` (the published issues, newest first),
`/feed.xml` (Atom), `/feed.json` (JSON Feed) and the styled 404 page. The pages come from
`newsletter.archive`; this module only routes. `[archive] enabled = false` turns them off
(an issue's web version at /issues/<slug> stays, since sent emails link to it)."""

from __future__ import annotations

from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from newsletter.archive import Site, archive_entries, served_site
from newsletter.archive.feeds import atom_feed
from newsletter.archive.feeds import json_feed as json_feed_body
from newsletter.archive.pages import index_page, not_found_page
from newsletter.web.context import Context

#: Public pages: a proxy may keep them briefly (a new issue shows within a minute).
PUBLIC = {"Cache-Control": "public, max-age=60", "X-Content-Type-Options": "nosniff"}


def enabled(ctx: Context) -> bool:
    return bool(ctx.config.section("archive")["enabled"])


def site_for(ctx: Context, request: Request) -> Site:
    """Links and ids from base_url; without one, from the address the request came to."""
    return served_site(ctx.config.base_url or str(request.base_url))


def routes(ctx: Context) -> list[Route]:
    if not enabled(ctx):
        return []
    return [
        Route("/", partial(index, ctx), methods=["GET", "HEAD"]),
        Route("/feed.xml", partial(atom, ctx), methods=["GET", "HEAD"]),
        Route("/feed.json", partial(json_feed, ctx), methods=["GET", "HEAD"]),
    ]


def not_found_response(ctx: Context, request: Request) -> HTMLResponse:
    html = not_found_page(ctx.project, site_for(ctx, request), "/")
    return HTMLResponse(html, status_code=404, headers={"X-Content-Type-Options": "nosniff"})


def exception_handlers(ctx: Context) -> dict[int, object]:
    """A styled 404 page for any unknown path (Starlette's default is plain text)."""

    async def not_found(request: Request, exc: HTTPException) -> Response:
        return await run_in_threadpool(not_found_response, ctx, request)

    return {404: not_found}


def _index(ctx: Context, site: Site) -> str:
    return index_page(ctx.project, site, archive_entries(ctx.project, ctx.engine), "/")


async def index(ctx: Context, request: Request) -> Response:
    html = await run_in_threadpool(_index, ctx, site_for(ctx, request))
    return HTMLResponse(html, headers=PUBLIC)


def _atom(ctx: Context, site: Site) -> bytes:
    return atom_feed(ctx.project, site, archive_entries(ctx.project, ctx.engine))


def _json(ctx: Context, site: Site) -> bytes:
    return json_feed_body(ctx.project, site, archive_entries(ctx.project, ctx.engine))


async def atom(ctx: Context, request: Request) -> Response:
    body = await run_in_threadpool(_atom, ctx, site_for(ctx, request))
    return Response(body, media_type="application/atom+xml; charset=utf-8", headers=PUBLIC)


async def json_feed(ctx: Context, request: Request) -> Response:
    body = await run_in_threadpool(_json, ctx, site_for(ctx, request))
    return Response(body, media_type="application/feed+json; charset=utf-8", headers=PUBLIC)
