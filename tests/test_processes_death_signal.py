"""`die_with_parent` (newsletter/processes.py): a forked send worker or import reader asks the
kernel for SIGKILL when its parent dies, without starting a process of its own to find the
C library (a send's parent waits for its worker to start before its first request)."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys

import pytest

from newsletter.processes import die_with_parent

PR_GET_PDEATHSIG = 2

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(2) is Linux's")


def _child(parent: int, answers: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    started: list[object] = []
    real_popen = subprocess.Popen

    def popen(*args: object, **kwargs: object) -> object:
        started.append(args)
        return real_popen(*args, **kwargs)  # type: ignore[call-overload]

    subprocess.Popen = popen  # type: ignore[assignment,misc]
    die_with_parent(parent)
    subprocess.Popen = real_popen  # type: ignore[misc]
    signal_number = ctypes.c_int(0)
    ctypes.CDLL(None).prctl(PR_GET_PDEATHSIG, ctypes.byref(signal_number), 0, 0, 0)
    answers.put((signal_number.value, started))


def test_a_forked_child_gets_sigkill_when_its_parent_dies_and_starts_no_process() -> None:
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_child, args=(os.getpid(), answers))
    child.start()
    death_signal, started = answers.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert death_signal == signal.SIGKILL
    assert started == []  # (find_library("c") ran `ldconfig -p`)
