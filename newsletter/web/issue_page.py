"""The web version of an issue ("view in browser"): rendered for an anonymous reader.

Personal fields fall back to their defaults (`default("zusammen")`), so the page holds
no one's data; its unsubscribe link is a neutral `#`, since the page names nobody.
"""

from __future__ import annotations

import threading
from pathlib import Path

from newsletter.project import Project

# (path, mtime) -> html; rendering an issue costs far more than serving it.
_cache: dict[tuple[str, float], str] = {}
_lock = threading.Lock()


def render_public(project: Project, path: Path) -> str:
    from newsletter.render import render_file

    key = (str(path), path.stat().st_mtime)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    html, _text = render_file(project, path).personalize({}, "#")
    with _lock:
        if len(_cache) > 64:
            _cache.clear()
        _cache[key] = html
    return html
