"""Write the README's pictures of the example issue: docs/example-desktop.png and
docs/example-phone.png, taken in headless chromium like `newsletter screenshot`, and
docs/preview-page.png, the live preview page (`newsletter preview`) at phone width.

    python scripts/readme_screenshots.py

All are clipped to the top of the email to keep the repository small.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.preview.screenshot import render_html, screenshot_html  # noqa: E402
from newsletter.project import Project  # noqa: E402

ISSUE = REPO / "issues" / "2024-07-meta-ki-creator.md"
DESKTOP_HEIGHT = 1000
PHONE_HEIGHT = 1100


def preview_page(project: Project, path: Path) -> Path:
    """The preview page as an author sees it, switched to phone width."""
    from newsletter.preview.app import create_preview_app
    from newsletter.preview.browser import launch_chromium, sync_playwright
    from newsletter.preview.server import start_in_thread

    server = start_in_thread(create_preview_app(project, ISSUE, watch_files=False))
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            page.route(
                "http*://**",
                lambda route: (
                    route.continue_() if route.request.url.startswith(server.url) else route.abort()
                ),
            )
            page.goto(server.url)
            page.click("#width-phone")
            page.frame_locator("#email").locator("body").wait_for()
            page.wait_for_timeout(300)
            page.screenshot(path=str(path))
            browser.close()
    finally:
        server.stop()
    return path


def main() -> None:
    project = Project.load(REPO)
    html, _slug = render_html(project, ISSUE, None)
    docs = REPO / "docs"
    from newsletter.preview.screenshot import DESKTOP, PHONE

    written = screenshot_html(
        html, docs, "example", widths=(DESKTOP,), offline=True, max_height=DESKTOP_HEIGHT
    )
    written += screenshot_html(
        html, docs, "example", widths=(PHONE,), offline=True, max_height=PHONE_HEIGHT
    )
    written.append(preview_page(project, docs / "preview-page.png"))
    for path in written:
        print(f"{path.relative_to(REPO)} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
