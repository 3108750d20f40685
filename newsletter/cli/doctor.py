"""`newsletter doctor` and `newsletter secrets init`."""

from __future__ import annotations

import textwrap

import click

from newsletter.cli.context import get_project
from newsletter.doctor import DoctorOptions, as_json, as_text, failed, run_doctor
from newsletter.doctor.records import parse_nameserver
from newsletter.secrets_file import GENERATED, init_secrets


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
    """Write ~/.config/newsletter/env with your keys (mode 0600; never overwritten).

    A key the environment already sets is written as it is (links signed with it keep
    working); only a missing one is made new.

    \b
    Example:
        newsletter secrets init
    """

    path, kept = init_secrets()
    keys = " and ".join(
        f"{name} as your environment sets it" if name in kept else f"a new {name}"
        for name, _ in GENERATED
    )
    text = (
        f"wrote {path} (readable only by you) with {keys}. Every newsletter command reads it "
        "for variables the environment does not set. Add your SENDGRID_API_KEY (or "
        "NEWSLETTER_SMTP_PASSWORD) there; copy the file to the server that runs `newsletter "
        "serve`, as the same key must sign and check the links."
    )
    # Paths are not broken across lines, so that one can be copied.
    click.echo(textwrap.fill(text, width=88, break_long_words=False, break_on_hyphens=False))


COMMANDS = [doctor, secrets]
