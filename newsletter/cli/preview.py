"""Commands of this area: `preview` (live, in the browser) and `screenshot` (PNGs)."""

from __future__ import annotations

import sys
import threading
import webbrowser
from pathlib import Path

import click

from newsletter.cli.context import INTERRUPTED_EXIT_CODE, get_project
from newsletter.listen import bind, is_loopback, url_of
from newsletter.preview.app import LOOPBACK_HOSTS, create_preview_app
from newsletter.preview.screenshot import screenshot_issue
from newsletter.preview.server import PreviewServer
from newsletter.preview.state import resolve_subscriber
from newsletter.store.issues import resolve_issue


@click.command()
@click.argument("issue")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8025,
    show_default=True,
    help="Port to listen on; a free one is picked if it is taken.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on. Anything but loopback exposes the preview to your network.",
)
@click.option("--no-open", is_flag=True, help="Do not open the preview in the default browser.")
@click.option(
    "--as",
    "as_email",
    metavar="EMAIL",
    help="Fill personal fields for this subscriber instead of the sample one.",
)
def preview(issue: str, port: int, host: str, no_open: bool, as_email: str | None) -> None:
    """Serve a live preview of ISSUE that reloads whenever you save.

    Watches the issue, newsletter.toml and the templates; the page shows the
    email at desktop and phone width, in dark mode and as plain text, with the
    findings of `newsletter check` beside it. Stop it with Ctrl-C.

    \b
    Example:
        newsletter preview issues/2024-07-meta-ki-creator.md
        newsletter preview meta-ki-creator --port 9000 --no-open --as anna.schmidt@example.com
    """

    project = get_project()
    issue_path = resolve_issue(project, issue).require_path()
    subscriber = resolve_subscriber(project, as_email) if as_email else None
    loopback = is_loopback(host)
    if not loopback:
        click.echo(
            f"Warning: listening on {host} makes this preview (and the subscriber data it shows) "
            "reachable from other machines; use the default 127.0.0.1 unless you need that.",
            err=True,
        )
    sock, moved = bind(host, port)
    url = url_of(sock)
    app = create_preview_app(
        project,
        issue_path,
        subscriber=subscriber,
        allowed_hosts=LOOPBACK_HOSTS if loopback else None,
    )
    if moved:
        click.echo(f"Port {port} is taken; using {sock.getsockname()[1]} instead.", err=True)
    click.echo(f"Previewing {issue_path.name} at {url}")
    click.echo("Reloads on every save. Press Ctrl-C to stop.")
    if not no_open:
        # A console browser may block; never let that hold up the server.
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    # uvicorn re-raises the Ctrl-C it handled: one line and exit 130, as every command.
    try:
        PreviewServer(app).run(sockets=[sock])
    except KeyboardInterrupt:
        click.echo("Preview stopped.", err=True)
        sys.exit(INTERRUPTED_EXIT_CODE)
    click.echo("Preview stopped.")


@click.command()
@click.argument("issue")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("build"),
    show_default=True,
    help="Folder for the PNGs.",
)
@click.option(
    "--as",
    "as_email",
    metavar="EMAIL",
    help="Fill personal fields for this subscriber instead of the sample one.",
)
@click.option(
    "--dark",
    is_flag=True,
    help="Ask the email for its dark-mode styles (prefers-color-scheme: dark).",
)
@click.option(
    "--offline", is_flag=True, help="Block every request the email makes (images, fonts)."
)
def screenshot(issue: str, out_dir: Path, as_email: str | None, dark: bool, offline: bool) -> None:
    """Save desktop and phone PNGs of ISSUE's email, taken in headless chromium.

    Writes DIR/<slug>-desktop.png (800 px wide) and DIR/<slug>-phone.png (375 px).
    Uses Debian's chromium, or the binary named by NEWSLETTER_CHROMIUM.

    \b
    Example:
        newsletter screenshot issues/2024-07-meta-ki-creator.md -o shots
    """

    project = get_project()
    issue_path = resolve_issue(project, issue).require_path()
    subscriber = resolve_subscriber(project, as_email) if as_email else None
    for path in screenshot_issue(
        project, issue_path, out_dir, subscriber=subscriber, offline=offline, dark=dark
    ):
        click.echo(str(path))


COMMANDS: list[click.Command] = [preview, screenshot]
