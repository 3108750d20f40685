"""`newsletter serve` and the ASGI entry point as real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from newsletter import tokens
from tests.conftest import TEST_SECRET
from tests.support.web import (
    free_port,
    wait_for_server,
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENDGRID_", "NEWSLETTER_"))}
    env.update(NEWSLETTER_SECRET_KEY=TEST_SECRET, NEWSLETTER_INBOUND_SECRET="in-secret-77", **extra)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["cli", "asgi"])
def test_server_process_logs_routes_without_tokens(project: Path, entry: str):
    port = free_port()
    if entry == "cli":
        command = [
            sys.executable,
            "-m",
            "newsletter",
            "--project",
            str(project),
            "serve",
            "--port",
            str(port),
        ]
        env = _env()
    else:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--no-access-log",
            "--port",
            str(port),
            "newsletter.web.asgi:app",
        ]
        env = _env(NEWSLETTER_PROJECT=str(project))
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    token = tokens.make_token(tokens.UNSUBSCRIBE, 12345, None, key=TEST_SECRET)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_server(base + "/healthz", process)
        assert httpx.get(f"{base}/unsubscribe/{token}").status_code == 410  # nobody with id 12345
        assert (
            httpx.post(f"{base}/webhooks/sendgrid/inbound/in-secret-77", content=b"x").status_code
            == 400
        )
        assert httpx.post(f"{base}/webhooks/sendgrid/events", content=b"[]").status_code == 403
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    if entry == "cli":
        assert "GET /unsubscribe/{token} 410" in stderr
        assert "POST /webhooks/sendgrid/inbound/{secret} 400" in stderr
    for secret in (token, TEST_SECRET, "in-secret-77"):
        assert secret not in stderr


def test_serve_refuses_without_secret_key(project: Path, cli, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY")
    result = cli(project, "serve")
    assert result.exit_code == 1
    assert "NEWSLETTER_SECRET_KEY is not set" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow  # starts a real server process
def test_serve_warns_when_not_on_loopback(project: Path):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter",
            "--project",
            str(project),
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_server(f"http://127.0.0.1:{port}/healthz", process)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert "Warning: binding 0.0.0.0" in stderr


def _serve(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`newsletter serve ARGS` as a user runs it, expected to stop by itself."""
    command = [sys.executable, "-m", "newsletter", "--project", str(project), "serve", *args]
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=60)


@pytest.mark.slow  # a real process
def test_serve_on_a_taken_port_is_one_line_naming_it(project: Path):
    with socket.socket() as other_program:
        other_program.bind(("127.0.0.1", 0))
        other_program.listen()
        port = other_program.getsockname()[1]
        result = _serve(project, "--port", str(port))
    # Before: "Serving ... on http://127.0.0.1:N", then uvicorn's [Errno 98] and exit 3.
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        f"Error: cannot listen on 127.0.0.1:{port}: another program listens there; "
        "stop it, or pass another --port\n"
    )
    assert result.stdout == ""


@pytest.mark.slow  # a real process
def test_serve_on_an_unknown_host_is_one_line_naming_it(project: Path):
    result = _serve(project, "--host", "nonsense.invalid", "--port", str(free_port()))
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()  # (no "reachable from other machines" warning either)
    assert line.startswith("Error: cannot listen on nonsense.invalid:")
    assert line.endswith("; pass another --host, e.g. 127.0.0.1")
    assert "nonsense.invalid is not an address of this machine" in line


@pytest.mark.slow  # starts a real server process
def test_serve_on_port_0_prints_the_port_it_got(project: Path):
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--project", str(project), "serve", "--port", "0"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stderr.readline()
        assert line.startswith("Serving Jens' Briefing on http://127.0.0.1:"), line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        assert not url.endswith(":0/")  # before: http://127.0.0.1:0
        # The printed URL answers (the socket is bound before the line is printed).
        assert httpx.get(url + "healthz", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.communicate(timeout=20)


def test_serve_help_is_documented(cli):
    for command in (["serve"], ["replies"], ["replies", "show"], ["stats"], ["sync"]):
        result = cli(None, *command, "--help")
        assert result.exit_code == 0 and "Example:" in result.output
