"""Shared by the archive benchmarks: a project with N published issues.

Each issue is the seed article with its own title and slug. The rows are those a finished
SendGrid send leaves (the issue, a `done` send, one accepted delivery): written directly,
since pushing 500 sends through the fake SendGrid would time the sender, not the archive.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

CONFIG = """\
[newsletter]
name = "Jens' Briefing"
from_email = "jens@example.com"
from_name = "Jens"
reply_to = "jens@example.com"
postal_address = "Musterstraße 1, 10115 Berlin, Germany"
base_url = "https://news.example.com"
language = "de"

[database]
url = "sqlite:///newsletter.db"
"""

SEED = REPO / "issues" / "2024-07-meta-ki-creator.md"


def make_project(root: Path, issues: int) -> Path:
    from newsletter.project import Project
    from newsletter.store.engine import open_engine
    from newsletter.store.subscribers import add_subscriber

    (root / "issues").mkdir(parents=True)
    (root / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    seed = SEED.read_text(encoding="utf-8")
    body = seed.split("---\n", 2)[2]
    engine = open_engine(Project.load(root).database_url)
    reader = add_subscriber(engine, "leser@example.org", first_name="Jörg")
    start = datetime(2020, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for n in range(issues):
            slug = f"ausgabe-{n:04d}"
            title = f"Ausgabe {n}: Warum Metas KI Creator verdrängen könnte"
            add_issue_file(root, n, slug, title, body)
            when = start + timedelta(days=n)
            record_sent(conn, slug, title, when, reader.id, message_id=f"m{n}")
    engine.dispose()
    return root


def record_sent(
    conn: Any, slug: str, title: str, when: datetime, subscriber_id: int, message_id: str | None
) -> None:
    """The rows a finished SendGrid send leaves: the issue, its send, one accepted delivery
    (what makes an issue public under the publish rule); the tests' helper writes them."""
    from tests.support.web import record_sent as record

    ids = {subscriber_id: message_id} if message_id else None
    record(conn, [subscriber_id], slug=slug, title=title, when=when, message_ids=ids)


def add_issue_file(root: Path, n: int, slug: str, title: str, body: str) -> None:
    front = f'---\ntitle: "{title}"\npreheader: "Was Ausgabe {n} bringt"\nslug: {slug}\n---\n'
    (root / "issues" / f"{slug}.md").write_text(front + body, encoding="utf-8")


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENDGRID_", "NEWSLETTER_"))}
    env["NEWSLETTER_SECRET_KEY"] = "benchmark-secret-key-0123456789"
    env["PYTHONPATH"] = str(REPO)
    if "NEWSLETTER_CACHE_DIR" in os.environ:  # the benchmark's own (benchmarks/as_installed.py)
        env["NEWSLETTER_CACHE_DIR"] = os.environ["NEWSLETTER_CACHE_DIR"]
    return env


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
