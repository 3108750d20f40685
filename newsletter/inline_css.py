"""Inlining the email's CSS with premailer, remembered on disk by the exact input.

premailer is most of a render (on the benchmark machine ~0.2 s, plus ~0.17 s to import it and
cssutils), and its output depends only on its input, its options and the installed premailer
and cssutils. So a `sequences run` from cron, a `send`, a `build` or a preview save of an
unchanged issue gets the inlined HTML back from the cache. The key hashes the whole input
with the options and the libraries' installed files, so an edit (or an upgrade) is never
served stale.

An email not in the cache (a new issue, an edit) is inlined by replaying premailer from a
table of what premailer made of the same CSS before (`newsletter.inline_table`: the built-in
templates' table ships with the package, others are learned in `inline-table/` the first
time premailer runs on them); premailer itself runs only for CSS the table does not know.

Where: `$NEWSLETTER_CACHE_DIR`, else `$XDG_CACHE_HOME/newsletter`, else `~/.cache/newsletter`,
in `inlined/` (created 0700; see `newsletter.cache`); at most `MAX_ENTRIES` files, the least
recently used removed first. Each file starts with a checksum of the rest, so a damaged one is
a miss; an entry another user owns or may write to is a miss too, since the checksum proves
no origin. A cache that cannot be read or written is simply not used; deleting the folder is
always safe.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from newsletter.cache import private_folder, read_entry, write_entry
from newsletter.inline_table import (
    OPTIONS,
    Miss,
    Table,
    learn,
    parse_table,
    replay,
    shipped_table,
    version_stamp,
)
from newsletter.installed import file_stamp

MAX_ENTRIES = 400
#: The learned table's bounds (<style> texts, style attributes); beyond them it starts afresh.
MAX_BLOCKS = 64
MAX_STYLES = 4000


def with_inlined_css(html: str) -> str:
    """`html` with its <style> rules inlined (premailer), from the cache when seen before."""
    folder = cache_folder()
    if folder is None:
        return _inline(html)[0]
    path = folder / f"{_key(html)}.html"
    inlined = read_entry(path)  # a damaged entry is a miss, never an email
    if inlined:
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: pruning keeps it
        return inlined
    inlined, replayed = _inline(html)
    # A replayed email costs milliseconds to make again: its entry is not worth an fsync.
    _store(folder, path, inlined, durable=not replayed)
    return inlined


def _inline(html: str) -> tuple[str, bool]:
    """premailer's result, and whether it was replayed from what premailer made of the same
    CSS before (`newsletter.inline_table`); else premailer ran, and taught the table."""
    learned = _learned_table()
    try:
        return replay(html, [shipped_table(), learned]), True
    except Miss:
        pass
    premailer = _premailer(html)
    inlined = premailer.transform()
    _remember(learn(html, premailer, inlined), learned)
    return inlined, False


def _learned_path() -> Path | None:
    stamp = version_stamp()
    folder = private_folder("inline-table")
    if stamp is None or folder is None:
        return None
    return folder / f"{hashlib.sha256(stamp.encode()).hexdigest()[:32]}.json"


def _learned_table() -> Table:
    """What premailer made of this user's templates' CSS (the cache's `inline-table/`)."""
    path = _learned_path()
    stamp = version_stamp()
    text = read_entry(path) if path else ""
    return (parse_table(text, stamp) if text and stamp else None) or Table()


def _remember(new: Table, learned: Table) -> None:
    path = _learned_path()
    stamp = version_stamp()
    if path is None or stamp is None:
        return
    if len(learned.blocks) + len(new.blocks) > MAX_BLOCKS or (
        len(learned.styles) + len(learned.floats) + len(new.styles) + len(new.floats) > MAX_STYLES
    ):
        learned = Table()  # bounded: start again from this email's CSS
    learned.update(new)
    write_entry(path.parent, path, learned.as_json(stamp))


def cache_folder() -> Path | None:
    return private_folder("inlined")


def _key(html: str) -> str:
    digest = hashlib.sha256(_library_stamp().encode())
    digest.update(html.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


@functools.cache
def _library_stamp() -> str:
    """The options and the installed premailer, cssutils and lxml (path, size, mtime of their
    main files: a reinstall or upgrade changes them), found without importing them."""
    parts = [OPTIONS]
    for package, module in (("premailer", "premailer"), ("cssutils", None), ("lxml", "etree")):
        stamp = file_stamp(package, module)
        if stamp:
            parts.append(stamp)
    return "\n".join(parts)


def _store(folder: Path, path: Path, inlined: str, *, durable: bool = True) -> None:
    write_entry(folder, path, inlined, durable=durable)
    try:
        names = os.listdir(folder)
        # Only a full cache needs each entry's age (a stat apiece: 2 ms at 400 entries).
        if sum(name.endswith(".html") for name in names) > MAX_ENTRIES:
            entries = sorted(folder.glob("*.html"), key=lambda p: p.stat().st_mtime)
            for old in entries[: max(len(entries) - MAX_ENTRIES, 0)]:
                old.unlink(missing_ok=True)
        # Left by a process killed between writing and moving: gone after an hour.
        for left in (folder / name for name in names if name.endswith(".tmp")):
            if time.time() - left.stat().st_mtime > 3600:
                left.unlink(missing_ok=True)
    except OSError:
        pass


def _premailer(html: str) -> Any:
    # deferred: premailer costs 108 ms at start-up
    from premailer import Premailer

    return Premailer(
        html,
        allow_network=False,
        keep_style_tags=False,
        disable_leftover_css=False,
        remove_classes=False,
        strip_important=False,
        cssutils_logging_level=logging.CRITICAL,
        disable_validation=True,
        # `height="auto"` is not a valid attribute; the CSS already says it.
        disable_basic_attributes=["height", "width"],
    )
