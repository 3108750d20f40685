"""`newsletter preview` as a user runs it: a real process, a taken port, Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.listen import bind, is_loopback, url_of
from tests.conftest import EXAMPLE_ISSUE


def test_help_documents_preview_and_screenshot(cli) -> None:
    for command in ("preview", "screenshot"):
        result = cli(None, command, "--help")
        assert result.exit_code == 0
        assert "Example:" in result.output
    assert "--no-open" in cli(None, "preview", "--help").output


def test_bind_falls_back_to_a_free_port() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        sock, moved = bind("127.0.0.1", port)
        try:
            assert moved
            assert sock.getsockname()[1] != port
            assert url_of(sock) == f"http://127.0.0.1:{sock.getsockname()[1]}/"
        finally:
            sock.close()
    finally:
        taken.close()


def test_loopback_names() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")


@pytest.mark.slow
def test_preview_serves_on_a_free_port_and_stops_cleanly_on_ctrl_c(project: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter",
            "--project",
            str(project),
            "preview",
            EXAMPLE_ISSUE.name,
            "--no-open",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        assert first.startswith(f"Previewing {EXAMPLE_ISSUE.name} at http://127.0.0.1:")
        url = first.split(" at ", 1)[1].strip()
        assert f":{port}/" not in url
        with urllib.request.urlopen(url, timeout=10) as response:
            assert "Meta, KI und das Ende der Creator?" in response.read().decode("utf-8")
        # An open event stream must not hold up Ctrl-C.
        events = urllib.request.urlopen(url + "events", timeout=10)
        assert events.readline() == b"retry: 1000\n"
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
        events.close()
    finally:
        taken.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err  # Ctrl-C: one line and 130, as every command
    assert time.monotonic() - started < 5
    assert err.rstrip().endswith("Preview stopped.")
    assert f"Port {port} is taken" in err
    assert "Traceback" not in err
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


@pytest.mark.slow  # a real preview process
def test_preview_of_a_broken_issue_named_by_its_slug_shows_the_error(
    make_project: Callable[..., Path],
) -> None:
    root = make_project(issues={"2026-12-08-datum.md": "---\ntitle: D\ndate: 2026-13-01\n---\n"})
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--project", str(root), "preview", "datum"]
        + ["--no-open", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Before: "Error: datum: no such issue; …" and exit 1, no preview to fix it in.
        first = process.stdout.readline()
        assert first.startswith("Previewing 2026-12-08-datum.md at http://127.0.0.1:"), (
            first + process.stderr.read()
        )
        url = first.split(" at ", 1)[1].strip()
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read().decode("utf-8")
        assert "issues/2026-12-08-datum.md, line 3" in page
        assert "bad date &#39;2026-13-01&#39;" in page
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
