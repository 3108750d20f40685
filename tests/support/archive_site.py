"""A project with issues sent through the real CLI to the fake SendGrid (so they are
published), and `newsletter serve` on it as a real process on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from newsletter.cli import main
from newsletter.project import Project
from newsletter.store.engine import dispose_all, open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import TEST_SECRET
from tests.sendgrid_server import FakeSendGrid

KEY = "SG.support-archive-key"


def run_cli(root: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--project", str(root), *args], catch_exceptions=False)


def publish(root: Path, config: str, issues: dict[str, str]) -> Path:
    """Write `config` and `issues` (file name: text) into `root` and send each, in order,
    to one reader through the fake SendGrid."""
    (root / "issues").mkdir(parents=True)
    (root / "newsletter.toml").write_text(config, encoding="utf-8")
    for name, text in issues.items():
        (root / "issues" / name).write_text(text, encoding="utf-8")
    with (
        FakeSendGrid(api_key=KEY, verified_senders=["jens@example.com"]) as sg,
        pytest.MonkeyPatch.context() as mp,
    ):
        for name in ("NEWSLETTER_DATABASE_URL", "NEWSLETTER_PROJECT"):
            mp.delenv(name, raising=False)
        mp.setenv("SENDGRID_API_KEY", KEY)
        mp.setenv("SENDGRID_API_HOST", sg.url)
        mp.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
        mp.setenv("NEWSLETTER_SEND_BACKOFF", "0.01")
        engine = open_engine(Project.load(root).database_url)
        add_subscriber(engine, "leserin@example.org", first_name="Jörg")
        for name in issues:
            result = run_cli(root, "send", name, "--yes")
            assert result.exit_code == 0, result.output
        dispose_all()
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(root: Path) -> Iterator[str]:
    """`newsletter serve` on `root` as a real process; yields its base URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENDGRID_", "NEWSLETTER_"))}
    env["NEWSLETTER_SECRET_KEY"] = TEST_SECRET
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--project", str(root), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(process.stderr.read() if process.stderr else "serve exited")
            try:
                httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise AssertionError("serve did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.communicate(timeout=20)
