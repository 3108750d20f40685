"""Whole-process figures are timed as a user runs the tool: from modules already compiled to
bytecode, as `pip install` leaves them (and as Python caches them on first use).

Where PYTHONDONTWRITEBYTECODE is set (some CI images and sandboxes set it), Python never
caches the checkout's own modules, so every process would compile the whole package from
source again: 0.3-0.5 s per process on the benchmark machine, more than some targets. Each
benchmark therefore compiles the package once before it starts timing (a no-op when the
cache is fresh), and says so.

A user's machine also keeps the inlined-CSS cache (newsletter/inline_css.py) between commands;
each benchmark gets its own empty one (NEWSLETTER_CACHE_DIR, inherited by its child processes),
so its first render of an issue runs premailer and later ones of the same issue do not.
"""

from __future__ import annotations

import compileall
import os
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "newsletter"


def compile_package(package: Path = PACKAGE) -> None:
    compileall.compile_dir(package, quiet=1)
    os.environ.setdefault("NEWSLETTER_CACHE_DIR", tempfile.mkdtemp(prefix="newsletter-bench-"))
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print(
            "note: PYTHONDONTWRITEBYTECODE is set; compiled the package to bytecode once "
            "(as pip install does), so processes start as they would for a user"
        )
