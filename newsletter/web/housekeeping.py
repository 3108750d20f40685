"""Work `newsletter serve` does on its own, in the background: the daily privacy purge
(webhook events and automatic replies older than `[privacy] keep_events_days`).

Runs in the app's lifespan, so it happens under uvicorn and gunicorn alike (with several
workers each runs it; the purge is idempotent). A failure is logged and retried next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.concurrency import run_in_threadpool

from newsletter.web.context import Context

log = logging.getLogger("newsletter.web")

DAY = 86400.0


def purge_job(ctx: Context) -> None:
    from newsletter.privacy import purge

    days = ctx.config.section("privacy")["keep_events_days"]
    result = purge(ctx.engine, days)
    log.info(
        "privacy purge: %d webhook events and %d automatic replies older than %d days deleted",
        result.events,
        result.automatic_replies,
        days,
    )


async def _every(interval: float, job: Callable[[], None], name: str) -> None:
    while True:
        try:
            await run_in_threadpool(job)
        except Exception as exc:  # keep serving; try again at the next interval
            log.error("%s failed: %s", name, type(exc).__name__)
        await asyncio.sleep(interval)


def lifespan(ctx: Context, interval: float = DAY) -> Callable[[Any], Any]:
    """A Starlette lifespan that runs the purge at startup and then every `interval` s."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        task = asyncio.create_task(_every(interval, lambda: purge_job(ctx), "privacy purge"))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return run
