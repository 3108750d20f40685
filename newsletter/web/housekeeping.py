"""Work `newsletter serve` does on its own, in the background: the daily privacy purge
(webhook events and automatic replies older than `[privacy] keep_events_days`), SQLite's
checkpoint every few seconds (the app's commits leave it to this), and, with
`--fetch-replies` or `[serve] fetch_replies`, reading replies from the IMAP mailbox.

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

from newsletter.errors import NewsletterError
from newsletter.privacy import purge
from newsletter.replies.mailbox import fetch_replies
from newsletter.replies.threads import purge_closed
from newsletter.store.engine import checkpoint
from newsletter.web.context import Context

log = logging.getLogger("newsletter.web")

DAY = 86400.0
#: How often the SQLite write-ahead log is checkpointed besides after each webhook post (the
#: app's commits leave that to it: `store.engine.defer_checkpoints`).
CHECKPOINT_EVERY = 5.0


def purge_job(ctx: Context) -> None:
    days = ctx.config.section("privacy")["keep_events_days"]
    result = purge(ctx.engine, days)
    log.info(
        "privacy purge: %d webhook events and %d automatic replies older than %d days deleted",
        result.events,
        result.automatic_replies,
        days,
    )
    keep_replies = ctx.config.section("privacy")["keep_replies_days"]
    if keep_replies is not None:
        closed = purge_closed(ctx.engine, keep_replies)
        log.info(
            "privacy purge: %d closed conversations older than %d days deleted",
            closed,
            keep_replies,
        )


def fetch_replies_job(ctx: Context) -> None:
    report = fetch_replies(ctx.project, ctx.engine)
    if report.stored or report.bounces:
        # Counts only: a reply's words and its sender never go to the log.
        log.info(
            "replies fetch: %d stored (%d automatic), %d bounces, %d left in the mailbox",
            report.stored,
            report.automatic,
            report.bounces,
            report.unmatched,
        )


async def _every(interval: float, job: Callable[[], None], name: str) -> None:
    while True:
        try:
            await run_in_threadpool(job)
        except NewsletterError as exc:  # keep serving; try again at the next interval
            log.error("%s failed: %s", name, exc)
        except Exception as exc:
            log.error("%s failed: %s", name, type(exc).__name__)
        await asyncio.sleep(interval)


def lifespan(
    ctx: Context, interval: float = DAY, fetch_replies: float | None = None
) -> Callable[[Any], Any]:
    """A Starlette lifespan that runs the purge at startup and then every `interval` s, and
    `replies fetch` every `fetch_replies` s when that is given."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(_every(interval, lambda: purge_job(ctx), "privacy purge")),
            asyncio.create_task(
                _every(CHECKPOINT_EVERY, lambda: checkpoint(ctx.engine), "checkpoint")
            ),
        ]
        if fetch_replies:
            job = _every(fetch_replies, lambda: fetch_replies_job(ctx), "replies fetch")
            tasks.append(asyncio.create_task(job))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return run
