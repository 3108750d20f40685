"""`newsletter screenshot`: the email as desktop and phone PNGs, in headless chromium.

The email HTML goes straight into a page (no server). The widths match the preview's toggles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from newsletter.errors import NewsletterError
from newsletter.issue import load_issue
from newsletter.preview.browser import launch_chromium, sync_playwright
from newsletter.preview.state import problem_from, render_snapshot
from newsletter.project import Project


@dataclass(frozen=True)
class Width:
    name: str
    width: int
    height: int
    mobile: bool


DESKTOP = Width("desktop", 800, 900, mobile=False)
PHONE = Width("phone", 375, 812, mobile=True)
WIDTHS = (DESKTOP, PHONE)


def render_html(
    project: Project, issue_path: Path, subscriber: dict[str, Any] | None
) -> tuple[str, str]:
    """The personalised email HTML and the issue's slug; a located error if it is broken."""
    try:
        snapshot = render_snapshot(project.root, issue_path, subscriber, version=1)
    except NewsletterError:
        raise
    except OSError as exc:
        problem = problem_from(exc, project.root, issue_path)
        raise NewsletterError(f"{problem.where}: {problem.reason}") from None

    return snapshot.html, load_issue(project, issue_path).slug


def screenshot_html(
    html: str,
    out_dir: Path,
    stem: str,
    *,
    widths: tuple[Width, ...] = WIDTHS,
    offline: bool = False,
    dark: bool = False,
    max_height: int | None = None,
) -> list[Path]:
    """Write `<stem>-<width>.png` for each width, full page (or clipped to `max_height`)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NewsletterError(
            f"{out_dir}: cannot write ({exc.strerror}); choose another -o DIR"
        ) from None
    written = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            for width in widths:
                context = browser.new_context(
                    viewport={"width": width.width, "height": width.height},
                    is_mobile=width.mobile,
                    has_touch=width.mobile,
                    color_scheme="dark" if dark else "light",
                )
                try:
                    page = context.new_page()
                    if offline:
                        # Keep rendering self-contained: refuse every request off the page.
                        page.route("**/*", lambda route: route.abort())
                    page.set_content(html, wait_until="load", timeout=20_000)
                    path = out_dir / f"{stem}-{width.name}{'-dark' if dark else ''}.png"
                    if max_height is None:
                        page.screenshot(path=str(path), full_page=True)
                    else:
                        height = min(
                            max_height,
                            int(page.evaluate("document.documentElement.scrollHeight")),
                        )
                        page.set_viewport_size({"width": width.width, "height": height})
                        page.screenshot(path=str(path), full_page=False)
                    written.append(path)
                finally:
                    context.close()
        finally:
            browser.close()
    return written


def screenshot_issue(
    project: Project,
    issue_path: Path,
    out_dir: Path,
    *,
    subscriber: dict[str, Any] | None = None,
    offline: bool = False,
    dark: bool = False,
) -> list[Path]:
    """Render the issue (sample subscriber unless given) and write desktop and phone PNGs."""
    html, slug = render_html(project, issue_path, subscriber)
    return screenshot_html(html, out_dir, slug, offline=offline, dark=dark)
