"""`newsletter serve` and the ASGI entry point as real processes."""

from __future__ import annotations

import os
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


def test_serve_help_is_documented(cli):
    for command in (["serve"], ["replies"], ["replies", "show"], ["stats"], ["sync"]):
        result = cli(None, *command, "--help")
        assert result.exit_code == 0 and "Example:" in result.output
