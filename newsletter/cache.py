"""The user's cache folder: `$NEWSLETTER_CACHE_DIR`, else `$XDG_CACHE_HOME/newsletter`, else
`~/.cache/newsletter`.

What is cached is trusted later (inlined CSS goes into every reader's email; the archive's
build state names every issue, drafts too), so each subfolder is created 0700. One that
another user owns is not used: a warning says so once, and the work is done without the
cache. One of ours that others may write to (made under a umask of 002 by an older version)
is made 0700 again; whatever another user put in it meanwhile is theirs, and `trusted_file`
refuses every entry that is not this user's own. A cache that cannot be created is simply
not used.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import tempfile
from pathlib import Path

#: Group or others may write: anyone on the machine could plant an entry.
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
_warned: set[str] = set()


def cache_base() -> Path | None:
    """The cache folder (not created here); None without a home directory."""
    configured = os.environ.get("NEWSLETTER_CACHE_DIR")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    try:
        return Path(xdg) / "newsletter" if xdg else Path.home() / ".cache" / "newsletter"
    except RuntimeError:  # no home directory (a container with an arbitrary uid)
        return None


def private_folder(name: str) -> Path | None:
    """`cache_base()/name`, created 0700; None when it cannot be created or is not private
    (another user owns it or may write to it)."""
    base = cache_base()
    if base is None:
        return None
    folder = base / name
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.stat()
        if stat.S_ISDIR(info.st_mode) and _mine(info) and info.st_mode & _WRITABLE_BY_OTHERS:
            folder.chmod(0o700)
            info = folder.stat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or not _private(info):
        _warn_once(
            folder,
            f"Warning: {folder}: not used as a cache, since another user owns it or may "
            f"write to it; remove it, or run `chmod 700 {folder}` as its owner.",
        )
        return None
    return folder


def read_entry(path: Path) -> str:
    """An entry's text; "" when missing, unreadable, not this user's own regular file, or not
    whole: each entry starts with a checksum of the rest, so a file cut short (a crash, a full
    disk) or changed by hand is a miss, never content."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return ""
    try:
        with os.fdopen(fd, "rb") as file:
            if not trusted_file(os.fstat(file.fileno())):
                return ""
            stored = file.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    checksum, _, text = stored.partition("\n")
    return text if text and checksum == _checksum(text) else ""


def write_entry(folder: Path, path: Path, text: str, *, durable: bool = True) -> None:
    """Store `text` at `path` (in `folder`) with its checksum. Another process may store the
    same entry at once: each writes its own temporary file and moves it into place, so a
    reader never sees half a file. A cache that cannot be written is not used.
    `durable=False` skips the fsync (4 ms on the benchmark machine, more on a busy disk), for
    entries written many to a command: one lost in a crash is a miss (its checksum)."""
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=folder, suffix=".tmp", delete=False
        ) as file:
            file.write(f"{_checksum(text)}\n{text}")
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(file.name, path)
    except OSError:
        pass


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def trusted_file(info: os.stat_result) -> bool:
    """Whether a cache entry (its `os.fstat`) is a regular file only this user can change."""
    return stat.S_ISREG(info.st_mode) and _private(info)


def _mine(info: os.stat_result) -> bool:
    return not hasattr(os, "geteuid") or info.st_uid == os.geteuid()


def _private(info: os.stat_result) -> bool:
    return _mine(info) and not info.st_mode & _WRITABLE_BY_OTHERS


def _warn_once(folder: Path, message: str) -> None:
    if str(folder) not in _warned:
        _warned.add(str(folder))
        print(message, file=sys.stderr)
