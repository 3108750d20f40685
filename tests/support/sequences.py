"""Shared test helpers: sequences."""

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
from newsletter.sequences import hooks
from newsletter.sequences.clock import FixedClock
from newsletter.sequences.runner import run_due
from newsletter.store.engine import dispose_all, open_engine
from newsletter.store.schema import deliveries, subscribers
from newsletter.store.subscribers import add_subscriber
from tests.conftest import REPO, TEST_SECRET

T0 = datetime(2026, 3, 2, 7, 30, tzinfo=UTC)  # a Monday, 08:30 in Berlin


STEP1 = """\
---
title: Willkommen bei „Jens' Briefing“
preheader: Schön, dass du da bist
delay: 0
---

Hallo {{ subscriber.first_name | default("zusammen") }}, schön, dass du da bist!
"""


STEP2 = """\
---
title: Drei Tipps für den Anfang
preheader: Was sich lohnt
delay: 3d
---

Hallo {{ subscriber.first_name | default("zusammen") }}, hier sind drei Tipps.
"""


STEP3 = """\
---
title: Was andere Leser sagen
preheader: Stimmen
delay: 4d
---

Zum Schluss: Stimmen anderer Leser.
"""


SEQUENCE = '\n[sequences.welcome]\ntrigger = "subscribed"\n'


def write_steps(root: Path, steps: dict[str, str], name: str = "welcome") -> None:
    folder = root / "sequences" / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.md"):
        old.unlink()
    for filename, text in steps.items():
        (folder / filename).write_text(text, encoding="utf-8")


def received(root: Path) -> list[tuple[str, str]]:
    """(address, subject) of every email in the outbox."""
    out = []
    for path in sorted((root / "outbox").glob("*.eml")) if (root / "outbox").exists() else []:
        msg = email.message_from_string(path.read_text("utf-8"), policy=default_policy)
        out.append((str(msg["To"].addresses[0].addr_spec), str(msg["Subject"])))
    return out


def join(root: Path, address: str, at: datetime, **kw):
    project = Project.load(root)
    engine = open_engine(project.database_url)
    person = add_subscriber(engine, address, **kw)
    hooks.joined(project, engine, person.id, clock=FixedClock(at))
    return person


def run(root: Path, at: datetime):
    return run_due(Project.load(root), clock=FixedClock(at))


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
