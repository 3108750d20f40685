"""Reading the user's files safely: only regular files, and only up to a size.

A path given on the command line or found in a folder may be a directory, a named pipe
(opening one waits for a writer forever), a device such as /dev/zero (endless), or a symlink
loop. `regular_file` looks with `os.stat` first and never opens anything but a regular
file; `read_regular` also refuses a file over its size limit before reading it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from newsletter.errors import NewsletterError


class NotARegularFile(NewsletterError):
    """The path is missing, not a regular file, too big or unreadable; `reason` says which
    (without the path, for callers that put it into their own located error)."""

    def __init__(self, path: Path | str, reason: str, *, missing: bool = False):
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason
        self.missing = missing


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def regular_file(path: Path | str, what: str = "file") -> os.stat_result:
    """`os.stat(path)` (symlinks followed) when it is a regular file; else NotARegularFile
    with a reason that says what it is and what to give instead."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise NotARegularFile(path, "no such file", missing=True) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            reason = "is a symlink loop; point the link at a real file or delete it"
        elif exc.errno == errno.ENOTDIR:
            raise NotARegularFile(path, "no such file", missing=True) from None
        elif exc.errno == errno.ENAMETOOLONG:
            reason = "the name is too long; give a shorter path"
        else:
            reason = f"cannot be read ({exc.strerror}); check its permissions"
        raise NotARegularFile(path, reason) from None
    except ValueError:  # a NUL byte in the name
        raise NotARegularFile(path, "the name holds a NUL character; give the real name") from None
    if not stat.S_ISREG(info.st_mode):
        kind = _kind(info.st_mode)
        raise NotARegularFile(
            path, f"is {kind}, not a regular file; give the {what} itself (only files are read)"
        )
    return info


def read_regular(path: Path | str, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (NotARegularFile otherwise).
    Opened non-blocking and checked again once open, in case it was swapped for a pipe."""
    info = regular_file(path, what)
    if info.st_size > limit:
        raise NotARegularFile(
            path, f"is {_size(info.st_size)}; {what}s of at most {_size(limit)} are read"
        )
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise NotARegularFile(
            path, f"cannot be read ({exc.strerror}); check its permissions"
        ) from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(path, "changed into something else while it was opened")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise NotARegularFile(path, f"is over {_size(limit)}; {what}s of at most that are read")
    return data


def _size(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"
