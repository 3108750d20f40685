"""The web version of an issue ("view in browser"): rendered for an anonymous reader.

Personal fields fall back to their defaults (`default("zusammen")`), so the page holds
no one's data; its unsubscribe link is a neutral `#`, since the page names nobody.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from pathlib import Path

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from newsletter.errors import NewsletterError
from newsletter.project import Project
from newsletter.web.context import Context

log = logging.getLogger("newsletter.web")

# (issue file, its mtime, the project's templates and theirs) -> html: rendering an issue
# costs far more than serving it, and an edit to either must show without a restart.
_cache: dict[tuple[object, ...], str] = {}
_lock = threading.Lock()


def routes(ctx: Context) -> list[Route]:
    return [Route("/issues/{slug}", partial(issue_page, ctx), methods=["GET"])]


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


def render_public(project: Project, path: Path) -> str:
    from newsletter.render import render_file

    try:
        templates = tuple(
            sorted((t.name, t.stat().st_mtime) for t in project.templates_dir.iterdir())
        )
    except OSError:
        templates = ()
    key = (str(path), path.stat().st_mtime, templates)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    html, _text = render_file(project, path).personalize({}, "#")
    with _lock:
        if len(_cache) > 64:
            _cache.clear()
        _cache[key] = html
    return html


def _render_slug(project: Project, engine: Engine, slug: str) -> str | None:
    from newsletter.store.issues import is_published

    if not is_published(engine, slug):
        return None
    path = find_issue_file(project, slug)
    if path is None:
        return None
    return render_public(project, path)


async def issue_page(ctx: Context, request: Request) -> Response:
    """GET /issues/{slug}: the issue as a web page, or 404."""
    try:
        html = await run_in_threadpool(
            _render_slug, ctx.project, ctx.engine, request.path_params["slug"]
        )
    except NewsletterError as exc:
        log.error("issue page failed: %s", type(exc).__name__)
        html = None
    if html is None:
        t = ctx.text(None)
        return ctx.message(None, "invalid_title", t["not_found"], 404)
    return HTMLResponse(html, headers={"X-Content-Type-Options": "nosniff"})
