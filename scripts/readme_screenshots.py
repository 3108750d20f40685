"""Write the README's pictures of the example issue: docs/example-desktop.png and
docs/example-phone.png, taken in headless chromium like `newsletter screenshot`.

    python scripts/readme_screenshots.py

Both are clipped to the top of the email to keep the repository small.
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
    for path in written:
        print(f"{path.relative_to(REPO)} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
