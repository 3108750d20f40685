"""Mailchimp's unsubscribed and cleaned exports carry the same opt-in columns as its
subscribed one: the people in them opted in once, and that proof is kept (it was recorded
as "imported, no evidence"). SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from newsletter.project import Project
from newsletter.store.consent import records_for
from newsletter.store.engine import open_engine
from newsletter.store.subscribers import find_subscriber
from tests.conftest import CONFIG

FIXTURES = Path(__file__).parent / "fixtures" / "imports"


@pytest.fixture
def proj(make_project, database_url: str) -> Project:
    config = CONFIG.replace('url = "sqlite:///newsletter.db"', f'url = "{database_url}"')
    return Project.load(make_project(config))


@pytest.mark.parametrize(
    ("export", "email", "status", "optin"),
    [
        ("mailchimp_unsubscribed.csv", "weg@example.de", "unsubscribed", "2022-02-12T10:54:27"),
        ("mailchimp_cleaned.csv", "kaputt@example.de", "bounced", "2018-02-05T19:28:23"),
    ],
)
def test_a_mailchimp_export_of_people_who_left_keeps_their_opt_in(
    proj, cli, tmp_path, export, email, status, optin
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / export
    shutil.copy(FIXTURES / export, path)
    result = cli(proj.root, "subscribers", "import", str(path))
    assert result.exit_code == 0, result.output
    assert "without consent evidence" not in result.output

    engine = open_engine(proj.database_url)
    person = find_subscriber(engine, email)
    assert person is not None and person.status == status
    with engine.connect() as conn:
        [record] = records_for(conn, person.id)
    assert record.proves_consent
    assert record.details["optin_time"] == f"{optin}+00:00"
    assert record.details["confirm_time"] == f"{optin}+00:00"
    shown = cli(proj.root, "subscribers", "show", email).output
    assert "consent:             proven" in shown
    assert f"optin_time:      {optin}+00:00" in shown
