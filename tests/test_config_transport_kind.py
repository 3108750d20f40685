"""`[sending] transport` is checked when newsletter.toml is read, like `[sendgrid] region`: an
unknown one is a one-line error naming the file for every command, not a sign-up form that
answers 503 under `serve` while `check` says "no problems found"."""

from __future__ import annotations

from newsletter.project import TRANSPORT_KINDS
from newsletter.sending.transports import registry
from tests.conftest import CONFIG


def test_an_unknown_transport_is_one_line_for_every_command(make_project, cli) -> None:  # type: ignore[no-untyped-def]
    root = make_project(config=CONFIG + '\n[sending]\ntransport = "brieftaube"\n')
    for command in (("check", "x"), ("subscribers", "count"), ("send", "x", "--dry-run")):
        result = cli(root, *command)
        assert result.exit_code == 1, (command, result.output)
        assert result.output.strip().splitlines() == [
            f"Error: {root / 'newsletter.toml'}: [sending] transport 'brieftaube' is not known; "
            "use one of: outbox, sendgrid, smtp"
        ]


def test_the_known_transports_are_the_registered_ones() -> None:
    assert set(TRANSPORT_KINDS) == set(registry())
