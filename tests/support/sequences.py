"""Welcome-sequence projects for tests that run `sequences run` or `serve` as real processes:
a step, the `[sequences.welcome]` table, and many subscribers due at once."""

from __future__ import annotations

import email
import os
import subprocess
import sys
from datetime import UTC, datetime
from email.policy import default as default_policy
from pathlib import Path

from sqlalchemy import func, insert, select

from newsletter.project import Project
from newsletter.store.engine import dispose_all, open_engine
from newsletter.store.schema import deliveries, subscribers
from tests.conftest import REPO, TEST_SECRET

WELCOME = """\
---
title: Willkommen bei „Jens' Briefing“
preheader: Schön, dass du da bist
delay: 0
---

Hallo {{ subscriber.first_name | default("zusammen") }}, schön, dass du da bist!
"""
SEQUENCE = '\n[sequences.welcome]\ntrigger = "subscribed"\n'


def write_steps(root: Path, steps: dict[str, str], name: str = "welcome") -> None:
    """The sequence's step files are exactly `steps` (file name -> text)."""
    folder = root / "sequences" / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.md"):
        old.unlink()
    for filename, text in steps.items():
        (folder / filename).write_text(text, encoding="utf-8")


def add_people_due(root: Path, people: int) -> set[str]:
    """`people` subscribers, each with the welcome step due now (started with --existing)."""
    from newsletter.sequences.start import start_existing

    engine = open_engine(Project.load(root).database_url)
    stamp = datetime.now(UTC)
    everyone = {f"leser{i}@example.org" for i in range(people)}
    with engine.begin() as conn:
        conn.execute(insert(subscribers), [
            {"email": a, "email_key": a, "status": "subscribed", "fields": {}, "source": "test",
             "created_at": stamp, "updated_at": stamp, "confirmed_at": stamp}
            for a in sorted(everyone)
        ])  # fmt: skip
    assert start_existing(Project.load(root), engine, "welcome", ()) == people
    dispose_all()
    return everyone


def ledger_states(root: Path) -> dict[str, int]:
    """Ledger state -> rows, over every delivery of the project."""
    engine = open_engine(Project.load(root).database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
        ).all()
    dispose_all()
    return {str(state): int(n) for state, n in rows}


def newsletter_process(root: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """`newsletter --project ROOT ARGS...` as a real process of this checkout's code."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SENDGRID_", "NEWSLETTER_")) or k == "NEWSLETTER_CACHE_DIR"
    }
    environment.update(NEWSLETTER_SECRET_KEY=TEST_SECRET, PYTHONPATH=str(REPO), **env)
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--project", str(root), *args],
        env=environment,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def outbox(root: Path) -> list[tuple[str, str]]:
    """(address, subject) of every email the outbox transport wrote, in file order."""
    folder = root / "outbox"
    out = []
    for path in sorted(folder.glob("*.eml")) if folder.exists() else []:
        msg = email.message_from_string(path.read_text("utf-8"), policy=default_policy)
        out.append((str(msg["To"].addresses[0].addr_spec), str(msg["Subject"])))
    return out
