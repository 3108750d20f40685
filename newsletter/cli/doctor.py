"""`newsletter doctor` and `newsletter secrets init`."""

from __future__ import annotations

import click

from newsletter.cli.context import get_project
from newsletter.doctor import DoctorOptions, as_json, as_text, failed, run_doctor
from newsletter.doctor.records import parse_nameserver
from newsletter.secrets_file import init_secrets


def _nameserver(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None

    try:
        parse_nameserver(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command()
@click.option(
    "--nameserver",
    metavar="HOST[:PORT]",
    callback=_nameserver,
    help="Ask this DNS server instead of the system's (offline use, tests).",
)
@click.option(
    "--offline", is_flag=True, help="No network but DNS: skip /healthz and the SendGrid API."
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def doctor(nameserver: str | None, offline: bool, fmt: str) -> None:
    """Check what decides whether mail arrives: DNS, setup and the list; exit 1 on any ✗.

    \b
    Example:
        newsletter doctor
        newsletter doctor --offline --format json
    """

    checks = run_doctor(get_project(), DoctorOptions(nameserver=nameserver, offline=offline))
    click.echo(as_json(checks) if fmt == "json" else as_text(checks))
    if failed(checks):
        raise SystemExit(1)


@click.group()
def secrets() -> None:
    """Keep the keys out of the project: a 0600 file every command reads.

    \b
    Example:
        newsletter secrets init
    """


@secrets.command("init")
def secrets_init() -> None:
    """Write ~/.config/newsletter/env with new keys (mode 0600; never overwritten).

    \b
    Example:
        newsletter secrets init
    """

    path = init_secrets()
    click.echo(f"wrote {path} (readable only by you) with a new NEWSLETTER_SECRET_KEY and")
    click.echo("NEWSLETTER_INBOUND_SECRET. Every newsletter command reads it for variables the")
    click.echo("environment does not set. Add your SENDGRID_API_KEY (or NEWSLETTER_SMTP_PASSWORD)")
    click.echo("there; copy the file to the server that runs `newsletter serve`, as the same key")
    click.echo("must sign and check the links.")


COMMANDS = [doctor, secrets]
