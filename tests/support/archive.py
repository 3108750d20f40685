"""Helpers for the archive tests: issues written as files and sent through the real CLI to
the fake SendGrid over HTTP, so "sent" means what a user's send leaves behind. (No tests
in this file.)"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from newsletter.cli import main
from newsletter.project import Project
from newsletter.store.engine import dispose_all, open_engine
from newsletter.store.subscribers import add_subscriber
from tests.conftest import TEST_SECRET
from tests.sendgrid_server import FakeSendGrid
from tests.support.web import free_port, wait_for_server

KEY = "SG.archive-test-key"


@pytest.fixture
def sg(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY, verified_senders=["jens@example.com"]) as server:
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", server.url)
        monkeypatch.setenv("NEWSLETTER_SEND_BACKOFF", "0.01")
        yield server


def issue_text(
    title: str,
    slug: str,
    *,
    date: str = "2024-07-02",
    preheader: str | None = None,
    language: str | None = None,
    body: str = 'Hallo {{ subscriber.first_name | default("zusammen") }},\n\nEin Absatz.\n',
) -> str:
    lines = ["---", f'title: "{title}"', f"slug: {slug}", f"date: {date}"]
    if preheader:
        lines.append(f'preheader: "{preheader}"')
    if language:
        lines.append(f"language: {language}")
    return "\n".join(lines) + "\n---\n\n" + body


def write_issue(project: Path, name: str, text: str) -> Path:
    path = project / "issues" / f"{name}.md"
    path.write_text(text, encoding="utf-8")
    return path


def add_readers(project: Path, n: int = 2) -> None:
    engine = open_engine(Project.load(project).database_url)
    for i in range(n):
        add_subscriber(engine, f"leserin{i}@example.org", first_name=f"Jörg{i}")


def send(cli: Callable[..., Result], project: Path, issue: str, *extra: str) -> Result:
    """`newsletter send ISSUE --yes [extra]` through the real CLI; asserts nothing."""
    return cli(project, "send", issue, "--yes", *extra)


ISSUES = {
    # name: (title, slug, preheader)
    "2024-07-01-erste": (
        "Größer, schöner: „Über“ Öl & Ärger",
        "erste-ausgabe",
        "Die erste Ausgabe",
    ),
    "2024-08-01-zweite": ("Zweite Ausgabe", "zweite-ausgabe", None),
    "2024-09-01-dritte": ("Dritte Ausgabe – mit Gedankenstrich", "dritte-ausgabe", "Die dritte"),
    "2024-10-01-entwurf": ("Geheimer Entwurf", "entwurf", "Noch nicht fertig"),
    "2024-10-02-trocken": ("Nur ein Trockenlauf", "trockenlauf", None),
    "2024-10-03-outbox": ("Nur im Outbox-Ordner", "nur-outbox", None),
}
SENT = ["2024-07-01-erste", "2024-08-01-zweite", "2024-09-01-dritte"]  # in this order


def build_archive_project(root: Path, config: str, runner: Callable[..., Result]) -> Path:
    """A project with three issues sent (oldest first) through the CLI to the fake SendGrid
    (the caller has set SENDGRID_API_HOST/KEY), a draft, a dry run and an outbox-only send."""
    (root / "issues").mkdir(parents=True)
    (root / "newsletter.toml").write_text(config, encoding="utf-8")
    for name, (title, slug, preheader) in ISSUES.items():
        write_issue(root, name, issue_text(title, slug, preheader=preheader))
    add_readers(root, 1)
    for name in SENT:
        result = runner(root, "send", name, "--yes")
        assert result.exit_code == 0, result.output
    assert runner(root, "send", "2024-10-02-trocken", "--yes", "--dry-run").exit_code == 0
    outbox = root / "outbox-copy"
    assert (
        runner(root, "send", "2024-10-03-outbox", "--yes", "--outbox", str(outbox)).exit_code == 0
    )
    return root


def run_cli(root: Path, *args: str):
    return CliRunner().invoke(main, ["--project", str(root), *args], catch_exceptions=False)


@contextmanager
def sent_project(root: Path, config: str) -> Iterator[Path]:
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
        build_archive_project(root, config, run_cli)
        dispose_all()
    yield root


@contextmanager
def serving(root: Path) -> Iterator[str]:
    """`newsletter serve` as a real process; yields its base URL."""
    port = free_port()
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
        wait_for_server(base + "/healthz", process)
        yield base
    finally:
        process.terminate()
        process.communicate(timeout=20)
