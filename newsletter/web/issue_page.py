"""The web version of an issue ("view in browser"): /issues/<slug>, for an anonymous reader.

Only published issues are served (`store.issues.is_published`: at the scheduled send_at, or
once a first recipient was accepted); anything else answers the styled 404 page. The page
itself comes from `newsletter.archive.pages`: personal fields show their defaults, and the
email's footer becomes the archive's (how to subscribe, previous/next, address, imprint).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from newsletter.archive import Site, archive_entries, neighbours
from newsletter.archive.catalog import issue_files
from newsletter.archive.pages import issue_page as render_page
from newsletter.errors import NewsletterError
from newsletter.project import Project
from newsletter.web.archive import PUBLIC, enabled, not_found_response, site_for
from newsletter.web.context import Context

log = logging.getLogger("newsletter.web")


def routes(ctx: Context) -> list[Route]:
    return [
        Route("/issues/{slug}", partial(issue_page, ctx), methods=["GET", "HEAD"]),
        Route("/issues/{slug}/", partial(without_slash, ctx), methods=["GET", "HEAD"]),
    ]


async def without_slash(ctx: Context, request: Request) -> Response:
    """/issues/<slug>/ (the static site's form of the link): a permanent redirect, 308,
    which search engines and caches keep (Starlette's own slash redirect is a 307). To
    base_url's path, which a reverse proxy may have taken off the request's."""
    query = request.url.query
    site = site_for(ctx.project, request)
    target = site.issue_path(request.path_params["slug"], site.root)
    target += f"?{query}" if query else ""
    return RedirectResponse(target, status_code=308)


def find_issue_file(project: Project, slug: str) -> Path | None:
    """The issue in issues/ whose slug (front matter, else file name) is `slug`."""

    if not slug or "/" in slug or slug.startswith("."):
        return None
    found = issue_files(project).get(slug)
    return found.path if found else None


def _render_slug(project: Project, engine: Engine, site: Site, slug: str) -> str | None:
    entries = archive_entries(project, engine)
    entry, older, newer = neighbours(entries, slug)
    if entry is None:
        return None
    archive = enabled(project)
    if not archive:  # no archive to link to: no previous/next
        older = newer = None
    return render_page(project, site, entry, older, newer, site.root, archive=archive)


async def issue_page(ctx: Context, request: Request) -> Response:
    """GET /issues/{slug}: the issue as a web page, or the 404 page."""
    project = ctx.project  # (once per request: one config for the whole page)
    try:
        html = await run_in_threadpool(
            _render_slug,
            project,
            ctx.engine,
            site_for(project, request),
            request.path_params["slug"],
        )
    except NewsletterError as exc:
        log.error("issue page failed: %s", type(exc).__name__)
        html = None
    if html is None:
        return await run_in_threadpool(not_found_response, ctx, request)
    return HTMLResponse(html, headers=PUBLIC)
