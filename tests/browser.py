"""Headless chromium for the browser tests: Debian's binary through Playwright.

Missing chromium skips the browser tests with the reason, unless NEWSLETTER_REQUIRE_BROWSER=1
(CI sets it), where it fails them: CI must never pass by skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from newsletter.preview.browser import BrowserError, chromium_path, launch_chromium, sync_playwright


def _unavailable(reason: str) -> None:
    if os.environ.get("NEWSLETTER_REQUIRE_BROWSER") == "1":
        pytest.fail(f"NEWSLETTER_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def require_chromium() -> None:
    """Skip (or on CI fail) the calling test when chromium or Playwright is missing."""
    try:
        chromium_path()
        sync_playwright()
    except BrowserError as exc:
        _unavailable(str(exc))


@contextmanager
def chromium() -> Iterator[Any]:
    """One headless chromium (a Playwright Browser); reuse it for a whole module."""
    try:
        chromium_path()
        manager = sync_playwright()
    except BrowserError as exc:
        _unavailable(str(exc))
    playwright = manager.start()
    try:
        try:
            browser = launch_chromium(playwright)
        except BrowserError as exc:
            _unavailable(str(exc))
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


def png_size(path: os.PathLike[str] | str) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
