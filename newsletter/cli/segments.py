"""`newsletter segments ...` and the `--segment NAME` / `--where EXPR` options other commands
share. The work lives in `newsletter.segments`; this only parses options."""

from __future__ import annotations

import json
from typing import Any

import click

from newsletter.cli.context import get_project
from newsletter.cli.segment_options import chosen_segment
from newsletter.project import project_timezone
from newsletter.segments import defined
from newsletter.segments.query import count_matching, segment_condition
from newsletter.store.engine import project_engine
from newsletter.store.schema import subscribers


def segment_where(engine: Any, segment: str | None, where: str | None) -> list[Any]:
    """The WHERE conditions on `subscribers` of --segment/--where (none for neither)."""
    chosen = chosen_segment(segment, where)
    if chosen is None:
        return []
    with engine.connect() as conn:
        return [segment_condition(conn, chosen.tree, project_timezone(get_project()))]


@click.group("segments")
def segments() -> None:
    """Saved segments: [segments.<name>] where = "…" in newsletter.toml.

    \b
    Example:
        newsletter segments list
        newsletter subscribers list --segment aktive
    """


@segments.command("list")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def list_(fmt: str) -> None:
    """Show each segment, its definition and how many people are in it now.

    The size counts subscribed people only (those an issue would reach).

    \b
    Example:
        newsletter segments list
    """
    project = get_project()
    found = defined(project)
    if not found:
        if fmt == "json":
            click.echo("[]")
            return
        click.echo(
            "No segments yet; add one to newsletter.toml, e.g. [segments.aktive] with "
            'where = "status:subscribed clicked:last-5"'
        )
        return
    engine = project_engine(project)
    tz = project_timezone(project)
    rows = [
        (
            name,
            seg.definition,
            count_matching(engine, seg.tree, tz, extra=[subscribers.c.status == "subscribed"]),
        )
        for name, seg in sorted(found.items())
    ]
    if fmt == "json":
        data = [{"name": n, "where": d, "subscribed": c} for n, d, c in rows]
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    width = max(len("SEGMENT"), *(len(name) for name, _, _ in rows))
    click.echo(f"{'SEGMENT':<{width}}  {'SUBSCRIBED':>10}  WHERE")
    for name, definition, size in rows:
        click.echo(f"{name:<{width}}  {size:>10}  {definition}")


COMMANDS: list[click.Command] = [segments]
