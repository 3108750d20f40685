"""Real `newsletter serve` processes for tests that need more than one worker: each one is
its own OS process with its own memory, sharing only the project's database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read() if process.stderr else "server exited")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


def start_serve(project: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """`python -m newsletter --project PROJECT serve --port N`, answering /healthz: (the
    process, its base URL). Its stderr is a pipe the caller may read."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter",
            "--project",
            str(project),
            "serve",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base + "/healthz", process)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    return process, base


@contextmanager
def serve_process(project: Path, env: dict[str, str]) -> Iterator[str]:
    """`start_serve`, stopped afterwards; yield its base URL."""
    process, base = start_serve(project, env)
    try:
        yield base
    finally:
        process.terminate()
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@contextmanager
def serve_processes(project: Path, count: int, **extra_env: str) -> Iterator[list[str]]:
    """`count` serve processes on one project (the variables of this test process, plus
    `extra_env`); yield their base URLs."""
    env = {**os.environ, **extra_env}
    with ExitStack() as stack:
        yield [stack.enter_context(serve_process(project, env)) for _ in range(count)]


def start_up_messages(project: Path, database: Path, secret: str, repo: Path) -> str:
    """What `newsletter serve` prints on stderr from its start until it is stopped, once
    it answers (a real process, the test's secret key and a database of its own)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")},
        "NEWSLETTER_SECRET_KEY": secret,
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{database}",
        "PYTHONPATH": str(repo),
    }
    process, _base = start_serve(project, env)
    process.terminate()
    try:
        _, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return str(stderr)
