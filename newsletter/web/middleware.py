"""ASGI middleware: a streaming body-size limit and request logging without personal data."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("newsletter.web")


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Answer 413 once a body passes its limit, counted while it streams in (a missing or
    lying Content-Length does not help), so an attacker cannot make us buffer gigabytes."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        await _too_large(send)
                        return
                except ValueError:
                    pass
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(send)


async def _too_large(send: Send) -> None:
    body = b"Request body too large\n"
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BasePathMiddleware:
    """Answer under base_url's path too. A reverse proxy at /newsletter that passes the path
    on as it came (nginx `proxy_pass http://127.0.0.1:8000;`, Caddy `handle`) asks for
    /newsletter/subscribe; the app sees /subscribe, as behind a proxy that strips the prefix.
    `base_path()` is read per request (newsletter.toml may be edited while serve runs)."""

    def __init__(self, app: ASGIApp, base_path: Callable[[], str]) -> None:
        self.app = app
        self.base_path = base_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            prefix = self.base_path()
            path = scope["path"]
            if prefix and (path == prefix or path.startswith(f"{prefix}/")):
                root_path = scope.get("root_path", "") + prefix
                scope = {**scope, "path": path[len(prefix) :] or "/", "root_path": root_path}
        await self.app(scope, receive, send)


class RequestLogMiddleware:
    """One line per request: method, route template (never the token or secret in the path),
    status and duration. Uvicorn's own access log is switched off because it prints paths."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    def _template(self, scope: Scope) -> str:
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return str(getattr(route, "path", "?"))
        return "<unmatched>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception as exc:
            # Exception messages may hold personal data (SQL parameters, addresses), so the
            # log gets the type and where it happened, not the message; the client a bare 500.
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            log.error(
                "unhandled %s at %s:%s", type(exc).__name__, Path(frame.filename).name, frame.lineno
            )
            if not status.get("started"):
                status["code"] = 500
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                    }
                )
                await send({"type": "http.response.body", "body": b"Internal Server Error\n"})
        finally:
            log.info(
                "%s %s %s %.1fms",
                scope["method"],
                self._template(scope),
                status["code"],
                (time.perf_counter() - start) * 1000,
            )
