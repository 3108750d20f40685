"""Live preview in the browser and screenshots, through the real rendering pipeline.

- `create_preview_app(project, issue_path, ...)`: the Starlette app (`app.py`)
- `start_in_thread`, `PreviewServer`: running it with uvicorn (`server.py`), on a socket
  bound first (`newsletter.listen`)
- `screenshot_issue(project, issue_path, out_dir)`: PNGs in headless chromium (`screenshot.py`)
- `launch_chromium(playwright)`: Debian's chromium through Playwright (`browser.py`)
"""

from __future__ import annotations

from newsletter.preview.app import create_preview_app

__all__ = ["create_preview_app"]
