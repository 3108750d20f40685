"""The `--segment NAME` / `--where EXPR` options other commands share, and reading them. Light
on purpose (no SQLAlchemy): `sequences run` with nothing due loads it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from newsletter.cli.context import get_project
from newsletter.segments import resolve


def segment_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--segment NAME` and `--where EXPR` (see docs/segments.md)."""
    command = click.option(
        "--where",
        metavar="EXPR",
        help='Only people matching this condition, e.g. --where "tag:leser clicked:last-5".',
    )(command)
    return click.option(
        "--segment", metavar="NAME", help="Only people in this [segments.NAME] of newsletter.toml."
    )(command)


def chosen_segment(segment: str | None, where: str | None) -> Any:
    """The `Segment` of --segment/--where (None for neither); exit 2 for both."""
    if segment is not None and where is not None:
        raise click.UsageError("use --segment NAME or --where EXPR, not both")
    chosen = resolve(get_project(), segment=segment, where=where)
    for warning in chosen.warnings(get_project()) if chosen is not None else []:
        click.echo(f"Warning: {warning}", err=True)
    return chosen
