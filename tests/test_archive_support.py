"""Helpers for the archive tests: issues written as files and sent through the real CLI to
the fake SendGrid over HTTP, so "sent" means what a user's send leaves behind. (No tests
in this file.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result

from newsletter.project import Project
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber
from tests.sendgrid_server import FakeSendGrid

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
