"""Shared test helpers: sequences."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.policy import default as default_policy
from pathlib import Path

from newsletter.project import Project
from newsletter.sequences import hooks
from newsletter.sequences.clock import FixedClock
from newsletter.sequences.runner import run_due
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import add_subscriber

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
