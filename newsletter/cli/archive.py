"""`newsletter archive build`: the web archive as a static site."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from newsletter.archive.empty import why_empty
from newsletter.archive.site import build_site
from newsletter.cli.context import get_project
from newsletter.errors import ConfigError
from newsletter.store.engine import project_engine
from newsletter.wording import plural


@click.group()
def archive() -> None:
    """The public archive of sent issues (also served by `newsletter serve` at /).

    \b
    Example:
        newsletter archive build -o site
    """


@archive.command("build")
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the site (default: site/ in the project). Example: -o public",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary line.")
def build(output: Path | None, quiet: bool) -> None:
    """Write the archive as a static site to host anywhere.

    index.html, issues/<slug>/index.html, feed.xml, feed.json, 404.html and
    sitemap.xml. Only published issues are included. Running it again changes
    only the files whose content changed.

    \b
    Example:
        newsletter archive build -o site
    """

    project = get_project()
    if not project.config.section("archive")["enabled"]:
        raise ConfigError(
            f"{project.config.path}: [archive] enabled = false; set it to true to build the archive"
        )
    folder = output if output is not None else project.root / "site"
    try:
        report = build_site(
            project,
            project_engine(project),
            folder,
            progress=None if quiet else (lambda name: click.echo(f"wrote {name}")),
        )
    except KeyboardInterrupt:
        click.echo(
            f"Interrupted: the files written so far in {folder} are complete; "
            "run `newsletter archive build` again to finish.",
            err=True,
        )
        sys.exit(130)
    removed = f", {len(report.removed)} removed" if report.removed else ""
    click.echo(
        f"{folder}: {plural(report.issues, 'issue')}; "
        f"{plural(len(report.written), 'file')} written, "
        f"{report.unchanged} unchanged{removed}"
    )
    if report.issues == 0:
        click.echo(f"The archive is empty: {why_empty(project_engine(project))}.")


COMMANDS = [archive]
