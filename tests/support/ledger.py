"""A list and an issue for the ledger's tests: an engine, the readers' ids and the issue's."""

from __future__ import annotations

from typing import Any

from newsletter.store.engine import open_engine
from newsletter.store.issues import ensure_issue
from newsletter.store.subscribers import add_subscriber


def readers_and_issue(database_url: str, readers: int, slug: str) -> tuple[Any, list[int], int]:
    engine = open_engine(database_url)
    people = [add_subscriber(engine, f"leser{i}@example.org").id for i in range(readers)]
    title = slug.capitalize()
    issue = ensure_issue(engine, slug=slug, title=title, subject=title, language="de")
    return engine, people, issue
