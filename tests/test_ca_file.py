"""`ca_file` (a private server's CA certificate) for SMTP and the IMAP mailbox: a relative
path is taken from the project folder, wherever the command runs, and a missing or wrong
file is one located line before anything connects: in `send`, `replies fetch`, `serve` with
replies fetched, and `doctor`. Before, a relative path was taken from the working folder,
and `replies fetch` ended in the ssl module's traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import CONFIG, EXAMPLE_ISSUE, REPO
from tests.smtp_server import FakeSmtp, free_port
from tests.support.dns_server import ZoneServer
from tests.support.smtp import PASSWORD

ISSUE = EXAMPLE_ISSUE.stem
IMAP = '\n[replies.imap]\nhost = "127.0.0.1"\nport = {port}\nusername = "jens"\nca_file = "{ca}"\n'


def run_cli(root: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`newsletter --project ROOT ARGS` as a user runs it, from `cwd` (the project folder)."""
    return subprocess.run(
        [sys.executable, "-m", "newsletter", "--project", str(root), *args],
        cwd=cwd or root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def mailbox_project(make_project, ca_file: str) -> Path:
    return make_project(config=CONFIG + IMAP.format(port=free_port(), ca=ca_file))


@pytest.mark.parametrize(
    ("ca_file", "contents", "needle"),
    [
        ("/nonexistent/imap-ca.pem", None, "no such file; give the path"),
        ("kaputt.pem", b"kein Zertifikat\n", "is not a PEM certificate"),
    ],
)
def test_replies_fetch_names_a_bad_ca_file_in_one_line(
    make_project, monkeypatch, ca_file: str, contents: bytes | None, needle: str
) -> None:
    root = mailbox_project(make_project, ca_file)
    if contents is not None:
        (root / ca_file).write_bytes(contents)
    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", "postfach-geheim")
    done = run_cli(root, "replies", "fetch")
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-2000:]
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"[replies.imap] ca_file '{ca_file}'" in lines[0] and needle in lines[0]
    assert "postfach-geheim" not in done.stderr


def test_serve_that_fetches_replies_refuses_to_start_with_a_bad_ca_file(
    make_project, monkeypatch
) -> None:
    """`[serve] fetch_replies` in the file, not only `--fetch-replies`: checked at start,
    not logged as a failure every few minutes by a server that looks healthy."""
    root = mailbox_project(make_project, "/nonexistent/imap-ca.pem")
    path = root / "newsletter.toml"
    path.write_text(path.read_text("utf-8") + '\n[serve]\nfetch_replies = "5m"\n', "utf-8")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "serve-secret-key-for-this-test")
    try:
        done = run_cli(root, "serve", "--port", str(free_port()))
    except subprocess.TimeoutExpired:
        pytest.fail("serve started with a CA file that does not exist")
    assert done.returncode == 1, done.stderr
    assert "[replies.imap] ca_file '/nonexistent/imap-ca.pem': no such file" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_relative_ca_file_is_found_from_the_project_folder(
    make_project, monkeypatch, tmp_path: Path
) -> None:
    with FakeSmtp(users={"jens": PASSWORD}, tls=True) as smtp:
        monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", PASSWORD)
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{tmp_path / 'ca.db'}")
        root = make_project(
            config=CONFIG
            + '\n[sending]\ntransport = "smtp"\n'
            + f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "starttls"\n'
            + 'username = "jens"\nca_file = "zertifikate/ca.pem"\n'
        )
        (root / "zertifikate").mkdir()
        assert smtp.ca_file is not None
        # A bundle may say whose certificate it is, in German too (cadata refused that).
        pem = Path(smtp.ca_file).read_text("ascii")
        (root / "zertifikate" / "ca.pem").write_text(f"# Zertifikat der Firma Müller\n{pem}")
        (root / "issues" / EXAMPLE_ISSUE.name).write_text(EXAMPLE_ISSUE.read_text("utf-8"), "utf-8")
        engine = open_engine(Project.load(root).database_url)
        add_subscriber(engine, "jörg@example.de", first_name="Jörg")
        elsewhere = tmp_path / "anderswo"
        elsewhere.mkdir()
        done = run_cli(root, "send", ISSUE, "--yes", cwd=elsewhere)
        assert done.returncode == 0, done.stderr
        assert smtp.recipients() == ["jörg@example.de"]


def test_doctor_fails_the_transport_and_the_mailbox_for_a_bad_ca_file(
    cli, make_project, monkeypatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", "postfach-geheim")
    root = make_project(
        config=CONFIG
        + '\n[sending]\ntransport = "smtp"\n'
        + '\n[smtp]\nhost = "127.0.0.1"\nca_file = "fehlt.pem"\n'
        + IMAP.format(port=free_port(), ca="/nonexistent/imap-ca.pem")
    )
    with ZoneServer("www.example.com. A 192.0.2.1\n") as dns:
        result = cli(root, "doctor", "--nameserver", dns.address, "--offline", "--format", "json")
    checks = {check["name"]: check for check in json.loads(result.output)["checks"]}
    assert checks["transport"]["status"] == "fail"
    assert "[smtp] ca_file 'fehlt.pem': no such file" in checks["transport"]["found"]
    assert checks["mailbox password"]["status"] == "ok"
    assert checks["mailbox"]["status"] == "fail"
    assert "[replies.imap] ca_file '/nonexistent/imap-ca.pem'" in checks["mailbox"]["found"]
    assert "postfach-geheim" not in result.output
