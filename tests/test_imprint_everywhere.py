"""A German newsletter must link its Impressum in every email (§ 5 DDG). `check` and `send`
refused an issue without `[newsletter] imprint_url`, but `sequences run` sent German welcome
mails without one, `serve` sent confirmation mails without one and said nothing, and
`doctor` did not ask. Now the run skips such a sequence in one line (as it skips any broken
one), `serve` warns when it starts (it still starts: the unsubscribe links readers have must
keep working), and `doctor` fails the check for German and warns for other languages."""

from __future__ import annotations

import json

import pytest

from tests.conftest import CONFIG, REPO, TEST_SECRET
from tests.support.dns_server import ZoneServer
from tests.support.sequences import SEQUENCE, STEP1, T0, join, received, write_steps
from tests.support.serve_processes import start_up_messages

IMPRINT = 'imprint_url = "https://news.example.com/impressum"\n'
WITHOUT_IMPRINT = CONFIG.replace(IMPRINT, "")


def test_sequences_run_skips_german_steps_without_an_impressum(
    make_project, database_url, monkeypatch, cli
) -> None:
    assert WITHOUT_IMPRINT != CONFIG
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    root = make_project(WITHOUT_IMPRINT + SEQUENCE)
    write_steps(root, {"01-willkommen.md": STEP1})
    join(root, "jörg@example.de", T0, first_name="Jörg")

    refused = cli(root, "sequences", "run")
    assert refused.exit_code == 0, refused.output
    assert (
        "sequence welcome skipped: [newsletter] imprint_url is not set, and a German "
        "newsletter must link its Impressum in every email" in refused.output
    )
    assert received(root) == []

    config = root / "newsletter.toml"
    config.write_text(config.read_text("utf-8").replace("[database]", IMPRINT + "\n[database]"))
    sent = cli(root, "sequences", "run")
    assert sent.exit_code == 0, sent.output
    [(address, subject)] = received(root)
    assert address == "jörg@example.de" and subject == "Willkommen bei „Jens' Briefing“"
    mail = next((root / "outbox").glob("*.eml")).read_text("utf-8")
    assert "https://news.example.com/impressum" in mail


def test_serve_warns_that_confirmation_mails_lack_the_impressum(make_project, tmp_path) -> None:
    root = make_project(WITHOUT_IMPRINT)
    stderr = start_up_messages(root, tmp_path / "serve.db", TEST_SECRET, REPO)
    # (it starts: unsubscribes must keep working)
    assert (
        "Warning: [newsletter] imprint_url is not set, and a German newsletter must link its "
        "Impressum in every email" in stderr
    )
    assert "until then confirmation mails lack it" in stderr


@pytest.mark.parametrize(
    ("config", "status", "needle"),
    [
        (WITHOUT_IMPRINT, "fail", "a German newsletter must link its Impressum"),
        (WITHOUT_IMPRINT.replace('language = "de"', 'language = "en"'), "warn", "readers expect"),
        (CONFIG, "ok", "https://news.example.com/impressum"),
    ],
)
def test_doctor_asks_for_the_impressum(make_project, cli, config, status, needle) -> None:
    root = make_project(config)
    with ZoneServer("www.example.com. A 192.0.2.1\n") as dns:
        result = cli(root, "doctor", "--nameserver", dns.address, "--offline", "--format", "json")
    checks = {check["name"]: check for check in json.loads(result.output)["checks"]}
    assert checks["imprint"]["status"] == status
    assert needle in checks["imprint"]["found"]
