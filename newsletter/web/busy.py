"""A database that is busy (SQLite locked by a long write, PostgreSQL unreachable) answers
503 with Retry-After, never 500: browsers and SendGrid retry, nothing is silently lost."""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

log = logging.getLogger("newsletter.web")

#: Seconds a client is asked to wait before trying again.
RETRY_AFTER = 10


def is_transient(exc: OperationalError) -> bool:
    """Will trying again help? SQLite's OperationalError also means a missing table."""
    orig = exc.orig
    if type(orig).__module__.startswith("sqlite3"):
        message = str(orig).lower()
        return "locked" in message or "busy" in message
    return True  # psycopg: connection lost or refused, lock or statement timeouts


async def database_busy(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for OperationalError raised by any route."""
    assert isinstance(exc, OperationalError)
    if not is_transient(exc):
        raise exc  # a real fault: the request log middleware answers a bare 500
    # The message may hold SQL parameters (addresses), so only the driver's error type.
    orig = exc.orig
    log.error("database busy or unreachable: %s", type(orig or exc).__name__)
    return PlainTextResponse(
        "The database is busy; please try again in a few seconds.\n",
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER)},
    )


EXCEPTION_HANDLERS = {OperationalError: database_busy}
