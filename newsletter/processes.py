"""Child processes that must not outlive their parent: forked workers (the send's batch
preparers, the import's reader) end when the process that forked them dies, even by
kill -9, instead of waiting on a pipe for good."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys

#: prctl(2) option: the signal this process gets when its parent thread exits.
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux; elsewhere the closed
    pipe ends a blocked send instead)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _libc() -> ctypes.CDLL:
    """The C library's functions: those the interpreter itself is linked with (`CDLL(None)`).
    `find_library("c")` ran `ldconfig -p` in a subprocess, in every forked send worker while
    its parent waited: a fork and an exec on the way to a send's first request."""
    libc = ctypes.CDLL(None, use_errno=True)
    if hasattr(libc, "prctl"):
        return libc
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
