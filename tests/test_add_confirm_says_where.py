"""`subscribers add --confirm` says where the confirmation mail went: accepted by SendGrid,
or written to the outbox and why, never "sent" for a file nobody will receive."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_sendgrid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)


def test_without_a_key_it_says_the_mail_is_only_in_the_outbox(project, cli, no_sendgrid) -> None:  # type: ignore[no-untyped-def]
    result = cli(project, "subscribers", "add", "önder@example.de", "--confirm")
    assert result.exit_code == 0, result.output
    [line] = result.output.splitlines()
    assert line.startswith("added önder@example.de (unconfirmed); confirmation email to ")
    assert "written to " in line and "transactional-önder@example.de.eml" in line
    assert "SENDGRID_API_KEY is not set" in line
    assert "sent" not in line.replace("is not set", "")
    assert (project / "outbox" / "transactional-önder@example.de.eml").exists()


def test_through_sendgrid_it_says_sendgrid_took_it(project, cli, sg) -> None:  # type: ignore[no-untyped-def]
    result = cli(project, "subscribers", "add", "önder@example.de", "--confirm")
    assert result.exit_code == 0, result.output
    assert "confirmation email to önder@example.de: accepted by SendGrid" in result.output
    assert "outbox" not in result.output
    assert sg.recipients() == ["önder@example.de"]
