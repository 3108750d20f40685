"""The preview web app: the page, the email itself, and server-sent events on every save.

`create_preview_app(project, issue_path)` is a Starlette app. Its lifespan renders the issue
once, then watches the files (see `watch.py`) and re-renders in a worker thread after each
burst of changes, so the event loop keeps answering while the pipeline runs. Each render is
pushed to every open page over `/events` as one JSON message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route
from watchfiles import Change

from newsletter.preview.state import PreviewState, Snapshot
from newsletter.preview.watch import WatchedFiles, watch
from newsletter.project import Project, builtin_templates_dir

#: Host headers a loopback-only preview accepts (guards against DNS rebinding).
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]
# A comment line every so often lets the server notice pages that went away.
KEEPALIVE_SECONDS = 15.0


def sse_message(snapshot: Snapshot, boot: str) -> str:
    """One server-sent event: `event: snapshot`, the version as id, the JSON on one line."""
    data = json.dumps({**snapshot.to_json(), "boot": boot}, ensure_ascii=False)
    return f"id: {snapshot.version}\nevent: snapshot\ndata: {data}\n\n"


class PreviewHub:
    """Holds the state, runs renders off the event loop and wakes the open event streams."""

    def __init__(self, state: PreviewState):
        self.state = state
        self.boot = secrets.token_hex(4)  # a restarted server is a new page state
        self.closing = asyncio.Event()
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._findings_task: asyncio.Task[None] | None = None
        self._findings_again = False

    def _publish(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def rerender(self) -> Snapshot:
        """Render in a worker thread, tell the pages, then refresh the check findings."""
        self._loop = asyncio.get_running_loop()
        snapshot = await anyio.to_thread.run_sync(self.state.refresh)
        self._publish()
        self._schedule_findings()
        return snapshot

    def _schedule_findings(self) -> None:
        # `check` may take as long as a render; the email is shown first, findings follow.
        if self._findings_task is not None and not self._findings_task.done():
            self._findings_again = True
            return
        self._findings_task = asyncio.create_task(self._findings())

    async def _findings(self) -> None:
        while True:
            self._findings_again = False
            if await anyio.to_thread.run_sync(self.state.refresh_findings) is not None:
                self._publish()
            if not self._findings_again:
                return

    async def settled(self) -> None:
        """Wait until the findings of the latest render are in (for tests and startup)."""
        while self._findings_task is not None and not self._findings_task.done():
            await self._findings_task

    def close(self) -> None:
        """End every event stream so the server can stop at once. Safe from any thread."""
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self.closing.set)
        else:
            self.closing.set()

    async def stream(self) -> AsyncIterator[str]:
        """The `/events` stream: the current snapshot, then every newer one. A page that
        reconnects gets the current one again and ignores it if it has it already."""
        yield "retry: 1000\n\n"
        sent = -1
        while not self.closing.is_set():
            changed = self._changed
            snapshot = self.state.snapshot
            if snapshot.version != sent:
                sent = snapshot.version
                yield sse_message(snapshot, self.boot)
                continue
            waiters = {
                asyncio.ensure_future(changed.wait()),
                asyncio.ensure_future(self.closing.wait()),
            }
            done, pending = await asyncio.wait(
                waiters, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            if not done:
                yield ": keepalive\n\n"


def _templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(builtin_templates_dir()),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def create_preview_app(
    project: Project,
    issue_path: Path,
    *,
    subscriber: dict[str, Any] | None = None,
    watch_files: bool = True,
    allowed_hosts: Sequence[str] | None = None,
) -> Starlette:
    """The preview of `issue_path` for `subscriber` (default: the sample subscriber).

    `watch_files=False` renders once and never watches (in-process tests call
    `app.state.hub.rerender()` themselves). `allowed_hosts` limits the Host header.
    """
    issue_path = issue_path.resolve()
    state = PreviewState(project.root, issue_path, subscriber)
    hub = PreviewHub(state)
    page = _templates().get_template("preview.html")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.rerender()
        await hub.settled()  # the first page shows the check findings too
        watcher = None
        if watch_files:
            files = WatchedFiles(project.root, issue_path)

            async def changed(changes: set[tuple[Change, str]]) -> None:
                await hub.rerender()

            watcher = asyncio.create_task(watch(files, changed, hub.closing))
        try:
            yield
        finally:
            hub.closing.set()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher

    async def index(request: Request) -> HTMLResponse:
        snapshot = state.snapshot
        html = page.render(
            snapshot=snapshot,
            state_json={**snapshot.to_json(), "boot": hub.boot},
            issue_name=issue_path.name,
            project_name=project.config.name,
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def email_html(request: Request) -> HTMLResponse:
        snapshot = state.snapshot
        if not snapshot.html:
            problem = snapshot.error
            message = problem.where + ": " + problem.reason if problem else "not rendered yet"
            return HTMLResponse(f"<pre>{_escape(message)}</pre>", status_code=503)
        return HTMLResponse(snapshot.html, headers={"Cache-Control": "no-store"})

    async def email_text(request: Request) -> PlainTextResponse:
        snapshot = state.snapshot
        if not snapshot.html:
            problem = snapshot.error
            message = problem.where + ": " + problem.reason if problem else "not rendered yet"
            return PlainTextResponse(message, status_code=503)
        return PlainTextResponse(snapshot.text, headers={"Cache-Control": "no-store"})

    async def state_json(request: Request) -> JSONResponse:
        return JSONResponse({**state.snapshot.to_json(), "boot": hub.boot})

    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(
            hub.stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(
        routes=[
            Route("/", index),
            Route("/email.html", email_html),
            Route("/email.txt", email_text),
            Route("/state.json", state_json),
            Route("/events", events),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.hub = hub
    return app


def _escape(text: str) -> str:
    # deferred: markupsafe costs 8 ms at start-up
    from markupsafe import escape

    return str(escape(text))
