"""Debian's chromium driven by Playwright: the one way this project starts a browser.

Playwright's own browser download cannot work on our machines and is never attempted:
we always pass `executable_path` (Debian's `/usr/bin/chromium`, or `NEWSLETTER_CHROMIUM`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

CHROMIUM_ENV = "NEWSLETTER_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class BrowserError(NewsletterError):
    """No usable Chromium (or no Playwright) to take screenshots with."""


def chromium_path() -> str:
    """`NEWSLETTER_CHROMIUM`, else Debian's chromium; a one-line fix if neither exists."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        found = shutil.which(given) or (given if Path(given).is_file() else None)
        if not found:
            raise BrowserError(
                f"{CHROMIUM_ENV}={given}: no such program; point it at a Chromium or Chrome binary"
            )
        return found
    for candidate in (DEFAULT_CHROMIUM, "chromium", "chromium-browser"):
        found = shutil.which(candidate)
        if found:
            return found
    raise BrowserError(
        f"chromium not found at {DEFAULT_CHROMIUM}; install it with `sudo apt-get install chromium` "
        f"(Debian/Ubuntu) or set {CHROMIUM_ENV} to a Chromium or Chrome binary"
    )


def launch_chromium(playwright: Playwright) -> Browser:
    """Headless chromium from the system, never Playwright's download."""
    try:
        return playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
    except NewsletterError:
        raise
    except Exception as exc:  # Playwright raises its own Error with a long log
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BrowserError(
            f"{chromium_path()}: could not start headless chromium ({first}); "
            f"set {CHROMIUM_ENV} to a working Chromium or Chrome binary"
        ) from None


def sync_playwright():  # type: ignore[no-untyped-def]
    """`playwright.sync_api.sync_playwright`, with a one-line fix if Playwright is missing."""
    try:
        # deferred: playwright.sync_api costs 77 ms at start-up
        from playwright.sync_api import sync_playwright as start
    except ImportError:
        raise BrowserError(
            "Playwright is not installed; in your clone of newsletter run "
            "`.venv/bin/pip install -e '.[browser]'` (it uses your system's chromium, "
            "no browser download needed)"
        ) from None
    return start()
